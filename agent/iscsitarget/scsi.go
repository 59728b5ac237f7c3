package iscsitarget

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"

	"github.com/ingot-dev/ingot/shared/iscsi"
)

// SCSI operation codes the logical unit implements.
const (
	opTestUnitReady   = 0x00
	opRequestSense    = 0x03
	opRead6           = 0x08
	opWrite6          = 0x0a
	opInquiry         = 0x12
	opModeSelect6     = 0x15
	opModeSense6      = 0x1a
	opStartStopUnit   = 0x1b
	opReadCapacity10  = 0x25
	opRead10          = 0x28
	opWrite10         = 0x2a
	opWriteVerify10   = 0x2e
	opVerify10        = 0x2f
	opPrefetch10      = 0x34
	opSyncCache10     = 0x35
	opRead16          = 0x88
	opWrite16         = 0x8a
	opOrWrite16       = 0x8b
	opWriteVerify16   = 0x8e
	opVerify16        = 0x8f
	opPrefetch16      = 0x90
	opSyncCache16     = 0x91
	opServiceAction16 = 0x9e // READ CAPACITY(16) is service action 0x10
	opReportLUNs      = 0xa0
	opMaintenanceIn   = 0xa3 // REPORT SUPPORTED OPERATION CODES is service action 0x0c
	opRead12          = 0xa8
	opWrite12         = 0xaa
	opWriteVerify12   = 0xae
	opVerify12        = 0xaf

	saReadCapacity16 = 0x10
	saReportOpcodes  = 0x0c
)

// blockDevice is what a logical unit keeps its blocks on: a file or a
// block device in production, a fault-injecting fake in tests.
type blockDevice interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// dataKind says how a command moves data.
type dataKind uint8

const (
	dataNone  dataKind = iota // no data phase
	dataIn                    // small response built in memory
	dataRead                  // block data streamed from the device
	dataOut                   // block data streamed to the device (write, verify, orwrite)
	dataParam                 // small parameter list (MODE SELECT)
)

// command is a decoded, validated CDB plus what the data phase
// accumulates.
type command struct {
	op     byte
	kind   dataKind
	lba    uint64
	blocks uint64
	// length is the number of data bytes the CDB asks to move
	// (blocks*blockSize for block commands, the allocation or parameter
	// list length otherwise).
	length uint32
	fua    bool
	bytchk uint8
	verify bool // compare instead of write
	write  bool // write the data (WRITE, WRITE AND VERIFY, ORWRITE)
	or     bool // ORWRITE: OR the data into the medium

	// data phase results
	miscompare int64 // first miscompare offset, -1 when none
	failed     *iscsi.Sense
	param      []byte
}

// result is a command's completion.
type result struct {
	status uint8
	sense  *iscsi.Sense
	data   []byte
}

func good(data []byte) result { return result{status: iscsi.StatusGood, data: data} }

func check(s iscsi.Sense) result { return result{status: iscsi.StatusCheckCondition, sense: &s} }

func senseOf(key iscsi.SenseKey, code uint16) *iscsi.Sense {
	return &iscsi.Sense{Key: key, ASC: uint8(code >> 8), ASCQ: uint8(code)}
}

// invalidField is ILLEGAL REQUEST / INVALID FIELD IN CDB with a field
// pointer to byte b (bit pointer bit, or -1 for none).
func invalidField(b int, bit int) *iscsi.Sense {
	s := senseOf(iscsi.SenseIllegalRequest, iscsi.ASCInvalidFieldInCDB)
	s.SKSV = true
	s.SenseKeySpecific = 0x400000 | uint32(b)
	if bit >= 0 {
		s.SenseKeySpecific |= 0x080000 | uint32(bit)<<16
	}
	return s
}

