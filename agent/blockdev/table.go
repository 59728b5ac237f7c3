package blockdev

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// Table is what a disk's first and last sectors say about its layout.
type Table struct {
	// Kind is "gpt", "mbr" or "" (no partition table found).
	Kind string
	// DiskID is the MBR disk identifier (4 bytes at offset 440, read as a
	// little-endian integer) formatted "0x%08x", as IPA reports it for
	// whole-disk images. It is read whatever the table kind.
	DiskID string
	// DiskGUID is the GPT disk GUID (lower case), "" for MBR disks.
	DiskGUID string
	// SectorSize is the logical sector size the GPT was found at (512 or
	// 4096); 512 otherwise.
	SectorSize int
	// Partitions are the used entries, in table order.
	Partitions []Partition
	// BackupGPT is true when the primary GPT header was unusable and the
	// backup one was read.
	BackupGPT bool
}

// Partition is one partition-table entry.
type Partition struct {
	// Number is the 1-based entry number (Linux's partition number).
	Number int
	// Start and Size are in bytes.
	Start, Size int64
	// TypeGUID and UUID (PARTUUID) are GPT's, lower case.
	TypeGUID, UUID string
	// Name is the GPT partition name.
	Name string
	// MBRType is the MBR partition type byte (0 for GPT entries).
	MBRType byte
}

// ESPTypeGUID is the GPT type of an EFI system partition.
const ESPTypeGUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"

// mbrESPType is the MBR type byte of an EFI system partition.
const mbrESPType = 0xef

// IsESP reports whether the partition is an EFI system partition.
func (p Partition) IsESP() bool { return p.TypeGUID == ESPTypeGUID || p.MBRType == mbrESPType }

// ESP returns the table's first EFI system partition.
func (t Table) ESP() (Partition, bool) {
	for _, p := range t.Partitions {
		if p.IsESP() {
			return p, true
		}
	}
	return Partition{}, false
}

// ErrTruncated means the disk is too small to hold what its table claims.
var ErrTruncated = errors.New("partition table points beyond the end of the disk")

// Limits that bound what an untrusted table can make us read.
const (
	maxGPTEntries   = 4096
	maxGPTEntrySize = 4096
	maxGPTArray     = 1 << 20
)

// ReadTable reads the partition table of a disk (or disk image) of the
// given size. A disk without a recognisable table gives Kind "" and no
// error; only I/O errors are errors.
func ReadTable(r io.ReaderAt, size int64) (Table, error) {
	t := Table{SectorSize: 512}
	if size < 512 {
		return t, nil
	}
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil && !errors.Is(err, io.EOF) {
		return t, fmt.Errorf("read MBR: %w", err)
	}
	t.DiskID = fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(mbr[440:444]))
	for _, ss := range []int{512, 4096} {
		gt, ok, err := readGPT(r, size, ss, false)
		if err != nil {
			return t, err
		}
		if !ok {
			gt, ok, err = readGPT(r, size, ss, true)
			if err != nil {
				return t, err
			}
		}
		if ok {
			gt.DiskID = t.DiskID
			return gt, nil
		}
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return t, nil
	}
	for i := range 4 {
		e := mbr[446+16*i : 446+16*(i+1)]
		typ := e[4]
		start := int64(binary.LittleEndian.Uint32(e[8:12])) * 512
		n := int64(binary.LittleEndian.Uint32(e[12:16])) * 512
		if typ == 0 || n == 0 {
			continue
		}
		if e[0] != 0 && e[0] != 0x80 {
			// Not a partition table (a boot sector of some other kind).
			return Table{SectorSize: 512, DiskID: t.DiskID}, nil
		}
		t.Partitions = append(t.Partitions, Partition{Number: i + 1, Start: start, Size: n, MBRType: typ,
			UUID: fmt.Sprintf("%08x-%02x", binary.LittleEndian.Uint32(mbr[440:444]), i+1)})
	}
	t.Kind = "mbr"
	return t, nil
}

