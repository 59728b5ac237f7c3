package configdrive

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dfile "github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// fakeISO returns an image with an ISO 9660 primary volume descriptor
// labelled label, of size bytes.
func fakeISO(label string, size int) []byte {
	b := make([]byte, size)
	pvd := b[32768:]
	pvd[0] = 1
	copy(pvd[1:6], "CD001")
	pvd[6] = 1
	copy(pvd[40:72], bytes.Repeat([]byte(" "), 32))
	copy(pvd[40:], label)
	copy(b[size-8:], "ISO-TAIL")
	return b
}

// fakeFAT32 returns a FAT32 boot sector labelled label.
func fakeFAT32(label string) []byte {
	b := make([]byte, 4096)
	copy(b[71:82], []byte(label + "           ")[:11])
	copy(b[82:90], "FAT32   ")
	b[510], b[511] = 0x55, 0xaa
	return b
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func b64(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }

func TestDecode(t *testing.T) {
	iso := fakeISO("config-2", 64<<10)
	fat := fakeFAT32("CONFIG-2")
	huge := make([]byte, MaxSize+1)
	copy(huge, iso)
	cases := []struct {
		name string
		in   []byte
		want []byte
		err  error
	}{
		{"base64 of gzip (what Ironic builds)", b64(gz(iso)), iso, nil},
		{"base64 with a trailing newline", append(b64(gz(iso)), '\n'), iso, nil},
		{"base64 of a raw ISO", b64(iso), iso, nil},
		{"raw ISO bytes", iso, iso, nil},
		{"gzip without base64", gz(iso), iso, nil},
		{"FAT image", b64(gz(fat)), fat, nil},
		{"empty", nil, nil, ErrInvalid},
		{"blanks", []byte("  \n"), nil, ErrInvalid},
		{"not an image", []byte("#cloud-config\nhostname: x\n"), nil, ErrInvalid},
		{"base64 of text", b64([]byte("hello world, not an ISO")), nil, ErrInvalid},
		{"truncated gzip", b64(gz(iso)[:100]), nil, ErrInvalid},
		{"bad gzip header", b64([]byte{0x1f, 0x8b, 0, 0, 0}), nil, ErrInvalid},
		{"over 64 MiB once decoded", b64(gz(huge)), nil, ErrTooLarge},
		{"ISO cut before its descriptor", iso[:32768], nil, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode(c.in)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("Decode: err %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("Decode returned %d bytes, want %d", len(got), len(c.want))
			}
		})
	}
}

func TestFilesystemLabel(t *testing.T) {
	cases := []struct {
		name  string
		img   []byte
		label string
		ok    bool
	}{
		{"iso", fakeISO("config-2", 40<<10), "config-2", true},
		{"iso other label", fakeISO("cidata", 40<<10), "cidata", true},
		{"fat32", fakeFAT32("CONFIG-2"), "CONFIG-2", true},
		{"zeros", make([]byte, 40<<10), "", false},
		{"short", []byte{1, 2, 3}, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			label, ok := FilesystemLabel(bytes.NewReader(c.img), 0)
			if label != c.label || ok != c.ok {
				t.Fatalf("label %q %v, want %q %v", label, ok, c.label, c.ok)
			}
		})
	}
	if !IsConfigDrive("CONFIG-2") || !IsConfigDrive("config-2") || IsConfigDrive("config-3") {
		t.Error("IsConfigDrive")
	}
}

// memDisk is a disk in memory.
type memDisk struct {
	b      []byte
	writes int
}

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, errors.New("read past the end")
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, errors.New("short read")
	}
	return n, nil
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("write past the end")
	}
	m.writes++
	return copy(m.b[off:], p), nil
}

const mib = 1 << 20

