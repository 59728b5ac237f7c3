//go:build interop

package blockdev_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/blockdev/blockdevtest"
	"github.com/ingot-dev/ingot/internal/peertest"
)

// loopDevice attaches a file to a loop device with partition scanning and
// returns the device path; detached at cleanup.
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	peertest.Root(t, "attach loop devices")
	losetup := peertest.Binary(t, "losetup", "mount")
	out, err := exec.Command(losetup, "--find", "--show", "--partscan", blockdevtest.Disk(t, size)).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// partitionNodes lists the kernel's partitions of a loop device from sysfs.
func partitionNodes(t *testing.T, dev string) []string {
	t.Helper()
	name := filepath.Base(dev)
	m, _ := filepath.Glob(filepath.Join("/sys/block", name, name+"p*"))
	return m
}

// TestInteropLoopDevice: on a real block device, the kernel sees the GPT
// we wrote after RereadPartitions, and sees no partition after
// WipeMetadata; blkid finds no signature left.
func TestInteropLoopDevice(t *testing.T) {
	dev := loopDevice(t, 64*mib)
	blkid := peertest.Binary(t, "blkid", "util-linux")
	wipefs := peertest.Binary(t, "wipefs", "util-linux")
	d, err := blockdev.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.IsBlockDevice() || d.Size() != 64*mib {
		t.Fatalf("block %v size %d", d.IsBlockDevice(), d.Size())
	}
	parts := []blockdevtest.Part{
		{Start: mib, Size: 8 * mib, TypeGUID: blockdev.ESPTypeGUID, UUID: espUUID, Name: "EFI System"},
		{Start: 9 * mib, Size: 40 * mib, TypeGUID: linuxFS, UUID: "b9a4c0de-0000-4000-8000-00000000beef", Name: "root"},
	}
	blockdevtest.GPT(t, d, d.Size(), diskGUID, parts)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := d.RereadPartitions(); err != nil {
		t.Fatal(err)
	}
	kernelParts := kernelParsesGPT(t)
	if kernelParts {
		waitFor(t, func() bool { return len(partitionNodes(t, dev)) == 2 }, "kernel to see 2 partitions")
	}
	out, err := exec.Command(blkid, "-p", "-o", "value", "-s", "PTUUID", dev).CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != diskGUID {
		t.Errorf("blkid PTUUID = %q (%v), want %s", got, err, diskGUID)
	}
	out, err = exec.Command(wipefs, "--no-act", "--noheadings", "--output", "TYPE", dev).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "gpt") || !strings.Contains(string(out), "PMBR") {
		t.Errorf("wipefs before wiping: %v %s", err, out)
	}

	if _, err := blockdev.WipeMetadata(t.Context(), d, d.Size()); err != nil {
		t.Fatal(err)
	}
	if err := d.RereadPartitions(); err != nil {
		t.Fatal(err)
	}
	if kernelParts {
		waitFor(t, func() bool { return len(partitionNodes(t, dev)) == 0 }, "kernel to drop the partitions")
	}
	out, err = exec.Command(wipefs, "--no-act", "--noheadings", dev).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("wipefs still finds signatures: %v %s", err, out)
	}
}

// kernelParsesGPT reports whether the running kernel has a GPT parser
// (some minimal VM kernels have none); without one the kernel's view of
// partitions cannot be checked, only the bytes.
func kernelParsesGPT(t *testing.T) bool {
	b, err := exec.Command("sh", "-c", "zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r)").Output()
	if err != nil || len(b) == 0 {
		return true
	}
	if !strings.Contains(string(b), "CONFIG_EFI_PARTITION=y") {
		t.Log("this kernel has no GPT parser (CONFIG_EFI_PARTITION unset): checking with blkid and wipefs only")
		return false
	}
	return true
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
