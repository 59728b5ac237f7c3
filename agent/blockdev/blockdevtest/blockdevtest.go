// Package blockdevtest builds disk images for tests: file-backed disks,
// GPT and MBR partition tables, and filesystem signatures at their real
// offsets, so wiping, partition-UUID and bootloader code can be tested
// against bytes laid out as real tools lay them out. Only tests import it.
package blockdevtest

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf16"

	"github.com/ingot-dev/ingot/agent/blockdev"
)

// Disk creates a sparse file of the given size under t.TempDir and
// returns its path.
func Disk(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// Part describes a partition to write: Start and Size in bytes (multiples
// of 512), GPT type and unique GUIDs in canonical text, an MBR type.
type Part struct {
	Start, Size    int64
	TypeGUID, UUID string
	Name           string
	MBRType        byte
}

// GPT writes a protective MBR, primary and backup GPT headers and 128
// entries (512-byte sectors) onto w, a disk of the given size.
func GPT(t testing.TB, w io.WriterAt, size int64, diskGUID string, parts []Part) {
	t.Helper()
	const ss = 512
	lbas := size / ss
	// protective MBR
	mbr := make([]byte, 512)
	copy(mbr[440:], []byte{0x78, 0x56, 0x34, 0x12})
	mbr[446+4] = 0xee
	binary.LittleEndian.PutUint32(mbr[446+8:], 1)
	n := lbas - 1
	if n > 0xffffffff {
		n = 0xffffffff
	}
	binary.LittleEndian.PutUint32(mbr[446+12:], uint32(n))
	mbr[510], mbr[511] = 0x55, 0xaa
	mustWrite(t, w, mbr, 0)

	arr := make([]byte, 128*128)
	for i, p := range parts {
		e := arr[i*128:]
		tg := guid(t, p.TypeGUID)
		ug := guid(t, p.UUID)
		copy(e[0:16], tg[:])
		copy(e[16:32], ug[:])
		binary.LittleEndian.PutUint64(e[32:], uint64(p.Start/ss))
		binary.LittleEndian.PutUint64(e[40:], uint64((p.Start+p.Size)/ss-1))
		for j, c := range utf16.Encode([]rune(p.Name)) {
			if j < 36 {
				binary.LittleEndian.PutUint16(e[56+2*j:], c)
			}
		}
	}
	arrCRC := crc32.ChecksumIEEE(arr)
	dg := guid(t, diskGUID)
	header := func(my, alt, entries int64) []byte {
		h := make([]byte, ss)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], uint64(my))
		binary.LittleEndian.PutUint64(h[32:], uint64(alt))
		binary.LittleEndian.PutUint64(h[40:], 34)
		binary.LittleEndian.PutUint64(h[48:], uint64(lbas-34))
		copy(h[56:72], dg[:])
		binary.LittleEndian.PutUint64(h[72:], uint64(entries))
		binary.LittleEndian.PutUint32(h[80:], 128)
		binary.LittleEndian.PutUint32(h[84:], 128)
		binary.LittleEndian.PutUint32(h[88:], arrCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	mustWrite(t, w, header(1, lbas-1, 2), ss)
	mustWrite(t, w, arr, 2*ss)
	mustWrite(t, w, arr, (lbas-33)*ss)
	mustWrite(t, w, header(lbas-1, 1, lbas-33), (lbas-1)*ss)
}

// MBR writes a DOS partition table with the given disk identifier and up
// to four primary partitions.
func MBR(t testing.TB, w io.WriterAt, diskID uint32, parts []Part) {
	t.Helper()
	mbr := make([]byte, 512)
	binary.LittleEndian.PutUint32(mbr[440:], diskID)
	for i, p := range parts {
		e := mbr[446+16*i:]
		e[4] = p.MBRType
		binary.LittleEndian.PutUint32(e[8:], uint32(p.Start/512))
		binary.LittleEndian.PutUint32(e[12:], uint32(p.Size/512))
	}
	mbr[510], mbr[511] = 0x55, 0xaa
	mustWrite(t, w, mbr, 0)
}

// Signature is a filesystem or RAID magic at its offset from the start of
// a partition (or of the disk).
type Signature struct {
	Name   string
	Offset int64
	Magic  []byte
}

// Signatures returns real magics at their real offsets: what mkfs.ext4,
// mkfs.xfs, mkfs.btrfs, mkswap, mkfs.vfat, cryptsetup, pvcreate and mdadm
// (1.2 metadata) write.
func Signatures() []Signature {
	return []Signature{
		{"ext4", 0x438, []byte{0x53, 0xef}},
		{"xfs", 0, []byte("XFSB")},
		{"btrfs", 0x10040, []byte("_BHRfS_M")},
		{"swap", 4086, []byte("SWAPSPACE2")},
		{"vfat", 82, []byte("FAT32   ")},
		{"luks", 0, []byte("LUKS\xba\xbe")},
		{"lvm2", 512, []byte("LABELONE")},
		{"linux_raid_member", 4096, []byte{0xfc, 0x4e, 0x2b, 0xa9}},
		{"iso9660", 0x8001, []byte("CD001")},
	}
}

// Put writes a signature at base+s.Offset.
func Put(t testing.TB, w io.WriterAt, base int64, s Signature) {
	t.Helper()
	mustWrite(t, w, s.Magic, base+s.Offset)
	if s.Name == "lvm2" {
		mustWrite(t, w, []byte("LVM2 001"), base+512+24)
	}
}

// Has reports whether the signature's magic is at base+s.Offset.
func Has(t testing.TB, r io.ReaderAt, base int64, s Signature) bool {
	t.Helper()
	b := make([]byte, len(s.Magic))
	if _, err := r.ReadAt(b, base+s.Offset); err != nil {
		t.Fatal(err)
	}
	return string(b) == string(s.Magic)
}

func guid(t testing.TB, s string) [16]byte {
	t.Helper()
	g, err := blockdev.ParseGUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func mustWrite(t testing.TB, w io.WriterAt, b []byte, off int64) {
	t.Helper()
	if _, err := w.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
