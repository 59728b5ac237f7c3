package iscsi

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// Session is one logged-in iSCSI session (one connection, ERL 0). Its
// methods are safe for concurrent use.
type Session struct {
	cfg    Config
	log    *slog.Logger
	nc     net.Conn
	r      *proto.Reader
	w      *proto.Writer
	params proto.Params
	tsih   uint16
	isid   [6]byte

	expStatSN atomic.Uint32
	statKnown atomic.Bool

	mu       sync.Mutex
	cmdSN    uint32 // next CmdSN to assign
	expCmdSN uint32
	maxCmdSN uint32
	nextITT  uint32
	tasks    map[uint32]*task
	wake     chan struct{} // closed and replaced when the window or the task set changes
	sendq    []sendItem
	spare    []sendItem
	err      error // why the session ended; nil while usable
	draining bool  // the target asked us to log out

	loggingOut atomic.Bool // a Logout is under way: EOF is expected
	sendWake   chan struct{}
	done       chan struct{} // closed when the session ends
	io         sync.WaitGroup
	ioDone     chan struct{} // closed when the reader and sender have exited
}

type taskKind uint8

const (
	kindSCSI taskKind = iota
	kindPing
	kindTMF
	kindLogout
)

// task is one outstanding request.
type task struct {
	kind  taskKind
	itt   uint32
	lun   uint64
	op    byte
	out   []byte // write data (read by the sender only)
	in    []byte // read buffer (written by the reader only)
	inLen int
	done  chan struct{}
	res   Result
	resp  uint8 // TMF or logout response
	err   error
	// busy is held by the sender while it writes a PDU from out;
	// finished stops it from starting another once the task completed.
	busy     chan struct{}
	finished atomic.Bool
}

// sendItem is one PDU, or a run of Data-Out PDUs covering
// t.out[off:off+length], for the sender goroutine.
type sendItem struct {
	hdr    proto.BHS
	data   []byte
	t      *task
	ttt    uint32
	off    uint32
	length uint32
}

// Command is one SCSI command. At most one of Out and In is set; its
// length is the Expected Data Transfer Length.
type Command struct {
	LUN uint16
	CDB []byte
	// Out is written to the target (WRITE). It must not change until the
	// command completes.
	Out []byte
	// In receives data-in (READ, INQUIRY, ...).
	In []byte
}

// Result is how a command completed.
type Result struct {
	Status uint8
	// Sense is the raw sense data of a CHECK CONDITION.
	Sense []byte
	// InLen is how many bytes of data-in arrived.
	InLen int
	// Residual and its flags report over- and underflow (RFC 7143 §11.4.5).
	Residual            uint32
	Underflow, Overflow bool
}

// Dial connects to cfg.Portal and logs in to cfg.TargetIQN.
func Dial(ctx context.Context, cfg Config) (*Session, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.TargetIQN == "" {
		return nil, fmt.Errorf("%w: TargetIQN is empty", ErrConfig)
	}
	s, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := s.login(ctx, "Normal"); err != nil {
		s.nc.Close()
		return nil, err
	}
	s.start()
	s.log.Info("iscsi session established", "portal", cfg.Portal, "target", cfg.TargetIQN, "tsih", s.tsih,
		"max_xmit", s.params.MaxXmitDataSegmentLength, "max_burst", s.params.MaxBurstLength,
		"first_burst", s.params.FirstBurstLength, "initial_r2t", s.params.InitialR2T,
		"immediate_data", s.params.ImmediateData, "header_digest", s.params.HeaderDigest, "data_digest", s.params.DataDigest)
	return s, nil
}

func connect(ctx context.Context, cfg Config) (*Session, error) {
	d := net.Dialer{Timeout: cfg.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", cfg.Portal)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w", ErrSessionLost, cfg.Portal, err)
	}
	s := &Session{
		cfg:      cfg,
		log:      cfg.Logger.With("portal", cfg.Portal),
		nc:       nc,
		r:        proto.NewReader(bufio.NewReaderSize(nc, 64<<10)),
		w:        proto.NewWriter(nc),
		tasks:    map[uint32]*task{},
		wake:     make(chan struct{}),
		sendWake: make(chan struct{}, 1),
		done:     make(chan struct{}),
		ioDone:   make(chan struct{}),
	}
	var b [10]byte
	_, _ = rand.Read(b[:])
	s.isid = [6]byte{0x80 | b[0]&0x3f, b[1], b[2], b[3], b[4], b[5]} // random ISID format (T=10b)
	s.cmdSN = binary.BigEndian.Uint32(b[6:])
	return s, nil
}

// Params reports the negotiated operational parameters.
func (s *Session) Params() proto.Params { return s.params }

// Err reports why the session ended, or nil while it is usable.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.done }

func (s *Session) start() {
	s.io.Add(2)
	go s.reader()
	go s.sender()
	go func() {
		s.io.Wait()
		close(s.ioDone)
	}()
}