// gptImage returns a disk of diskSize bytes holding a GPT "image" of
// imageSize bytes (its backup header at the image's end, as after
// streaming an image onto a larger disk) with the given partitions
// (start, end sectors at 512 bytes) and boot code in the MBR.
func gptImage(t testing.TB, diskSize, imageSize int64, parts ...[2]uint64) *memDisk {
	t.Helper()
	img := &memDisk{b: make([]byte, imageSize)}
	var ps []*gpt.Partition
	for i, p := range parts {
		ps = append(ps, &gpt.Partition{Index: i + 1, Start: p[0], End: p[1], Type: gpt.LinuxFilesystem, Name: "p"})
	}
	tab := &gpt.Table{Partitions: ps, LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	if err := tab.Write(&file{dev: img, size: imageSize}, imageSize); err != nil {
		t.Fatal(err)
	}
	copy(img.b[:440], bytes.Repeat([]byte{0xb0}, 440))
	img.b[510], img.b[511] = 0x55, 0xaa
	d := &memDisk{b: make([]byte, diskSize)}
	copy(d.b, img.b)
	return d
}

// mbrImage returns a disk with an MBR holding the given primary entries
// (start, count sectors).
func mbrImage(diskSize int64, parts ...[2]uint32) *memDisk {
	d := &memDisk{b: make([]byte, diskSize)}
	copy(d.b[:440], bytes.Repeat([]byte{0xb0}, 440))
	for i, p := range parts {
		e := d.b[446+16*i:]
		e[4] = 0x83
		binary.LittleEndian.PutUint32(e[8:], p[0])
		binary.LittleEndian.PutUint32(e[12:], p[1])
	}
	d.b[510], d.b[511] = 0x55, 0xaa
	return d
}

func TestInstallGPTAppends(t *testing.T) {
	d := gptImage(t, 256*mib, 16*mib, [2]uint64{2048, 10239}, [2]uint64{10240, 30000})
	oldBackup := backupLBA(d, 512)
	boot := bytes.Clone(d.b[:440])
	iso := fakeISO("config-2", 100<<10)
	p, err := Install(d, int64(len(d.b)), 512, iso)
	if err != nil {
		t.Fatal(err)
	}
	if p.Table != "gpt" || p.Partition != 3 || !p.Created {
		t.Fatalf("placement %+v", p)
	}
	if p.Size < PartitionSize || p.Size >= PartitionSize+mib || p.Offset%mib != 0 || p.Offset+p.Size > int64(len(d.b))-33*512 {
		t.Fatalf("partition at %d, %d bytes: want 64 MiB up to the end, aligned, before the backup table", p.Offset, p.Size)
	}
	if !bytes.Equal(d.b[p.Offset:p.Offset+int64(len(iso))], iso) {
		t.Fatal("the config drive is not in the partition")
	}
	if !bytes.Equal(d.b[:440], boot) {
		t.Fatal("boot code changed")
	}
	tab, err := gpt.Read(&file{dev: d, size: int64(len(d.b))}, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != 3 || tab.Partitions[2].Name != Label || tab.Partitions[0].Start != 2048 || tab.Partitions[1].End != 30000 {
		t.Fatalf("table after install: %+v", tab.Partitions)
	}
	if got := backupLBA(d, 512); got != uint64(len(d.b)/512-1) {
		t.Fatalf("backup header at LBA %d, want the disk's last", got)
	}
	if !bytes.Equal(d.b[oldBackup*512:oldBackup*512+512], make([]byte, 512)) {
		t.Fatal("the image's old backup header is still there")
	}
	// A second install finds and reuses the partition.
	iso2 := fakeISO("config-2", 120<<10)
	p2, err := Install(d, int64(len(d.b)), 512, iso2)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Created || p2.Partition != 3 || p2.Offset != p.Offset {
		t.Fatalf("second install %+v, want the same partition reused", p2)
	}
}

func TestInstallReusesLabelledPartition(t *testing.T) {
	for _, c := range []struct {
		name string
		fs   []byte
	}{{"iso", fakeISO("config-2", 40<<10)}, {"vfat CONFIG-2", fakeFAT32("CONFIG-2")}} {
		t.Run(c.name, func(t *testing.T) {
			d := gptImage(t, 64*mib, 64*mib, [2]uint64{2048, 4095}, [2]uint64{4096, 8191})
			copy(d.b[4096*512:], c.fs)
			table := bytes.Clone(d.b[:34*512])
			iso := fakeISO("config-2", 36<<10)
			p, err := Install(d, int64(len(d.b)), 512, iso)
			if err != nil {
				t.Fatal(err)
			}
			if p.Created || p.Partition != 2 || p.Offset != 4096*512 || p.Size != 4096*512 {
				t.Fatalf("placement %+v", p)
			}
			if !bytes.Equal(d.b[:34*512], table) {
				t.Fatal("the table changed although a config-2 partition existed")
			}
		})
	}
}

func TestInstallMBR(t *testing.T) {
	d := mbrImage(128*mib, [2]uint32{2048, 20480})
	boot := bytes.Clone(d.b[:440])
	iso := fakeISO("config-2", 64<<10)
	p, err := Install(d, int64(len(d.b)), 512, iso)
	if err != nil {
		t.Fatal(err)
	}
	if p.Table != "msdos" || p.Partition != 2 || !p.Created || p.Offset != 64*mib || p.Size != 64*mib {
		t.Fatalf("placement %+v", p)
	}
	e := d.b[446+16:]
	if e[4] != 0x83 || binary.LittleEndian.Uint32(e[8:]) != 64*mib/512 || binary.LittleEndian.Uint32(e[12:]) != 64*mib/512 {
		t.Fatalf("MBR entry % x", e[:16])
	}
	if !bytes.Equal(d.b[:440], boot) || !bytes.Equal(d.b[p.Offset:p.Offset+int64(len(iso))], iso) {
		t.Fatal("boot code changed or drive missing")
	}
}

func TestInstallMBRBelow2TiB(t *testing.T) {
	// placeAtEnd is what keeps the partition addressable: a 3 TiB disk
	// gets it just below 2 TiB.
	start, end, err := placeAtEnd(2048, min(uint64(3<<40)/512, mbrLimit), 512, 1<<20, PartitionSize)
	if err != nil {
		t.Fatal(err)
	}
	if end != mbrLimit-1 || (end-start+1)*512 != PartitionSize {
		t.Fatalf("start %d end %d", start, end)
	}
}

func TestInstallRefuses(t *testing.T) {
	iso := fakeISO("config-2", 64<<10)
	cases := []struct {
		name string
		disk func(t *testing.T) *memDisk
		img  []byte
		ss   int
		err  error
		msg  string
	}{
		{"no partition table", func(*testing.T) *memDisk { return &memDisk{b: make([]byte, 8*mib)} }, iso, 512, ErrNoTable, "no MBR or GPT"},
		{"four primaries", func(*testing.T) *memDisk {
			return mbrImage(64*mib, [2]uint32{2048, 100}, [2]uint32{4096, 100}, [2]uint32{8192, 100}, [2]uint32{16384, 100})
		}, iso, 512, ErrNoSpace, "all four primary"},
		{"MBR disk full", func(*testing.T) *memDisk { return mbrImage(32*mib, [2]uint32{2048, 32*mib/512 - 2048}) }, iso, 512, ErrNoSpace, "reach the end"},
		{"GPT disk full", func(t *testing.T) *memDisk { return gptImage(t, 16*mib, 16*mib, [2]uint64{2048, 16*mib/512 - 34}) }, iso, 512, ErrNoSpace, "reach the end"},
		{"GPT little room", func(t *testing.T) *memDisk { return gptImage(t, 16*mib, 16*mib, [2]uint64{2048, 16*mib/512 - 34 - 40}) }, iso, 512, ErrNoSpace, "bytes free"},
		{"partition right after the entries", func(t *testing.T) *memDisk { return gptImage(t, 128*mib, 16*mib, [2]uint64{34, 2000}) }, iso, 512, nil, ""},
		{"empty image", func(t *testing.T) *memDisk { return gptImage(t, 128*mib, 8*mib, [2]uint64{2048, 4095}) }, nil, 512, ErrInvalid, "empty"},
		{"image too large", func(t *testing.T) *memDisk { return gptImage(t, 128*mib, 8*mib, [2]uint64{2048, 4095}) }, make([]byte, MaxSize+1), 512, ErrTooLarge, ""},
		{"odd sector size", func(t *testing.T) *memDisk { return gptImage(t, 128*mib, 8*mib, [2]uint64{2048, 4095}) }, iso, 1000, nil, "sector size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := c.disk(t)
			before := bytes.Clone(d.b)
			_, err := Install(d, int64(len(d.b)), c.ss, c.img)
			if c.err == nil && c.msg == "" {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				return
			}
			if err == nil || (c.err != nil && !errors.Is(err, c.err)) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %v, want %v containing %q", err, c.err, c.msg)
			}
			if !bytes.Equal(before, d.b) {
				t.Fatal("a refused install changed the disk")
			}
		})
	}
}

