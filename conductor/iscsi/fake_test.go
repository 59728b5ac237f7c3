package iscsi

import (
	"bufio"
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// fakeTarget is a small in-process iSCSI target for the initiator's unit
// tests. It speaks enough RFC 7143 for a LUN 1 held in memory and has
// fault knobs for what real targets rarely do on demand: Reject, an
// asynchronous logout request, a one-command window, NOP-In storms,
// dropped connections, silence, odd negotiation answers.
type fakeTarget struct {
	t   *testing.T
	ln  net.Listener
	iqn string

	mu   sync.Mutex
	disk []byte
	bs   int

	// Negotiation knobs (zero values: InitialR2T=No, ImmediateData=Yes,
	// large bursts, window 64).
	initialR2T      bool
	noImmediate     bool
	maxBurst        uint32
	firstBurst      uint32
	mrdsl           uint32 // declared MaxRecvDataSegmentLength
	window          uint32 // MaxCmdSN - ExpCmdSN + 1
	digests         bool   // accept CRC32C digests
	chap            proto.Credentials
	mutual          proto.Credentials
	notUnderstood   map[string]string // answer these keys with this value instead of negotiating
	ownKeys         []proto.KeyValue  // offered by the target in its first operational answer
	holdTransit     bool              // answer the first operational request with T=0
	splitLoginReply bool              // spread the operational answer over two PDUs (C bit)
	// Fault knobs.
	rejectNext   int  // reject the next N SCSI commands
	asyncLogout  int  // after N more commands, ask for a logout (once)
	nopStorm     int  // send this many NOP-In pings before each response
	dropAfter    int  // drop the connection when the Nth write command of a session arrives
	dropSessions int  // how many sessions drop (with dropAfter)
	hangAfter    int  // stop answering after N commands (0: never)
	ua           bool // report POWER ON RESET on the first command of each session
	noRC16       bool // READ CAPACITY(16) is an invalid opcode

	// Counters.
	logins, nopAnswers, commands, writes int
	lastParams                           proto.Params
}

func newFakeTarget(t *testing.T, size int) *fakeTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeTarget{t: t, ln: ln, iqn: "iqn.2024-01.dev.ingot.test:fake", disk: make([]byte, size), bs: 512,
		maxBurst: 1 << 20, firstBurst: 256 << 10, mrdsl: 256 << 10, window: 64}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		var conns []net.Conn
		var cmu sync.Mutex
		for {
			c, err := ln.Accept()
			if err != nil {
				cmu.Lock()
				for _, c := range conns {
					c.Close()
				}
				cmu.Unlock()
				wg.Wait()
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				f.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return f
}

func (f *fakeTarget) addr() string { return f.ln.Addr().String() }

func (f *fakeTarget) config() Config {
	return Config{Portal: f.addr(), TargetIQN: f.iqn, CommandTimeout: 10 * time.Second}
}

func (f *fakeTarget) set(fn func(f *fakeTarget)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeTarget) snapshot() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.disk...)
}

type fakeConn struct {
	f        *fakeTarget
	nc       net.Conn
	r        *proto.Reader
	w        *proto.Writer
	p        proto.Params
	statSN   uint32
	expCmdSN uint32
	ua       bool
	writes   int
	pending  map[uint32]*fakeWrite
}

type fakeWrite struct {
	lba  uint64
	data []byte
	got  uint32
	lun  uint64
}

func (c *fakeConn) sn(consume bool) proto.SN {
	c.f.mu.Lock()
	win := c.f.window
	c.f.mu.Unlock()
	s := proto.SN{StatSN: c.statSN, ExpCmdSN: c.expCmdSN, MaxCmdSN: c.expCmdSN + win - 1}
	if consume {
		c.statSN++
	}
	return s
}

