package imagecache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
)

func blob(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLocalImageServedWithRange(t *testing.T) {
	dir := t.TempDir()
	c, err := New(Options{Dir: dir, MaxBytes: 1 << 30, BaseURL: "http://conductor:6385/"})
	if err != nil {
		t.Fatal(err)
	}
	img := blob(300_000, 1)
	src := "file://" + writeFile(t, img)
	info, err := c.Prepare(t.Context(), src, api.ImageInfo{ID: "disk.raw"})
	if err != nil {
		t.Fatal(err)
	}
	want := sum(img)
	if info.OSHashAlgo != "sha256" || info.OSHashValue != want || info.URLs[0] != "http://conductor:6385/images/"+want+"/disk.raw" {
		t.Errorf("info %+v", info)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	path := strings.TrimPrefix(info.URLs[0], "http://conductor:6385")
	req, _ := http.NewRequest("GET", srv.URL+path, nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, img[1000:2000]) {
		t.Errorf("range: %d, %d bytes", resp.StatusCode, len(got))
	}
	for _, p := range []string{"/images/" + strings.Repeat("0", 64) + "/x", "/images/../../etc/passwd", "/images/abc/x", "/other"} {
		if r, _ := http.Get(srv.URL + p); r.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", p, r.StatusCode)
		}
	}
	// Checked against a wrong digest: refused, nothing new cached.
	_, err = c.Prepare(t.Context(), "file://"+writeFile(t, blob(1000, 2)), api.ImageInfo{OSHashAlgo: "sha256", OSHashValue: strings.Repeat("a", 64)})
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), strings.Repeat("a", 64)) {
		t.Errorf("bad checksum: %v", err)
	}
	if _, n := c.Size(); n != 1 {
		t.Errorf("%d images cached after a refused one", n)
	}
	if _, err := c.Prepare(t.Context(), "file:///no/such/file", api.ImageInfo{}); err == nil {
		t.Error("missing file accepted")
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".partial-*"))
	if len(leftovers) != 0 {
		t.Errorf("partial files left behind: %v", leftovers)
	}
}

// fakeDownloads serves images by source URL and counts downloads.
type fakeDownloads struct {
	images map[string][]byte
	calls  atomic.Int32
	delay  time.Duration
}

func (f *fakeDownloads) download(ctx context.Context, info api.ImageInfo, dst *os.File) (string, string, error) {
	f.calls.Add(1)
	time.Sleep(f.delay)
	b, ok := f.images[info.URLs[0]]
	if !ok {
		return "", "", errors.New("HTTP 404")
	}
	dst.Write(b)
	d := sum(b)
	if info.OSHashValue != "" && info.OSHashValue != d {
		return "", "", fmt.Errorf("checksum mismatch: expected %s, got %s", info.OSHashValue, d)
	}
	return "sha256", d, nil
}

func TestConcurrentPreparesShareOneDownload(t *testing.T) {
	img := blob(50_000, 3)
	fd := &fakeDownloads{images: map[string][]byte{"http://img/a.raw": img}, delay: 50 * time.Millisecond}
	c, _ := New(Options{Dir: t.TempDir(), MaxBytes: 1 << 30, BaseURL: "http://c", Download: fd.download})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			info, err := c.Prepare(t.Context(), "http://img/a.raw", api.ImageInfo{OSHashAlgo: "sha512", OSHashValue: "x"})
			_ = info
			if err == nil {
				t.Error("a sha512 mismatch passed")
			}
		})
	}
	wg.Wait()
	fd.calls.Store(0)
	for range 8 {
		wg.Go(func() {
			if _, err := c.Prepare(t.Context(), "http://img/a.raw", api.ImageInfo{OSHashAlgo: "sha256", OSHashValue: sum(img)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if fd.calls.Load() != 1 {
		t.Errorf("%d downloads for 8 concurrent requests, want 1", fd.calls.Load())
	}
	if _, err := c.Prepare(t.Context(), "http://img/a.raw", api.ImageInfo{OSHashAlgo: "sha256", OSHashValue: sum(img)}); err != nil || fd.calls.Load() != 1 {
		t.Errorf("a cached image was downloaded again (%d) %v", fd.calls.Load(), err)
	}
}

func TestLRUEvictionAndSizeBound(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	imgs := map[string][]byte{"http://i/a": blob(400, 4), "http://i/b": blob(400, 5), "http://i/c": blob(400, 6), "http://i/big": blob(2000, 7)}
	fd := &fakeDownloads{images: imgs}
	dir := t.TempDir()
	c, _ := New(Options{Dir: dir, MaxBytes: 1000, BaseURL: "http://c", Download: fd.download, Now: clock})
	for _, s := range []string{"http://i/a", "http://i/b", "http://i/a", "http://i/c"} {
		if _, err := c.Prepare(t.Context(), s, api.ImageInfo{OSHashAlgo: "sha256", OSHashValue: sum(imgs[s])}); err != nil {
			t.Fatal(err)
		}
	}
	// a was used after b, so b (least recently used) made room for c.
	for s, want := range map[string]bool{"http://i/a": true, "http://i/b": false, "http://i/c": true} {
		_, err := os.Stat(filepath.Join(dir, sum(imgs[s])))
		if (err == nil) != want {
			t.Errorf("%s cached = %v, want %v", s, err == nil, want)
		}
	}
	if size, n := c.Size(); size != 800 || n != 2 {
		t.Errorf("size %d in %d images", size, n)
	}
	if _, err := c.Prepare(t.Context(), "http://i/big", api.ImageInfo{OSHashAlgo: "sha256", OSHashValue: sum(imgs["http://i/big"])}); err == nil || !strings.Contains(err.Error(), "exceed the cache size") {
		t.Errorf("oversized image: %v", err)
	}
	// A restarted conductor finds its images and drops partial downloads.
	os.WriteFile(filepath.Join(dir, ".partial-123"), []byte("x"), 0o600)
	c2, err := New(Options{Dir: dir, MaxBytes: 1000, BaseURL: "http://c", Download: fd.download})
	if err != nil {
		t.Fatal(err)
	}
	if _, n := c2.Size(); n != 2 {
		t.Errorf("after restart: %d images", n)
	}
	if _, err := os.Stat(filepath.Join(dir, ".partial-123")); !os.IsNotExist(err) {
		t.Error("partial download survived a restart")
	}
	fd.calls.Store(0)
	if _, err := c2.Prepare(t.Context(), "http://i/c", api.ImageInfo{OSHashAlgo: "sha256", OSHashValue: sum(imgs["http://i/c"])}); err != nil || fd.calls.Load() != 0 {
		t.Errorf("cached image downloaded again after restart: %d %v", fd.calls.Load(), err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{Dir: t.TempDir()}); err == nil {
		t.Error("missing MaxBytes and BaseURL accepted")
	}
}
