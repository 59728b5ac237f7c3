//go:build interop

package configdrive

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingot-dev/ingot/internal/peertest"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// realISO builds a config drive with genisoimage, as Ironic's own
// builder does.
func realISO(t *testing.T, hostname string) []byte {
	t.Helper()
	gen := peertest.Binary(t, "genisoimage", "genisoimage")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree", "openstack", "latest")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "meta_data.json"), []byte(`{"hostname":"`+hostname+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	iso := filepath.Join(dir, "cd.iso")
	run(t, gen, "-o", iso, "-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-quiet", "-J", "-r", "-V", "config-2", filepath.Join(dir, "tree"))
	b, err := os.ReadFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// installFile installs img onto the disk file at path.
func installFile(t *testing.T, path string, img []byte) Placement {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	p, err := Install(f, st.Size(), 512, img)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkDrive asserts blkid sees the config drive at the placement and
// isoinfo reads its meta_data.json.
func checkDrive(t *testing.T, disk string, p Placement, hostname string) {
	t.Helper()
	blkid := peertest.Binary(t, "blkid", "util-linux")
	out := run(t, blkid, "-p", "-O", fmt.Sprint(p.Offset), "-o", "export", disk)
	if !strings.Contains(out, "LABEL=config-2") || !strings.Contains(out, "TYPE=iso9660") {
		t.Fatalf("blkid at offset %d:\n%s", p.Offset, out)
	}
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(t.TempDir(), "part.iso")
	if err := os.WriteFile(part, b[p.Offset:p.Offset+p.Size], 0o644); err != nil {
		t.Fatal(err)
	}
	isoinfo := peertest.Binary(t, "isoinfo", "genisoimage")
	if got := run(t, isoinfo, "-R", "-x", "/openstack/latest/meta_data.json", "-i", part); !strings.Contains(got, hostname) {
		t.Fatalf("meta_data.json read by isoinfo: %q", got)
	}
}

func TestInteropGPTWithSgdisk(t *testing.T) {
	sgdisk := peertest.Binary(t, "sgdisk", "gdisk")
	dir := t.TempDir()
	img := filepath.Join(dir, "image.raw")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	run(t, sgdisk, "-n", "1:2048:+4M", "-t", "1:ef00", "-c", "1:esp", "-n", "2:0:0", "-c", "2:root", img)
	before := run(t, sgdisk, "-i", "2", img)
	// The image streamed onto a larger disk.
	b, _ := os.ReadFile(img)
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 200<<20); err != nil {
		t.Fatal(err)
	}
	p := installFile(t, disk, realISO(t, "gpt-node"))
	if p.Partition != 3 || !p.Created {
		t.Fatalf("placement %+v", p)
	}
	if out := run(t, sgdisk, "-v", disk); !strings.Contains(out, "No problems found") {
		t.Fatalf("sgdisk -v after install:\n%s", out)
	}
	if out := run(t, sgdisk, "-i", "3", disk); !strings.Contains(out, "Partition name: 'config-2'") {
		t.Fatalf("sgdisk -i 3:\n%s", out)
	}
	if after := run(t, sgdisk, "-i", "2", disk); after != before {
		t.Fatalf("partition 2 changed:\n%s\nwas\n%s", after, before)
	}
	checkDrive(t, disk, p, "gpt-node")

	// Deploying again reuses the partition.
	p2 := installFile(t, disk, realISO(t, "second"))
	if p2.Created || p2.Partition != 3 {
		t.Fatalf("second placement %+v", p2)
	}
	checkDrive(t, disk, p2, "second")
}

func TestInteropMBRWithSfdisk(t *testing.T) {
	sfdisk := peertest.Binary(t, "sfdisk", "fdisk")
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 160<<20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sfdisk, "-q", disk)
	cmd.Stdin = strings.NewReader("label: dos\nstart=2048, size=20480, type=83, bootable\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	p := installFile(t, disk, realISO(t, "mbr-node"))
	if p.Table != "msdos" || p.Partition != 2 || !p.Created {
		t.Fatalf("placement %+v", p)
	}
	out := run(t, sfdisk, "-d", disk)
	want := fmt.Sprintf("disk.raw2 : start=%12d, size=%12d, type=83", p.Offset/512, p.Size/512)
	if !strings.Contains(out, want) || !strings.Contains(out, "disk.raw1 : start=        2048, size=       20480, type=83, bootable") {
		t.Fatalf("sfdisk -d:\n%s\nwant %q", out, want)
	}
	if out := run(t, sfdisk, "-V", disk); !strings.Contains(out, "No errors detected") {
		t.Fatalf("sfdisk -V:\n%s", out)
	}
	checkDrive(t, disk, p, "mbr-node")
}

func TestInteropReusesVfatConfigDrive(t *testing.T) {
	sgdisk := peertest.Binary(t, "sgdisk", "gdisk")
	mkfs := peertest.Binary(t, "mkfs.vfat", "dosfstools")
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 128<<20); err != nil {
		t.Fatal(err)
	}
	run(t, sgdisk, "-n", "1:2048:+8M", "-n", "2:0:+40M", disk)
	fat := filepath.Join(dir, "fat.img")
	run(t, mkfs, "-C", "-n", "CONFIG-2", fat, fmt.Sprint(40<<10))
	fb, _ := os.ReadFile(fat)
	start := int64(2048+8<<11) * 512
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt(fb, start)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	table, _ := os.ReadFile(disk)
	table = bytes.Clone(table[:34*512])
	p := installFile(t, disk, realISO(t, "fat-node"))
	if p.Created || p.Partition != 2 || p.Offset != start {
		t.Fatalf("placement %+v, want partition 2 at %d reused", p, start)
	}
	now, _ := os.ReadFile(disk)
	if !bytes.Equal(now[:34*512], table) {
		t.Fatal("the table changed")
	}
	checkDrive(t, disk, p, "fat-node")
}

// TestInteropFourKSectorLoopDevice: on a loop device with 4096-byte
// logical sectors (what Linux cannot mount ISO 9660 from) the drive is
// rebuilt as vfat: sgdisk sees a clean table, blkid a vfat labelled
// CONFIG-2, fsck.fat no errors, and mtools reads meta_data.json back.
func TestInteropFourKSectorLoopDevice(t *testing.T) {
	peertest.Root(t, "loop devices")
	losetup := peertest.Binary(t, "losetup", "mount")
	sgdisk := peertest.Binary(t, "sgdisk", "gdisk")
	mcopy := peertest.Binary(t, "mcopy", "mtools")
	fsck := peertest.Binary(t, "fsck.fat", "dosfstools")
	dir := t.TempDir()
	backing := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, 512<<20); err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(run(t, losetup, "-f", "--show", "--sector-size", "4096", backing))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	run(t, sgdisk, "-n", "1:256:+32M", "-c", "1:root", dev)
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Seek(0, io.SeekEnd)
	p, err := Install(f, size, 4096, realISO(t, "four-k-node"))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if p.Filesystem != "vfat" || !p.Created || p.Partition != 2 {
		t.Fatalf("placement %+v", p)
	}
	if out := run(t, sgdisk, "-v", dev); !strings.Contains(out, "No problems found") {
		t.Fatalf("sgdisk -v:\n%s", out)
	}
	blkid := peertest.Binary(t, "blkid", "util-linux")
	if out := run(t, blkid, "-p", "-O", fmt.Sprint(p.Offset), "-o", "export", dev); !strings.Contains(out, "LABEL=CONFIG-2") || !strings.Contains(out, "TYPE=vfat") {
		t.Fatalf("blkid:\n%s", out)
	}
	b, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(dir, "part.img")
	if err := os.WriteFile(part, b[p.Offset:p.Offset+p.Size], 0o644); err != nil {
		t.Fatal(err)
	}
	// fsck.fat reports two things about every go-diskfs FAT32 (noted in
	// the package study as cosmetic: Linux, blkid and mtools read it);
	// anything else is a finding.
	out, _ := exec.Command(fsck, "-n", part).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		known := l == "" || strings.HasPrefix(l, "fsck.fat ") || l == "/openstack" || l == "Leaving filesystem unchanged." ||
			l == "Invalid '..' entry in the second slot. Fixing." || strings.HasPrefix(l, "Free cluster summary uninitialized") ||
			strings.HasPrefix(l, part+": 4 files")
		if !known {
			t.Errorf("fsck.fat -n: %q\n%s", l, out)
		}
	}
	cmd := exec.Command(mcopy, "-i", part, "::/openstack/latest/meta_data.json", "-")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "four-k-node") {
		list := exec.Command(peertest.Binary(t, "mdir", "mtools"), "-/", "-i", part, "::")
		list.Env = cmd.Env
		l, _ := list.CombinedOutput()
		t.Fatalf("mcopy meta_data.json: %v\n%s\nmdir -/:\n%s", err, out, l)
	}
}