func (f *fakeTarget) serve(nc net.Conn) {
	c := &fakeConn{f: f, nc: nc, r: proto.NewReader(bufio.NewReader(nc)), w: proto.NewWriter(nc), pending: map[uint32]*fakeWrite{}}
	if !c.login() {
		return
	}
	f.mu.Lock()
	c.ua = f.ua
	f.logins++
	f.mu.Unlock()
	var pdu proto.PDU
	for {
		if err := c.r.ReadPDU(&pdu); err != nil {
			return
		}
		h, err := proto.Decode(&pdu.BHS)
		if err != nil {
			return
		}
		if !c.handle(h, pdu.Data) {
			return
		}
	}
}

// login: security (None or CHAP, optionally mutual), then operational
// negotiation through the shared Negotiator.
func (c *fakeConn) login() bool {
	f := c.f
	f.mu.Lock()
	want := proto.DefaultParams()
	want.InitialR2T, want.ImmediateData = f.initialR2T, !f.noImmediate
	want.MaxBurstLength, want.FirstBurstLength, want.MaxRecvDataSegmentLength = f.maxBurst, f.firstBurst, f.mrdsl
	want.HeaderDigest, want.DataDigest = f.digests, f.digests
	want.MaxOutstandingR2T = 1
	chap, mutual := f.chap, f.mutual
	notUnderstood, ownKeys, hold, split := f.notUnderstood, f.ownKeys, f.holdTransit, f.splitLoginReply
	f.mu.Unlock()
	neg := proto.NewNegotiator(true, want)
	var pdu proto.PDU
	var challenge []byte
	var chapID byte
	authed := chap.IsZero()
	first, declared := true, false
	fail := func(st proto.LoginStatus) bool {
		_ = c.w.WriteHeader(&proto.LoginResponse{SN: c.sn(false), StatusClass: st.Class(), StatusDetail: st.Detail()}, nil)
		return false
	}
	for {
		if err := c.r.ReadPDU(&pdu); err != nil || pdu.BHS.Opcode() != proto.OpLoginRequest {
			return false
		}
		h, _ := proto.Decode(&pdu.BHS)
		req := h.(*proto.LoginRequest)
		if first {
			c.statSN, c.expCmdSN = req.ExpStatSN, req.CmdSN
		}
		kvs, err := proto.ParseText(pdu.Data)
		if err != nil {
			return fail(proto.LoginInitiatorError)
		}
		if first {
			first = false
			if name, _ := proto.Lookup(kvs, "TargetName"); name != f.iqn {
				if st, _ := proto.Lookup(kvs, "SessionType"); st != "Discovery" {
					return fail(proto.LoginNotFound)
				}
			}
		}
		var reply []proto.KeyValue
		transit := req.Transit
		switch req.CSG {
		case proto.StageSecurity:
			if m, ok := proto.Lookup(kvs, "AuthMethod"); ok {
				pick := "None"
				if !chap.IsZero() {
					pick = "CHAP"
				}
				found := false
				for _, v := range proto.SplitList(m) {
					found = found || v == pick
				}
				if !found {
					return fail(proto.LoginAuthFailure)
				}
				reply = append(reply, proto.KeyValue{Key: "AuthMethod", Value: pick})
			}
			if _, ok := proto.Lookup(kvs, "CHAP_A"); ok {
				challenge = []byte("0123456789abcdef")
				chapID = 42
				reply = append(reply, proto.KeyValue{Key: "CHAP_A", Value: "5"}, proto.KeyValue{Key: "CHAP_I", Value: "42"},
					proto.KeyValue{Key: "CHAP_C", Value: proto.FormatCHAPBinary(challenge)})
			}
			if n, ok := proto.Lookup(kvs, "CHAP_N"); ok {
				r, _ := proto.Lookup(kvs, "CHAP_R")
				rb, err := proto.ParseCHAPBinary(r)
				if err != nil || n != chap.User || !proto.CHAPVerify(chapID, chap.Secret, challenge, rb) {
					return fail(proto.LoginAuthFailure)
				}
				if i, ok := proto.Lookup(kvs, "CHAP_I"); ok {
					cc, _ := proto.Lookup(kvs, "CHAP_C")
					id, _ := strconv.Atoi(i)
					ch, _ := proto.ParseCHAPBinary(cc)
					reply = append(reply, proto.KeyValue{Key: "CHAP_N", Value: mutual.User},
						proto.KeyValue{Key: "CHAP_R", Value: proto.FormatCHAPBinary(proto.CHAPResponse(byte(id), mutual.Secret, ch))})
				}
				authed = true
			}
			if !authed {
				transit = false
			}
		case proto.StageOperational:
			if !authed {
				return fail(proto.LoginAuthFailure)
			}
			var rest []proto.KeyValue
			for _, kv := range kvs {
				if v, ok := notUnderstood[kv.Key]; ok {
					reply = append(reply, proto.KeyValue{Key: kv.Key, Value: v})
					continue
				}
				rest = append(rest, kv)
			}
			r, err := neg.Receive(rest)
			if err != nil {
				return fail(proto.LoginInitiatorError)
			}
			reply = append(reply, r...)
			if !declared {
				declared = true
				reply = append(reply, neg.Offer("MaxRecvDataSegmentLength")...)
				reply = append(reply, ownKeys...)
				if hold || len(ownKeys) > 0 {
					transit = false
				}
			}
		}
		resp := &proto.LoginResponse{Transit: transit, CSG: req.CSG, ISID: req.ISID, ITT: req.ITT}
		if transit {
			resp.NSG = req.NSG
		}
		full := transit && req.NSG == proto.StageFullFeature
		if full {
			resp.TSIH = 7
		}
		data := proto.EncodeText(nil, reply)
		if split && req.CSG == proto.StageOperational && len(data) > 8 {
			split = false
			part := &proto.LoginResponse{Continue: true, CSG: req.CSG, ISID: req.ISID, ITT: req.ITT, SN: c.sn(true)}
			if err := c.w.WriteHeader(part, data[:7]); err != nil {
				return false
			}
			if err := c.r.ReadPDU(&pdu); err != nil || pdu.BHS.Opcode() != proto.OpLoginRequest || pdu.BHS.DataSegmentLength() != 0 {
				return false
			}
			data = data[7:]
		}
		resp.SN = c.sn(true)
		var p proto.Params
		if full {
			if p, err = neg.Result(); err != nil {
				return false
			}
			f.mu.Lock()
			f.lastParams = p
			f.mu.Unlock()
		}
		if err := c.w.WriteHeader(resp, data); err != nil {
			return false
		}
		if full {
			c.p = p
			c.r.MaxData = int(p.MaxRecvDataSegmentLength)
			c.r.Digests = proto.Digests{Header: p.HeaderDigest, Data: p.DataDigest}
			c.w.Digests = c.r.Digests
			return true
		}
	}
}

