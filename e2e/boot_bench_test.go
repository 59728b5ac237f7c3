//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/internal/peertest"
	"github.com/ingot-dev/ingot/internal/testimage"
	"github.com/ingot-dev/ingot/internal/vmtest"
)

// BenchmarkBootToLookup measures, under QEMU (TCG, direct kernel boot,
// user-mode network), how long the deploy ramdisk takes from QEMU's start
// to the agent's first lookup request, against a baseline booting the same
// kernel with a one-binary initramfs that prints a line at once (the
// kernel's own floor). Run per Debian kernel flavor: the cloud kernel is
// the default because it boots fastest.
//
//	go test -tags e2e -run '^$' -bench BootToLookup -benchtime 3x ./e2e
func BenchmarkBootToLookup(b *testing.B) {
	peertest.Binary(b, "qemu-system-x86_64", "qemu-system-x86")
	for _, flavor := range []string{"cloud-amd64", "amd64"} {
		b.Run("kernel="+flavor, func(b *testing.B) {
			kernel := vmtest.Kernel(b, flavor)
			ramdisk := vmtest.Ramdisk(b, kernel)
			dir := b.TempDir()
			initBin, err := testimage.BuildInit(b.Context(), dir)
			if err != nil {
				b.Fatal(err)
			}
			cpio, err := testimage.Initramfs(initBin)
			if err != nil {
				b.Fatal(err)
			}
			base := filepath.Join(dir, "baseline.cpio")
			if err := os.WriteFile(base, cpio, 0o644); err != nil {
				b.Fatal(err)
			}
			var baseT, agentT time.Duration
			n := 0
			for b.Loop() {
				baseT += bootUntil(b, kernel, base, "ingot.marker=BASELINE_UP", "BASELINE UP")
				agentT += bootUntil(b, kernel, ramdisk.Path, "ipa-api-url=http://10.0.2.2:9/", "looking up the node")
				n++
			}
			b.ReportMetric(baseT.Seconds()/float64(n), "baseline-s/boot")
			b.ReportMetric(agentT.Seconds()/float64(n), "agent-s/boot")
			b.ReportMetric(agentT.Seconds()/baseT.Seconds(), "agent/baseline")
			b.ReportMetric(float64(ramdisk.Compressed)/(1<<20), "ramdisk-MiB")
		})
	}
}

// bootUntil boots kernel and initrd and returns the time from QEMU's start
// until the console prints marker.
func bootUntil(b *testing.B, kernel, initrd, params, marker string) time.Duration {
	b.Helper()
	disk := filepath.Join(b.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(disk, 8<<30); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1",
		"-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 quiet panic=-1 "+params,
		"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0",
		"-drive", "file="+disk+",format=raw,if=virtio,cache=unsafe")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	var tail []string
	for sc.Scan() {
		if strings.Contains(sc.Text(), marker) {
			return time.Since(start)
		}
		tail = append(tail, sc.Text())
		if len(tail) > 20 {
			tail = tail[1:]
		}
	}
	b.Fatalf("%q never appeared on the console:\n%s", marker, strings.Join(tail, "\n"))
	return 0
}
