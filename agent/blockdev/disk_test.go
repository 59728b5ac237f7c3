package blockdev_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/blockdev/blockdevtest"
)

const (
	mib      = 1 << 20
	espUUID  = "7a3f0d2c-51e4-4a3b-9c1e-2f6b8d0a4e11"
	rootUUID = "0fc63daf-8483-4772-8e79-3d69d8477de4" // Linux filesystem type, reused as a unique GUID
	linuxFS  = "0fc63daf-8483-4772-8e79-3d69d8477de4"
	diskGUID = "5d2e8c1a-3b4f-4e6a-9d7c-1a2b3c4d5e6f"
)

func open(t *testing.T, path string) *blockdev.Device {
	t.Helper()
	d, err := blockdev.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func gptDisk(t *testing.T, size int64) (*blockdev.Device, []blockdevtest.Part) {
	d := open(t, blockdevtest.Disk(t, size))
	parts := []blockdevtest.Part{
		{Start: 1 * mib, Size: 8 * mib, TypeGUID: blockdev.ESPTypeGUID, UUID: espUUID, Name: "EFI System"},
		{Start: 9 * mib, Size: size - 10*mib, TypeGUID: linuxFS, UUID: "b9a4c0de-0000-4000-8000-00000000beef", Name: "root"},
	}
	blockdevtest.GPT(t, d, size, diskGUID, parts)
	return d, parts
}

func TestReadTable(t *testing.T) {
	t.Run("GPT with an ESP", func(t *testing.T) {
		d, _ := gptDisk(t, 64*mib)
		tab, err := blockdev.ReadTable(d, d.Size())
		if err != nil {
			t.Fatal(err)
		}
		want := blockdev.Table{Kind: "gpt", DiskID: "0x12345678", DiskGUID: diskGUID, SectorSize: 512, Partitions: []blockdev.Partition{
			{Number: 1, Start: 1 * mib, Size: 8 * mib, TypeGUID: blockdev.ESPTypeGUID, UUID: espUUID, Name: "EFI System"},
			{Number: 2, Start: 9 * mib, Size: 54 * mib, TypeGUID: linuxFS, UUID: "b9a4c0de-0000-4000-8000-00000000beef", Name: "root"},
		}}
		if diff := cmp.Diff(want, tab); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if esp, ok := tab.ESP(); !ok || esp.Number != 1 {
			t.Errorf("ESP = %+v, %v", esp, ok)
		}
	})
	t.Run("a corrupted primary GPT falls back to the backup", func(t *testing.T) {
		d, _ := gptDisk(t, 64*mib)
		if _, err := d.WriteAt([]byte("garbage!"), 512+60); err != nil {
			t.Fatal(err)
		}
		tab, err := blockdev.ReadTable(d, d.Size())
		if err != nil || tab.Kind != "gpt" || !tab.BackupGPT || len(tab.Partitions) != 2 {
			t.Errorf("got %+v, %v", tab, err)
		}
	})
	t.Run("MBR", func(t *testing.T) {
		d := open(t, blockdevtest.Disk(t, 32*mib))
		blockdevtest.MBR(t, d, 0x2b1ac57f, []blockdevtest.Part{{Start: mib, Size: 8 * mib, MBRType: 0xef}, {Start: 9 * mib, Size: 8 * mib, MBRType: 0x83}})
		tab, err := blockdev.ReadTable(d, d.Size())
		if err != nil {
			t.Fatal(err)
		}
		want := blockdev.Table{Kind: "mbr", DiskID: "0x2b1ac57f", SectorSize: 512, Partitions: []blockdev.Partition{
			{Number: 1, Start: mib, Size: 8 * mib, MBRType: 0xef, UUID: "2b1ac57f-01"},
			{Number: 2, Start: 9 * mib, Size: 8 * mib, MBRType: 0x83, UUID: "2b1ac57f-02"},
		}}
		if diff := cmp.Diff(want, tab); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if _, ok := tab.ESP(); !ok {
			t.Error("no ESP")
		}
	})
	t.Run("raw bytes have a disk identifier but no table", func(t *testing.T) {
		img := make([]byte, 4096)
		copy(img[440:], []byte{0x00, 0x00, 0x40, 0x00})
		tab, err := blockdev.ReadTable(bytes.NewReader(img), int64(len(img)))
		if err != nil || tab.Kind != "" || tab.DiskID != "0x00400000" || len(tab.Partitions) != 0 {
			t.Errorf("got %+v, %v", tab, err)
		}
	})
	t.Run("a disk smaller than a sector", func(t *testing.T) {
		tab, err := blockdev.ReadTable(bytes.NewReader(make([]byte, 100)), 100)
		if err != nil || tab.Kind != "" || tab.DiskID != "" {
			t.Errorf("got %+v, %v", tab, err)
		}
	})
	t.Run("I/O errors are reported", func(t *testing.T) {
		if _, err := blockdev.ReadTable(errReader{}, 1<<20); !errors.Is(err, syscall.EIO) {
			t.Errorf("err = %v", err)
		}
	})
}

type errReader struct{}

func (errReader) ReadAt([]byte, int64) (int, error) { return 0, syscall.EIO }

func TestGUIDRoundTrip(t *testing.T) {
	g, err := blockdev.ParseGUID(blockdev.ESPTypeGUID)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}
	if !bytes.Equal(g[:], want) {
		t.Errorf("on-disk bytes % x", g)
	}
	for _, bad := range []string{"", "c12a7328f81f11d2ba4b00a0c93ec93b", "c12a7328-f81f-11d2-ba4b-00a0c93ec93g"} {
		if _, err := blockdev.ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) accepted", bad)
		}
	}
}

