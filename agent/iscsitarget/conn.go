package iscsitarget

import (
	"bufio"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ingot-dev/ingot/shared/iscsi"
)

// cmdWindow is how many commands past ExpCmdSN an initiator may queue.
const cmdWindow = 128

// maxPendingTasks bounds tasks waiting for Data-Out per connection.
const maxPendingTasks = 256

// session is the state of one logged-in initiator (one connection, ERL 0).
type session struct {
	initiator string
	isid      [6]byte
	tsih      uint16
	// ua is a pending unit attention (ASC<<8|ASCQ), 0 for none; other
	// sessions set it (LOGICAL UNIT RESET), so it is atomic.
	ua atomic.Uint32
}

// task is a command waiting for Data-Out.
type task struct {
	itt      uint32
	lun      uint64
	cmd      *command
	edtl     uint32
	xfer     uint32 // bytes accepted: min(cmd.length, edtl)
	got      uint32
	unsolEnd uint32 // unsolicited data may fill [0, unsolEnd)
	unsolAt  uint32 // next expected unsolicited offset
	unsol    bool   // unsolicited Data-Out may still arrive
	unsolSN  uint32 // next expected DataSN of the unsolicited sequence
	next     uint32 // next offset to solicit
	r2tsn    uint32
	r2ts     []*r2t
}

type r2t struct {
	ttt, off, length, got uint32
	datasn                uint32 // next expected DataSN of this sequence
}

// errProtocol ends a connection after a protocol violation.
var errProtocol = errors.New("iscsi protocol error")

type conn struct {
	t   *Target
	nc  net.Conn
	log *slog.Logger
	r   *iscsi.Reader
	w   *iscsi.Writer

	sess      *session
	discovery bool
	params    iscsi.Params
	statSN    uint32
	expCmdSN  uint32
	tasks     map[uint32]*task
	ttt       uint32
	text      iscsi.TextAssembler
	hdr       iscsi.BHS
	buf       []byte // Data-Out payloads
	rbuf      []byte // Data-In payloads
	scratch   []byte // read-compare space
	loginPDU  iscsi.PDU
	portalTag uint16
}

func newConn(t *Target, nc net.Conn) *conn {
	return &conn{
		t:         t,
		nc:        nc,
		log:       t.log.With("remote", nc.RemoteAddr().String()),
		r:         iscsi.NewReader(bufio.NewReaderSize(nc, 64<<10)),
		w:         iscsi.NewWriter(nc),
		tasks:     map[uint32]*task{},
		portalTag: 1,
	}
}

func (c *conn) serve() {
	if err := c.login(); err != nil {
		c.log.Info("iscsi login failed", "err", err)
		return
	}
	c.buf = make([]byte, c.params.MaxRecvDataSegmentLength)
	c.scratch = make([]byte, c.params.MaxRecvDataSegmentLength)
	c.rbuf = make([]byte, min(c.params.MaxXmitDataSegmentLength, 1<<20))
	for {
		err := c.r.ReadHeader(&c.hdr)
		if err == nil {
			err = c.dispatch()
		}
		if err != nil {
			if errors.Is(err, errLogout) {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				c.log.Debug("iscsi connection closed")
			} else {
				c.log.Info("iscsi connection ended", "err", err)
			}
			return
		}
	}
}

var errLogout = errors.New("logged out")

func (c *conn) dispatch() error {
	h, err := iscsi.Decode(&c.hdr)
	if err != nil {
		return c.reject(iscsi.RejectNotSupported)
	}
	if c.discovery {
		switch h.(type) {
		case *iscsi.TextRequest, *iscsi.LogoutRequest, *iscsi.NOPOut:
		default:
			return c.reject(iscsi.RejectProtocolError)
		}
	}
	switch p := h.(type) {
	case *iscsi.NOPOut:
		return c.nopOut(p)
	case *iscsi.SCSICommand:
		return c.scsiCommand(p)
	case *iscsi.DataOut:
		return c.dataOut(p)
	case *iscsi.TaskMgmtRequest:
		return c.taskMgmt(p)
	case *iscsi.TextRequest:
		return c.textRequest(p)
	case *iscsi.LogoutRequest:
		return c.logout(p)
	case *iscsi.SNACKRequest:
		return c.reject(iscsi.RejectProtocolError) // ERL 0: no SNACK
	}
	// A target opcode or a Login Request in full feature phase.
	if err := c.reject(iscsi.RejectProtocolError); err != nil {
		return err
	}
	return fmt.Errorf("%w: %s in full feature phase", errProtocol, c.hdr.Opcode())
}

