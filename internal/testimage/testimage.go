// Package testimage builds the bootable disk image that Ingot's end-to-end
// tests and demo deploy, from Debian packages and Go, without downloads: a
// GPT disk whose MBR boot code prints a marker on the serial console and
// powers the machine off under legacy BIOS, and whose EFI system partition
// boots systemd-boot, a Linux kernel and a tiny init that print the same
// marker and power off under UEFI. Seeing the marker proves the machine
// booted the very disk Ingot wrote.
package testimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/u-root/u-root/pkg/cpio"
)

// DefaultSystemdBoot is where Debian's systemd-boot-efi package installs the
// UEFI boot loader.
const DefaultSystemdBoot = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// Options describe the image.
type Options struct {
	// ID is written into the marker so a test knows the disk it sees
	// booting is the one it deployed.
	ID string
	// Kernel is a Linux bzImage with the EFI stub (Debian's vmlinuz).
	Kernel string
	// Init is a static init binary for the initramfs (see BuildInit).
	Init string
	// SystemdBoot is systemd-bootx64.efi; DefaultSystemdBoot if empty.
	SystemdBoot string
	// Size of the disk in bytes (64 MiB if zero).
	Size int64
}

// Marker is what a machine prints when it boots the image with the given
// ID, in "bios" or "uefi" mode.
func Marker(id, mode string) string { return "INGOT-IMAGE-BOOTED " + mode + " " + id }

// Build writes the image to path. With SOURCE_DATE_EPOCH set, the same
// options give the same bytes (it fixes the FAT timestamps).
func Build(path string, opts Options) error {
	if opts.ID == "" || strings.ContainsAny(opts.ID, " _\r\n") || len(opts.ID) > 64 {
		return fmt.Errorf("build test image: invalid id %q", opts.ID)
	}
	if opts.SystemdBoot == "" {
		opts.SystemdBoot = DefaultSystemdBoot
	}
	if opts.Size == 0 {
		opts.Size = 64 << 20
	}
	kernel, err := os.ReadFile(opts.Kernel)
	if err != nil {
		return fmt.Errorf("build test image: kernel: %w", err)
	}
	loader, err := os.ReadFile(opts.SystemdBoot)
	if err != nil {
		return fmt.Errorf("build test image: systemd-boot (Debian package systemd-boot-efi): %w", err)
	}
	initrd, err := Initramfs(opts.Init)
	if err != nil {
		return err
	}
	os.Remove(path)
	d, err := diskfs.Create(path, opts.Size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("build test image: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	sum := sha256.Sum256([]byte(opts.ID))
	guid := func(salt byte) string { // deterministic, so the image is reproducible
		b := sum
		b[0] ^= salt
		b[6] = b[6]&0x0f | 0x40
		b[8] = b[8]&0x3f | 0x80
		return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	}
	lastLBA := uint64(opts.Size/512) - 34
	table := &gpt.Table{
		LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: guid(0),
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: lastLBA, Type: gpt.EFISystemPartition,
			Name: "ESP", GUID: guid(1)}},
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("build test image: partition: %w", err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "ESP", Reproducible: true})
	if err != nil {
		return fmt.Errorf("build test image: ESP: %w", err)
	}
	marker := strings.ReplaceAll(Marker(opts.ID, "uefi"), " ", "_")
	files := map[string][]byte{
		"/EFI/BOOT/BOOTX64.EFI":      loader,
		"/loader/loader.conf":        []byte("default ingot.conf\ntimeout 0\nconsole-mode keep\n"),
		"/loader/entries/ingot.conf": []byte("title Ingot test image\nlinux /vmlinuz\ninitrd /initrd.img\noptions console=ttyS0 panic=-1 quiet ingot.marker=" + marker + "\n"),
		"/vmlinuz":                   kernel,
		"/initrd.img":                initrd,
	}
	for _, dir := range []string{"/EFI", "/EFI/BOOT", "/loader", "/loader/entries"} {
		if err := fs.Mkdir(dir); err != nil {
			return fmt.Errorf("build test image: mkdir %s: %w", dir, err)
		}
	}
	for _, name := range []string{"/EFI/BOOT/BOOTX64.EFI", "/loader/loader.conf", "/loader/entries/ingot.conf", "/vmlinuz", "/initrd.img"} {
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("build test image: create %s: %w", name, err)
		}
		if _, err := f.Write(files[name]); err != nil {
			return fmt.Errorf("build test image: write %s: %w", name, err)
		}
		f.Close()
	}
	closed = true
	if err := d.Close(); err != nil {
		return fmt.Errorf("build test image: %w", err)
	}
	return writeMBRCode(path, Marker(opts.ID, "bios"))
}

// mbrCode prints the NUL-terminated message that follows it on COM1, then
// powers the machine off through the ACPI PM1a control port of QEMU's
// SeaBIOS (0x604), and halts if that does nothing.
var mbrCode = []byte{
	0xfa,       // cli
	0x31, 0xc0, // xor ax, ax
	0x8e, 0xd8, // mov ds, ax
	0xbe, 0x1d, 0x7c, // mov si, 0x7c1d (the message)
	0xac,       // next: lodsb
	0x84, 0xc0, // test al, al
	0x74, 0x06, // jz off
	0xba, 0xf8, 0x03, // mov dx, 0x3f8
	0xee,       // out dx, al
	0xeb, 0xf5, // jmp next
	0xba, 0x04, 0x06, // off: mov dx, 0x604
	0xb8, 0x00, 0x20, // mov ax, 0x2000 (SLP_EN)
	0xef,       // out dx, ax
	0xf4,       // hlt
	0xeb, 0xfd, // jmp hlt
}

// writeMBRCode puts the BIOS boot code into the protective MBR's code
// area (the first 440 bytes), leaving the partition entries alone.
func writeMBRCode(path, message string) error {
	code := append(append([]byte{}, mbrCode...), []byte("\r\n"+message+"\r\n\x00")...)
	if len(code) > 440 {
		return errors.New("build test image: boot message too long")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(code, 0); err != nil {
		return fmt.Errorf("build test image: MBR code: %w", err)
	}
	return f.Sync()
}

// Initramfs packs a static init binary into a newc cpio archive with the
// device nodes the kernel needs to give it a console.
func Initramfs(initPath string) ([]byte, error) {
	bin, err := os.ReadFile(initPath)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	var buf bytes.Buffer
	w := cpio.Newc.Writer(&buf)
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o555),
		cpio.StaticRecord(bin, cpio.Info{Name: "init", Mode: 0o100755}),
	}
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	return buf.Bytes(), nil
}

// BuildInit compiles the image's init program (a static Linux binary) into
// dir and returns its path.
func BuildInit(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "imageinit")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "github.com/ingot-dev/ingot/internal/testimage/imageinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build image init: %v: %s", err, stderr.String())
	}
	return out, nil
}