func TestWipeMetadata(t *testing.T) {
	const size = 96 * mib
	for _, s := range blockdevtest.Signatures() {
		t.Run(s.Name+" in a partition and the table are erased, data is kept", func(t *testing.T) {
			d, parts := gptDisk(t, size)
			blockdevtest.Put(t, d, parts[1].Start, s)
			vfat := blockdevtest.Signatures()[4]
			blockdevtest.Put(t, d, parts[0].Start, vfat)
			payload := bytes.Repeat([]byte("keep"), 1024)
			const payloadAt = 40 * mib
			if _, err := d.WriteAt(payload, payloadAt); err != nil {
				t.Fatal(err)
			}
			cd := &countingDisk{Disk: d}
			wiped, err := blockdev.WipeMetadata(t.Context(), cd, size)
			if err != nil {
				t.Fatal(err)
			}
			if cd.syncs == 0 {
				t.Error("no sync")
			}
			if tab, err := blockdev.ReadTable(d, size); err != nil || tab.Kind != "" {
				t.Errorf("partition table survived: %+v, %v", tab, err)
			}
			if blockdevtest.Has(t, d, parts[1].Start, s) {
				t.Errorf("%s signature survived", s.Name)
			}
			if blockdevtest.Has(t, d, parts[0].Start, vfat) {
				t.Error("ESP vfat signature survived")
			}
			for _, off := range []int64{0, size - blockdev.HeadTailBytes} {
				b := make([]byte, blockdev.HeadTailBytes)
				if _, err := d.ReadAt(b, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(b, make([]byte, len(b))) {
					t.Errorf("MiB at %d not zeroed", off)
				}
			}
			got := make([]byte, len(payload))
			if _, err := d.ReadAt(got, payloadAt); err != nil || !bytes.Equal(got, payload) {
				t.Error("data outside the metadata was touched")
			}
			found := false
			for _, w := range wiped {
				found = found || w.Offset == parts[1].Start+s.Offset
			}
			if !found {
				t.Errorf("report lacks %s at %d: %v", s.Name, parts[1].Start+s.Offset, wiped)
			}
		})
	}
	t.Run("a btrfs mirror superblock beyond the first MiB of the disk is erased", func(t *testing.T) {
		d := open(t, blockdevtest.Disk(t, size))
		if _, err := d.WriteAt([]byte("_BHRfS_M"), 64*mib+0x40); err != nil {
			t.Fatal(err)
		}
		if _, err := blockdev.WipeMetadata(t.Context(), d, size); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 8)
		if _, err := d.ReadAt(b, 64*mib+0x40); err != nil || !bytes.Equal(b, make([]byte, 8)) {
			t.Errorf("mirror survived: %q", b)
		}
	})
	t.Run("a disk smaller than two MiB is zeroed entirely", func(t *testing.T) {
		d := open(t, blockdevtest.Disk(t, 1536*1024))
		if _, err := d.WriteAt(bytes.Repeat([]byte{0xff}, 1536*1024), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := blockdev.WipeMetadata(t.Context(), d, d.Size()); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(d.Path())
		if !bytes.Equal(b, make([]byte, len(b))) {
			t.Error("not all zero")
		}
	})
	t.Run("a write error is reported", func(t *testing.T) {
		d, _ := gptDisk(t, 16*mib)
		_, err := blockdev.WipeMetadata(t.Context(), &countingDisk{Disk: d, failWrites: true}, 16*mib)
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("err = %v", err)
		}
	})
}