// Sense data the unit returns, built fresh each time (no shared state).
func senseInvalidOpcode() iscsi.Sense  { return iscsi.Sense{Key: iscsi.SenseIllegalRequest, ASC: 0x20} }
func senseLBAOutOfRange() iscsi.Sense  { return iscsi.Sense{Key: iscsi.SenseIllegalRequest, ASC: 0x21} }
func senseLUNUnsupported() iscsi.Sense { return iscsi.Sense{Key: iscsi.SenseIllegalRequest, ASC: 0x25} }
func senseWriteProtected() iscsi.Sense {
	return iscsi.Sense{Key: iscsi.SenseDataProtect, ASC: 0x27, ASCQ: 0x02}
}
func senseWriteError() iscsi.Sense   { return iscsi.Sense{Key: iscsi.SenseMediumError, ASC: 0x0c} }
func senseReadError() iscsi.Sense    { return iscsi.Sense{Key: iscsi.SenseMediumError, ASC: 0x11} }
func senseSavingParams() iscsi.Sense { return iscsi.Sense{Key: iscsi.SenseIllegalRequest, ASC: 0x39} }
func senseParamInvalid() iscsi.Sense { return iscsi.Sense{Key: iscsi.SenseIllegalRequest, ASC: 0x26} }
func senseParamLength() iscsi.Sense  { return iscsi.Sense{Key: iscsi.SenseIllegalRequest, ASC: 0x1a} }

// maxTransferBytes bounds one command's transfer; reported in the Block
// Limits VPD page.
const maxTransferBytes = 32 << 20

// logicalUnit emulates an SBC-3 direct-access block device over a
// blockDevice. It is shared by every session of a target; the only
// mutable state is the software write protect bit.
type logicalUnit struct {
	dev       blockDevice
	blockSize uint32
	blocks    uint64
	iqn       string
	serial    string
	naa       uint64

	mu  sync.Mutex
	swp bool
}

func (lu *logicalUnit) writeProtected() bool {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	return lu.swp
}

func (lu *logicalUnit) maxTransferBlocks() uint64 { return maxTransferBytes / uint64(lu.blockSize) }

// decode validates a CDB for this unit. A non-nil sense means the command
// fails before any data moves.
func (lu *logicalUnit) decode(cdb []byte) (*command, *iscsi.Sense) {
	c := &command{op: cdb[0], miscompare: -1}
	be := binary.BigEndian
	switch c.op {
	case opTestUnitReady:
		c.kind = dataNone
		return c, nil
	case opRequestSense:
		c.kind, c.length = dataIn, uint32(cdb[4])
		if cdb[1]&^0x01 != 0 {
			return nil, invalidField(1, -1)
		}
		return c, nil
	case opInquiry:
		c.kind, c.length = dataIn, uint32(be.Uint16(cdb[3:]))
		if cdb[1]&0x02 != 0 { // CmdDt is obsolete
			return nil, invalidField(1, 1)
		}
		if cdb[1]&0x01 == 0 && cdb[2] != 0 {
			return nil, invalidField(2, -1)
		}
		return c, nil
	case opModeSense6:
		c.kind, c.length = dataIn, uint32(cdb[4])
		return c, nil
	case opModeSelect6:
		c.kind, c.length = dataParam, uint32(cdb[4])
		if cdb[1]&0x01 != 0 { // SP: saving pages is not supported
			return nil, invalidField(1, 0)
		}
		return c, nil
	case opStartStopUnit:
		c.kind = dataNone
		if cdb[4]&0x02 != 0 && cdb[4]>>4 == 0 { // LOEJ on a non-removable unit
			return nil, invalidField(4, 1)
		}
		return c, nil
	case opReadCapacity10:
		c.kind, c.length = dataIn, 8
		if cdb[8]&0x01 == 0 && be.Uint32(cdb[2:]) != 0 {
			return nil, invalidField(2, -1)
		}
		return c, nil
	case opServiceAction16:
		if cdb[1]&0x1f != saReadCapacity16 {
			return nil, invalidField(1, 4)
		}
		c.kind, c.length = dataIn, be.Uint32(cdb[10:])
		return c, nil
	case opReportLUNs:
		c.kind, c.length = dataIn, be.Uint32(cdb[6:])
		if cdb[2] > 2 && cdb[2] != 0x10 && cdb[2] != 0x11 && cdb[2] != 0x12 {
			return nil, invalidField(2, -1)
		}
		return c, nil
	case opMaintenanceIn:
		if cdb[1]&0x1f != saReportOpcodes {
			return nil, invalidField(1, 4)
		}
		c.kind, c.length = dataIn, be.Uint32(cdb[6:])
		return c, nil
	case opSyncCache10, opSyncCache16, opPrefetch10, opPrefetch16:
		c.kind = dataNone
		if c.op == opSyncCache10 || c.op == opPrefetch10 {
			c.lba, c.blocks = uint64(be.Uint32(cdb[2:])), uint64(be.Uint16(cdb[7:]))
		} else {
			c.lba, c.blocks = be.Uint64(cdb[2:]), uint64(be.Uint32(cdb[10:]))
		}
		if s := lu.checkRange(c.lba, c.blocks); s != nil {
			return nil, s
		}
		return c, nil
	}
	return lu.decodeBlock(c, cdb)
}

