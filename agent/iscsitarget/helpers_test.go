package iscsitarget

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/shared/iscsi"
)

// memDevice is an in-memory blockDevice with fault knobs.
type memDevice struct {
	mu         sync.Mutex
	b          []byte
	syncs      int
	closed     bool
	failWrites bool
	failReads  bool
	panicWrite bool
}

func newMemDevice(size int) *memDevice { return &memDevice{b: make([]byte, size)} }

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failReads {
		return 0, errors.New("injected read error")
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.panicWrite {
		panic("injected device panic")
	}
	if m.failWrites {
		return 0, errors.New("injected write error")
	}
	if off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("write past the device")
	}
	return copy(m.b[off:], p), nil
}

func (m *memDevice) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.syncs++
	return nil
}

func (m *memDevice) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

func (m *memDevice) set(fn func(m *memDevice)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fn(m)
}

func (m *memDevice) bytes(off, n int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.b[off:off+n]...)
}

const testIQN = "iqn.2024-01.dev.ingot.test:target"

func testConfig(t *testing.T) Config {
	return Config{Listen: "127.0.0.1:0", IQN: testIQN, Device: "mem",
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))}
}

// startMem runs a target over a memDevice until the test ends.
func startMem(t *testing.T, cfg Config, dev *memDevice) *Target {
	t.Helper()
	tg, err := start(t.Context(), cfg, dev, dev, int64(len(dev.b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Stop() })
	return tg
}

// client is a minimal synchronous initiator built on the shared codec, so
// the tests drive the target PDU by PDU.
type client struct {
	t      *testing.T
	nc     net.Conn
	r      *iscsi.Reader
	w      *iscsi.Writer
	cmdSN  uint32
	expSN  uint32
	itt    uint32
	params iscsi.Params
	maxCmd uint32
}

func dialClient(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, nc: nc, r: iscsi.NewReader(bufio.NewReader(nc)), w: iscsi.NewWriter(nc), cmdSN: 10}
}

// exchange sends one login request and returns the response and its keys.
func (c *client) exchange(req *iscsi.LoginRequest, kvs ...iscsi.KeyValue) (*iscsi.LoginResponse, []iscsi.KeyValue) {
	c.t.Helper()
	req.ISID = [6]byte{0x80, 1, 2, 3, 4, 5}
	req.CmdSN, req.ExpStatSN = c.cmdSN, c.expSN
	if err := c.w.WriteHeader(req, iscsi.EncodeText(nil, kvs)); err != nil {
		c.t.Fatal(err)
	}
	var p iscsi.PDU
	if err := c.r.ReadPDU(&p); err != nil {
		c.t.Fatalf("read login response: %v", err)
	}
	h, err := iscsi.Decode(&p.BHS)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, ok := h.(*iscsi.LoginResponse)
	if !ok {
		c.t.Fatalf("got %s during login", p.BHS.Opcode())
	}
	got, err := iscsi.ParseText(p.Data)
	if err != nil {
		c.t.Fatal(err)
	}
	c.expSN = resp.StatSN + 1
	c.maxCmd = resp.MaxCmdSN
	return resp, got
}

func names(iqn string) []iscsi.KeyValue {
	return []iscsi.KeyValue{{Key: "InitiatorName", Value: "iqn.2024-01.dev.ingot.test:client"}, {Key: "SessionType", Value: "Normal"},
		{Key: "TargetName", Value: iqn}}
}

// loginNone logs in without authentication and negotiates ops.
func (c *client) loginNone(ops ...iscsi.KeyValue) {
	c.t.Helper()
	kvs := append(names(testIQN), iscsi.KeyValue{Key: "AuthMethod", Value: "None"})
	resp, _ := c.exchange(&iscsi.LoginRequest{Transit: true, CSG: iscsi.StageSecurity, NSG: iscsi.StageOperational}, kvs...)
	if resp.StatusClass != 0 || !resp.Transit {
		c.t.Fatalf("security stage: status %d/%d transit %v", resp.StatusClass, resp.StatusDetail, resp.Transit)
	}
	c.operational(ops...)
}

func (c *client) operational(ops ...iscsi.KeyValue) {
	c.t.Helper()
	if len(ops) == 0 {
		ops = []iscsi.KeyValue{{Key: "MaxRecvDataSegmentLength", Value: "65536"}, {Key: "InitialR2T", Value: "No"},
			{Key: "ImmediateData", Value: "Yes"}, {Key: "MaxBurstLength", Value: "262144"}, {Key: "FirstBurstLength", Value: "65536"}}
	}
	resp, got := c.exchange(&iscsi.LoginRequest{Transit: true, CSG: iscsi.StageOperational, NSG: iscsi.StageFullFeature}, ops...)
	if resp.StatusClass != 0 || !resp.Transit || resp.NSG != iscsi.StageFullFeature || resp.TSIH == 0 {
		c.t.Fatalf("operational stage: %+v", resp)
	}
	c.params = iscsi.DefaultParams()
	for _, kv := range append(ops, got...) {
		switch kv.Key {
		case "MaxRecvDataSegmentLength":
			v, _ := strconv.Atoi(kv.Value)
			if contains(got, kv) {
				c.params.MaxXmitDataSegmentLength = uint32(v)
			}
		case "InitialR2T":
			c.params.InitialR2T = kv.Value == "Yes"
		case "ImmediateData":
			c.params.ImmediateData = kv.Value == "Yes"
		case "FirstBurstLength":
			v, _ := strconv.Atoi(kv.Value)
			c.params.FirstBurstLength = uint32(v)
		case "MaxBurstLength":
			v, _ := strconv.Atoi(kv.Value)
			c.params.MaxBurstLength = uint32(v)
		}
	}
}

