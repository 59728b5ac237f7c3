package iscsitarget

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/ingot-dev/ingot/shared/iscsi"
)

func testLU(size int) (*logicalUnit, *memDevice) {
	dev := newMemDevice(size)
	return &logicalUnit{dev: dev, blockSize: 512, blocks: uint64(size / 512), iqn: testIQN, serial: "0123456789abcdef", naa: 3 << 60}, dev
}

// run decodes and executes a CDB without a data-out phase.
func run(lu *logicalUnit, cdb []byte) result {
	c, s := lu.decode(cdb)
	if s != nil {
		return check(*s)
	}
	switch c.kind {
	case dataNone, dataIn:
		return lu.execute(c, cdb)
	case dataRead:
		buf := make([]byte, c.length)
		if s := lu.readAt(c, buf, 0); s != nil {
			return check(*s)
		}
		return good(buf)
	}
	return lu.finish(c)
}

// runOut runs a data-out command with data.
func runOut(lu *logicalUnit, cdb, data []byte) result {
	c, s := lu.decode(cdb)
	if s != nil {
		return check(*s)
	}
	if c.kind == dataParam {
		c.param = data
		return lu.execute(c, cdb)
	}
	lu.consume(c, data, 0, make([]byte, len(data)))
	return lu.finish(c)
}

func TestDecodeRejectsBadCDBs(t *testing.T) {
	lu, _ := testLU(1 << 20) // 2048 blocks
	tests := []struct {
		name     string
		cdb      []byte
		wantKey  iscsi.SenseKey
		wantCode uint16
	}{
		{"unknown opcode", []byte{0xc0, 0, 0, 0, 0, 0}, iscsi.SenseIllegalRequest, iscsi.ASCInvalidOpcode},
		{"READ(16) past the end", cdb16(opRead16, 2047, 2), iscsi.SenseIllegalRequest, iscsi.ASCLBAOutOfRange},
		{"READ(16) at LBA 2^64-1", cdb16(opRead16, ^uint64(0), 1), iscsi.SenseIllegalRequest, iscsi.ASCLBAOutOfRange},
		{"READ(10) zero blocks past the end", cdb10(opRead10, 2049, 0), iscsi.SenseIllegalRequest, iscsi.ASCLBAOutOfRange},
		{"WRITE(10) with WRPROTECT", append([]byte{opWrite10, 0x20}, cdb10(opWrite10, 0, 1)[2:]...), iscsi.SenseIllegalRequest, iscsi.ASCInvalidFieldInCDB},
		{"VERIFY(10) BYTCHK=2", []byte{opVerify10, 0x04, 0, 0, 0, 0, 0, 0, 1, 0}, iscsi.SenseIllegalRequest, iscsi.ASCInvalidFieldInCDB},
		{"INQUIRY page without EVPD", []byte{opInquiry, 0, 0x83, 0, 255, 0}, iscsi.SenseIllegalRequest, iscsi.ASCInvalidFieldInCDB},
		{"INQUIRY CmdDt", []byte{opInquiry, 2, 0, 0, 255, 0}, iscsi.SenseIllegalRequest, iscsi.ASCInvalidFieldInCDB},
		{"eject a fixed disk", []byte{opStartStopUnit, 0, 0, 0, 0x02, 0}, iscsi.SenseIllegalRequest, iscsi.ASCInvalidFieldInCDB},
		{"SYNCHRONIZE CACHE(10) past the end", cdb10(opSyncCache10, 2048, 1), iscsi.SenseIllegalRequest, iscsi.ASCLBAOutOfRange},
		{"MODE SELECT saving pages", []byte{opModeSelect6, 0x11, 0, 0, 12, 0}, iscsi.SenseIllegalRequest, iscsi.ASCInvalidFieldInCDB},
		{"service action 16 other than READ CAPACITY", []byte{opServiceAction16, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, iscsi.SenseIllegalRequest, iscsi.ASCInvalidFieldInCDB},
	}
	big := &logicalUnit{dev: newMemDevice(512), blockSize: 512, blocks: 1 << 40}
	if _, s := big.decode(cdb16(opWrite16, 0, maxTransferBytes/512+1)); s == nil || s.Code() != iscsi.ASCInvalidFieldInCDB {
		t.Errorf("a transfer beyond the block limits: %v", s)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(lu, tt.cdb)
			if r.status != iscsi.StatusCheckCondition || r.sense.Key != tt.wantKey || r.sense.Code() != tt.wantCode {
				t.Fatalf("got status 0x%02x sense %v, want %v/0x%04x", r.status, r.sense, tt.wantKey, tt.wantCode)
			}
		})
	}
}