// decodeBlock handles READ, WRITE, VERIFY, WRITE AND VERIFY and ORWRITE in
// all their sizes.
func (lu *logicalUnit) decodeBlock(c *command, cdb []byte) (*command, *iscsi.Sense) {
	be := binary.BigEndian
	switch c.op {
	case opRead6, opWrite6:
		c.lba = uint64(cdb[1]&0x1f)<<16 | uint64(be.Uint16(cdb[2:]))
		c.blocks = uint64(cdb[4])
		if c.blocks == 0 {
			c.blocks = 256
		}
	case opRead10, opWrite10, opVerify10, opWriteVerify10:
		c.lba, c.blocks = uint64(be.Uint32(cdb[2:])), uint64(be.Uint16(cdb[7:]))
	case opRead12, opWrite12, opVerify12, opWriteVerify12:
		c.lba, c.blocks = uint64(be.Uint32(cdb[2:])), uint64(be.Uint32(cdb[6:]))
	case opRead16, opWrite16, opVerify16, opWriteVerify16, opOrWrite16:
		c.lba, c.blocks = be.Uint64(cdb[2:]), uint64(be.Uint32(cdb[10:]))
	default:
		s := senseInvalidOpcode()
		return nil, &s
	}
	switch c.op {
	case opRead6, opRead10, opRead12, opRead16:
		c.kind = dataRead
	case opVerify10, opVerify12, opVerify16:
		c.verify = true
	case opWrite6, opWrite10, opWrite12, opWrite16, opWriteVerify10, opWriteVerify12, opWriteVerify16:
		c.write = true
	case opOrWrite16:
		c.write, c.or = true, true
	}
	if c.op != opRead6 && c.op != opWrite6 {
		if cdb[1]>>5 != 0 { // RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT: no protection information
			return nil, invalidField(1, 7)
		}
		c.fua = cdb[1]&0x08 != 0
		if c.verify || c.op == opWriteVerify10 || c.op == opWriteVerify12 || c.op == opWriteVerify16 {
			c.fua = false
			c.bytchk = cdb[1] >> 1 & 0x03
		}
	}
	if s := lu.checkRange(c.lba, c.blocks); s != nil {
		return nil, s
	}
	if c.blocks > lu.maxTransferBlocks() {
		return nil, invalidField(7, -1)
	}
	switch {
	case c.kind == dataRead:
		c.length = uint32(c.blocks) * lu.blockSize
	case c.verify:
		switch c.bytchk {
		case 0:
			c.kind = dataNone // medium verification only
		case 1:
			c.kind, c.length = dataOut, uint32(c.blocks)*lu.blockSize
		case 3:
			c.kind, c.length = dataOut, lu.blockSize
			if c.blocks == 0 {
				c.length = 0
			}
		default:
			return nil, invalidField(1, 2)
		}
	default:
		if c.bytchk == 2 {
			return nil, invalidField(1, 2)
		}
		c.kind, c.length = dataOut, uint32(c.blocks)*lu.blockSize
		if lu.writeProtected() {
			s := senseWriteProtected()
			return nil, &s
		}
	}
	return c, nil
}

func (lu *logicalUnit) checkRange(lba, blocks uint64) *iscsi.Sense {
	if lba > lu.blocks || blocks > lu.blocks-lba {
		s := senseLBAOutOfRange()
		return &s
	}
	return nil
}

// offset is the device byte offset of data byte off of c.
func (lu *logicalUnit) offset(c *command, off uint32) int64 {
	return int64(c.lba)*int64(lu.blockSize) + int64(off)
}

// readAt reads block data of a READ at data offset off.
func (lu *logicalUnit) readAt(c *command, p []byte, off uint32) *iscsi.Sense {
	if _, err := lu.dev.ReadAt(p, lu.offset(c, off)); err != nil {
		s := senseReadError()
		return &s
	}
	return nil
}