// readGPT reads the primary (or backup) GPT for a sector size; ok is false
// when there is no valid one there.
func readGPT(r io.ReaderAt, size int64, ss int, backup bool) (Table, bool, error) {
	lba := int64(1)
	if backup {
		lba = size/int64(ss) - 1
	}
	if lba < 1 || (lba+1)*int64(ss) > size {
		return Table{}, false, nil
	}
	hdr := make([]byte, ss)
	if _, err := r.ReadAt(hdr, lba*int64(ss)); err != nil && !errors.Is(err, io.EOF) {
		return Table{}, false, fmt.Errorf("read GPT header: %w", err)
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return Table{}, false, nil
	}
	hsize := binary.LittleEndian.Uint32(hdr[12:16])
	if hsize < 92 || int(hsize) > ss {
		return Table{}, false, nil
	}
	h := bytes.Clone(hdr[:hsize])
	want := binary.LittleEndian.Uint32(h[16:20])
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != want {
		return Table{}, false, nil
	}
	if my := binary.LittleEndian.Uint64(hdr[24:32]); my != uint64(lba) {
		return Table{}, false, nil
	}
	entriesLBA := binary.LittleEndian.Uint64(hdr[72:80])
	count := binary.LittleEndian.Uint32(hdr[80:84])
	esize := binary.LittleEndian.Uint32(hdr[84:88])
	if count == 0 || count > maxGPTEntries || esize < 128 || esize > maxGPTEntrySize || esize%8 != 0 ||
		uint64(count)*uint64(esize) > maxGPTArray {
		return Table{}, false, nil
	}
	arr := make([]byte, int(count)*int(esize))
	if entriesLBA > uint64(size)/uint64(ss) || int64(entriesLBA)*int64(ss)+int64(len(arr)) > size {
		return Table{}, false, nil
	}
	if _, err := r.ReadAt(arr, int64(entriesLBA)*int64(ss)); err != nil && !errors.Is(err, io.EOF) {
		return Table{}, false, fmt.Errorf("read GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(arr) != binary.LittleEndian.Uint32(hdr[88:92]) {
		return Table{}, false, nil
	}
	t := Table{Kind: "gpt", SectorSize: ss, DiskGUID: formatGUID(hdr[56:72]), BackupGPT: backup}
	for i := range int(count) {
		e := arr[i*int(esize) : (i+1)*int(esize)]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		first := binary.LittleEndian.Uint64(e[32:40])
		last := binary.LittleEndian.Uint64(e[40:48])
		if last < first || last >= uint64(size)/uint64(ss) {
			continue
		}
		name := make([]uint16, 36)
		for j := range name {
			name[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		t.Partitions = append(t.Partitions, Partition{Number: i + 1, Start: int64(first) * int64(ss),
			Size: int64(last-first+1) * int64(ss), TypeGUID: formatGUID(e[:16]), UUID: formatGUID(e[16:32]),
			Name: strings.TrimRight(string(utf16.Decode(name)), "\x00")})
	}
	return t, true, nil
}

// formatGUID renders a GPT GUID (mixed-endian on disk) in canonical lower
// case.
func formatGUID(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}

// ParseGUID is the inverse of formatGUID: canonical text to on-disk bytes.
func ParseGUID(s string) ([16]byte, error) {
	var out [16]byte
	h := strings.ReplaceAll(s, "-", "")
	if len(s) != 36 || len(h) != 32 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return out, fmt.Errorf("invalid GUID %q", s)
	}
	var raw [16]byte
	if _, err := hex.Decode(raw[:], []byte(h)); err != nil {
		return out, fmt.Errorf("invalid GUID %q", s)
	}
	out = raw
	out[0], out[1], out[2], out[3] = raw[3], raw[2], raw[1], raw[0]
	out[4], out[5] = raw[5], raw[4]
	out[6], out[7] = raw[7], raw[6]
	return out, nil
}