// reject answers the current PDU with a Reject carrying its header.
func (c *conn) reject(reason uint8) error {
	hdr := c.hdr
	if err := c.r.Discard(); err != nil {
		return err
	}
	return c.w.WriteHeader(&iscsi.Reject{Reason: reason, SN: c.nextSN()}, hdr[:])
}

// sn is the sequence triple for a PDU that does not consume a StatSN.
func (c *conn) sn() iscsi.SN {
	return iscsi.SN{StatSN: c.statSN, ExpCmdSN: c.expCmdSN, MaxCmdSN: c.expCmdSN + cmdWindow - 1}
}

// nextSN is the triple for a status-bearing PDU; it consumes a StatSN.
func (c *conn) nextSN() iscsi.SN {
	s := c.sn()
	c.statSN++
	s.ExpCmdSN, s.MaxCmdSN = c.expCmdSN, c.expCmdSN+cmdWindow-1
	return s
}

// admit applies the CmdSN rules (RFC 7143 §4.2.2.1) to a request: an
// immediate request is always delivered; a non-immediate one only with
// CmdSN == ExpCmdSN, which it then consumes. Anything else (outside the
// window or a gap, which one connection cannot produce) is silently
// ignored.
func (c *conn) admit(cmdSN uint32, immediate bool) bool {
	if immediate {
		return true
	}
	if cmdSN != c.expCmdSN {
		c.log.Debug("iscsi command ignored: CmdSN outside the window", "cmdsn", cmdSN, "expcmdsn", c.expCmdSN)
		return false
	}
	c.expCmdSN++
	return true
}

func (c *conn) nopOut(p *iscsi.NOPOut) error {
	if p.ITT == iscsi.ReservedTag { // answer to a NOP-In of ours, or "no reply wanted"
		return c.r.Discard()
	}
	n := c.hdr.DataSegmentLength()
	data := c.buf[:n]
	if err := c.r.ReadData(data); err != nil {
		return err
	}
	if !c.admit(p.CmdSN, p.Immediate) {
		return nil
	}
	return c.w.WriteHeader(&iscsi.NOPIn{LUN: p.LUN, ITT: p.ITT, TTT: iscsi.ReservedTag, SN: c.nextSN()}, data)
}

func (c *conn) scsiCommand(p *iscsi.SCSICommand) error {
	n := c.hdr.DataSegmentLength()
	imm := c.buf[:n]
	if err := c.r.ReadData(imm); err != nil {
		return err
	}
	if !c.admit(p.CmdSN, p.Immediate) {
		return nil
	}
	if n > 0 && (!c.params.ImmediateData || !p.Write) {
		return c.protocolError("immediate data not allowed")
	}
	if _, dup := c.tasks[p.ITT]; dup {
		return c.protocolError("ITT already in use")
	}
	lun, ok := iscsi.ParseLUN(p.LUN)
	cdb := p.CDB[:]
	if !ok || lun != 1 {
		return c.respond(p, nil, c.noDevice(cdb))
	}
	if p.Read && p.Write {
		return c.respond(p, nil, check(*invalidField(0, -1)))
	}
	if ua := c.sess.ua.Load(); ua != 0 && cdb[0] != opInquiry && cdb[0] != opReportLUNs && cdb[0] != opRequestSense {
		c.sess.ua.Store(0)
		return c.respond(p, nil, check(iscsi.Sense{Key: iscsi.SenseUnitAttention, ASC: uint8(ua >> 8), ASCQ: uint8(ua)}))
	}
	cmd, sense := c.t.lu.decode(cdb)
	if sense != nil {
		return c.respond(p, nil, check(*sense))
	}
	switch cmd.kind {
	case dataNone, dataIn:
		return c.respond(p, cmd, c.t.lu.execute(cmd, cdb))
	case dataRead:
		return c.read(p, cmd)
	}
	// dataOut, dataParam: collect the data-out buffer.
	if len(c.tasks) >= maxPendingTasks {
		return c.writeStatus(p.ITT, result{status: iscsi.StatusTaskSetFull}, 0, false, false)
	}
	t := &task{itt: p.ITT, lun: p.LUN, cmd: cmd, edtl: p.ExpectedDataTransferLength}
	t.xfer = min(cmd.length, t.edtl)
	if cmd.kind == dataParam {
		cmd.param = make([]byte, t.xfer)
	}
	if !p.Final {
		if c.params.InitialR2T && !(n > 0 && uint32(n) >= t.xfer) {
			return c.protocolError("unsolicited data announced with InitialR2T=Yes")
		}
		t.unsol = true
		t.unsolEnd = min(c.params.FirstBurstLength, t.edtl)
	}
	t.unsolAt = uint32(n)
	c.accept(t, imm, 0)
	c.tasks[p.ITT] = t
	return c.advance(t)
}