// consume applies one piece of a data-out buffer at data offset off. The
// first failure is kept in c and later data is dropped.
func (lu *logicalUnit) consume(c *command, p []byte, off uint32, scratch []byte) {
	if c.failed != nil || len(p) == 0 {
		return
	}
	switch {
	case c.or:
		cur := scratch[:len(p)]
		if _, err := lu.dev.ReadAt(cur, lu.offset(c, off)); err != nil {
			s := senseReadError()
			c.failed = &s
			return
		}
		for i := range cur {
			cur[i] |= p[i]
		}
		p = cur
		fallthrough
	case c.write:
		if _, err := lu.dev.WriteAt(p, lu.offset(c, off)); err != nil {
			s := senseWriteError()
			c.failed = &s
		}
	case c.verify && c.miscompare < 0:
		if c.bytchk == 3 { // one block compared against every block in the range
			for b := uint64(0); b < c.blocks; b++ {
				cur := scratch[:len(p)]
				if _, err := lu.dev.ReadAt(cur, int64(c.lba+b)*int64(lu.blockSize)+int64(off)); err != nil {
					s := senseReadError()
					c.failed = &s
					return
				}
				if i := mismatch(cur, p); i >= 0 {
					c.miscompare = int64(b)*int64(lu.blockSize) + int64(off) + int64(i)
					return
				}
			}
			return
		}
		cur := scratch[:len(p)]
		if _, err := lu.dev.ReadAt(cur, lu.offset(c, off)); err != nil {
			s := senseReadError()
			c.failed = &s
			return
		}
		if i := mismatch(cur, p); i >= 0 {
			c.miscompare = int64(off) + int64(i)
		}
	}
}

func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// finish completes a data-out or no-data block command after its data
// phase.
func (lu *logicalUnit) finish(c *command) result {
	if c.failed != nil {
		return check(*c.failed)
	}
	if c.miscompare >= 0 {
		return check(iscsi.Sense{Key: iscsi.SenseMiscompare, ASC: 0x1d, InfoValid: true, Information: uint64(c.miscompare)})
	}
	if c.fua {
		if err := lu.dev.Sync(); err != nil {
			return check(senseWriteError())
		}
	}
	return good(nil)
}

// execute runs a command without block data (dataNone, dataIn, dataParam).
func (lu *logicalUnit) execute(c *command, cdb []byte) result {
	switch c.op {
	case opTestUnitReady, opStartStopUnit, opPrefetch10, opPrefetch16:
		return good(nil)
	case opVerify10, opVerify12, opVerify16:
		return lu.verifyMedium(c)
	case opSyncCache10, opSyncCache16:
		if err := lu.dev.Sync(); err != nil {
			return check(senseWriteError())
		}
		return good(nil)
	case opRequestSense:
		s := iscsi.Sense{Key: iscsi.SenseNoSense, Descriptor: cdb[1]&0x01 != 0}
		return good(s.Marshal())
	case opInquiry:
		return lu.inquiry(cdb)
	case opModeSense6:
		return lu.modeSense6(cdb)
	case opModeSelect6:
		return lu.modeSelect6(c.param)
	case opReadCapacity10:
		b := make([]byte, 8)
		last := lu.blocks - 1
		if last > 0xffffffff {
			last = 0xffffffff
		}
		binary.BigEndian.PutUint32(b, uint32(last))
		binary.BigEndian.PutUint32(b[4:], lu.blockSize)
		return good(b)
	case opServiceAction16:
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b, lu.blocks-1)
		binary.BigEndian.PutUint32(b[8:], lu.blockSize)
		return good(b)
	case opReportLUNs:
		return good(reportLUNs(cdb[2]))
	case opMaintenanceIn:
		return lu.reportOpcodes(cdb)
	}
	return check(senseInvalidOpcode())
}

// verifyMedium checks that the range reads back (BYTCHK=0).
func (lu *logicalUnit) verifyMedium(c *command) result {
	buf := make([]byte, min(c.blocks*uint64(lu.blockSize), 1<<20))
	for off := uint64(0); off < c.blocks*uint64(lu.blockSize); off += uint64(len(buf)) {
		n := min(uint64(len(buf)), c.blocks*uint64(lu.blockSize)-off)
		if _, err := lu.dev.ReadAt(buf[:n], lu.offset(c, 0)+int64(off)); err != nil {
			return check(senseReadError())
		}
	}
	return good(nil)
}