func TestReadWriteVerify(t *testing.T) {
	lu, dev := testLU(1 << 20)
	data := bytes.Repeat([]byte("0123456789abcdef"), 64) // 2 blocks
	if r := runOut(lu, cdb16(opWrite16, 10, 2), data); r.status != iscsi.StatusGood {
		t.Fatalf("write: %v", r.sense)
	}
	if !bytes.Equal(dev.bytes(10*512, 1024), data) {
		t.Fatal("the write did not reach the device")
	}
	if r := run(lu, cdb16(opRead16, 10, 2)); r.status != iscsi.StatusGood || !bytes.Equal(r.data, data) {
		t.Fatal("read back differs")
	}
	// READ(6) with transfer length 0 means 256 blocks.
	if r := run(lu, []byte{opRead6, 0, 0, 0, 0, 0}); len(r.data) != 256*512 {
		t.Fatalf("READ(6) length 0 read %d bytes", len(r.data))
	}
	// VERIFY with BYTCHK=1: equal, then one flipped byte.
	if r := runOut(lu, []byte{opVerify10, 0x02, 0, 0, 0, 10, 0, 0, 2, 0}, data); r.status != iscsi.StatusGood {
		t.Fatalf("verify equal data: %v", r.sense)
	}
	bad := bytes.Clone(data)
	bad[700] ^= 1
	r := runOut(lu, []byte{opVerify10, 0x02, 0, 0, 0, 10, 0, 0, 2, 0}, bad)
	if r.status != iscsi.StatusCheckCondition || r.sense.Key != iscsi.SenseMiscompare || !r.sense.InfoValid || r.sense.Information != 700 {
		t.Fatalf("verify miscompare: status %d sense %v", r.status, r.sense)
	}
	// BYTCHK=3: one block compared with every block of the range.
	blk := dev.bytes(10*512, 512)
	if r := runOut(lu, []byte{opVerify16, 0x06, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0}, blk); r.status != iscsi.StatusGood {
		t.Fatalf("verify BYTCHK=3: %v", r.sense)
	}
	// ORWRITE merges bits.
	or := make([]byte, 512)
	or[0] = 0x80
	before := dev.bytes(0, 1)[0]
	if r := runOut(lu, cdb16(opOrWrite16, 0, 1), or); r.status != iscsi.StatusGood || dev.bytes(0, 1)[0] != before|0x80 {
		t.Fatalf("orwrite: %v", r.sense)
	}
	// Device errors become MEDIUM ERROR.
	dev.set(func(m *memDevice) { m.failWrites, m.failReads = true, true })
	if r := runOut(lu, cdb16(opWrite16, 0, 1), make([]byte, 512)); r.sense.Key != iscsi.SenseMediumError || r.sense.Code() != iscsi.ASCWriteError {
		t.Fatalf("failed write: %v", r.sense)
	}
	if r := run(lu, cdb16(opRead16, 0, 1)); r.sense.Key != iscsi.SenseMediumError || r.sense.Code() != iscsi.ASCUnrecoveredReadError {
		t.Fatalf("failed read: %v", r.sense)
	}
}

func TestInquiryPages(t *testing.T) {
	lu, _ := testLU(1 << 20)
	std := run(lu, []byte{opInquiry, 0, 0, 1, 4, 0})
	if std.status != iscsi.StatusGood || len(std.data) != 96 || int(std.data[4]) != len(std.data)-5 || std.data[0] != 0 {
		t.Fatalf("standard inquiry: %d bytes % x", len(std.data), std.data[:8])
	}
	sup := run(lu, []byte{opInquiry, 1, 0, 0, 255, 0})
	for _, page := range sup.data[4:] {
		r := run(lu, []byte{opInquiry, 1, page, 0, 255, 0})
		if r.status != iscsi.StatusGood || r.data[1] != page || len(r.data) != 4+int(binary.BigEndian.Uint16(r.data[2:])) {
			t.Errorf("VPD page 0x%02x: status %d, %d bytes, declared %d", page, r.status, len(r.data), binary.BigEndian.Uint16(r.data[2:]))
		}
	}
	bl := run(lu, []byte{opInquiry, 1, 0xb0, 0, 255, 0})
	if bl.data[3] != 0x3c || binary.BigEndian.Uint32(bl.data[8:]) != maxTransferBytes/512 {
		t.Errorf("block limits page % x", bl.data[:16])
	}
	id := run(lu, []byte{opInquiry, 1, 0x83, 0, 255, 0})
	if !bytes.Contains(id.data, []byte(testIQN)) || !bytes.Contains(id.data, []byte("INGOT   0123456789abcdef")) {
		t.Errorf("device identification % x", id.data)
	}
	if r := run(lu, []byte{opInquiry, 1, 0x99, 0, 255, 0}); r.status != iscsi.StatusCheckCondition {
		t.Error("unsupported VPD page accepted")
	}
}