// accept applies data at offset off of t's data-out buffer.
func (c *conn) accept(t *task, data []byte, off uint32) {
	end := off + uint32(len(data))
	if off >= t.xfer {
		return
	}
	if end > t.xfer {
		data = data[:t.xfer-off]
	}
	if t.cmd.kind == dataParam {
		copy(t.cmd.param[off:], data)
	} else {
		c.t.lu.consume(t.cmd, data, off, c.scratch)
	}
	t.got += uint32(len(data))
}

// advance completes t when all its data is in, or solicits more.
func (c *conn) advance(t *task) error {
	if t.got >= t.xfer && len(t.r2ts) == 0 {
		if t.unsol && t.unsolAt < t.unsolEnd {
			return nil // unsolicited Data-Out still on its way; wait for F
		}
		delete(c.tasks, t.itt)
		var res result
		if t.cmd.kind == dataParam {
			res = c.t.lu.execute(t.cmd, []byte{t.cmd.op})
		} else {
			res = c.t.lu.finish(t.cmd)
		}
		return c.respondOut(t, res)
	}
	if t.unsol {
		return nil // solicit only after the unsolicited burst ended
	}
	if t.next < t.got {
		t.next = t.got
	}
	maxR2T := int(max(c.params.MaxOutstandingR2T, 1))
	for len(t.r2ts) < maxR2T && t.next < t.xfer {
		length := min(c.params.MaxBurstLength, t.xfer-t.next)
		c.ttt++
		if c.ttt == iscsi.ReservedTag {
			c.ttt = 1
		}
		r := &r2t{ttt: c.ttt, off: t.next, length: length}
		t.r2ts = append(t.r2ts, r)
		t.next += length
		if err := c.w.WriteHeader(&iscsi.R2T{LUN: t.lun, ITT: t.itt, TTT: r.ttt, SN: c.sn(), R2TSN: t.r2tsn,
			BufferOffset: r.off, DesiredDataTransferLength: length}, nil); err != nil {
			return err
		}
		t.r2tsn++
	}
	return nil
}

func (c *conn) dataOut(p *iscsi.DataOut) error {
	t := c.tasks[p.ITT]
	if t == nil {
		// Data for a command that already failed, was aborted or was
		// ignored for its CmdSN: drop it.
		return c.r.Discard()
	}
	n := uint32(c.hdr.DataSegmentLength())
	data := c.buf[:n]
	if err := c.r.ReadData(data); err != nil {
		return err
	}
	if p.TTT == iscsi.ReservedTag {
		if !t.unsol || p.BufferOffset != t.unsolAt || p.BufferOffset+n > t.unsolEnd || p.DataSN != t.unsolSN {
			return c.protocolError(fmt.Sprintf("unexpected unsolicited Data-Out at offset %d", p.BufferOffset))
		}
		c.accept(t, data, p.BufferOffset)
		t.unsolAt += n
		t.unsolSN++
		if p.Final {
			t.unsol = false
		}
		return c.advance(t)
	}
	for i, r := range t.r2ts {
		if r.ttt != p.TTT {
			continue
		}
		if p.BufferOffset != r.off+r.got || r.got+n > r.length {
			return c.protocolError(fmt.Sprintf("Data-Out offset %d outside the R2T", p.BufferOffset))
		}
		if p.DataSN != r.datasn {
			return c.protocolError(fmt.Sprintf("Data-Out DataSN %d, want %d", p.DataSN, r.datasn))
		}
		r.datasn++
		c.accept(t, data, p.BufferOffset)
		r.got += n
		if p.Final || r.got == r.length {
			if r.got != r.length {
				return c.protocolError("R2T sequence ended early")
			}
			t.r2ts = append(t.r2ts[:i], t.r2ts[i+1:]...)
		}
		return c.advance(t)
	}
	return c.protocolError("Data-Out for an unknown target transfer tag")
}