// reportLUNs lists LUN 1 (IPA's layout) for the "all" selections and no
// well-known LUNs.
func reportLUNs(sel byte) []byte {
	if sel == 0x01 || sel == 0x10 || sel == 0x12 { // well-known LUNs only / administrative
		return make([]byte, 8)
	}
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b, 8)
	binary.BigEndian.PutUint64(b[8:], iscsi.LUN(1))
	return b
}

// Identification strings (ASCII, space padded as SPC-4 §6.6.2 requires).
const (
	vendorID   = "INGOT   "
	productID  = "DEPLOY DISK     "
	productRev = "0001"
)

func (lu *logicalUnit) inquiry(cdb []byte) result {
	if cdb[1]&0x01 == 0 {
		b := make([]byte, 96)
		b[0] = 0x00 // peripheral qualifier 0, direct-access block device
		b[2] = 0x06 // SPC-4
		b[3] = 0x12 // HISUP, response data format 2
		b[4] = byte(len(b) - 5)
		b[7] = 0x02 // CMDQUE
		copy(b[8:], vendorID)
		copy(b[16:], productID)
		copy(b[32:], productRev)
		// Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
		for i, v := range []uint16{0x00a0, 0x0960, 0x0460, 0x04c0} {
			binary.BigEndian.PutUint16(b[58+2*i:], v)
		}
		return good(b)
	}
	switch cdb[2] {
	case 0x00:
		pages := []byte{0x00, 0x80, 0x83, 0xb0, 0xb1}
		return good(append([]byte{0, 0x00, 0, byte(len(pages))}, pages...))
	case 0x80:
		return good(append([]byte{0, 0x80, 0, byte(len(lu.serial))}, lu.serial...))
	case 0x83:
		return good(lu.deviceIdentification())
	case 0xb0:
		b := make([]byte, 64)
		b[1] = 0xb0
		binary.BigEndian.PutUint16(b[2:], 0x3c)
		binary.BigEndian.PutUint16(b[6:], 1)                                     // optimal transfer length granularity
		binary.BigEndian.PutUint32(b[8:], uint32(lu.maxTransferBlocks()))        // maximum transfer length
		binary.BigEndian.PutUint32(b[12:], uint32((1<<20)/uint64(lu.blockSize))) // optimal transfer length
		binary.BigEndian.PutUint32(b[16:], uint32(lu.maxTransferBlocks()))       // maximum prefetch length
		return good(b)
	case 0xb1:
		b := make([]byte, 64)
		b[1] = 0xb1
		binary.BigEndian.PutUint16(b[2:], 0x3c)
		binary.BigEndian.PutUint16(b[4:], 0) // medium rotation rate not reported
		return good(b)
	}
	return check(*invalidField(2, -1))
}

func (lu *logicalUnit) deviceIdentification() []byte {
	var d []byte
	// T10 vendor ID based: vendor + serial (ASCII, logical unit).
	t10 := vendorID + lu.serial
	d = append(d, 0x02, 0x01, 0, byte(len(t10)))
	d = append(d, t10...)
	// NAA locally assigned (binary, logical unit).
	d = append(d, 0x01, 0x03, 0, 8)
	d = binary.BigEndian.AppendUint64(d, lu.naa)
	// SCSI name string of the target device (iSCSI, UTF-8, PIV).
	name := []byte(lu.iqn)
	name = append(name, 0)
	for len(name)%4 != 0 {
		name = append(name, 0)
	}
	d = append(d, 0x53, 0xa8, 0, byte(len(name)))
	d = append(d, name...)
	b := []byte{0, 0x83, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(len(d)))
	return append(b, d...)
}

// Mode pages: caching (0x08) and control (0x0a).
func (lu *logicalUnit) cachingPage(changeable bool) []byte {
	p := make([]byte, 20)
	p[0], p[1] = 0x08, 0x12
	if !changeable {
		p[2] = 0x04 // WCE: writes land in the page cache until SYNCHRONIZE CACHE
	}
	return p
}

func (lu *logicalUnit) controlPage(changeable bool) []byte {
	p := make([]byte, 12)
	p[0], p[1] = 0x0a, 0x0a
	if changeable {
		p[4] = 0x08 // SWP is the only changeable field
		return p
	}
	p[3] = 0x10 // queue algorithm modifier 1: unrestricted reordering
	if lu.writeProtected() {
		p[4] = 0x08
	}
	p[8], p[9] = 0xff, 0xff // busy timeout period: unlimited
	return p
}