func TestInstallGPTOutsideUsableArea(t *testing.T) {
	d := gptImage(t, 64*mib, 64*mib, [2]uint64{2048, 4095})
	// Entry 1 now starts at LBA 10, where a standard table's entries
	// live (a table with a shorter entry array allows that).
	entry := d.b[2*512:]
	binary.LittleEndian.PutUint64(entry[32:], 10)
	fixCRCs(d)
	before := bytes.Clone(d.b)
	_, err := Install(d, int64(len(d.b)), 512, fakeISO("config-2", 40<<10))
	if err == nil || !strings.Contains(err.Error(), "outside the usable area") {
		t.Fatalf("err %v", err)
	}
	if !bytes.Equal(before, d.b) {
		t.Fatal("disk changed")
	}
}

// testISO builds a real ISO 9660 config drive holding meta_data.json.
func testISO(t *testing.T, meta string) []byte {
	t.Helper()
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "cd.iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	work := filepath.Join(dir, "w")
	os.Mkdir(work, 0o700)
	fsys, err := iso9660.Create(dfile.New(out, false), 0, 0, 2048, work)
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.Mkdir("openstack/latest"); err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenFile("openstack/latest/meta_data.json", os.O_CREATE|os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte(meta))
	f.Close()
	if err := fsys.Finalize(iso9660.FinalizeOptions{RockRidge: true, VolumeIdentifier: Label}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gpt4K is a 384 MiB disk with 4096-byte sectors holding a 32 MiB GPT
// image.
func gpt4K(t *testing.T) (*memDisk, int64) {
	t.Helper()
	size := int64(384 * mib)
	img := &memDisk{b: make([]byte, size)}
	tab := &gpt.Table{Partitions: []*gpt.Partition{{Index: 1, Start: 256, End: 2559, Type: gpt.LinuxFilesystem}},
		LogicalSectorSize: 4096, PhysicalSectorSize: 4096, ProtectiveMBR: true}
	if err := tab.Write(&file{dev: img, size: 32 * mib}, 32*mib); err != nil {
		t.Fatal(err)
	}
	img.b[510], img.b[511] = 0x55, 0xaa
	return img, size
}

// TestInstall4KSectors: on a disk with 4096-byte sectors the ISO's files
// go into a vfat filesystem labelled CONFIG-2, as IPA does.
func TestInstall4KSectors(t *testing.T) {
	img, size := gpt4K(t)
	p, err := Install(img, size, 4096, testISO(t, `{"hostname":"four-k"}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Partition != 2 || p.Offset%mib != 0 || p.Size < FATPartitionSize || p.Size >= FATPartitionSize+mib || p.Offset+p.Size > size-5*4096 || p.Filesystem != "vfat" {
		t.Fatalf("placement %+v", p)
	}
	if got := backupLBA(img, 4096); got != uint64(size/4096-1) {
		t.Fatalf("backup header at %d", got)
	}
	if label, ok := FilesystemLabel(img, p.Offset); !ok || label != FATLabel {
		t.Fatalf("partition holds %q %v, want vfat %s", label, ok, FATLabel)
	}
	fsys, err := fat32.Read(&storage{file: &file{dev: img, size: size}}, p.Size, p.Offset, 4096)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenFile("openstack/latest/meta_data.json", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(f); string(b) != `{"hostname":"four-k"}` {
		t.Errorf("meta_data.json %q", b)
	}
	// Deploying again reuses the vfat partition.
	p2, err := Install(img, size, 4096, testISO(t, `{"hostname":"again"}`))
	if err != nil || p2.Created || p2.Partition != 2 {
		t.Fatalf("second install %+v %v", p2, err)
	}

	t.Run("an ISO go-diskfs cannot read is refused before any write", func(t *testing.T) {
		d, size := gpt4K(t)
		before := bytes.Clone(d.b)
		if _, err := Install(d, size, 4096, fakeISO("config-2", 40<<10)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err %v", err)
		}
		if !bytes.Equal(before, d.b) {
			t.Error("disk changed")
		}
	})
}

// fixCRCs recomputes the primary GPT header's CRCs after a test patched
// its entries.
func fixCRCs(d *memDisk) {
	h := d.b[512:604]
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(d.b[1024:1024+128*128]))
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
}