// protocolError rejects the current PDU and ends the connection.
func (c *conn) protocolError(why string) error {
	if err := c.reject(iscsi.RejectProtocolError); err != nil {
		return err
	}
	return fmt.Errorf("%w: %s", errProtocol, why)
}

// noDevice answers commands addressed to a LUN other than 1.
func (c *conn) noDevice(cdb []byte) result {
	switch cdb[0] {
	case opInquiry:
		r := c.t.lu.inquiry(cdb)
		if r.status == iscsi.StatusGood && cdb[1]&0x01 == 0 {
			r.data[0] = 0x7f // peripheral qualifier 3: no device at this LUN
		} else if r.status == iscsi.StatusGood {
			r = check(senseLUNUnsupported())
		}
		return r
	case opReportLUNs:
		return good(reportLUNs(cdb[2]))
	case opRequestSense:
		s := senseLUNUnsupported()
		s.Descriptor = cdb[1]&0x01 != 0
		return good(s.Marshal())
	}
	return check(senseLUNUnsupported())
}

// respond completes a command that has no data-out phase. Data-in is
// truncated to the allocation length and EDTL, and residuals reported
// (RFC 7143 §11.4.5).
func (c *conn) respond(p *iscsi.SCSICommand, cmd *command, res result) error {
	edtl := p.ExpectedDataTransferLength
	data := res.data
	if res.status != iscsi.StatusGood {
		data = nil
	}
	limit := allocLen(p.CDB[:])
	if cmd != nil {
		limit = cmd.length
	}
	if uint32(len(data)) > limit {
		data = data[:limit]
	}
	if !p.Read {
		edtl = 0 // the initiator has no buffer for data-in
	}
	var resid uint32
	over, under := false, false
	switch {
	case uint32(len(data)) > edtl:
		over, resid = true, uint32(len(data))-edtl
		data = data[:edtl]
	case uint32(len(data)) < p.ExpectedDataTransferLength:
		under, resid = true, p.ExpectedDataTransferLength-uint32(len(data))
	}
	if len(data) == 0 {
		return c.writeStatus(p.ITT, res, resid, under, over)
	}
	var dsn uint32
	return c.sendData(p.LUN, p.ITT, data, 0, &dsn, true, res.status, over, under, resid)
}

// allocLen is the allocation length of the data-in commands answered for
// LUNs without a device.
func allocLen(cdb []byte) uint32 {
	switch cdb[0] {
	case opInquiry:
		return uint32(cdb[3])<<8 | uint32(cdb[4])
	case opReportLUNs:
		return uint32(cdb[6])<<24 | uint32(cdb[7])<<16 | uint32(cdb[8])<<8 | uint32(cdb[9])
	case opRequestSense:
		return uint32(cdb[4])
	}
	return 0
}

// sendData sends data as Data-In PDUs at buffer offset off, numbering
// them from *dsn; with last, the final PDU carries the status (phase
// collapse). F marks the end of each MaxBurstLength sequence.
func (c *conn) sendData(lun uint64, itt uint32, data []byte, off uint32, dsn *uint32, last bool, status uint8, over, under bool, resid uint32) error {
	maxSeg := int(c.params.MaxXmitDataSegmentLength)
	burst := c.params.MaxBurstLength
	for len(data) > 0 {
		k := min(len(data), maxSeg)
		if rem := burst - off%burst; uint32(k) > rem {
			k = int(rem)
		}
		end := off + uint32(k)
		final := last && k == len(data)
		p := &iscsi.DataIn{LUN: lun, ITT: itt, TTT: iscsi.ReservedTag, DataSN: *dsn, BufferOffset: off,
			Final: final || end%burst == 0}
		*dsn++
		if final {
			p.HasStatus, p.Status = true, status
			p.Overflow, p.Underflow, p.ResidualCount = over, under, resid
			p.SN = c.nextSN()
		} else {
			p.SN = c.sn()
		}
		if err := c.w.WriteHeader(p, data[:k]); err != nil {
			return err
		}
		data, off = data[k:], end
	}
	return nil
}