func (lu *logicalUnit) modeSense6(cdb []byte) result {
	dbd := cdb[1]&0x08 != 0
	pc, page, sub := cdb[2]>>6, cdb[2]&0x3f, cdb[3]
	if pc == 3 {
		return check(senseSavingParams())
	}
	if sub != 0 && !(page == 0x3f && sub == 0xff) {
		return check(*invalidField(3, -1))
	}
	changeable := pc == 1
	var pages []byte
	switch page {
	case 0x08:
		pages = lu.cachingPage(changeable)
	case 0x0a:
		pages = lu.controlPage(changeable)
	case 0x3f:
		pages = append(lu.cachingPage(changeable), lu.controlPage(changeable)...)
	default:
		return check(*invalidField(2, 5))
	}
	hdr := []byte{0, 0, 0x10, 0} // device-specific parameter: DPOFUA
	if lu.writeProtected() {
		hdr[2] |= 0x80
	}
	b := hdr
	if !dbd {
		hdr[3] = 8
		desc := make([]byte, 8)
		n := lu.blocks
		if n > 0xffffff {
			n = 0xffffff
		}
		desc[1], desc[2], desc[3] = byte(n>>16), byte(n>>8), byte(n)
		desc[5], desc[6], desc[7] = byte(lu.blockSize>>16), byte(lu.blockSize>>8), byte(lu.blockSize)
		b = append(b, desc...)
	}
	b = append(b, pages...)
	b[0] = byte(len(b) - 1)
	return good(b)
}

// modeSelect6 accepts the caching and control pages as MODE SENSE reports
// them, with only SWP changed.
func (lu *logicalUnit) modeSelect6(p []byte) result {
	if len(p) == 0 {
		return good(nil)
	}
	if len(p) < 4 {
		return check(senseParamLength())
	}
	bdl := int(p[3])
	if bdl != 0 && bdl != 8 || len(p) < 4+bdl {
		return check(senseParamLength())
	}
	pages := p[4+bdl:]
	newSWP := lu.writeProtected()
	for len(pages) > 0 {
		if len(pages) < 2 || len(pages) < 2+int(pages[1]) {
			return check(senseParamLength())
		}
		pg := pages[:2+int(pages[1])]
		pages = pages[len(pg):]
		switch pg[0] & 0x3f {
		case 0x08:
			if !bytes.Equal(pg[2:], lu.cachingPage(false)[2:]) {
				return check(senseParamInvalid())
			}
		case 0x0a:
			cur := lu.controlPage(false)
			if len(pg) != len(cur) {
				return check(senseParamInvalid())
			}
			want := pg[4]&0x08 != 0
			pg4, cur4 := pg[4]&^0x08, cur[4]&^0x08
			if pg4 != cur4 || !bytes.Equal(pg[2:4], cur[2:4]) || !bytes.Equal(pg[5:], cur[5:]) {
				return check(senseParamInvalid())
			}
			newSWP = want
		default:
			return check(senseParamInvalid())
		}
	}
	lu.mu.Lock()
	lu.swp = newSWP
	lu.mu.Unlock()
	return good(nil)
}

// opcodeUsage is the CDB usage data of REPORT SUPPORTED OPERATION CODES:
// which bits of each CDB the unit looks at.
func opcodeUsage(op, sa byte) []byte {
	switch op {
	case opTestUnitReady:
		return []byte{op, 0, 0, 0, 0, 0x07}
	case opRequestSense:
		return []byte{op, 0x01, 0, 0, 0xff, 0x07}
	case opRead6, opWrite6:
		return []byte{op, 0x1f, 0xff, 0xff, 0xff, 0x07}
	case opInquiry:
		return []byte{op, 0x01, 0xff, 0xff, 0xff, 0x07}
	case opModeSelect6:
		return []byte{op, 0x10, 0, 0, 0xff, 0x07}
	case opModeSense6:
		return []byte{op, 0x08, 0xff, 0xff, 0xff, 0x07}
	case opStartStopUnit:
		return []byte{op, 0x01, 0, 0x0f, 0xf7, 0x07}
	case opReadCapacity10:
		return []byte{op, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x07}
	case opRead10, opWrite10:
		return []byte{op, 0xf8, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}
	case opVerify10, opWriteVerify10:
		return []byte{op, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}
	case opPrefetch10, opSyncCache10:
		return []byte{op, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}
	case opRead16, opWrite16, opOrWrite16:
		return []byte{op, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}
	case opVerify16, opWriteVerify16:
		return []byte{op, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}
	case opPrefetch16, opSyncCache16:
		return []byte{op, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}
	case opServiceAction16:
		if sa == saReadCapacity16 {
			return []byte{op, saReadCapacity16, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}
		}
	case opReportLUNs:
		return []byte{op, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}
	case opMaintenanceIn:
		if sa == saReportOpcodes {
			return []byte{op, saReportOpcodes, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}
		}
	case opRead12, opWrite12:
		return []byte{op, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}
	case opVerify12, opWriteVerify12:
		return []byte{op, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}
	}
	return nil
}

