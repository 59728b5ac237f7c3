package blockdev

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
)

// Disk is what wiping and erasing need from an open disk.
type Disk interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// HeadTailBytes is how much WipeMetadata zeroes at each end of a disk:
// enough for both GPT copies at any sector size, the MBR, and every
// signature near a disk's start or end.
const HeadTailBytes = 1 << 20

// signature is a magic a filesystem, volume manager or RAID layer leaves
// in a partition (or on a whole disk). offsets returns where to look, as
// offsets from the start of an area of the given size.
type signature struct {
	name    string
	magic   []byte
	offsets func(size int64) []int64
	// wipe is how many bytes to zero at each offset; the magic's length
	// when 0.
	wipe int64
}

func at(offs ...int64) func(int64) []int64 { return func(int64) []int64 { return offs } }

// signatures lists what wipefs (libblkid) would find and erase, with
// their real offsets.
var signatures = []signature{
	{name: "ext2/3/4", magic: []byte{0x53, 0xef}, offsets: at(0x438)},
	{name: "xfs", magic: []byte("XFSB"), offsets: at(0)},
	{name: "btrfs", magic: []byte("_BHRfS_M"), offsets: at(0x10040, 0x4000040, 0x4000000040)},
	{name: "swap", magic: []byte("SWAPSPACE2"), offsets: at(4086, 8182, 16374, 65526)},
	{name: "swap (old)", magic: []byte("SWAP-SPACE"), offsets: at(4086, 8182, 16374, 65526)},
	{name: "vfat (FAT32)", magic: []byte("FAT32   "), offsets: at(82)},
	{name: "vfat (FAT12/16)", magic: []byte("FAT1"), offsets: at(54)},
	{name: "ntfs", magic: []byte("NTFS    "), offsets: at(3)},
	{name: "iso9660", magic: []byte("CD001"), offsets: at(0x8001)},
	{name: "luks", magic: []byte("LUKS\xba\xbe"), offsets: at(0)},
	{name: "luks2 (secondary header)", magic: []byte("SKUL\xba\xbe"), offsets: func(int64) []int64 {
		var o []int64
		for off := int64(0x4000); off <= 0x400000; off *= 2 {
			o = append(o, off)
		}
		return o
	}},
	{name: "lvm2", magic: []byte("LABELONE"), offsets: at(0, 512, 1024, 1536), wipe: 32},
	{name: "linux_raid_member (1.1)", magic: mdMagic, offsets: at(0)},
	{name: "linux_raid_member (1.2)", magic: mdMagic, offsets: at(4096)},
	{name: "linux_raid_member (0.90)", magic: mdMagic, offsets: func(size int64) []int64 {
		return []int64{size&^(64<<10-1) - 64<<10}
	}},
	{name: "linux_raid_member (1.0)", magic: mdMagic, offsets: func(size int64) []int64 {
		return []int64{((size >> 9) - 16) &^ 7 << 9}
	}},
	{name: "bcache", magic: []byte{0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81}, offsets: at(4096 + 24)},
	{name: "zfs_member", magic: []byte{0x0c, 0xb1, 0xba, 0x00, 0, 0, 0, 0}, wipe: 256 << 10, offsets: func(size int64) []int64 {
		// The uberblock array starts 128 KiB into each of the four 256 KiB
		// labels (two at the start, two at the end); wipeArea erases the
		// whole label around a magic found there.
		l := size &^ (256<<10 - 1)
		return []int64{128 << 10, 256<<10 + 128<<10, l - 512<<10 + 128<<10, l - 256<<10 + 128<<10}
	}},
	{name: "dos/gpt boot signature", magic: []byte{0x55, 0xaa}, offsets: at(510)},
	{name: "gpt header", magic: []byte("EFI PART"), offsets: func(size int64) []int64 {
		return []int64{512, 4096, size - 512, size - 4096}
	}},
}

var mdMagic = []byte{0xfc, 0x4e, 0x2b, 0xa9}

// Wiped names a signature removed by WipeMetadata.
type Wiped struct {
	Name   string
	Offset int64
}