// fail ends the session with err and completes every task with it.
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	tasks := s.tasks
	s.tasks = map[uint32]*task{}
	close(s.done)
	close(s.wake)
	s.mu.Unlock()
	s.nc.Close()
	for _, t := range tasks {
		t.err = err
		close(t.done)
	}
	if !errors.Is(err, errClosed) {
		s.log.Warn("iscsi session ended", "err", err)
	}
}

// errClosed ends sessions closed on purpose; it is an ErrSessionLost so a
// command racing the close is retried like any other lost session.
var errClosed = fmt.Errorf("%w: closed", ErrSessionLost)

// broadcast wakes everyone waiting for the window; s.mu is held.
func (s *Session) broadcast() {
	if s.err != nil {
		return
	}
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *Session) enqueue(items ...sendItem) {
	s.sendq = append(s.sendq, items...)
	select {
	case s.sendWake <- struct{}{}:
	default:
	}
}

func (s *Session) allocITT() uint32 {
	for {
		s.nextITT++
		if s.nextITT == proto.ReservedTag {
			continue
		}
		if _, used := s.tasks[s.nextITT]; !used {
			return s.nextITT
		}
	}
}

// Submit queues a SCSI command once the CmdSN window and the queue depth
// allow, and returns without waiting for its completion.
func (s *Session) Submit(ctx context.Context, c Command) (*Pending, error) {
	if len(c.CDB) == 0 || len(c.CDB) > 16 {
		return nil, fmt.Errorf("submit: CDB of %d bytes (want 1..16)", len(c.CDB))
	}
	if c.In != nil && c.Out != nil {
		return nil, errors.New("submit: bidirectional commands are not supported")
	}
	if len(c.Out) > 1<<31 || len(c.In) > 1<<31 {
		return nil, errors.New("submit: transfer too large")
	}
	t := &task{kind: kindSCSI, lun: proto.LUN(c.LUN), op: c.CDB[0], out: c.Out, in: c.In, done: make(chan struct{}),
		busy: make(chan struct{}, 1)}
	cmd := proto.SCSICommand{Attr: proto.AttrSimple, LUN: t.lun, Read: c.In != nil, Write: c.Out != nil}
	copy(cmd.CDB[:], c.CDB)
	cmd.ExpectedDataTransferLength = uint32(len(c.Out) + len(c.In))

	s.mu.Lock()
	for {
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return nil, err
		}
		if s.draining {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: the target asked for a logout", ErrSessionLost)
		}
		if proto.InWindow(s.cmdSN, s.expCmdSN, s.maxCmdSN) && len(s.tasks) < s.cfg.QueueDepth {
			break
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err() // nothing was sent
		}
		s.mu.Lock()
	}
	t.itt = s.allocITT()
	cmd.ITT, cmd.CmdSN = t.itt, s.cmdSN
	s.cmdSN++
	s.tasks[t.itt] = t

	p := s.params
	out := uint32(len(c.Out))
	var imm uint32
	if p.ImmediateData && out > 0 {
		imm = min(out, p.FirstBurstLength, p.MaxXmitDataSegmentLength)
	}
	unsolEnd := imm
	if !p.InitialR2T {
		unsolEnd = min(out, p.FirstBurstLength)
	}
	cmd.Final = unsolEnd == imm
	item := sendItem{data: c.Out[:imm]}
	cmd.Encode(&item.hdr)
	if unsolEnd > imm {
		s.enqueue(item, sendItem{t: t, ttt: proto.ReservedTag, off: imm, length: unsolEnd - imm})
	} else {
		s.enqueue(item)
	}
	s.mu.Unlock()
	return &Pending{s: s, t: t}, nil
}

// submitImmediate queues an immediate request (NOP-Out, TMF, Logout).
func (s *Session) submitImmediate(t *task, hdr proto.Header, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	t.itt = s.allocITT()
	t.done = make(chan struct{})
	s.tasks[t.itt] = t
	item := sendItem{data: data}
	switch h := hdr.(type) {
	case *proto.NOPOut:
		h.ITT, h.CmdSN = t.itt, s.cmdSN
	case *proto.TaskMgmtRequest:
		h.ITT, h.CmdSN = t.itt, s.cmdSN
	case *proto.LogoutRequest:
		h.ITT, h.CmdSN = t.itt, s.cmdSN
	}
	hdr.Encode(&item.hdr)
	s.enqueue(item)
	return nil
}

// Pending is a submitted command.
type Pending struct {
	s *Session
	t *task
}

// Wait returns the command's result; a status other than GOOD is a
// *SCSIError. If ctx ends (or CommandTimeout passes) first, the session
// is torn down, because the command's buffers are still in flight.
func (p *Pending) Wait(ctx context.Context) (Result, error) {
	if err := p.s.wait(ctx, p.t); err != nil {
		return Result{}, err
	}
	return p.t.res, p.t.res.err(p.t.op)
}

