package tftpd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/ingot-dev/ingot/internal/peertest"
)

// BenchmarkTFTPvsTFTPDHPA fetches one 32 MiB file from Ingot's TFTP
// server and from tftpd-hpa (in.tftpd, a child process on another
// loopback port) serving the same directory, alternately, with the same
// in-process client, and reports both throughputs and their ratio
// (ingot/hpa; above 1 means Ingot is faster).
//
//	go test -run '^$' -bench TFTPvsTFTPDHPA -benchtime 5x ./conductor/tftpd
func BenchmarkTFTPvsTFTPDHPA(b *testing.B) {
	const size = 32 << 20
	root := b.TempDir()
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(os.Chmod(root, 0o755)) // tftpd-hpa drops to user tftp
	for d := filepath.Dir(root); d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	must(os.WriteFile(filepath.Join(root, "big.bin"), data, 0o644))

	d, err := OpenDir(root)
	must(err)
	defer d.Close()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	must(err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(slog.New(slog.DiscardHandler), Options{}, d).Serve(ctx, conn) }()
	defer func() { cancel(); <-done }()
	ingot := conn.LocalAddr().String()
	hpa := startTFTPDHPA(b, root)

	for _, blksize := range []int{1468, 8192} {
		b.Run(fmt.Sprintf("blksize=%d", blksize), func(b *testing.B) {
			var tIngot, tHPA time.Duration
			for b.Loop() {
				for _, s := range []struct {
					addr string
					sum  *time.Duration
				}{{ingot, &tIngot}, {hpa, &tHPA}} {
					start := time.Now()
					n, err := fetchCount(s.addr, "big.bin", blksize)
					if err != nil || n != size {
						b.Fatalf("fetch from %s: %d bytes, %v", s.addr, n, err)
					}
					*s.sum += time.Since(start)
				}
			}
			mb := float64(size) / (1 << 20) * float64(b.N)
			b.ReportMetric(mb/tIngot.Seconds(), "ingot-MiB/s")
			b.ReportMetric(mb/tHPA.Seconds(), "tftpd-hpa-MiB/s")
			b.ReportMetric(tHPA.Seconds()/tIngot.Seconds(), "ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func fetchCount(addr, name string, blksize int) (int64, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return 0, err
	}
	c.SetTimeout(2 * time.Second)
	c.SetBlockSize(blksize)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return 0, err
	}
	return wt.WriteTo(io.Discard)
}

// startTFTPDHPA runs in.tftpd in the foreground on a free loopback port.
func startTFTPDHPA(b *testing.B, root string) string {
	bin := peertest.Binary(b, "in.tftpd", "tftpd-hpa")
	l, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	args := []string{"--foreground", "--secure", "--address", addr, root}
	if os.Geteuid() == 0 {
		args = append([]string{"--user", "root"}, args...)
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for range 50 {
		if _, err := fetchCount(addr, "big.bin", 65464); err == nil {
			return addr
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("tftpd-hpa did not answer on %s: %s", addr, strings.TrimSpace(stderr.String()))
	return ""
}