// countingDisk counts syncs and can fail writes with EIO.
type countingDisk struct {
	blockdev.Disk
	syncs      int
	writes     int
	failWrites bool
	failSync   bool
}

func (c *countingDisk) WriteAt(b []byte, off int64) (int, error) {
	c.writes++
	if c.failWrites {
		return 0, syscall.EIO
	}
	return c.Disk.WriteAt(b, off)
}

func (c *countingDisk) Sync() error {
	c.syncs++
	if c.failSync {
		return syscall.EIO
	}
	return c.Disk.Sync()
}

func TestErase(t *testing.T) {
	const size = 3*mib + 12345
	t.Run("random passes then zeros", func(t *testing.T) {
		d := open(t, blockdevtest.Disk(t, size))
		cd := &countingDisk{Disk: d}
		var last, total int64
		err := blockdev.Erase(t.Context(), cd, size, blockdev.EraseOptions{Iterations: 2, Zeroize: true, ChunkSize: mib,
			Progress: func(done, tot int64) {
				if done < last {
					t.Errorf("progress went back from %d to %d", last, done)
				}
				last, total = done, tot
			}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(d.Path())
		if int64(len(b)) != size || !bytes.Equal(b, make([]byte, size)) {
			t.Error("disk is not zero after the final pass")
		}
		if cd.syncs != 3 || last != 3*size || total != 3*size {
			t.Errorf("syncs %d, progress %d/%d", cd.syncs, last, total)
		}
	})
	t.Run("random only leaves no zero MiB and differs between passes", func(t *testing.T) {
		d := open(t, blockdevtest.Disk(t, size))
		if err := blockdev.Erase(t.Context(), d, size, blockdev.EraseOptions{Iterations: 1}); err != nil {
			t.Fatal(err)
		}
		first, _ := os.ReadFile(d.Path())
		if bytes.Contains(first, make([]byte, 64)) {
			t.Error("random pass left a run of 64 zero bytes")
		}
		if err := blockdev.Erase(t.Context(), d, size, blockdev.EraseOptions{Iterations: 1}); err != nil {
			t.Fatal(err)
		}
		second, _ := os.ReadFile(d.Path())
		if bytes.Equal(first[:4096], second[:4096]) {
			t.Error("two passes wrote the same bytes")
		}
	})
	t.Run("nothing to do is an error", func(t *testing.T) {
		d := open(t, blockdevtest.Disk(t, mib))
		if err := blockdev.Erase(t.Context(), d, mib, blockdev.EraseOptions{}); !errors.Is(err, blockdev.ErrNothingToErase) {
			t.Errorf("err = %v", err)
		}
		if err := blockdev.Erase(t.Context(), d, mib, blockdev.EraseOptions{Iterations: -1}); err == nil {
			t.Error("negative iterations accepted")
		}
	})
	t.Run("cancellation stops at the next chunk", func(t *testing.T) {
		d := open(t, blockdevtest.Disk(t, size))
		ctx, cancel := context.WithCancel(t.Context())
		cd := &countingDisk{Disk: d}
		err := blockdev.Erase(ctx, cd, size, blockdev.EraseOptions{Zeroize: true, ChunkSize: mib,
			Progress: func(done, _ int64) { cancel() }})
		if !errors.Is(err, context.Canceled) || cd.writes != 1 {
			t.Errorf("err %v after %d writes", err, cd.writes)
		}
	})
	t.Run("EIO and sync failures are reported", func(t *testing.T) {
		d := open(t, blockdevtest.Disk(t, mib))
		if err := blockdev.Erase(t.Context(), &countingDisk{Disk: d, failWrites: true}, mib, blockdev.EraseOptions{Zeroize: true}); !errors.Is(err, syscall.EIO) {
			t.Errorf("write: err = %v", err)
		}
		if err := blockdev.Erase(t.Context(), &countingDisk{Disk: d, failSync: true}, mib, blockdev.EraseOptions{Zeroize: true}); !errors.Is(err, syscall.EIO) {
			t.Errorf("sync: err = %v", err)
		}
	})
}

func TestOpen(t *testing.T) {
	t.Run("a file stands in for a disk", func(t *testing.T) {
		d := open(t, blockdevtest.Disk(t, 5*mib))
		if d.Size() != 5*mib || d.IsBlockDevice() {
			t.Errorf("size %d block %v", d.Size(), d.IsBlockDevice())
		}
		if err := d.RereadPartitions(); err != nil {
			t.Errorf("RereadPartitions on a file: %v", err)
		}
	})
	t.Run("a missing path is not created", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "nope.img")
		if _, err := blockdev.Open(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v", err)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Error("Open created the file")
		}
	})
	t.Run("a directory or character device is refused", func(t *testing.T) {
		for _, p := range []string{t.TempDir(), "/dev/null"} {
			if _, err := blockdev.Open(p); !errors.Is(err, blockdev.ErrNotADisk) {
				t.Errorf("Open(%s) = %v", p, err)
			}
		}
	})
}

