package testimage

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/u-root/u-root/pkg/cpio"
)

func fakeFile(t *testing.T, name string, size int) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xAB}, size), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLayout checks the image without booting it (the boot tests run
// under QEMU in the end-to-end tier): BIOS code and marker in the MBR,
// the protective partition intact, a GPT with one ESP holding the loader,
// its entry, the kernel and an initramfs with a console and init.
func TestLayout(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000") // FAT timestamps; see Build
	img := filepath.Join(t.TempDir(), "disk.img")
	opts := Options{ID: "test42", Kernel: fakeFile(t, "vmlinuz", 1<<20), Init: fakeFile(t, "init", 4096),
		SystemdBoot: fakeFile(t, "sd.efi", 8192)}
	if err := Build(img, opts); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(img)
	if len(raw) != 64<<20 {
		t.Errorf("image is %d bytes", len(raw))
	}
	if !bytes.HasPrefix(raw, mbrCode) || !bytes.Contains(raw[:440], []byte(Marker("test42", "bios"))) {
		t.Error("MBR boot code or BIOS marker missing")
	}
	if raw[510] != 0x55 || raw[511] != 0xAA || raw[446+4] != 0xEE {
		t.Errorf("protective MBR damaged: sig %x %x type %x", raw[510], raw[511], raw[446+4])
	}
	if lba := binary.LittleEndian.Uint32(raw[446+8:]); lba != 1 {
		t.Errorf("protective partition starts at LBA %d", lba)
	}
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	g := pt.(*gpt.Table)
	if len(g.Partitions) != 1 || g.Partitions[0].Type != gpt.EFISystemPartition {
		t.Fatalf("partitions: %+v", g.Partitions)
	}
	fs, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := fs.ReadFile("loader/entries/ingot.conf")
	if err != nil || !strings.Contains(string(entry), "ingot.marker=INGOT-IMAGE-BOOTED_uefi_test42") || !strings.Contains(string(entry), "console=ttyS0") {
		t.Errorf("loader entry: %q %v", entry, err)
	}
	for name, size := range map[string]int{"EFI/BOOT/BOOTX64.EFI": 8192, "vmlinuz": 1 << 20} {
		b, err := fs.ReadFile(name)
		if err != nil || len(b) != size {
			t.Errorf("%s: %d bytes, %v", name, len(b), err)
		}
	}
	initrd, err := fs.ReadFile("initrd.img")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	rr := cpio.Newc.Reader(bytes.NewReader(initrd))
	recs, err := cpio.ReadAllRecords(rr)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		names[r.Name] = true
	}
	if !names["init"] || !names["dev/console"] {
		t.Errorf("initramfs holds %v", names)
	}
	// Same inputs (and SOURCE_DATE_EPOCH), same image: reproducible.
	img2 := filepath.Join(t.TempDir(), "again.img")
	if err := Build(img2, opts); err != nil {
		t.Fatal(err)
	}
	raw2, _ := os.ReadFile(img2)
	if !bytes.Equal(raw, raw2) {
		for i := range raw {
			if raw[i] != raw2[i] {
				t.Errorf("two builds of the same image differ, first at byte %#x", i)
				break
			}
		}
	}
}

func TestBadOptions(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []Options{
		{ID: "has space", Kernel: "k", Init: "i"},
		{ID: "", Kernel: "k", Init: "i"},
		{ID: "ok", Kernel: filepath.Join(dir, "missing"), Init: "i"},
	} {
		if err := Build(filepath.Join(dir, "x.img"), o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