// read streams a READ from the device as Data-In PDUs.
func (c *conn) read(p *iscsi.SCSICommand, cmd *command) error {
	edtl := p.ExpectedDataTransferLength
	total := min(cmd.length, edtl)
	over, under := cmd.length > edtl, cmd.length < edtl
	resid := max(cmd.length, edtl) - total
	if total == 0 {
		return c.writeStatus(p.ITT, good(nil), resid, under, over)
	}
	var dsn uint32
	for off := uint32(0); off < total; {
		k := min(uint32(len(c.rbuf)), total-off)
		if s := c.t.lu.readAt(cmd, c.rbuf[:k], off); s != nil {
			return c.writeStatus(p.ITT, check(*s), 0, false, false)
		}
		last := off+k == total
		if err := c.sendData(p.LUN, p.ITT, c.rbuf[:k], off, &dsn, last, iscsi.StatusGood, over, under, resid); err != nil {
			return err
		}
		off += k
	}
	return nil
}

// respondOut completes a data-out command.
func (c *conn) respondOut(t *task, res result) error {
	var resid uint32
	under, over := false, false
	switch {
	case t.cmd.length > t.edtl:
		over, resid = true, t.cmd.length-t.edtl
	case t.cmd.length < t.edtl:
		under, resid = true, t.edtl-t.cmd.length
	}
	return c.writeStatus(t.itt, res, resid, under, over)
}

// writeStatus sends a SCSI Response, with sense data for CHECK CONDITION.
func (c *conn) writeStatus(itt uint32, res result, resid uint32, under, over bool) error {
	var data []byte
	if res.sense != nil {
		data = iscsi.SenseSegment(res.sense.Marshal())
	}
	if resid == 0 {
		under, over = false, false
	}
	return c.w.WriteHeader(&iscsi.SCSIResponse{Response: iscsi.ResponseCompleted, Status: res.status, ITT: itt,
		SN: c.nextSN(), Underflow: under, Overflow: over, ResidualCount: resid}, data)
}

func (c *conn) taskMgmt(p *iscsi.TaskMgmtRequest) error {
	if err := c.r.Discard(); err != nil {
		return err
	}
	if !c.admit(p.CmdSN, p.Immediate) {
		return nil
	}
	resp := uint8(iscsi.TMFFunctionComplete)
	lun, ok := iscsi.ParseLUN(p.LUN)
	abortLUN := func() {
		for itt, t := range c.tasks {
			if t.lun == p.LUN {
				delete(c.tasks, itt)
			}
		}
	}
	cold := false
	switch p.Function {
	case iscsi.TMFAbortTask:
		if t := c.tasks[p.RTT]; t != nil && t.lun == p.LUN {
			delete(c.tasks, p.RTT)
		} else {
			resp = iscsi.TMFTaskDoesNotExist
		}
	case iscsi.TMFAbortTaskSet, iscsi.TMFClearTaskSet:
		abortLUN()
	case iscsi.TMFLogicalUnitReset:
		if !ok || lun != 1 {
			resp = iscsi.TMFLUNDoesNotExist
			break
		}
		abortLUN()
		c.t.otherSessions(c, func(s *session) { s.ua.Store(iscsi.ASCBusDeviceReset) })
	case iscsi.TMFTargetWarmReset:
		clear(c.tasks)
		c.t.otherSessions(c, func(s *session) { s.ua.Store(iscsi.ASCPowerOnReset) })
	case iscsi.TMFTargetColdReset:
		clear(c.tasks)
		cold = true
	case iscsi.TMFClearACA:
		resp = iscsi.TMFNotSupported
	case iscsi.TMFTaskReassign:
		resp = iscsi.TMFReassignNotSupported
	default:
		resp = iscsi.TMFRejected
	}
	if err := c.w.WriteHeader(&iscsi.TaskMgmtResponse{Response: resp, ITT: p.ITT, SN: c.nextSN()}, nil); err != nil {
		return err
	}
	if cold {
		c.t.closeAll()
		return errLogout
	}
	return nil
}