func supportedOpcodes() [][2]byte {
	return [][2]byte{{opTestUnitReady, 0}, {opRequestSense, 0}, {opRead6, 0}, {opWrite6, 0}, {opInquiry, 0},
		{opModeSelect6, 0}, {opModeSense6, 0}, {opStartStopUnit, 0}, {opReadCapacity10, 0}, {opRead10, 0},
		{opWrite10, 0}, {opWriteVerify10, 0}, {opVerify10, 0}, {opPrefetch10, 0}, {opSyncCache10, 0},
		{opRead16, 0}, {opWrite16, 0}, {opOrWrite16, 0}, {opWriteVerify16, 0}, {opVerify16, 0},
		{opPrefetch16, 0}, {opSyncCache16, 0}, {opServiceAction16, saReadCapacity16}, {opReportLUNs, 0},
		{opMaintenanceIn, saReportOpcodes}, {opRead12, 0}, {opWrite12, 0}, {opWriteVerify12, 0}, {opVerify12, 0}}
}

func hasServiceAction(op byte) bool { return op == opServiceAction16 || op == opMaintenanceIn }

// reportOpcodes implements REPORT SUPPORTED OPERATION CODES (SPC-4
// §6.35) for reporting options 0 (all), 1 (one opcode) and 2 (one opcode
// and service action). RCTD (timeouts) is not reported.
func (lu *logicalUnit) reportOpcodes(cdb []byte) result {
	opt := cdb[2] & 0x07
	rctd := cdb[2]&0x80 != 0
	op, sa := cdb[3], byte(binary.BigEndian.Uint16(cdb[4:]))
	// The command timeouts descriptor (SPC-4 §6.35.4): 30 s nominal and
	// recommended for everything.
	timeouts := []byte{0, 0x0a, 0, 0, 0, 0, 0, 30, 0, 0, 0, 30}
	switch opt {
	case 0:
		var d []byte
		for _, o := range supportedOpcodes() {
			desc := make([]byte, 8)
			desc[0] = o[0]
			binary.BigEndian.PutUint16(desc[2:], uint16(o[1]))
			if hasServiceAction(o[0]) {
				desc[5] = 0x01 // SERVACTV
			}
			binary.BigEndian.PutUint16(desc[6:], uint16(len(opcodeUsage(o[0], o[1]))))
			d = append(d, desc...)
			if rctd {
				d[len(d)-3] |= 0x02 // CTDP
				d = append(d, timeouts...)
			}
		}
		b := make([]byte, 4, 4+len(d))
		binary.BigEndian.PutUint32(b, uint32(len(d)))
		return good(append(b, d...))
	case 1, 2:
		if opt == 1 && hasServiceAction(op) || opt == 2 && !hasServiceAction(op) {
			return check(*invalidField(2, 2))
		}
		if opt == 1 {
			sa = 0
		}
		usage := opcodeUsage(op, sa)
		b := []byte{0, 0x01, 0, 0} // SUPPORT=1: not supported
		if usage != nil {
			b[1] = 0x03 // supported in conformance with a standard
			binary.BigEndian.PutUint16(b[2:], uint16(len(usage)))
			b = append(b, usage...)
			if rctd {
				b[1] |= 0x80 // CTDP
				b = append(b, timeouts...)
			}
		}
		return good(b)
	}
	return check(*invalidField(2, 2))
}
