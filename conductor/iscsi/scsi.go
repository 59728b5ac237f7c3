package iscsi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// SCSI operation codes the initiator sends.
const (
	opTestUnitReady   = 0x00
	opInquiry         = 0x12
	opReadCapacity10  = 0x25
	opRead16          = 0x88
	opWrite16         = 0x8a
	opSyncCache16     = 0x91
	opServiceAction16 = 0x9e
	opReportLUNs      = 0xa0
)

// CDB builders (SBC-3, SPC-4).

func cdbTestUnitReady() []byte { return make([]byte, 6) }

func cdbInquiry(evpd bool, page byte, alloc uint16) []byte {
	c := []byte{opInquiry, 0, page, byte(alloc >> 8), byte(alloc), 0}
	if evpd {
		c[1] = 1
	}
	return c
}

func cdbReadCapacity10() []byte { return []byte{opReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0} }

func cdbReadCapacity16(alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opServiceAction16, 0x10
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

func cdbRW16(op byte, lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = op
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func cdbSyncCache16() []byte {
	c := make([]byte, 16)
	c[0] = opSyncCache16
	return c
}

func cdbReportLUNs(alloc uint32) []byte {
	c := make([]byte, 12)
	c[0] = opReportLUNs
	binary.BigEndian.PutUint32(c[6:], alloc)
	return c
}

// InquiryData is the standard INQUIRY data (SPC-4 §6.6.2).
type InquiryData struct {
	Qualifier, DeviceType uint8
	Removable             bool
	Version               uint8
	Vendor, Product       string
	Revision              string
}

// Inquiry reads the standard INQUIRY data of lun.
func (s *Session) Inquiry(ctx context.Context, lun uint16) (InquiryData, error) {
	buf := make([]byte, 96)
	res, err := s.Execute(ctx, Command{LUN: lun, CDB: cdbInquiry(false, 0, uint16(len(buf))), In: buf})
	if err != nil {
		return InquiryData{}, fmt.Errorf("inquiry lun %d: %w", lun, err)
	}
	if res.InLen < 36 {
		return InquiryData{}, fmt.Errorf("inquiry lun %d: %w: %d bytes of standard data", lun, ErrProtocol, res.InLen)
	}
	return InquiryData{
		Qualifier:  buf[0] >> 5,
		DeviceType: buf[0] & 0x1f,
		Removable:  buf[1]&0x80 != 0,
		Version:    buf[2],
		Vendor:     strings.TrimSpace(string(buf[8:16])),
		Product:    strings.TrimSpace(string(buf[16:32])),
		Revision:   strings.TrimSpace(string(buf[32:36])),
	}, nil
}

// InquiryVPD reads a Vital Product Data page; the result is the whole page
// with its 4-byte header, checked against the page length it declares.
func (s *Session) InquiryVPD(ctx context.Context, lun uint16, page byte) ([]byte, error) {
	buf := make([]byte, 1024)
	res, err := s.Execute(ctx, Command{LUN: lun, CDB: cdbInquiry(true, page, uint16(len(buf))), In: buf})
	if err != nil {
		return nil, fmt.Errorf("inquiry vpd 0x%02x lun %d: %w", page, lun, err)
	}
	if res.InLen < 4 || buf[1] != page {
		return nil, fmt.Errorf("inquiry vpd 0x%02x: %w: malformed page", page, ErrProtocol)
	}
	n := 4 + int(binary.BigEndian.Uint16(buf[2:]))
	if n > res.InLen {
		return nil, fmt.Errorf("inquiry vpd 0x%02x: %w: page length %d, got %d bytes", page, ErrProtocol, n, res.InLen)
	}
	return buf[:n], nil
}

// SerialNumber reads the Unit Serial Number VPD page (0x80).
func (s *Session) SerialNumber(ctx context.Context, lun uint16) (string, error) {
	p, err := s.InquiryVPD(ctx, lun, 0x80)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(p[4:])), nil
}

// Designator is one Device Identification VPD (0x83) descriptor.
type Designator struct {
	CodeSet, Association, Type uint8
	Value                      []byte
}

// DeviceIdentifiers reads the Device Identification VPD page (0x83).
func (s *Session) DeviceIdentifiers(ctx context.Context, lun uint16) ([]Designator, error) {
	p, err := s.InquiryVPD(ctx, lun, 0x83)
	if err != nil {
		return nil, err
	}
	return parseDesignators(p[4:])
}

func parseDesignators(d []byte) ([]Designator, error) {
	var out []Designator
	for len(d) > 0 {
		if len(d) < 4 || 4+int(d[3]) > len(d) {
			return nil, fmt.Errorf("device identification: %w: truncated designator", ErrProtocol)
		}
		n := int(d[3])
		out = append(out, Designator{CodeSet: d[0] & 0x0f, Association: d[1] >> 4 & 3, Type: d[1] & 0x0f,
			Value: append([]byte(nil), d[4:4+n]...)})
		d = d[4+n:]
	}
	return out, nil
}

// ReportLUNs lists the target's logical units (single-level and flat
// addressing; others are skipped).
func (s *Session) ReportLUNs(ctx context.Context) ([]uint16, error) {
	buf := make([]byte, 8+8*256)
	res, err := s.Execute(ctx, Command{LUN: 0, CDB: cdbReportLUNs(uint32(len(buf))), In: buf})
	if err != nil {
		return nil, fmt.Errorf("report luns: %w", err)
	}
	if res.InLen < 8 {
		return nil, fmt.Errorf("report luns: %w: %d bytes", ErrProtocol, res.InLen)
	}
	n := int(binary.BigEndian.Uint32(buf)) / 8
	var luns []uint16
	for i := 0; i < n && 16+8*i <= res.InLen; i++ {
		if l, ok := proto.ParseLUN(binary.BigEndian.Uint64(buf[8+8*i:])); ok {
			luns = append(luns, l)
		}
	}
	return luns, nil
}

// LUN is an opened logical unit of a session.
type LUN struct {
	s *Session
	// Number is the logical unit number.
	Number uint16
	// BlockSize and Blocks describe its capacity.
	BlockSize uint32
	Blocks    uint64
}

// Size is the capacity in bytes.
func (l *LUN) Size() int64 { return int64(l.Blocks) * int64(l.BlockSize) }

// OpenLUN waits for lun to be ready (absorbing the UNIT ATTENTION a fresh
// session reports and a NOT READY that is becoming ready) and reads its
// capacity with READ CAPACITY(16), falling back to (10).
func (s *Session) OpenLUN(ctx context.Context, lun uint16) (*LUN, error) {
	if err := s.TestUnitReady(ctx, lun); err != nil {
		return nil, err
	}
	l := &LUN{s: s, Number: lun}
	buf := make([]byte, 32)
	_, err := s.Execute(ctx, Command{LUN: lun, CDB: cdbReadCapacity16(32), In: buf})
	switch {
	case err == nil:
		l.Blocks = binary.BigEndian.Uint64(buf) + 1
		l.BlockSize = binary.BigEndian.Uint32(buf[8:])
	case errors.Is(err, ErrInvalidOpcode) || isIllegalRequest(err):
		buf = buf[:8]
		if _, err := s.Execute(ctx, Command{LUN: lun, CDB: cdbReadCapacity10(), In: buf}); err != nil {
			return nil, fmt.Errorf("read capacity(10) lun %d: %w", lun, err)
		}
		l.Blocks = uint64(binary.BigEndian.Uint32(buf)) + 1
		l.BlockSize = binary.BigEndian.Uint32(buf[4:])
	default:
		return nil, fmt.Errorf("read capacity(16) lun %d: %w", lun, err)
	}
	if l.BlockSize == 0 || l.BlockSize > 1<<20 || l.BlockSize&(l.BlockSize-1) != 0 {
		return nil, fmt.Errorf("read capacity lun %d: %w: block size %d", lun, ErrProtocol, l.BlockSize)
	}
	return l, nil
}

func isIllegalRequest(err error) bool {
	var se *SCSIError
	return errors.As(err, &se) && se.HasSense && se.Sense.Key == proto.SenseIllegalRequest
}

// TestUnitReady sends TEST UNIT READY until the unit is ready, absorbing
// unit attentions (at most 8) and NOT READY "becoming ready" for up to the
// context's deadline.
func (s *Session) TestUnitReady(ctx context.Context, lun uint16) error {
	attentions := 0
	for {
		_, err := s.Execute(ctx, Command{LUN: lun, CDB: cdbTestUnitReady()})
		var se *SCSIError
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrUnitAttention) && attentions < 8:
			attentions++
			continue
		case errors.As(err, &se) && se.HasSense && se.Sense.Key == proto.SenseNotReady && se.Sense.ASC == 0x04 && se.Sense.ASCQ == 0x01:
			select { // becoming ready
			case <-time.After(200 * time.Millisecond):
				continue
			case <-ctx.Done():
				return fmt.Errorf("test unit ready lun %d: %w", lun, ctx.Err())
			}
		}
		return fmt.Errorf("test unit ready lun %d: %w", lun, err)
	}
}