func (c *conn) textRequest(p *iscsi.TextRequest) error {
	data := make([]byte, c.hdr.DataSegmentLength())
	if err := c.r.ReadData(data); err != nil {
		return err
	}
	if !c.admit(p.CmdSN, p.Immediate) {
		return nil
	}
	kvs, complete, err := c.text.Add(data, p.Continue)
	if err != nil {
		return c.protocolError(err.Error())
	}
	if !complete { // ask for the rest
		return c.w.WriteHeader(&iscsi.TextResponse{LUN: p.LUN, ITT: p.ITT, TTT: 1, SN: c.nextSN()}, nil)
	}
	var reply []iscsi.KeyValue
	for _, kv := range kvs {
		if kv.Key != "SendTargets" {
			reply = append(reply, iscsi.KeyValue{Key: kv.Key, Value: iscsi.ValueNotUnderstood})
			continue
		}
		if kv.Value == "All" || kv.Value == c.t.cfg.IQN || kv.Value == "" && !c.discovery {
			reply = append(reply, iscsi.KeyValue{Key: "TargetName", Value: c.t.cfg.IQN},
				iscsi.KeyValue{Key: "TargetAddress", Value: c.portal()})
		}
	}
	return c.w.WriteHeader(&iscsi.TextResponse{Final: true, LUN: p.LUN, ITT: p.ITT, TTT: iscsi.ReservedTag, SN: c.nextSN()},
		iscsi.EncodeText(nil, reply))
}

// portal is this connection's local address as a TargetAddress value.
func (c *conn) portal() string {
	a, ok := c.nc.LocalAddr().(*net.TCPAddr)
	if !ok {
		return c.nc.LocalAddr().String() + "," + strconv.Itoa(int(c.portalTag))
	}
	return net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port)) + "," + strconv.Itoa(int(c.portalTag))
}

func (c *conn) logout(p *iscsi.LogoutRequest) error {
	if err := c.r.Discard(); err != nil {
		return err
	}
	if !c.admit(p.CmdSN, p.Immediate) {
		return nil
	}
	resp := uint8(0)
	if p.Reason == iscsi.LogoutRemoveRecovery {
		resp = 2 // connection recovery is not supported (ERL 0)
	}
	if err := c.w.WriteHeader(&iscsi.LogoutResponse{Response: resp, ITT: p.ITT, SN: c.nextSN()}, nil); err != nil {
		return err
	}
	if resp != 0 {
		return nil
	}
	c.log.Debug("iscsi logout")
	return errLogout
}

