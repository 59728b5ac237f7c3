package configdrive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// installGPT finds or makes the config drive partition on a GPT disk.
func installGPT(dev Device, size int64, ss int, need int, want int64) (Placement, error) {
	f := &file{dev: dev, size: size}
	// Check the header's entry array before go-diskfs reads it: its size
	// comes from the disk, and a rewritten table has 128 entries of 128
	// bytes, so larger arrays are refused rather than read.
	h := make([]byte, 92)
	if _, err := dev.ReadAt(h, int64(ss)); err != nil {
		return Placement{}, fmt.Errorf("reading the GPT header: %w", err)
	}
	if string(h[:8]) != "EFI PART" {
		return Placement{}, fmt.Errorf("%w: the protective MBR announces a GPT but there is no GPT header at LBA 1", ErrNoTable)
	}
	if n, es := le32(h[80:84]), le32(h[84:88]); es != 128 || n == 0 || n > 128 {
		return Placement{}, fmt.Errorf("the GPT has %d entries of %d bytes; only tables of at most 128 entries of 128 bytes can take a config drive partition", n, es)
	}
	old, err := gpt.Read(f, ss, ss)
	if err != nil {
		return Placement{}, fmt.Errorf("reading the GPT: %w", err)
	}
	var used uint64
	for _, p := range old.Partitions {
		if label, ok := imageLabel(dev, int64(p.Start)*int64(ss)); ok && IsConfigDrive(label) {
			return Placement{Table: "gpt", Partition: p.Index, Offset: int64(p.Start) * int64(ss),
				Size: int64(p.End-p.Start+1) * int64(ss)}, nil
		}
		used = max(used, p.End+1)
	}

	// A fresh table for the whole disk: 128 entries after LBA 1 and a
	// backup at the disk's end (reusing the image's table would keep its
	// backup header where the image ended).
	entrySectors := uint64(128*128) / uint64(ss)
	firstUsable := 2 + entrySectors
	sectors := uint64(size) / uint64(ss)
	if sectors < 2*firstUsable+1 {
		return Placement{}, fmt.Errorf("%w: the disk has %d sectors", ErrNoSpace, sectors)
	}
	lastUsable := sectors - 2 - entrySectors
	index := 0
	taken := map[int]bool{}
	parts := make([]*gpt.Partition, 0, len(old.Partitions)+1)
	for _, p := range old.Partitions {
		if p.Start < firstUsable || p.End > lastUsable || p.Start > p.End {
			return Placement{}, fmt.Errorf("partition %d (sectors %d-%d) lies outside the usable area %d-%d of a standard GPT; not rewriting the table",
				p.Index, p.Start, p.End, firstUsable, lastUsable)
		}
		taken[p.Index] = true
		c := *p
		parts = append(parts, &c)
	}
	for i := 1; i <= 128; i++ {
		if !taken[i] {
			index = i
			break
		}
	}
	if index == 0 {
		return Placement{}, fmt.Errorf("%w: all 128 GPT entries are in use", ErrNoSpace)
	}
	start, end, err := placeAtEnd(max(used, firstUsable), lastUsable+1, ss, need, want)
	if err != nil {
		return Placement{}, err
	}
	parts = append(parts, &gpt.Partition{Index: index, Start: start, End: end,
		Type: gpt.LinuxFilesystem, Name: Label})
	oldBackup := backupLBA(dev, ss)
	t := &gpt.Table{Partitions: parts, LogicalSectorSize: ss, PhysicalSectorSize: ss,
		GUID: old.GUID, ProtectiveMBR: true}
	if err := t.Write(f, int64(sectors)*int64(ss)); err != nil {
		return Placement{}, fmt.Errorf("writing the GPT: %w", err)
	}
	// The image's own backup header now sits in free space between its
	// last partition and the new one: clear it so no tool mistakes it
	// for the disk's.
	if oldBackup >= used && oldBackup < start {
		if _, err := dev.WriteAt(make([]byte, ss), int64(oldBackup)*int64(ss)); err != nil {
			return Placement{}, fmt.Errorf("clearing the image's old backup GPT header: %w", err)
		}
	}
	return Placement{Table: "gpt", Partition: index, Offset: int64(start) * int64(ss),
		Size: int64(end-start+1) * int64(ss), Created: true}, nil
}