func (s *Session) wait(ctx context.Context, t *task) error {
	timeout := s.cfg.CommandTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = max(time.Until(d), 0) + time.Millisecond // let ctx report its own error first
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.done:
		return s.settle(ctx, t)
	case <-ctx.Done():
		s.abort(fmt.Errorf("%w: command 0x%02x abandoned: %w", ErrSessionLost, t.op, ctx.Err()))
		return fmt.Errorf("wait for command 0x%02x: %w", t.op, ctx.Err())
	case <-timer.C:
		err := fmt.Errorf("%w: command 0x%02x timed out after %v", ErrSessionLost, t.op, timeout)
		s.abort(err)
		return err
	}
}

// settle returns once no goroutine will touch t's buffers again: after a
// session failure, when the reader and sender have exited; otherwise when
// the sender has finished a Data-Out PDU it may be writing from t.out.
func (s *Session) settle(ctx context.Context, t *task) error {
	if t.err != nil && (errors.Is(t.err, ErrSessionLost) || errors.Is(t.err, ErrProtocol) || errors.Is(t.err, errClosed)) {
		select {
		case <-s.ioDone:
		case <-time.After(10 * time.Second): // the connection is closed; this only guards against a stuck write
		}
		return t.err
	}
	if t.busy != nil {
		select {
		case t.busy <- struct{}{}:
			<-t.busy
		case <-ctx.Done():
			s.abort(fmt.Errorf("%w: abandoned while sending data: %w", ErrSessionLost, ctx.Err()))
		}
	}
	return t.err
}

// abort ends the session and waits until no goroutine touches a task's
// buffers any more.
func (s *Session) abort(err error) {
	s.fail(err)
	<-s.ioDone
}

func (r Result) err(op byte) error {
	if r.Status == proto.StatusGood || r.Status == proto.StatusConditionMet {
		return nil
	}
	e := &SCSIError{Op: op, Status: r.Status}
	if len(r.Sense) > 0 {
		if sense, err := proto.ParseSense(r.Sense); err == nil {
			e.HasSense, e.Sense = true, sense
		}
	}
	return e
}

// Execute runs one command and waits for it.
func (s *Session) Execute(ctx context.Context, c Command) (Result, error) {
	p, err := s.Submit(ctx, c)
	if err != nil {
		return Result{}, err
	}
	return p.Wait(ctx)
}

// Ping sends a NOP-Out and waits for the NOP-In.
func (s *Session) Ping(ctx context.Context) error {
	t := &task{kind: kindPing, op: 0xff}
	if err := s.submitImmediate(t, &proto.NOPOut{Immediate: true, TTT: proto.ReservedTag}, nil); err != nil {
		return err
	}
	return s.wait(ctx, t)
}

// AbortTask asks the target to abort the task with tag itt (ABORT TASK)
// and returns the TMF response code.
func (s *Session) taskMgmt(ctx context.Context, fn uint8, lun uint16, rtt uint32) (uint8, error) {
	t := &task{kind: kindTMF, op: 0xfe}
	h := &proto.TaskMgmtRequest{Immediate: true, Function: fn, LUN: proto.LUN(lun), RTT: rtt}
	if err := s.submitImmediate(t, h, nil); err != nil {
		return 0, err
	}
	if err := s.wait(ctx, t); err != nil {
		return 0, err
	}
	return t.resp, nil
}

// LUNReset resets a logical unit (LOGICAL UNIT RESET task management).
func (s *Session) LUNReset(ctx context.Context, lun uint16) error {
	resp, err := s.taskMgmt(ctx, proto.TMFLogicalUnitReset, lun, proto.ReservedTag)
	if err != nil {
		return err
	}
	if resp != proto.TMFFunctionComplete {
		return fmt.Errorf("lun reset: %w: task management response %d", ErrRejected, resp)
	}
	return nil
}

// Logout ends the session cleanly (reason: close the session) and closes
// the connection.
func (s *Session) Logout(ctx context.Context) error { return s.logout(ctx, errClosed) }

// logout logs out and ends the session with end.
func (s *Session) logout(ctx context.Context, end error) error {
	t := &task{kind: kindLogout, op: 0xfd}
	s.loggingOut.Store(true)
	if err := s.submitImmediate(t, &proto.LogoutRequest{Immediate: true, Reason: proto.LogoutCloseSession}, nil); err != nil {
		return err
	}
	err := s.wait(ctx, t)
	if err == nil && t.resp != 0 {
		err = fmt.Errorf("logout: %w: response %d", ErrRejected, t.resp)
	}
	s.abort(end)
	return err
}

// Close logs out (best effort, at most 5 s) and releases the connection.
// It is safe to call on a failed session and more than once.
func (s *Session) Close() error {
	if s.Err() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Logout(ctx); err != nil {
			return err
		}
		return nil
	}
	s.abort(errClosed)
	return nil
}