// login runs the login phase (RFC 7143 §6.3) and leaves c in full feature
// phase on success.
func (c *conn) login() error {
	cfg := &c.t.cfg
	_ = c.nc.SetDeadline(time.Now().Add(cfg.LoginTimeout))
	neg := iscsi.NewNegotiator(true, c.t.want)
	var (
		first    = true
		sentTPGT bool
		auth     chapState
		declared bool
		asm      iscsi.TextAssembler
		sess     = &session{}
		req      *iscsi.LoginRequest
		mustCHAP = cfg.CHAPUser != ""
	)
	fail := func(st iscsi.LoginStatus) error {
		var isid [6]byte
		var itt uint32
		if req != nil {
			isid, itt = req.ISID, req.ITT
		}
		_ = c.w.WriteHeader(&iscsi.LoginResponse{ISID: isid, ITT: itt, SN: c.sn(),
			StatusClass: st.Class(), StatusDetail: st.Detail()}, nil)
		return st
	}
	for {
		p := &c.loginPDU
		if err := c.r.ReadPDU(p); err != nil {
			return fmt.Errorf("read login request: %w", err)
		}
		if p.BHS.Opcode() != iscsi.OpLoginRequest {
			if first {
				return fmt.Errorf("%w: %s before login", errProtocol, p.BHS.Opcode())
			}
			return fail(iscsi.LoginInitiatorError)
		}
		h, _ := iscsi.Decode(&p.BHS)
		req = h.(*iscsi.LoginRequest)
		if first {
			c.statSN = req.ExpStatSN
			c.expCmdSN = req.CmdSN
			sess.isid = req.ISID
		}
		if req.VersionMin > 0 {
			return fail(iscsi.LoginUnsupportedVersion)
		}
		kvs, complete, err := asm.Add(p.Data, req.Continue)
		if err != nil {
			return fail(iscsi.LoginInitiatorError)
		}
		if !complete {
			if err := c.w.WriteHeader(&iscsi.LoginResponse{CSG: req.CSG, ISID: req.ISID, ITT: req.ITT, SN: c.nextSN()}, nil); err != nil {
				return err
			}
			continue
		}
		if first {
			first = false
			if st := c.identify(kvs, req, sess); st != iscsi.LoginSuccess {
				return fail(st)
			}
		}
		var reply []iscsi.KeyValue
		transit := req.Transit
		switch req.CSG {
		case iscsi.StageSecurity:
			r, st := auth.step(cfg, kvs)
			if st != iscsi.LoginSuccess {
				return fail(st)
			}
			reply = r
			if !auth.done {
				if mustCHAP {
					transit = false // keep authenticating
				} else if _, asked := iscsi.Lookup(kvs, "AuthMethod"); !asked {
					auth.done = true // no AuthMethod offered: None by default
				}
			}
			if transit && !auth.done {
				transit = false
			}
			if transit && req.NSG != iscsi.StageOperational && req.NSG != iscsi.StageFullFeature {
				return fail(iscsi.LoginInitiatorError)
			}
		case iscsi.StageOperational:
			if mustCHAP && !auth.done {
				return fail(iscsi.LoginAuthFailure)
			}
			for _, kv := range kvs {
				if kv.Key == "AuthMethod" || len(kv.Key) > 5 && kv.Key[:5] == "CHAP_" {
					return fail(iscsi.LoginInitiatorError)
				}
			}
			r, err := neg.Receive(kvs)
			if err != nil {
				return fail(iscsi.LoginInitiatorError)
			}
			reply = r
			if !declared {
				declared = true
				reply = append(reply, neg.Offer("MaxRecvDataSegmentLength")...)
			}
			if transit && req.NSG != iscsi.StageFullFeature {
				return fail(iscsi.LoginInitiatorError)
			}
		default:
			return fail(iscsi.LoginInitiatorError)
		}
		if !sentTPGT && !c.discovery {
			// The first response of a normal session names the portal group.
			sentTPGT = true
			reply = append(reply, iscsi.KeyValue{Key: "TargetPortalGroupTag", Value: strconv.Itoa(int(c.portalTag))})
		}
		resp := &iscsi.LoginResponse{Transit: transit, CSG: req.CSG, ISID: req.ISID, ITT: req.ITT, SN: c.nextSN()}
		if transit {
			resp.NSG = req.NSG
		}
		full := transit && req.NSG == iscsi.StageFullFeature
		var params iscsi.Params
		if full {
			if params, err = neg.Result(); err != nil {
				return fail(iscsi.LoginInitiatorError)
			}
			if mustCHAP && !auth.done {
				return fail(iscsi.LoginAuthFailure)
			}
			sess.tsih = c.t.newTSIH()
			resp.TSIH = sess.tsih
		}
		resp.SN.ExpCmdSN, resp.SN.MaxCmdSN = c.expCmdSN, c.expCmdSN+cmdWindow-1
		if err := c.w.WriteHeader(resp, iscsi.EncodeText(nil, reply)); err != nil {
			return err
		}
		if full {
			c.params = params
			c.r.MaxData = int(params.MaxRecvDataSegmentLength)
			c.r.Digests = iscsi.Digests{Header: params.HeaderDigest, Data: params.DataDigest}
			c.w.Digests = c.r.Digests
			sess.ua.Store(iscsi.ASCPowerOnReset)
			c.t.mu.Lock()
			c.sess = sess
			c.t.mu.Unlock()
			c.t.register(c)
			_ = c.nc.SetDeadline(time.Time{})
			c.log.Info("iscsi login", "initiator", sess.initiator, "discovery", c.discovery, "tsih", sess.tsih,
				"max_recv", params.MaxRecvDataSegmentLength, "max_xmit", params.MaxXmitDataSegmentLength,
				"max_burst", params.MaxBurstLength, "first_burst", params.FirstBurstLength,
				"initial_r2t", params.InitialR2T, "immediate_data", params.ImmediateData,
				"header_digest", params.HeaderDigest, "data_digest", params.DataDigest)
			return nil
		}
	}
}

