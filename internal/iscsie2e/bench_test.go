package iscsie2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/agent/iscsitarget"
	"github.com/ingot-dev/ingot/conductor/iscsi"
	"github.com/ingot-dev/ingot/internal/peertest"
	"github.com/ingot-dev/ingot/internal/tgtd"
)

const benchImage = 256 << 20

// benchSource writes a random image file once per benchmark.
func benchSource(b *testing.B) string {
	img := make([]byte, benchImage)
	if _, err := rand.Read(img); err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "image.raw")
	if err := os.WriteFile(p, img, 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

// qemuImg writes src onto a LUN with qemu-img convert (libiscsi) and
// cache mode writeback, so it flushes the target's cache at the end as
// Writer.Sync does (qemu-img's default for convert, unsafe, skips that
// flush).
func qemuImg(b *testing.B, qemu, src, url string) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, qemu, "convert", "-n", "-t", "writeback", "-f", "raw", "-O", "raw", src, url).CombinedOutput()
		if err != nil {
			return fmt.Errorf("qemu-img: %v: %s", err, out)
		}
		return nil
	}
}

// ingot writes src with conductor/iscsi: log in, stream the file through
// Writer (as shared/imagestream would), SYNCHRONIZE CACHE, log out.
func ingot(cfg iscsi.Config, lun uint16, src string) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		w, err := iscsi.NewWriter(ctx, cfg, iscsi.WriterOptions{LUN: lun})
		if err != nil {
			return err
		}
		defer w.Close()
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(io.NewOffsetWriter(w, 0), f); err != nil {
			return err
		}
		return w.Sync()
	}
}

// compare runs baseline and candidate alternately in each iteration and
// reports both throughputs and their ratio (candidate over baseline:
// above 1 means Ingot is faster).
func compare(b *testing.B, baseline, candidate func() error) {
	var tb, tc time.Duration
	timed := func(f func() error, d *time.Duration) {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		*d += time.Since(start)
	}
	n := 0
	for b.Loop() {
		if n%2 == 0 {
			timed(baseline, &tb)
			timed(candidate, &tc)
		} else {
			timed(candidate, &tc)
			timed(baseline, &tb)
		}
		n++
	}
	mib := float64(benchImage) * float64(n) / (1 << 20)
	b.ReportMetric(mib/tb.Seconds(), "qemu-img-MiB/s")
	b.ReportMetric(mib/tc.Seconds(), "ingot-MiB/s")
	b.ReportMetric(tb.Seconds()/tc.Seconds(), "ingot/qemu-img")
}

// BenchmarkISCSIWrite measures writing a 256 MiB image over loopback with
// Ingot's initiator against qemu-img convert (libiscsi) in the same run:
// into tgtd with its default parameters, and into Ingot's own target.
// Needs root, tgt and qemu-utils + qemu-block-extra.
func BenchmarkISCSIWrite(b *testing.B) {
	qemu := peertest.Binary(b, "qemu-img", "qemu-utils qemu-block-extra")
	src := benchSource(b)
	b.Run("into-tgtd-defaults", func(b *testing.B) {
		d := tgtd.Start(b)
		const iqn = "iqn.2024-01.dev.ingot.bench:tgtd"
		d.Target(b, 1, iqn, benchImage, benchImage)
		compare(b, qemuImg(b, qemu, src, fmt.Sprintf("iscsi://%s/%s/1", d.Portal, iqn)),
			ingot(iscsi.Config{Portal: d.Portal, TargetIQN: iqn}, 2, src))
	})
	b.Run("into-ingot-target", func(b *testing.B) {
		disk := filepath.Join(b.TempDir(), "disk.img")
		if err := os.WriteFile(disk, nil, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Truncate(disk, benchImage); err != nil {
			b.Fatal(err)
		}
		cfg := iscsitarget.Config{Listen: "127.0.0.1:0", IQN: "iqn.2024-01.dev.ingot.bench:agent", Device: disk}
		tg, err := iscsitarget.Start(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer tg.Stop()
		compare(b, qemuImg(b, qemu, src, fmt.Sprintf("iscsi://%s/%s/1", tg.Addr(), cfg.IQN)),
			ingot(iscsi.Config{Portal: tg.Addr().String(), TargetIQN: cfg.IQN}, 1, src))
	})
}