func (s *Session) sender() {
	defer s.io.Done()
	for {
		s.mu.Lock()
		for len(s.sendq) == 0 && s.err == nil {
			s.mu.Unlock()
			select {
			case <-s.sendWake:
			case <-s.done:
			}
			s.mu.Lock()
		}
		if s.err != nil {
			s.mu.Unlock()
			return
		}
		items := s.sendq
		s.sendq, s.spare = s.spare[:0], nil
		s.mu.Unlock()
		for i := range items {
			if err := s.send(&items[i]); err != nil {
				s.fail(fmt.Errorf("%w: send: %w", ErrSessionLost, err))
				return
			}
			items[i] = sendItem{}
		}
		s.mu.Lock()
		s.spare = items[:0]
		s.mu.Unlock()
	}
}

// send writes one item, stamping the current ExpStatSN.
func (s *Session) send(it *sendItem) error {
	exp := s.expStatSN.Load()
	if it.t == nil {
		binary.BigEndian.PutUint32(it.hdr[28:], exp)
		return s.w.Write(&it.hdr, it.data)
	}
	maxSeg := s.params.MaxXmitDataSegmentLength
	end := it.off + it.length
	var sn uint32
	for off := it.off; off < end; {
		it.t.busy <- struct{}{}
		if it.t.finished.Load() {
			<-it.t.busy
			return nil // the target already completed the task
		}
		k := min(maxSeg, end-off)
		d := proto.DataOut{Final: off+k == end, LUN: it.t.lun, ITT: it.t.itt, TTT: it.ttt, ExpStatSN: exp,
			DataSN: sn, BufferOffset: off}
		var h proto.BHS
		d.Encode(&h)
		err := s.w.Write(&h, it.t.out[off:off+k])
		<-it.t.busy
		if err != nil {
			return err
		}
		sn++
		off += k
	}
	return nil
}

func (s *Session) reader() {
	defer s.io.Done()
	var h proto.BHS
	for {
		err := s.r.ReadHeader(&h)
		if err == nil {
			err = s.handle(&h)
		}
		if err != nil {
			if s.loggingOut.Load() && !errors.Is(err, ErrProtocol) {
				err = errClosed
			}
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrSessionLost) && !errors.Is(err, errClosed) {
				err = fmt.Errorf("%w: read: %w", ErrSessionLost, err)
			}
			s.fail(err)
			return
		}
	}
}

func (s *Session) protocolErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// lookup finds an outstanding task.
func (s *Session) lookup(itt uint32) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[itt]
}

// complete finishes t with its outcome unless fail got there first.
func (s *Session) complete(t *task, res Result, resp uint8, err error) {
	s.mu.Lock()
	if s.tasks[t.itt] != t {
		s.mu.Unlock()
		return
	}
	t.res, t.resp, t.err = res, resp, err
	delete(s.tasks, t.itt)
	s.broadcast()
	t.finished.Store(true)
	s.mu.Unlock()
	close(t.done)
}

func (s *Session) noteStatSN(statSN uint32) {
	if next := statSN + 1; !s.statKnown.Swap(true) || proto.SerialLess(s.expStatSN.Load(), next) {
		s.expStatSN.Store(next)
	}
}

func (s *Session) noteWindow(exp, max uint32) {
	if proto.SerialLess(max, exp-1) {
		return // RFC 7143 §4.2.2.1: ignore a MaxCmdSN below ExpCmdSN-1
	}
	s.mu.Lock()
	changed := false
	if proto.SerialLess(s.expCmdSN, exp) {
		s.expCmdSN, changed = exp, true
	}
	if proto.SerialLess(s.maxCmdSN, max) {
		s.maxCmdSN, changed = max, true
	}
	if changed {
		s.broadcast()
	}
	s.mu.Unlock()
}

func (s *Session) readSmall(h *proto.BHS) ([]byte, error) {
	data := make([]byte, h.DataSegmentLength())
	return data, s.r.ReadData(data)
}