// FuzzReadTable: partition tables come from the images we write; reading
// one never panics, never reads past the disk, and every partition it
// reports lies inside the disk.
func FuzzReadTable(f *testing.F) {
	seed := func(build func(w io.WriterAt, size int64)) []byte {
		b := &memDisk{b: make([]byte, 64*1024)}
		build(b, int64(len(b.b)))
		return b.b
	}
	f.Add(seed(func(w io.WriterAt, size int64) {
		blockdevtest.GPT(f, w, size, diskGUID, []blockdevtest.Part{{Start: 17408, Size: 8192, TypeGUID: blockdev.ESPTypeGUID, UUID: espUUID}})
	}))
	f.Add(seed(func(w io.WriterAt, size int64) {
		blockdevtest.MBR(f, w, 1, []blockdevtest.Part{{Start: 512, Size: 4096, MBRType: 0x83}})
	}))
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := &memDisk{b: b, strict: true}
		tab, err := blockdev.ReadTable(m, int64(len(b)))
		if err != nil {
			t.Fatalf("ReadTable: %v", err)
		}
		for _, p := range tab.Partitions {
			if tab.Kind == "gpt" && (p.Start < 0 || p.Size <= 0 || p.Start+p.Size > int64(len(b))) {
				t.Fatalf("partition outside the disk: %+v", p)
			}
		}
		_, _ = blockdev.WipeMetadata(t.Context(), m, int64(len(b)))
	})
}

// memDisk is an in-memory disk; strict makes out-of-range access fail the
// fuzz target instead of returning EOF.
type memDisk struct {
	b      []byte
	strict bool
}

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		if m.strict {
			panic("read outside the disk")
		}
		return 0, io.EOF
	}
	return copy(p, m.b[off:]), nil
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		panic("write outside the disk")
	}
	return copy(m.b[off:], p), nil
}

func (m *memDisk) Sync() error { return nil }