// backupLBA reads the primary GPT header's pointer to its backup header
// (0 when unreadable).
func backupLBA(dev Device, ss int) uint64 {
	h := make([]byte, 92)
	if n, _ := dev.ReadAt(h, int64(ss)); n != len(h) || string(h[:8]) != "EFI PART" {
		return 0
	}
	return binary.LittleEndian.Uint64(h[32:40])
}

// mbrLimit is the first sector an MBR entry cannot reach (2 TiB at 512
// bytes per sector).
const mbrLimit = 1 << 32

// installMBR finds or makes the config drive partition on an MBR disk:
// a primary partition in the first free slot.
func installMBR(dev Device, size int64, ss int, mbr []byte, need int, want int64) (Placement, error) {
	slot := -1
	var used uint64 = uint64(1<<20) / uint64(ss)
	for i := range 4 {
		e := mbr[446+16*i : 446+16*i+16]
		if e[4] == 0 {
			if slot < 0 {
				slot = i
			}
			continue
		}
		first, count := uint64(le32(e[8:12])), uint64(le32(e[12:16]))
		if label, ok := imageLabel(dev, int64(first)*int64(ss)); ok && IsConfigDrive(label) {
			return Placement{Table: "msdos", Partition: i + 1, Offset: int64(first) * int64(ss),
				Size: int64(count) * int64(ss)}, nil
		}
		used = max(used, first+count)
	}
	if slot < 0 {
		return Placement{}, fmt.Errorf("%w: all four primary MBR partitions are in use", ErrNoSpace)
	}
	limit := min(uint64(size)/uint64(ss), mbrLimit)
	start, end, err := placeAtEnd(used, limit, ss, need, want)
	if err != nil {
		return Placement{}, err
	}
	e := make([]byte, 16)
	copy(e[1:4], []byte{0xfe, 0xff, 0xff}) // CHS unused: LBA addressing
	e[4] = 0x83
	copy(e[5:8], []byte{0xfe, 0xff, 0xff})
	binary.LittleEndian.PutUint32(e[8:12], uint32(start))
	binary.LittleEndian.PutUint32(e[12:16], uint32(end-start+1))
	if _, err := dev.WriteAt(e, int64(446+16*slot)); err != nil {
		return Placement{}, fmt.Errorf("writing MBR entry %d: %w", slot+1, err)
	}
	return Placement{Table: "msdos", Partition: slot + 1, Offset: int64(start) * int64(ss),
		Size: int64(end-start+1) * int64(ss), Created: true}, nil
}

// file adapts a Device of known size to go-diskfs's backend file.
type file struct {
	dev  Device
	size int64
	off  int64
}

func (f *file) ReadAt(b []byte, off int64) (int, error)  { return f.dev.ReadAt(b, off) }
func (f *file) WriteAt(b []byte, off int64) (int, error) { return f.dev.WriteAt(b, off) }
func (f *file) Close() error                             { return nil }
func (f *file) Stat() (fs.FileInfo, error)               { return info{f.size}, nil }

func (f *file) Read(b []byte) (int, error) {
	if f.off >= f.size {
		return 0, io.EOF
	}
	n, err := f.dev.ReadAt(b[:min(int64(len(b)), f.size-f.off)], f.off)
	f.off += int64(n)
	return n, err
}

func (f *file) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += f.off
	case io.SeekEnd:
		off += f.size
	default:
		return 0, errors.New("bad whence")
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	f.off = off
	return off, nil
}

// Sync passes a sync through when the device has one.
func (f *file) Sync() error {
	if s, ok := f.dev.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}

type info struct{ size int64 }

func (i info) Name() string       { return "disk" }
func (i info) Size() int64        { return i.size }
func (i info) Mode() fs.FileMode  { return 0o600 }
func (i info) ModTime() time.Time { return time.Time{} }
func (i info) IsDir() bool        { return false }
func (i info) Sys() any           { return nil }