// handle processes one PDU from the target.
func (s *Session) handle(h *proto.BHS) error {
	op := h.Opcode()
	if !op.FromTarget() {
		return s.protocolErr("initiator opcode %s from the target", op)
	}
	s.noteWindow(h.ExpCmdSN(), h.MaxCmdSN())
	hdr, err := proto.Decode(h)
	if err != nil {
		return s.protocolErr("%v", err)
	}
	switch p := hdr.(type) {
	case *proto.DataIn:
		t := s.lookup(p.ITT)
		n := h.DataSegmentLength()
		if t == nil || t.kind != kindSCSI {
			return s.protocolErr("Data-In for unknown task 0x%x", p.ITT)
		}
		if uint64(p.BufferOffset)+uint64(n) > uint64(len(t.in)) {
			return s.protocolErr("Data-In [%d,+%d) beyond the %d-byte buffer", p.BufferOffset, n, len(t.in))
		}
		if err := s.r.ReadData(t.in[p.BufferOffset : int(p.BufferOffset)+n]); err != nil {
			return err
		}
		t.inLen = max(t.inLen, int(p.BufferOffset)+n)
		if p.HasStatus {
			s.noteStatSN(p.StatSN)
			s.complete(t, Result{Status: p.Status, InLen: t.inLen, Residual: p.ResidualCount, Underflow: p.Underflow, Overflow: p.Overflow}, 0, nil)
		}
	case *proto.SCSIResponse:
		data, err := s.readSmall(h)
		if err != nil {
			return err
		}
		s.noteStatSN(p.StatSN)
		t := s.lookup(p.ITT)
		if t == nil || t.kind != kindSCSI {
			return s.protocolErr("SCSI Response for unknown task 0x%x", p.ITT)
		}
		if p.Response != proto.ResponseCompleted {
			s.complete(t, Result{Status: 0xff}, 0, fmt.Errorf("%w: scsi command 0x%02x: target failure (response 0x%02x)", ErrRejected, t.op, p.Response))
			return nil
		}
		sense, err := proto.ParseSenseSegment(data)
		if err != nil {
			return s.protocolErr("%v", err)
		}
		s.complete(t, Result{Status: p.Status, Sense: sense, InLen: t.inLen, Residual: p.ResidualCount, Underflow: p.Underflow, Overflow: p.Overflow}, 0, nil)
	case *proto.R2T:
		t := s.lookup(p.ITT)
		if t == nil || t.kind != kindSCSI || t.out == nil {
			return s.protocolErr("R2T for unknown or non-write task 0x%x", p.ITT)
		}
		if p.DesiredDataTransferLength == 0 || uint64(p.BufferOffset)+uint64(p.DesiredDataTransferLength) > uint64(len(t.out)) {
			return s.protocolErr("R2T [%d,+%d) outside the %d-byte write", p.BufferOffset, p.DesiredDataTransferLength, len(t.out))
		}
		if err := s.r.Discard(); err != nil {
			return err
		}
		s.mu.Lock()
		s.enqueue(sendItem{t: t, ttt: p.TTT, off: p.BufferOffset, length: p.DesiredDataTransferLength})
		s.mu.Unlock()
	case *proto.NOPIn:
		data, err := s.readSmall(h)
		if err != nil {
			return err
		}
		if p.TTT != proto.ReservedTag { // the target pings us: answer at once
			s.mu.Lock()
			var item sendItem
			item.data = data
			(&proto.NOPOut{Immediate: true, LUN: p.LUN, ITT: proto.ReservedTag, TTT: p.TTT, CmdSN: s.cmdSN}).Encode(&item.hdr)
			s.enqueue(item)
			s.mu.Unlock()
		}
		if p.ITT != proto.ReservedTag {
			s.noteStatSN(p.StatSN)
			if t := s.lookup(p.ITT); t != nil && t.kind == kindPing {
				s.complete(t, Result{}, 0, nil)
			}
		}
	case *proto.TaskMgmtResponse:
		s.noteStatSN(p.StatSN)
		if t := s.lookup(p.ITT); t != nil && t.kind == kindTMF {
			s.complete(t, Result{}, p.Response, nil)
		}
		return s.r.Discard()
	case *proto.LogoutResponse:
		s.noteStatSN(p.StatSN)
		if t := s.lookup(p.ITT); t != nil && t.kind == kindLogout {
			s.complete(t, Result{}, p.Response, nil)
		}
		return s.r.Discard()
	case *proto.Reject:
		data, err := s.readSmall(h)
		if err != nil {
			return err
		}
		s.noteStatSN(p.StatSN)
		if len(data) < proto.BHSLen {
			return s.protocolErr("Reject (reason 0x%02x) without the rejected header", p.Reason)
		}
		var rej proto.BHS
		copy(rej[:], data)
		t := s.lookup(rej.ITT())
		if t == nil {
			s.log.Warn("iscsi target rejected a PDU", "reason", p.Reason, "opcode", rej.Opcode().String())
			return nil
		}
		s.complete(t, Result{}, 0, fmt.Errorf("%w: %s rejected, reason 0x%02x", ErrRejected, rej.Opcode(), p.Reason))
	case *proto.AsyncMessage:
		data, err := s.readSmall(h)
		if err != nil {
			return err
		}
		s.noteStatSN(p.StatSN)
		return s.async(p, data)
	case *proto.TextResponse:
		if err := s.r.Discard(); err != nil {
			return err
		}
		return s.protocolErr("unsolicited Text Response")
	default:
		return s.protocolErr("unexpected %s in full feature phase", op)
	}
	return nil
}