// check validates a block range.
func (l *LUN) check(lba uint64, n int) (uint32, error) {
	if n%int(l.BlockSize) != 0 {
		return 0, fmt.Errorf("lun %d: %d bytes is not a multiple of the %d-byte block", l.Number, n, l.BlockSize)
	}
	blocks := uint64(n) / uint64(l.BlockSize)
	if lba > l.Blocks || blocks > l.Blocks-lba {
		return 0, fmt.Errorf("lun %d: blocks [%d,+%d) of %d: %w", l.Number, lba, blocks, l.Blocks, ErrBeyondCapacity)
	}
	return uint32(blocks), nil
}

// WriteBlocks writes data (a whole number of blocks) at lba with WRITE(16).
func (l *LUN) WriteBlocks(ctx context.Context, lba uint64, data []byte) error {
	p, err := l.SubmitWrite(ctx, lba, data)
	if err != nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}

// SubmitWrite queues a WRITE(16) without waiting; data must not change
// until the Pending completes.
func (l *LUN) SubmitWrite(ctx context.Context, lba uint64, data []byte) (*Pending, error) {
	blocks, err := l.check(lba, len(data))
	if err != nil {
		return nil, err
	}
	return l.s.Submit(ctx, Command{LUN: l.Number, CDB: cdbRW16(opWrite16, lba, blocks), Out: data})
}

// ReadBlocks fills buf (a whole number of blocks) from lba with READ(16).
func (l *LUN) ReadBlocks(ctx context.Context, lba uint64, buf []byte) error {
	blocks, err := l.check(lba, len(buf))
	if err != nil {
		return err
	}
	res, err := l.s.Execute(ctx, Command{LUN: l.Number, CDB: cdbRW16(opRead16, lba, blocks), In: buf})
	if err != nil {
		return err
	}
	if res.InLen != len(buf) {
		return fmt.Errorf("read lun %d lba %d: %w: %d of %d bytes", l.Number, lba, ErrProtocol, res.InLen, len(buf))
	}
	return nil
}

// Sync flushes the unit's write cache (SYNCHRONIZE CACHE(16), whole unit).
func (l *LUN) Sync(ctx context.Context) error {
	if _, err := l.s.Execute(ctx, Command{LUN: l.Number, CDB: cdbSyncCache16()}); err != nil {
		return fmt.Errorf("synchronize cache lun %d: %w", l.Number, err)
	}
	return nil
}
