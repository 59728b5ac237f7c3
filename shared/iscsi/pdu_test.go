package iscsi

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sampleHeaders() []Header {
	sn := SN{StatSN: 0x01020304, ExpCmdSN: 0xfffffffe, MaxCmdSN: 0x7}
	cdb := [16]byte{0x8a, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 8, 0, 0}
	return []Header{
		&NOPOut{Immediate: true, LUN: LUN(1), ITT: 1, TTT: ReservedTag, CmdSN: 9, ExpStatSN: 10},
		&SCSICommand{Final: true, Write: true, Attr: AttrSimple, LUN: LUN(1), ITT: 2, ExpectedDataTransferLength: 4096, CmdSN: 3, ExpStatSN: 4, CDB: cdb},
		&SCSICommand{Immediate: true, Read: true, Attr: AttrOrdered, LUN: LUN(300), ITT: 3},
		&TaskMgmtRequest{Immediate: true, Function: TMFAbortTask, LUN: LUN(1), ITT: 5, RTT: 2, CmdSN: 6, ExpStatSN: 7, RefCmdSN: 3, ExpDataSN: 1},
		&LoginRequest{Transit: true, CSG: StageSecurity, NSG: StageOperational, ISID: [6]byte{0x80, 1, 2, 3, 4, 5}, TSIH: 0, ITT: 7, CID: 1, CmdSN: 1, ExpStatSN: 0},
		&LoginRequest{Continue: true, CSG: StageOperational, NSG: StageFullFeature, VersionMax: 0, VersionMin: 0, TSIH: 0x1234, ITT: 8},
		&TextRequest{Immediate: true, Final: true, LUN: 0, ITT: 9, TTT: ReservedTag, CmdSN: 1, ExpStatSN: 2},
		&TextRequest{Continue: true, ITT: 9, TTT: 77},
		&DataOut{Final: true, LUN: LUN(1), ITT: 2, TTT: 0x55, ExpStatSN: 4, DataSN: 3, BufferOffset: 65536},
		&LogoutRequest{Immediate: true, Reason: LogoutCloseSession, ITT: 10, CID: 1, CmdSN: 11, ExpStatSN: 12},
		&SNACKRequest{Type: 1, LUN: LUN(1), ITT: 2, TTT: 3, ExpStatSN: 4, BegRun: 5, RunLength: 6},
		&NOPIn{LUN: LUN(1), ITT: ReservedTag, TTT: 0x99, SN: sn},
		&SCSIResponse{Overflow: true, Underflow: false, BidiOverflow: true, BidiUnderflow: true, Response: ResponseCompleted, Status: StatusCheckCondition, ITT: 2, SNACKTag: 1, SN: sn, ExpDataSN: 4, BidiResidualCount: 5, ResidualCount: 512},
		&SCSIResponse{Underflow: true, ITT: 2, SN: sn},
		&TaskMgmtResponse{Response: TMFTaskDoesNotExist, ITT: 5, SN: sn},
		&LoginResponse{Transit: true, Continue: false, CSG: StageOperational, NSG: StageFullFeature, VersionMax: 0, VersionActive: 0, ISID: [6]byte{0x80, 1, 2, 3, 4, 5}, TSIH: 0x1234, ITT: 7, SN: sn, StatusClass: 2, StatusDetail: 1},
		&TextResponse{Final: true, LUN: 0, ITT: 9, TTT: ReservedTag, SN: sn},
		&DataIn{Final: true, Ack: true, Overflow: true, Underflow: true, HasStatus: true, Status: StatusGood, LUN: LUN(1), ITT: 3, TTT: ReservedTag, SN: sn, DataSN: 8, BufferOffset: 8192, ResidualCount: 100},
		&LogoutResponse{Response: 0, ITT: 10, SN: sn, Time2Wait: 2, Time2Retain: 20},
		&R2T{LUN: LUN(1), ITT: 2, TTT: 0x55, SN: sn, R2TSN: 1, BufferOffset: 65536, DesiredDataTransferLength: 262144},
		&AsyncMessage{LUN: LUN(1), SN: sn, AsyncEvent: AsyncLogoutRequested, AsyncVCode: 0, Parameter1: 1, Parameter2: 2, Parameter3: 3},
		&Reject{Reason: RejectProtocolError, SN: sn, DataSN: 3},
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, want := range sampleHeaders() {
		t.Run(want.Opcode().String(), func(t *testing.T) {
			var h BHS
			h.SetDataSegmentLength(1234)
			want.Encode(&h)
			if h.Opcode() != want.Opcode() {
				t.Fatalf("opcode %v, want %v", h.Opcode(), want.Opcode())
			}
			if h.DataSegmentLength() != 1234 {
				t.Errorf("Encode lost the data segment length: %d", h.DataSegmentLength())
			}
			got, err := Decode(&h)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestHeaderBytes(t *testing.T) {
	tests := []struct {
		name string
		hdr  Header
		want map[int]byte
	}{
		{"login request always carries the I bit", &LoginRequest{Transit: true, CSG: 0, NSG: 1}, map[int]byte{0: 0x43, 1: 0x81}},
		{"login to full feature", &LoginRequest{Transit: true, CSG: 1, NSG: 3}, map[int]byte{0: 0x43, 1: 0x87}},
		{"write command flags", &SCSICommand{Final: true, Write: true, Attr: AttrSimple}, map[int]byte{0: 0x01, 1: 0xa1}},
		{"immediate NOP-Out", &NOPOut{Immediate: true, TTT: ReservedTag}, map[int]byte{0: 0x40, 1: 0x80, 20: 0xff, 23: 0xff}},
		{"data-in with status", &DataIn{Final: true, HasStatus: true, Status: 2}, map[int]byte{0: 0x25, 1: 0x81, 3: 2}},
		{"LUN 1 peripheral addressing", &SCSICommand{LUN: LUN(1)}, map[int]byte{8: 0, 9: 1}},
		{"login status bytes", &LoginResponse{StatusClass: 2, StatusDetail: 3}, map[int]byte{36: 2, 37: 3}},
		{"reject ITT is reserved", &Reject{Reason: 9}, map[int]byte{2: 9, 16: 0xff, 19: 0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h BHS
			tt.hdr.Encode(&h)
			for i, b := range tt.want {
				if h[i] != b {
					t.Errorf("byte %d = 0x%02x, want 0x%02x", i, h[i], b)
				}
			}
		})
	}
}

func TestDecodeUnknownOpcode(t *testing.T) {
	for _, op := range []byte{0x07, 0x1f, 0x27, 0x3e} {
		var h BHS
		h[0] = op
		if _, err := Decode(&h); !errors.Is(err, ErrUnknownOpcode) {
			t.Errorf("opcode 0x%02x: err %v, want ErrUnknownOpcode", op, err)
		}
	}
}

func TestLUN(t *testing.T) {
	tests := []struct {
		n    uint16
		want uint64
	}{
		{0, 0},
		{1, 0x0001_0000_0000_0000},
		{255, 0x00ff_0000_0000_0000},
		{256, 0x4100_0000_0000_0000},
		{16383, 0x7fff_0000_0000_0000},
	}
	for _, tt := range tests {
		if got := LUN(tt.n); got != tt.want {
			t.Errorf("LUN(%d) = %#x, want %#x", tt.n, got, tt.want)
		}
		if n, ok := ParseLUN(tt.want); !ok || n != tt.n {
			t.Errorf("ParseLUN(%#x) = %d, %v", tt.want, n, ok)
		}
	}
	for _, bad := range []uint64{0x0001_0000_0000_0001, 0x0101_0000_0000_0000, 0x8000_0000_0000_0000, 0xc000_0000_0000_0000} {
		if _, ok := ParseLUN(bad); ok {
			t.Errorf("ParseLUN(%#x) accepted an unsupported address", bad)
		}
	}
}

func TestCRC32C(t *testing.T) {
	// RFC 3720 appendix B.4 test vectors (the digest bytes on the wire are
	// the little-endian encoding of these values).
	inc, dec := make([]byte, 32), make([]byte, 32)
	for i := range inc {
		inc[i], dec[i] = byte(i), byte(31-i)
	}
	tests := []struct {
		name string
		in   []byte
		want uint32
	}{
		{"zeros", make([]byte, 32), 0x8a9136aa},
		{"ones", bytes.Repeat([]byte{0xff}, 32), 0x62a8ab43},
		{"incrementing", inc, 0x46dd794e},
		{"decrementing", dec, 0x113fdb5c},
	}
	for _, tt := range tests {
		if got := CRC32C(tt.in); got != tt.want {
			t.Errorf("%s: %#08x, want %#08x", tt.name, got, tt.want)
		}
	}
}

func TestWireRoundTrip(t *testing.T) {
	for _, dig := range []Digests{{}, {Header: true}, {Data: true}, {Header: true, Data: true}} {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		w.Digests = dig
		payloads := [][]byte{nil, {1}, {1, 2}, {1, 2, 3}, {1, 2, 3, 4}, bytes.Repeat([]byte{7}, 8193)}
		for i, p := range payloads {
			if err := w.WriteHeader(&DataOut{ITT: uint32(i), BufferOffset: uint32(i)}, p); err != nil {
				t.Fatal(err)
			}
		}
		if want := 0; buf.Len()%4 != want {
			t.Fatalf("stream length %d is not 4-byte aligned", buf.Len())
		}
		r := NewReader(&buf)
		r.Digests = dig
		r.MaxData = 16384
		var p PDU
		for i, want := range payloads {
			if err := r.ReadPDU(&p); err != nil {
				t.Fatalf("digests %+v pdu %d: %v", dig, i, err)
			}
			if p.BHS.ITT() != uint32(i) || !bytes.Equal(p.Data, want) && len(want)+len(p.Data) > 0 {
				t.Fatalf("digests %+v pdu %d: got itt %d data %d bytes", dig, i, p.BHS.ITT(), len(p.Data))
			}
		}
		if err := r.ReadPDU(&p); err != io.EOF {
			t.Fatalf("after the last PDU: %v, want io.EOF", err)
		}
	}
}

func TestReaderErrors(t *testing.T) {
	frame := func(dig Digests, data []byte) []byte {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		w.Digests = dig
		if err := w.WriteHeader(&NOPOut{ITT: 1}, data); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	both := Digests{Header: true, Data: true}
	tests := []struct {
		name    string
		stream  []byte
		dig     Digests
		maxData int
		want    error
	}{
		{"header cut short", frame(Digests{}, nil)[:20], Digests{}, 0, io.ErrUnexpectedEOF},
		{"data cut short", frame(Digests{}, []byte("hello"))[:50], Digests{}, 0, io.ErrUnexpectedEOF},
		{"padding missing", frame(Digests{}, []byte("hello"))[:53], Digests{}, 0, io.ErrUnexpectedEOF},
		{"data longer than declared", frame(Digests{}, make([]byte, 600)), Digests{}, 512, ErrDataTooLong},
		{"header digest flipped", flip(frame(both, []byte("x")), 3), both, 0, ErrHeaderDigest},
		{"header digest missing", frame(Digests{}, nil), Digests{Header: true}, 0, io.ErrUnexpectedEOF},
		{"data digest flipped", flip(frame(both, []byte("hello")), 48+4+1), both, 0, ErrDataDigest},
		{"padding bytes covered by the data digest", flip(frame(both, []byte("hello")), 48+4+6), both, 0, ErrDataDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.stream))
			r.Digests = tt.dig
			r.MaxData = tt.maxData
			var p PDU
			if err := r.ReadPDU(&p); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x01
	return b
}

func TestReaderSplitReads(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Digests = Digests{Data: true}
	for i := range 3 {
		if err := w.WriteHeader(&DataIn{ITT: uint32(i)}, bytes.Repeat([]byte{byte(i)}, 10+i)); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf)
	r.Digests = w.Digests
	var h BHS
	// First PDU: read into our own buffer.
	if err := r.ReadHeader(&h); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadData(make([]byte, 3)); !errors.Is(err, ErrDataLength) {
		t.Fatalf("short buffer: %v", err)
	}
	if err := r.ReadData(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadData(make([]byte, 10)); !errors.Is(err, ErrNoHeaderPending) {
		t.Fatalf("second ReadData: %v", err)
	}
	// Second PDU: skipped by reading the next header directly.
	if err := r.ReadHeader(&h); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadHeader(&h); err != nil || h.ITT() != 2 {
		t.Fatalf("header after implicit discard: itt %d err %v", h.ITT(), err)
	}
	if err := r.Discard(); err != nil {
		t.Fatal(err)
	}
	if err := r.Discard(); err != nil {
		t.Fatalf("second Discard: %v", err)
	}
}

func TestWriterRejectsHugeData(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.WriteHeader(&DataOut{}, make([]byte, MaxDataSegmentLength+1)); !errors.Is(err, ErrDataTooLong) {
		t.Fatalf("err = %v", err)
	}
}

func TestSerial(t *testing.T) {
	tests := []struct {
		a, b uint32
		less bool
	}{
		{0, 1, true},
		{1, 0, false},
		{5, 5, false},
		{0xffffffff, 0, true},
		{0xfffffff0, 0x10, true},
		{0, 0x7fffffff, true},
		{0x7fffffff, 0, false},
		{0, 0x80000000, false}, // undefined pair: neither is less
		{0x80000000, 0, false},
	}
	for _, tt := range tests {
		if got := SerialLess(tt.a, tt.b); got != tt.less {
			t.Errorf("SerialLess(%#x, %#x) = %v, want %v", tt.a, tt.b, got, tt.less)
		}
	}
	windows := []struct {
		sn, exp, max uint32
		in           bool
	}{
		{5, 5, 5, true},
		{6, 5, 5, false},
		{4, 5, 10, false},
		{0, 0xfffffffe, 3, true},
		{4, 0xfffffffe, 3, false},
		{5, 5, 4, false}, // empty window: MaxCmdSN = ExpCmdSN-1
	}
	for _, tt := range windows {
		if got := InWindow(tt.sn, tt.exp, tt.max); got != tt.in {
			t.Errorf("InWindow(%d, %d, %d) = %v, want %v", tt.sn, tt.exp, tt.max, got, tt.in)
		}
	}
}

func TestLoginStatus(t *testing.T) {
	s := MakeLoginStatus(2, 1)
	if s != LoginAuthFailure || s.Class() != 2 || s.Detail() != 1 {
		t.Fatalf("MakeLoginStatus(2,1) = %v", s)
	}
	err := errorsJoin("login", s)
	if !errors.Is(err, LoginAuthFailure) || errors.Is(err, LoginNotFound) {
		t.Fatalf("errors.Is through wrapping failed: %v", err)
	}
	if got := LoginNotFound.Error(); got != "login status 2/3: target not found" {
		t.Errorf("Error() = %q", got)
	}
	if got := LoginStatus(0x0277).Error(); got != "login status 2/119: unknown status" {
		t.Errorf("Error() = %q", got)
	}
}

type wrapped struct {
	msg string
	err error
}

func (w wrapped) Error() string { return w.msg + ": " + w.err.Error() }
func (w wrapped) Unwrap() error { return w.err }

func errorsJoin(msg string, err error) error { return wrapped{msg, err} }