func (c *fakeConn) storm() bool {
	c.f.mu.Lock()
	n := c.f.nopStorm
	c.f.mu.Unlock()
	for i := range n {
		if err := c.w.WriteHeader(&proto.NOPIn{ITT: proto.ReservedTag, TTT: uint32(1000 + i), SN: c.sn(false)}, []byte("ping")); err != nil {
			return false
		}
	}
	return true
}

func (c *fakeConn) status(itt uint32, status uint8, sense *proto.Sense) bool {
	if !c.storm() {
		return false
	}
	var data []byte
	if sense != nil {
		data = proto.SenseSegment(sense.Marshal())
	}
	return c.w.WriteHeader(&proto.SCSIResponse{ITT: itt, Status: status, SN: c.sn(true)}, data) == nil
}

func (c *fakeConn) dataIn(itt uint32, data []byte) bool {
	if !c.storm() {
		return false
	}
	seg := int(c.p.MaxXmitDataSegmentLength)
	for off, sn := 0, uint32(0); off < len(data) || off == 0; sn++ {
		k := min(seg, len(data)-off)
		last := off+k == len(data)
		p := &proto.DataIn{Final: last, HasStatus: last, ITT: itt, TTT: proto.ReservedTag, DataSN: sn, BufferOffset: uint32(off)}
		if last {
			p.SN = c.sn(true)
		} else {
			p.SN = c.sn(false)
		}
		if err := c.w.WriteHeader(p, data[off:off+k]); err != nil {
			return false
		}
		off += k
		if last {
			return true
		}
	}
	return true
}