// WipeMetadata makes a disk look blank to partitioning tools and
// filesystem probes, as IPA's erase_devices_metadata does with wipefs,
// dd and sgdisk -Z: it erases the filesystem, RAID and volume signatures
// of every partition of the current table and of the whole disk, then
// zeroes the first and last HeadTailBytes (MBR, both GPT copies), and
// syncs. It returns what signatures it found and erased.
func WipeMetadata(ctx context.Context, d Disk, size int64) ([]Wiped, error) {
	t, err := ReadTable(d, size)
	if err != nil {
		return nil, fmt.Errorf("wipe metadata: %w", err)
	}
	var wiped []Wiped
	for _, p := range t.Partitions {
		if err := ctx.Err(); err != nil {
			return wiped, err
		}
		if p.Start < 0 || p.Size <= 0 || p.Start+p.Size > size {
			continue
		}
		w, err := wipeArea(d, p.Start, p.Size)
		wiped = append(wiped, w...)
		if err != nil {
			return wiped, fmt.Errorf("wipe metadata: partition %d: %w", p.Number, err)
		}
	}
	w, err := wipeArea(d, 0, size)
	wiped = append(wiped, w...)
	if err != nil {
		return wiped, fmt.Errorf("wipe metadata: %w", err)
	}
	head := min(int64(HeadTailBytes), size)
	if err := zeroRange(d, 0, head); err != nil {
		return wiped, fmt.Errorf("wipe metadata: zero the first %d bytes: %w", head, err)
	}
	if tail := max(head, size-HeadTailBytes); tail < size {
		if err := zeroRange(d, tail, size-tail); err != nil {
			return wiped, fmt.Errorf("wipe metadata: zero the last %d bytes: %w", size-tail, err)
		}
	}
	if err := d.Sync(); err != nil {
		return wiped, fmt.Errorf("wipe metadata: sync: %w", err)
	}
	return wiped, nil
}

// wipeArea erases every known signature found in [base, base+size).
func wipeArea(d Disk, base, size int64) ([]Wiped, error) {
	var wiped []Wiped
	for _, s := range signatures {
		for _, off := range s.offsets(size) {
			n := int64(len(s.magic))
			if off < 0 || off+n > size {
				continue
			}
			b := make([]byte, n)
			if _, err := d.ReadAt(b, base+off); err != nil && !errors.Is(err, io.EOF) {
				return wiped, fmt.Errorf("read %s signature at %d: %w", s.name, base+off, err)
			}
			if !bytes.Equal(b, s.magic) {
				continue
			}
			from, length := off, n
			if s.wipe > 0 {
				length = s.wipe
			}
			if s.name == "zfs_member" {
				from = off - 128<<10
			}
			if from+length > size {
				length = size - from
			}
			if err := zeroRange(d, base+from, length); err != nil {
				return wiped, fmt.Errorf("erase %s signature at %d: %w", s.name, base+off, err)
			}
			wiped = append(wiped, Wiped{Name: s.name, Offset: base + off})
		}
	}
	return wiped, nil
}

var zeros = make([]byte, 1<<20)

func zeroRange(w io.WriterAt, off, n int64) error {
	for n > 0 {
		c := min(n, int64(len(zeros)))
		if _, err := w.WriteAt(zeros[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// EraseOptions configure Erase. They come from the node's
// driver_internal_info (agent_erase_devices_iterations,
// agent_erase_devices_zeroize).
type EraseOptions struct {
	// Iterations is the number of random-data passes.
	Iterations int
	// Zeroize adds a final pass of zeros.
	Zeroize bool
	// Progress, when set, is called after every chunk with the bytes
	// written so far over all passes and the total to write.
	Progress func(done, total int64)
	// ChunkSize is the write size; 4 MiB when zero.
	ChunkSize int
}

// ErrNothingToErase means the options ask for no pass at all.
var ErrNothingToErase = errors.New("erase: agent_erase_devices_iterations is 0 and agent_erase_devices_zeroize is false: nothing to do")

// Erase overwrites a whole disk the way shred --iterations N [--zero]
// does: N passes of pseudo-random data (ChaCha8 seeded from the system's
// random source), then optionally one of zeros, syncing after each pass.
// It stops at the next chunk when ctx is cancelled.
func Erase(ctx context.Context, d Disk, size int64, opts EraseOptions) error {
	if opts.Iterations < 0 {
		return fmt.Errorf("erase: negative iteration count %d", opts.Iterations)
	}
	passes := opts.Iterations
	if opts.Zeroize {
		passes++
	}
	if passes == 0 {
		return ErrNothingToErase
	}
	chunk := opts.ChunkSize
	if chunk <= 0 {
		chunk = 4 << 20
	}
	buf := make([]byte, chunk)
	total := int64(passes) * size
	var done int64
	for pass := range passes {
		random := pass < opts.Iterations
		var rng *rand.ChaCha8
		if random {
			var seed [32]byte
			if _, err := crand.Read(seed[:]); err != nil {
				return fmt.Errorf("erase: seed: %w", err)
			}
			rng = rand.NewChaCha8(seed)
		} else {
			clear(buf)
		}
		for off := int64(0); off < size; {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("erase: pass %d at byte %d: %w", pass+1, off, err)
			}
			n := min(int64(chunk), size-off)
			if random {
				_, _ = rng.Read(buf[:n]) // ChaCha8.Read never fails
			}
			if _, err := d.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("erase: pass %d: write at byte %d: %w", pass+1, off, err)
			}
			off += n
			done += n
			if opts.Progress != nil {
				opts.Progress(done, total)
			}
		}
		if err := d.Sync(); err != nil {
			return fmt.Errorf("erase: pass %d: sync: %w", pass+1, err)
		}
	}
	return nil
}