// identify checks the first login request's names.
func (c *conn) identify(kvs []iscsi.KeyValue, req *iscsi.LoginRequest, sess *session) iscsi.LoginStatus {
	name, ok := iscsi.Lookup(kvs, "InitiatorName")
	if !ok || name == "" {
		return iscsi.LoginMissingParameter
	}
	sess.initiator = name
	st, _ := iscsi.Lookup(kvs, "SessionType")
	switch st {
	case "", "Normal":
		tn, ok := iscsi.Lookup(kvs, "TargetName")
		if !ok {
			return iscsi.LoginMissingParameter
		}
		if tn != c.t.cfg.IQN {
			return iscsi.LoginNotFound
		}
	case "Discovery":
		c.discovery = true
	default:
		return iscsi.LoginSessionTypeNotSupp
	}
	if req.TSIH != 0 {
		return iscsi.LoginSessionDoesNotExist // no connections are added to sessions (MaxConnections=1)
	}
	return iscsi.LoginSuccess
}

// chapState follows the security negotiation of one login.
type chapState struct {
	method    string // "", "None", "CHAP"
	challenge []byte
	id        byte
	sent      bool // CHAP_A/I/C sent, waiting for CHAP_N/R
	done      bool
}

// step handles the security keys of one login request.
func (a *chapState) step(cfg *Config, kvs []iscsi.KeyValue) ([]iscsi.KeyValue, iscsi.LoginStatus) {
	var reply []iscsi.KeyValue
	if v, ok := iscsi.Lookup(kvs, "AuthMethod"); ok && a.method == "" {
		want := "None"
		if cfg.CHAPUser != "" {
			want = "CHAP"
		}
		for _, m := range iscsi.SplitList(v) {
			if m == want {
				a.method = m
			}
		}
		if a.method == "" {
			return nil, iscsi.LoginAuthFailure
		}
		reply = append(reply, iscsi.KeyValue{Key: "AuthMethod", Value: a.method})
		if a.method == "None" {
			a.done = true
		}
	}
	if v, ok := iscsi.Lookup(kvs, "CHAP_A"); ok {
		if a.method != "CHAP" || a.sent {
			return nil, iscsi.LoginInitiatorError
		}
		found := false
		for _, alg := range iscsi.SplitList(v) {
			if alg == strconv.Itoa(iscsi.CHAPAlgorithmMD5) {
				found = true
			}
		}
		if !found {
			return nil, iscsi.LoginAuthFailure
		}
		var idb [1]byte
		a.challenge = make([]byte, iscsi.CHAPChallengeLength)
		_, _ = rand.Read(idb[:])
		_, _ = rand.Read(a.challenge)
		a.id, a.sent = idb[0], true
		reply = append(reply, iscsi.KeyValue{Key: "CHAP_A", Value: "5"},
			iscsi.KeyValue{Key: "CHAP_I", Value: strconv.Itoa(int(a.id))},
			iscsi.KeyValue{Key: "CHAP_C", Value: iscsi.FormatCHAPBinary(a.challenge)})
	}
	user, hasN := iscsi.Lookup(kvs, "CHAP_N")
	resp, hasR := iscsi.Lookup(kvs, "CHAP_R")
	if hasN || hasR {
		if !a.sent || a.done || !hasN || !hasR {
			return nil, iscsi.LoginAuthFailure
		}
		r, err := iscsi.ParseCHAPBinary(resp)
		if err != nil {
			return nil, iscsi.LoginAuthFailure
		}
		userOK := subtle.ConstantTimeCompare([]byte(user), []byte(cfg.CHAPUser)) == 1
		if !iscsi.CHAPVerify(a.id, cfg.CHAPSecret, a.challenge, r) || !userOK {
			return nil, iscsi.LoginAuthFailure
		}
		mi, hasI := iscsi.Lookup(kvs, "CHAP_I")
		mc, hasC := iscsi.Lookup(kvs, "CHAP_C")
		if hasI || hasC { // the initiator authenticates us too
			if cfg.MutualUser == "" || !hasI || !hasC {
				return nil, iscsi.LoginAuthFailure
			}
			id, err := strconv.ParseUint(mi, 10, 8)
			ch, err2 := iscsi.ParseCHAPBinary(mc)
			if err != nil || err2 != nil || subtle.ConstantTimeCompare(ch, a.challenge) == 1 {
				return nil, iscsi.LoginAuthFailure // a reflected challenge is an attack
			}
			reply = append(reply, iscsi.KeyValue{Key: "CHAP_N", Value: cfg.MutualUser},
				iscsi.KeyValue{Key: "CHAP_R", Value: iscsi.FormatCHAPBinary(iscsi.CHAPResponse(byte(id), cfg.MutualSecret, ch))})
		}
		a.done = true
	}
	return reply, iscsi.LoginSuccess
}