// async handles an Asynchronous Message (RFC 7143 §11.9).
func (s *Session) async(p *proto.AsyncMessage, data []byte) error {
	switch p.AsyncEvent {
	case proto.AsyncSCSIEvent:
		sense, _ := proto.ParseSenseSegment(data)
		s.log.Info("iscsi target reported a SCSI event", "sense", fmt.Sprintf("%x", sense))
	case proto.AsyncLogoutRequested, proto.AsyncNegotiation:
		wait := time.Duration(p.Parameter3) * time.Second
		s.log.Info("iscsi target requested a logout", "event", p.AsyncEvent, "within", wait)
		s.mu.Lock()
		already := s.draining
		s.draining = true
		s.mu.Unlock()
		if !already {
			go s.drainAndLogout(max(wait, time.Second))
		}
	case proto.AsyncDropConnection, proto.AsyncDropAllConnection:
		return fmt.Errorf("%w: the target is dropping the connection (event %d)", ErrSessionLost, p.AsyncEvent)
	default:
		s.log.Info("iscsi asynchronous message ignored", "event", p.AsyncEvent)
	}
	return nil
}

// drainAndLogout lets outstanding commands finish, then logs out, as a
// target's logout request asks.
func (s *Session) drainAndLogout(within time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		s.mu.Lock()
		n, wake, err := len(s.tasks), s.wake, s.err
		s.mu.Unlock()
		if err != nil {
			return
		}
		if n == 0 {
			break
		}
		select {
		case <-wake:
		case <-ctx.Done():
			s.fail(fmt.Errorf("%w: outstanding commands did not finish before the requested logout", ErrSessionLost))
			return
		}
	}
	if err := s.logout(ctx, fmt.Errorf("%w: logged out at the target's request", ErrSessionLost)); err != nil {
		s.log.Warn("iscsi logout requested by the target failed", "err", err)
	}
}

// loginExchange sends one Login Request (with continuation) and returns the
// target's complete answer.
func (s *Session) loginExchange(req *proto.LoginRequest, kvs []proto.KeyValue) (*proto.LoginResponse, []proto.KeyValue, error) {
	data := proto.EncodeText(nil, kvs)
	const chunk = 8192
	for {
		part := data[:min(len(data), chunk)]
		data = data[len(part):]
		req.Continue = len(data) > 0
		req.CmdSN, req.ExpStatSN = s.cmdSN, s.expStatSN.Load()
		if err := s.w.WriteHeader(req, part); err != nil {
			return nil, nil, fmt.Errorf("%w: send login request: %w", ErrSessionLost, err)
		}
		if !req.Continue {
			break
		}
		// The target answers each continued PDU with an empty response.
		if _, _, err := s.readLoginResponse(); err != nil {
			return nil, nil, err
		}
	}
	var asm proto.TextAssembler
	for {
		resp, d, err := s.readLoginResponse()
		if err != nil {
			return nil, nil, err
		}
		kvs, complete, err := asm.Add(d, resp.Continue)
		if err != nil {
			return nil, nil, s.protocolErr("login response text: %v", err)
		}
		if complete {
			return resp, kvs, nil
		}
		// Ask for the rest with an empty request in the same stage.
		next := &proto.LoginRequest{CSG: req.CSG, ISID: s.isid, ITT: req.ITT, CmdSN: s.cmdSN, ExpStatSN: s.expStatSN.Load()}
		if err := s.w.WriteHeader(next, nil); err != nil {
			return nil, nil, fmt.Errorf("%w: send login request: %w", ErrSessionLost, err)
		}
	}
}

func (s *Session) readLoginResponse() (*proto.LoginResponse, []byte, error) {
	var pdu proto.PDU
	if err := s.r.ReadPDU(&pdu); err != nil {
		return nil, nil, fmt.Errorf("%w: read login response: %w", ErrSessionLost, err)
	}
	h, err := proto.Decode(&pdu.BHS)
	if err != nil {
		return nil, nil, s.protocolErr("%v", err)
	}
	if rej, ok := h.(*proto.Reject); ok {
		return nil, nil, fmt.Errorf("%w: login request rejected, reason 0x%02x", ErrRejected, rej.Reason)
	}
	resp, ok := h.(*proto.LoginResponse)
	if !ok {
		return nil, nil, s.protocolErr("%s during login", pdu.BHS.Opcode())
	}
	if st := proto.MakeLoginStatus(resp.StatusClass, resp.StatusDetail); st != proto.LoginSuccess {
		return nil, nil, fmt.Errorf("login to %s: %w", s.cfg.TargetIQN, st)
	}
	s.noteStatSN(resp.StatSN)
	if s.tsih == 0 && resp.TSIH == 0 { // before full feature, the window comes from every response
		s.expCmdSN, s.maxCmdSN = resp.ExpCmdSN, resp.MaxCmdSN
	}
	return resp, pdu.Data, nil
}