func contains(kvs []iscsi.KeyValue, kv iscsi.KeyValue) bool {
	for _, x := range kvs {
		if x == kv {
			return true
		}
	}
	return false
}

// reply is what a command got back.
type reply struct {
	status uint8
	sense  iscsi.Sense
	data   []byte
	resp   *iscsi.SCSIResponse
	under  bool
	over   bool
	resid  uint32
}

// command runs one SCSI command on lun, sending out as immediate data,
// unsolicited Data-Out or in answer to R2Ts, and collecting data-in.
func (c *client) command(lun uint16, cdb []byte, out []byte, edtl int) reply {
	c.t.Helper()
	c.itt++
	cmd := &iscsi.SCSICommand{Final: true, Attr: iscsi.AttrSimple, LUN: iscsi.LUN(lun), ITT: c.itt, CmdSN: c.cmdSN,
		ExpStatSN: c.expSN, ExpectedDataTransferLength: uint32(edtl), Read: out == nil && edtl > 0, Write: out != nil}
	copy(cmd.CDB[:], cdb)
	c.cmdSN++
	var imm []byte
	if out != nil && c.params.ImmediateData {
		imm = out[:min(len(out), int(c.params.FirstBurstLength), int(c.params.MaxXmitDataSegmentLength))]
	}
	unsol := len(imm)
	if out != nil && !c.params.InitialR2T {
		unsol = min(len(out), int(c.params.FirstBurstLength))
	}
	cmd.Final = unsol == len(imm)
	if err := c.w.WriteHeader(cmd, imm); err != nil {
		c.t.Fatal(err)
	}
	if unsol > len(imm) {
		c.dataOut(out, len(imm), unsol-len(imm), iscsi.ReservedTag)
	}
	var r reply
	in := make([]byte, edtl)
	got := 0
	for {
		var p iscsi.PDU
		if err := c.r.ReadPDU(&p); err != nil {
			c.t.Fatalf("read: %v", err)
		}
		h, err := iscsi.Decode(&p.BHS)
		if err != nil {
			c.t.Fatal(err)
		}
		switch x := h.(type) {
		case *iscsi.R2T:
			c.dataOut(out, int(x.BufferOffset), int(x.DesiredDataTransferLength), x.TTT)
		case *iscsi.DataIn:
			copy(in[x.BufferOffset:], p.Data)
			got = max(got, int(x.BufferOffset)+len(p.Data))
			if x.HasStatus {
				c.expSN = x.StatSN + 1
				return reply{status: x.Status, data: in[:got], under: x.Underflow, over: x.Overflow, resid: x.ResidualCount}
			}
		case *iscsi.SCSIResponse:
			c.expSN = x.StatSN + 1
			r = reply{status: x.Status, data: in[:got], resp: x, under: x.Underflow, over: x.Overflow, resid: x.ResidualCount}
			if seg, err := iscsi.ParseSenseSegment(p.Data); err == nil && len(seg) > 0 {
				r.sense, _ = iscsi.ParseSense(seg)
			}
			return r
		default:
			c.t.Fatalf("unexpected %s", p.BHS.Opcode())
		}
	}
}

func (c *client) dataOut(out []byte, off, n int, ttt uint32) {
	c.t.Helper()
	seg := int(c.params.MaxXmitDataSegmentLength)
	for sn, end := uint32(0), off+n; off < end; sn++ {
		k := min(seg, end-off)
		d := &iscsi.DataOut{Final: off+k == end, LUN: iscsi.LUN(1), ITT: c.itt, TTT: ttt, ExpStatSN: c.expSN, DataSN: sn, BufferOffset: uint32(off)}
		if err := c.w.WriteHeader(d, out[off:off+k]); err != nil {
			c.t.Fatal(err)
		}
		off += k
	}
}

// next reads one PDU (for tests that expect a specific answer).
func (c *client) next() (iscsi.Header, []byte, error) {
	var p iscsi.PDU
	if err := c.r.ReadPDU(&p); err != nil {
		return nil, nil, err
	}
	h, err := iscsi.Decode(&p.BHS)
	return h, p.Data, err
}

func (c *client) logout() {
	c.t.Helper()
	c.itt++
	if err := c.w.WriteHeader(&iscsi.LogoutRequest{Immediate: true, ITT: c.itt, CmdSN: c.cmdSN, ExpStatSN: c.expSN}, nil); err != nil {
		c.t.Fatal(err)
	}
	h, _, err := c.next()
	if err != nil {
		c.t.Fatal(err)
	}
	if r, ok := h.(*iscsi.LogoutResponse); !ok || r.Response != 0 {
		c.t.Fatalf("logout answer %#v", h)
	}
	if _, _, err := c.next(); err == nil {
		c.t.Fatal("the connection stayed open after logout")
	}
}

func cdb16(op byte, lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = op
	for i := range 8 {
		c[2+i] = byte(lba >> (56 - 8*i))
	}
	c[10], c[11], c[12], c[13] = byte(blocks>>24), byte(blocks>>16), byte(blocks>>8), byte(blocks)
	return c
}

func cdb10(op byte, lba uint32, blocks uint16) []byte {
	return []byte{op, 0, byte(lba >> 24), byte(lba >> 16), byte(lba >> 8), byte(lba), 0, byte(blocks >> 8), byte(blocks), 0}
}

func describe(r reply) string {
	return fmt.Sprintf("status 0x%02x sense %v", r.status, r.sense)
}