func (c *fakeConn) handle(h proto.Header, data []byte) bool {
	f := c.f
	switch p := h.(type) {
	case *proto.NOPOut:
		if p.ITT == proto.ReservedTag {
			f.mu.Lock()
			f.nopAnswers++
			f.mu.Unlock()
			return true
		}
		return c.storm() && c.w.WriteHeader(&proto.NOPIn{ITT: p.ITT, TTT: proto.ReservedTag, SN: c.sn(true)}, data) == nil
	case *proto.LogoutRequest:
		_ = c.w.WriteHeader(&proto.LogoutResponse{ITT: p.ITT, SN: c.sn(true)}, nil)
		return false
	case *proto.TextRequest:
		if !p.Immediate {
			c.expCmdSN++
		}
		reply := proto.EncodeText(nil, []proto.KeyValue{{Key: "TargetName", Value: f.iqn},
			{Key: "TargetAddress", Value: f.addr() + ",1"}, {Key: "TargetName", Value: f.iqn + ".second"},
			{Key: "TargetAddress", Value: "192.0.2.1:3260,1"}, {Key: "TargetAddress", Value: "[2001:db8::1]:3260,2"}})
		return c.w.WriteHeader(&proto.TextResponse{Final: true, ITT: p.ITT, TTT: proto.ReservedTag, SN: c.sn(true)}, reply) == nil
	case *proto.TaskMgmtRequest:
		return c.w.WriteHeader(&proto.TaskMgmtResponse{Response: proto.TMFFunctionComplete, ITT: p.ITT, SN: c.sn(true)}, nil) == nil
	case *proto.DataOut:
		w := c.pending[p.ITT]
		if w == nil || p.BufferOffset+uint32(len(data)) > uint32(len(w.data)) {
			return false
		}
		copy(w.data[p.BufferOffset:], data)
		w.got += uint32(len(data))
		if p.Final {
			return c.progress(p.ITT, w)
		}
		return true
	case *proto.SCSICommand:
		if !p.Immediate {
			if p.CmdSN != c.expCmdSN {
				return true // outside the window: silently ignored
			}
			c.expCmdSN++
		}
		f.mu.Lock()
		f.commands++
		reject := f.rejectNext > 0
		if reject {
			f.rejectNext--
		}
		hang := f.hangAfter > 0 && f.commands > f.hangAfter
		async := false
		if f.asyncLogout > 0 {
			f.asyncLogout--
			async = f.asyncLogout == 0
		}
		f.mu.Unlock()
		if hang {
			return true
		}
		if reject {
			var b proto.BHS
			p.Encode(&b)
			return c.w.WriteHeader(&proto.Reject{Reason: proto.RejectNotSupported, SN: c.sn(true)}, b[:]) == nil
		}
		if async {
			if err := c.w.WriteHeader(&proto.AsyncMessage{AsyncEvent: proto.AsyncLogoutRequested, Parameter3: 2, SN: c.sn(true)}, nil); err != nil {
				return false
			}
		}
		return c.scsi(p, data)
	}
	return true
}