// login runs the login phase: security negotiation (None or CHAP), then
// operational negotiation, until the target admits the session to full
// feature phase.
func (s *Session) login(ctx context.Context, sessionType string) error {
	cfg := s.cfg
	deadline := time.Now().Add(cfg.LoginTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = s.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	want := proto.DefaultParams()
	want.MaxRecvDataSegmentLength = cfg.MaxRecvDataSegmentLength
	want.MaxBurstLength = cfg.MaxBurstLength
	want.FirstBurstLength = min(cfg.FirstBurstLength, cfg.MaxBurstLength)
	want.InitialR2T = cfg.InitialR2T
	want.ImmediateData = !cfg.NoImmediateData
	want.HeaderDigest, want.DataDigest = cfg.HeaderDigest, cfg.DataDigest
	want.DefaultTime2Wait, want.DefaultTime2Retain = 0, 0
	neg := proto.NewNegotiator(false, want)

	useCHAP := !cfg.CHAP.IsZero()
	mutual := !cfg.MutualCHAP.IsZero()
	kvs := []proto.KeyValue{{Key: "InitiatorName", Value: cfg.InitiatorIQN}, {Key: "SessionType", Value: sessionType}}
	if sessionType == "Normal" {
		kvs = append(kvs, proto.KeyValue{Key: "TargetName", Value: cfg.TargetIQN})
	}
	authMethod := "None"
	if useCHAP {
		authMethod = "CHAP"
	}
	kvs = append(kvs, proto.KeyValue{Key: "AuthMethod", Value: authMethod})

	var (
		csg            = uint8(proto.StageSecurity)
		authDone       = !useCHAP
		chapStep       int // 1: CHAP_A sent, 2: CHAP_R sent
		myID           byte
		myChallenge    []byte
		targetAnswered bool
	)
	for round := 0; round < 32; round++ {
		req := &proto.LoginRequest{CSG: csg, ISID: s.isid}
		switch csg {
		case proto.StageSecurity:
			req.Transit = authDone || chapStep == 2
			req.NSG = proto.StageOperational
		case proto.StageOperational:
			req.Transit, req.NSG = true, proto.StageFullFeature
		}
		if !req.Transit {
			req.NSG = 0
		}
		resp, got, err := s.loginExchange(req, kvs)
		if err != nil {
			return err
		}
		if resp.CSG != csg {
			return s.protocolErr("login response in stage %d, request was in %d", resp.CSG, csg)
		}
		kvs = nil
		switch csg {
		case proto.StageSecurity:
			for _, kv := range got {
				switch kv.Key {
				case "AuthMethod":
					if kv.Value != authMethod {
						return fmt.Errorf("login to %s: target chose AuthMethod %q, offered %q: %w", cfg.TargetIQN, kv.Value, authMethod, proto.LoginAuthFailure)
					}
					if useCHAP && chapStep == 0 {
						kvs = append(kvs, proto.KeyValue{Key: "CHAP_A", Value: strconv.Itoa(proto.CHAPAlgorithmMD5)})
						chapStep = 1
					}
				case "TargetPortalGroupTag", "TargetAlias":
					neg.Declared[kv.Key] = kv.Value
				}
			}
			if a, ok := proto.Lookup(got, "CHAP_A"); ok && chapStep == 1 {
				if a != strconv.Itoa(proto.CHAPAlgorithmMD5) {
					return fmt.Errorf("login: target chose CHAP_A=%s: %w", a, proto.LoginAuthFailure)
				}
				idStr, _ := proto.Lookup(got, "CHAP_I")
				chStr, _ := proto.Lookup(got, "CHAP_C")
				id, err := strconv.ParseUint(idStr, 10, 8)
				if err != nil {
					return s.protocolErr("CHAP_I %q", idStr)
				}
				ch, err := proto.ParseCHAPBinary(chStr)
				if err != nil {
					return s.protocolErr("CHAP_C: %v", err)
				}
				kvs = append(kvs, proto.KeyValue{Key: "CHAP_N", Value: cfg.CHAP.User},
					proto.KeyValue{Key: "CHAP_R", Value: proto.FormatCHAPBinary(proto.CHAPResponse(byte(id), cfg.CHAP.Secret, ch))})
				if mutual {
					var b [1 + proto.CHAPChallengeLength]byte
					_, _ = rand.Read(b[:])
					myID, myChallenge = b[0], b[1:]
					if string(myChallenge) == string(ch) {
						myChallenge[0] ^= 0xff // never reflect the target's challenge
					}
					kvs = append(kvs, proto.KeyValue{Key: "CHAP_I", Value: strconv.Itoa(int(myID))},
						proto.KeyValue{Key: "CHAP_C", Value: proto.FormatCHAPBinary(myChallenge)})
				}
				chapStep = 2
				continue
			}
			if n, ok := proto.Lookup(got, "CHAP_N"); ok && mutual && chapStep == 2 {
				r, _ := proto.Lookup(got, "CHAP_R")
				rb, err := proto.ParseCHAPBinary(r)
				if err != nil || n != cfg.MutualCHAP.User || !proto.CHAPVerify(myID, cfg.MutualCHAP.Secret, myChallenge, rb) {
					return fmt.Errorf("login to %s: the target failed mutual CHAP: %w", cfg.TargetIQN, proto.LoginAuthFailure)
				}
				targetAnswered = true
			}
			if resp.Transit {
				if useCHAP && chapStep != 2 || mutual && !targetAnswered {
					return fmt.Errorf("login to %s: target skipped CHAP: %w", cfg.TargetIQN, proto.LoginAuthFailure)
				}
				authDone = true
				csg = resp.NSG
				if csg == proto.StageOperational {
					kvs = neg.Offer()
				}
			} else if chapStep == 2 {
				authDone = true // CHAP_R sent; keep asking to move on
			}
		case proto.StageOperational:
			reply, err := neg.Receive(got)
			if err != nil {
				return fmt.Errorf("login to %s: %w", cfg.TargetIQN, err)
			}
			kvs = reply
			if resp.Transit {
				csg = resp.NSG
			}
		}
		if csg == proto.StageFullFeature {
			if !resp.Transit || resp.NSG != proto.StageFullFeature {
				return s.protocolErr("login ended without a transit to full feature phase")
			}
			params, err := neg.Result()
			if err != nil {
				return err
			}
			if params.MaxXmitDataSegmentLength == 0 {
				params.MaxXmitDataSegmentLength = 8192
			}
			s.params = params
			s.tsih = resp.TSIH
			s.expCmdSN, s.maxCmdSN = resp.ExpCmdSN, resp.MaxCmdSN
			s.r.MaxData = int(params.MaxRecvDataSegmentLength)
			s.r.Digests = proto.Digests{Header: params.HeaderDigest, Data: params.DataDigest}
			s.w.Digests = s.r.Digests
			_ = s.nc.SetDeadline(time.Time{})
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
	}
	return s.protocolErr("login did not finish in 32 exchanges")
}

// DiscoveredTarget is one SendTargets answer.
type DiscoveredTarget struct {
	Name      string
	Addresses []string // "host:port,tpgt"
}

// Discover opens a discovery session to cfg.Portal and lists its targets
// (SendTargets=All).
func Discover(ctx context.Context, cfg Config) ([]DiscoveredTarget, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer s.nc.Close()
	if err := s.login(ctx, "Discovery"); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(cfg.CommandTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = s.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := &proto.TextRequest{Final: true, ITT: 1, TTT: proto.ReservedTag, CmdSN: s.cmdSN}
	data := proto.EncodeText(nil, []proto.KeyValue{{Key: "SendTargets", Value: "All"}})
	var asm proto.TextAssembler
	var kvs []proto.KeyValue
	for {
		req.ExpStatSN = s.expStatSN.Load()
		if err := s.w.WriteHeader(req, data); err != nil {
			return nil, fmt.Errorf("%w: send SendTargets: %w", ErrSessionLost, err)
		}
		s.cmdSN++
		var pdu proto.PDU
		if err := s.r.ReadPDU(&pdu); err != nil {
			return nil, fmt.Errorf("%w: read SendTargets: %w", ErrSessionLost, err)
		}
		h, err := proto.Decode(&pdu.BHS)
		if err != nil {
			return nil, s.protocolErr("%v", err)
		}
		resp, ok := h.(*proto.TextResponse)
		if !ok {
			return nil, s.protocolErr("%s in answer to SendTargets", pdu.BHS.Opcode())
		}
		s.noteStatSN(resp.StatSN)
		got, complete, err := asm.Add(pdu.Data, resp.Continue)
		if err != nil {
			return nil, s.protocolErr("SendTargets text: %v", err)
		}
		if complete && resp.Final {
			kvs = got
			break
		}
		// More to come: an empty request echoing the target's tag.
		req = &proto.TextRequest{Final: true, ITT: 1, TTT: resp.TTT, CmdSN: s.cmdSN}
		data = nil
	}
	var out []DiscoveredTarget
	for _, kv := range kvs {
		switch kv.Key {
		case "TargetName":
			out = append(out, DiscoveredTarget{Name: kv.Value})
		case "TargetAddress":
			if len(out) == 0 {
				return nil, s.protocolErr("TargetAddress before TargetName")
			}
			out[len(out)-1].Addresses = append(out[len(out)-1].Addresses, kv.Value)
		}
	}
	_ = s.w.WriteHeader(&proto.LogoutRequest{Immediate: true, Reason: proto.LogoutCloseSession, ITT: 2, CmdSN: s.cmdSN,
		ExpStatSN: s.expStatSN.Load()}, nil)
	var pdu proto.PDU
	_ = s.r.ReadPDU(&pdu) // best effort: the answer does not change the result
	return out, nil
}
