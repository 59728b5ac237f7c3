package iscsie2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ingot-dev/ingot/agent/iscsitarget"
	"github.com/ingot-dev/ingot/conductor/iscsi"
	"github.com/ingot-dev/ingot/internal/peertest"
	"github.com/ingot-dev/ingot/internal/tgtd"
	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/imagestream"
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

// BenchmarkDeployPath compares the two ways an image reaches a node's
// disk, on the same image in the same run, alternating in every
// iteration:
//
//   - direct (baseline): the agent streams the image from the conductor's
//     image cache over HTTP onto its disk (shared/imagestream, what
//     write_image does), then fsyncs.
//   - iscsi: the conductor streams the image from its cache through
//     iscsi.WriteImage (the iscsi deploy interface's write: a compressed
//     image is decoded once into nothing first) onto the agent's target
//     (agent/iscsitarget over the same kind of disk), syncs and reads back
//     a sample.
//
// Both run over loopback into file-backed disks (page cache). The ratio
// iscsi/direct is the iSCSI path's throughput over the direct path's:
// below 1 means iSCSI is slower. No root or external program needed.
func BenchmarkDeployPath(b *testing.B) {
	raw := make([]byte, benchImage)
	if _, err := rand.Read(raw[:benchImage/2]); err != nil { // half random, half zeros: compressible
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		image []byte
	}{
		{"raw", raw},
		{"zstd", zstdBytes(b, raw)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.ServeContent(w, r, "image", time.Unix(0, 0), bytes.NewReader(tc.image))
			}))
			defer srv.Close()
			sum := sha256.Sum256(tc.image)
			info := api.ImageInfo{ID: "image", URLs: []string{srv.URL + "/image"}, OSHashAlgo: "sha256", OSHashValue: hex.EncodeToString(sum[:])}

			directDisk := disk(b, 2*benchImage)
			direct := func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				f, err := os.OpenFile(directDisk, os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = imagestream.Stream(ctx, info, f, imagestream.Options{Capacity: 2 * benchImage})
				return err
			}

			iscsiDisk := disk(b, 2*benchImage)
			creds := deployCredentials(b)
			tcfg := iscsitarget.Config{Listen: "127.0.0.1:0", IQN: "iqn.2008-10.org.openstack:bench", Device: iscsiDisk,
				CHAPUser: creds.User, CHAPSecret: creds.Secret}
			tg, err := iscsitarget.Start(context.Background(), tcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer tg.Stop()
			viaISCSI := func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				_, err := iscsi.WriteImage(ctx, iscsi.Config{Portal: tg.Addr().String(), TargetIQN: tcfg.IQN, CHAP: creds}, info,
					iscsi.ImageOptions{Writer: iscsi.WriterOptions{Verify: iscsi.VerifySampled}})
				return err
			}

			var td, ti time.Duration
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
					timed(direct, &td)
					timed(viaISCSI, &ti)
				} else {
					timed(viaISCSI, &ti)
					timed(direct, &td)
				}
				n++
			}
			b.StopTimer()
			if prefixSum(b, iscsiDisk, benchImage) != sha256.Sum256(raw) || prefixSum(b, directDisk, benchImage) != sha256.Sum256(raw) {
				b.Fatal("a disk does not hold the image")
			}
			mib := float64(benchImage) * float64(n) / (1 << 20)
			b.ReportMetric(mib/td.Seconds(), "direct-MiB/s")
			b.ReportMetric(mib/ti.Seconds(), "iscsi-MiB/s")
			b.ReportMetric(td.Seconds()/ti.Seconds(), "iscsi/direct")
		})
	}
}

func zstdBytes(b *testing.B, raw []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil)
}