func (c *fakeConn) scsi(p *proto.SCSICommand, imm []byte) bool {
	f := c.f
	cdb := p.CDB
	if c.ua {
		c.ua = false
		return c.status(p.ITT, proto.StatusCheckCondition, &proto.Sense{Key: proto.SenseUnitAttention, ASC: 0x29})
	}
	oob := &proto.Sense{Key: proto.SenseIllegalRequest, ASC: 0x21}
	blocks := uint64(len(f.disk) / f.bs)
	switch cdb[0] {
	case opTestUnitReady, opSyncCache16:
		return c.status(p.ITT, proto.StatusGood, nil)
	case opInquiry:
		d := make([]byte, 36)
		copy(d[8:], "FAKE    FAKE DISK       0001")
		if cdb[1]&1 != 0 {
			d = []byte{0, cdb[2], 0, 0}
		}
		return c.dataIn(p.ITT, d[:min(len(d), int(p.ExpectedDataTransferLength))])
	case opReadCapacity10:
		d := make([]byte, 8)
		binary.BigEndian.PutUint32(d, uint32(blocks-1))
		binary.BigEndian.PutUint32(d[4:], uint32(f.bs))
		return c.dataIn(p.ITT, d)
	case opServiceAction16:
		f.mu.Lock()
		no := f.noRC16
		f.mu.Unlock()
		if no {
			return c.status(p.ITT, proto.StatusCheckCondition, &proto.Sense{Key: proto.SenseIllegalRequest, ASC: 0x20})
		}
		d := make([]byte, 32)
		binary.BigEndian.PutUint64(d, blocks-1)
		binary.BigEndian.PutUint32(d[8:], uint32(f.bs))
		return c.dataIn(p.ITT, d[:min(32, int(p.ExpectedDataTransferLength))])
	case opRead16:
		lba, n := binary.BigEndian.Uint64(cdb[2:]), uint64(binary.BigEndian.Uint32(cdb[10:]))
		if lba+n > blocks {
			return c.status(p.ITT, proto.StatusCheckCondition, oob)
		}
		f.mu.Lock()
		d := append([]byte(nil), f.disk[lba*uint64(f.bs):(lba+n)*uint64(f.bs)]...)
		f.mu.Unlock()
		return c.dataIn(p.ITT, d)
	case opWrite16:
		lba, n := binary.BigEndian.Uint64(cdb[2:]), uint64(binary.BigEndian.Uint32(cdb[10:]))
		c.writes++
		f.mu.Lock()
		f.writes++
		drop := f.dropAfter > 0 && c.writes == f.dropAfter && f.dropSessions > 0
		if drop {
			f.dropSessions--
		}
		f.mu.Unlock()
		if drop {
			return false
		}
		if lba+n > blocks {
			return c.status(p.ITT, proto.StatusCheckCondition, oob)
		}
		w := &fakeWrite{lba: lba, data: make([]byte, n*uint64(f.bs)), lun: p.LUN}
		copy(w.data, imm)
		w.got = uint32(len(imm))
		c.pending[p.ITT] = w
		if !p.Final {
			return true // unsolicited Data-Out follows; progress on its F bit
		}
		return c.progress(p.ITT, w)
	}
	return c.status(p.ITT, proto.StatusCheckCondition, &proto.Sense{Key: proto.SenseIllegalRequest, ASC: 0x20})
}

// progress completes a write or solicits its next burst (one R2T at a time).
func (c *fakeConn) progress(itt uint32, w *fakeWrite) bool {
	f := c.f
	if int(w.got) == len(w.data) {
		delete(c.pending, itt)
		f.mu.Lock()
		copy(f.disk[w.lba*uint64(f.bs):], w.data)
		f.mu.Unlock()
		return c.status(itt, proto.StatusGood, nil)
	}
	n := min(c.p.MaxBurstLength, uint32(len(w.data))-w.got)
	return c.w.WriteHeader(&proto.R2T{LUN: w.lun, ITT: itt, TTT: 0x100 + itt, SN: c.sn(false), BufferOffset: w.got,
		DesiredDataTransferLength: n}, nil) == nil
}