func TestCapacityAndReportLUNs(t *testing.T) {
	lu, _ := testLU(1 << 20)
	rc10 := run(lu, []byte{opReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	if binary.BigEndian.Uint32(rc10.data) != 2047 || binary.BigEndian.Uint32(rc10.data[4:]) != 512 {
		t.Fatalf("READ CAPACITY(10) % x", rc10.data)
	}
	rc16 := run(lu, []byte{opServiceAction16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0})
	if binary.BigEndian.Uint64(rc16.data) != 2047 || binary.BigEndian.Uint32(rc16.data[8:]) != 512 {
		t.Fatalf("READ CAPACITY(16) % x", rc16.data)
	}
	rl := run(lu, []byte{opReportLUNs, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0})
	if binary.BigEndian.Uint32(rl.data) != 8 || binary.BigEndian.Uint64(rl.data[8:]) != iscsi.LUN(1) {
		t.Fatalf("REPORT LUNS % x", rl.data)
	}
}

func TestModeSenseAndSWP(t *testing.T) {
	lu, _ := testLU(1 << 20)
	all := run(lu, []byte{opModeSense6, 0, 0x3f, 0, 255, 0})
	if all.status != iscsi.StatusGood || int(all.data[0]) != len(all.data)-1 || all.data[2]&0x10 == 0 || all.data[3] != 8 {
		t.Fatalf("mode sense all pages % x", all.data)
	}
	if r := run(lu, []byte{opModeSense6, 0, 0xca, 0, 255, 0}); r.status != iscsi.StatusCheckCondition || r.sense.ASC != 0x39 {
		t.Fatalf("saved values: %v", r.sense)
	}
	ctl := run(lu, []byte{opModeSense6, 0x08, 0x0a, 0, 255, 0}) // DBD: no block descriptor
	if ctl.data[3] != 0 || ctl.data[4] != 0x0a {
		t.Fatalf("control page % x", ctl.data)
	}
	// Turn SWP on with MODE SELECT(6): header + control page.
	sel := append([]byte{0, 0, 0, 0}, ctl.data[4:]...)
	sel[4+4] |= 0x08
	if r := runOut(lu, []byte{opModeSelect6, 0x10, 0, 0, byte(len(sel)), 0}, sel); r.status != iscsi.StatusGood {
		t.Fatalf("mode select: %v", r.sense)
	}
	if r := runOut(lu, cdb16(opWrite16, 0, 1), make([]byte, 512)); r.sense.Key != iscsi.SenseDataProtect {
		t.Fatalf("write with SWP: %v", r.sense)
	}
	if r := run(lu, []byte{opModeSense6, 0, 0x3f, 0, 255, 0}); r.data[2]&0x80 == 0 {
		t.Fatal("WP bit not reported")
	}
	// Changing anything else is refused.
	bad := bytes.Clone(sel)
	bad[4+3] = 0x00
	if r := runOut(lu, []byte{opModeSelect6, 0x10, 0, 0, byte(len(bad)), 0}, bad); r.sense.ASC != 0x26 {
		t.Fatalf("mode select of a fixed field: %v", r.sense)
	}
	sel[4+4] &^= 0x08
	if r := runOut(lu, []byte{opModeSelect6, 0x10, 0, 0, byte(len(sel)), 0}, sel); r.status != iscsi.StatusGood || lu.writeProtected() {
		t.Fatal("SWP not cleared")
	}
	for _, p := range [][]byte{{0, 0}, {0, 0, 0, 8, 1}, {0, 0, 0, 0, 0x0a, 0x20}, {0, 0, 0, 0, 0x1c, 0}} {
		if r := runOut(lu, []byte{opModeSelect6, 0x10, 0, 0, byte(len(p)), 0}, p); r.status != iscsi.StatusCheckCondition {
			t.Errorf("malformed parameter list % x accepted", p)
		}
	}
}

func TestReportSupportedOpcodes(t *testing.T) {
	lu, _ := testLU(1 << 20)
	all := run(lu, []byte{opMaintenanceIn, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0})
	n := int(binary.BigEndian.Uint32(all.data))
	if n != 8*len(supportedOpcodes()) {
		t.Fatalf("all-commands list of %d bytes", n)
	}
	one := run(lu, []byte{opMaintenanceIn, 0x0c, 0x01, opRead10, 0, 0, 0, 0, 0x10, 0, 0, 0})
	if one.data[1] != 0x03 || one.data[4] != opRead10 || one.data[5]&0x18 != 0x18 {
		t.Fatalf("READ(10) usage % x (DPO/FUA must be reported)", one.data)
	}
	rctd := run(lu, []byte{opMaintenanceIn, 0x0c, 0x81, opRead10, 0, 0, 0, 0, 0x10, 0, 0, 0})
	if rctd.data[1]&0x80 == 0 || len(rctd.data) != 4+10+12 {
		t.Fatalf("RCTD answer % x", rctd.data)
	}
	if r := run(lu, []byte{opMaintenanceIn, 0x0c, 0x01, opServiceAction16, 0, 0, 0, 0, 0x10, 0, 0, 0}); r.status != iscsi.StatusCheckCondition {
		t.Fatal("option 1 for an opcode with service actions accepted")
	}
	if r := run(lu, []byte{opMaintenanceIn, 0x0c, 0x01, 0xc1, 0, 0, 0, 0, 0x10, 0, 0, 0}); r.data[1] != 0x01 {
		t.Fatalf("unsupported opcode reported as % x", r.data)
	}
}
