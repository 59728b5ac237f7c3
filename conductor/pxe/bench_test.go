package pxe

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
)

// BenchmarkHTTPBoot fetches a 32 MiB agent ramdisk from the boot HTTP
// handler (per-node lookup, logging, http.ServeContent) and the same file
// from a plain http.FileServer, alternately, over loopback with the same
// client, and reports both throughputs and their ratio (boot/fileserver;
// 1 means the boot handler costs nothing extra).
//
//	go test -run '^$' -bench HTTPBoot -benchtime 10x ./conductor/pxe
func BenchmarkHTTPBoot(b *testing.B) {
	const size = 32 << 20
	dir := b.TempDir()
	img := filepath.Join(dir, "initrd.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("0123456789abcdef"), size/16), 0o644); err != nil {
		b.Fatal(err)
	}
	bt, err := New(slog.New(slog.DiscardHandler), nil, Options{Root: filepath.Join(dir, "boot"),
		HTTPURL: "http://127.0.0.1", APIURL: "http://127.0.0.1:6385", DeployKernel: img, DeployRamdisk: img})
	if err != nil {
		b.Fatal(err)
	}
	const uuid = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
	if err := bt.PrepareRamdisk(b.Context(), &node.Node{UUID: uuid}, nil); err != nil {
		b.Fatal(err)
	}
	boot := httptest.NewServer(bt.Handler())
	defer boot.Close()
	files := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer files.Close()
	client := &http.Client{Transport: &http.Transport{}}
	get := func(url string) {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || resp.StatusCode != 200 {
			b.Fatalf("GET %s: %d, %d bytes, %v", url, resp.StatusCode, n, err)
		}
	}
	var tBoot, tFiles time.Duration
	for b.Loop() {
		start := time.Now()
		get(boot.URL + "/nodes/" + uuid + "/deploy_ramdisk")
		tBoot += time.Since(start)
		start = time.Now()
		get(files.URL + "/initrd.img")
		tFiles += time.Since(start)
	}
	mb := float64(size) / (1 << 20) * float64(b.N)
	b.ReportMetric(mb/tBoot.Seconds(), "boot-MiB/s")
	b.ReportMetric(mb/tFiles.Seconds(), "fileserver-MiB/s")
	b.ReportMetric(tFiles.Seconds()/tBoot.Seconds(), "ratio")
	b.ReportMetric(0, "ns/op")
}
