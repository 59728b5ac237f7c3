package imagestream

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"

	"github.com/ingot-dev/ingot/shared/api"
)

const testImageSize = 2<<20 + 12345 // not a multiple of the buffer size

func TestStreamFormats(t *testing.T) {
	img := makeImage(1, testImageSize)
	bz2, err := os.ReadFile("testdata/image.bz2")
	if err != nil {
		t.Fatal(err)
	}
	bzImg := makeImage(bzip2Seed, bzip2Size)
	multiZstd := append(zstdBytes(t, img[:1<<20], true), zstdBytes(t, img[1<<20:], false)...)
	multiGzip := append(gzipBytes(t, img[:5000]), gzipBytes(t, img[5000:])...)
	for _, tc := range []struct {
		name       string
		served     []byte
		want       []byte
		wantFormat string
	}{
		{"raw", img, img, FormatRaw},
		{"gzip", gzipBytes(t, img), img, FormatGzip},
		{"gzip of several members", multiGzip, img, FormatGzip},
		{"zstd without content size", zstdBytes(t, img, false), img, FormatZstd},
		{"zstd with content size", zstdBytes(t, img, true), img, FormatZstd},
		{"zstd of several frames", multiZstd, img, FormatZstd},
		{"xz", xzBytes(t, img[:1<<20+5]), img[:1<<20+5], FormatXZ},
		{"bzip2", bz2, bzImg, FormatBzip2},
		{"tiny raw image", img[:700], img[:700], FormatRaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.img", tc.served)
			srv := startServer(t, s)
			dst := newFileTarget(t)
			res, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", tc.served), dst, testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			if got := dst.content(t); !bytes.Equal(got, tc.want) {
				t.Fatalf("written %d bytes (sha256 %s), want %d (sha256 %s)", len(got), sha256Hex(got), len(tc.want), sha256Hex(tc.want))
			}
			want := Result{Written: int64(len(tc.want)), Format: tc.wantFormat, DiskFormat: FormatRaw, Algo: "sha256",
				Digest: sha256Hex(tc.served), URL: srv.URL + "/disk.img", Served: int64(len(tc.served))}
			if diff := cmp.Diff(want, res, cmpResult); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			if n := dst.syncs.Load(); n != 1 {
				t.Errorf("%d Syncs, want 1", n)
			}
			checkNoLeak(t)
		})
	}
}

var cmpResult = cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Duration" }, cmp.Ignore())

func TestStreamResumesWhereTheConnectionDropped(t *testing.T) {
	img := makeImage(2, testImageSize)
	for _, tc := range []struct {
		name   string
		served []byte
		script []fault
		noVal  bool
		want   []byte // what must land on disk; img when nil
		stall  time.Duration
		// wantRanges are the Range headers of the requests.
		wantRanges  []string
		wantResumes int
	}{
		{name: "raw cut twice", served: img,
			script:     []fault{{cutAfter: 1<<20 + 17}, {cutAfter: 777}},
			wantRanges: []string{"", fmt.Sprintf("bytes=%d-", 1<<20+17), fmt.Sprintf("bytes=%d-", 1<<20+17+777)}, wantResumes: 2},
		{name: "zstd keeps its decoder across the cut", served: zstdBytes(t, img, false),
			script:     []fault{{cutAfter: 100_001}},
			wantRanges: []string{"", "bytes=100001-"}, wantResumes: 1},
		{name: "xz keeps its decoder across the cut", served: xzBytes(t, img[:600_000]), want: img[:600_000],
			script:     []fault{{cutAfter: 54_321}},
			wantRanges: []string{"", "bytes=54321-"}, wantResumes: 1},
		{name: "without ETag or Last-Modified", served: img, noVal: true,
			script:     []fault{{cutAfter: 4096}},
			wantRanges: []string{"", "bytes=4096-"}, wantResumes: 1},
		{name: "server ignores Range: skip what was read", served: gzipBytes(t, img),
			script:     []fault{{cutAfter: 300_000}, {ignoreRange: true}},
			wantRanges: []string{"", "bytes=300000-"}, wantResumes: 1},
		{name: "chunked body cut", served: img,
			script:     []fault{{chunked: true, cutAfter: 2 << 20}},
			wantRanges: []string{"", fmt.Sprintf("bytes=%d-", 2<<20)}, wantResumes: 1},
		{name: "a server dripping one byte per packet, then cut", served: img[:30_000], want: img[:30_000],
			script:     []fault{{drip: true, cutAfter: 20_000}, {drip: true}},
			wantRanges: []string{"", "bytes=20000-"}, wantResumes: 1},
		{name: "stalled server", served: img, stall: 300 * time.Millisecond,
			script:     []fault{{stallAfter: 123_456}},
			wantRanges: []string{"", "bytes=123456-"}, wantResumes: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.img", tc.served)
			s.script, s.noValid = tc.script, tc.noVal
			srv := startServer(t, s)
			dst := newMemTarget()
			opts := testOptions(t)
			if tc.stall > 0 {
				opts.StallTimeout = tc.stall
			}
			res, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", tc.served), dst, opts)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == nil {
				want = img
			}
			if !bytes.Equal(dst.bytes(), want) {
				t.Fatalf("written sha256 %s, want %s", sha256Hex(dst.bytes()), sha256Hex(want))
			}
			reqs := s.reqs()
			var ranges []string
			for _, r := range reqs {
				ranges = append(ranges, r.Range)
			}
			if diff := cmp.Diff(tc.wantRanges, ranges); diff != "" {
				t.Errorf("Range headers (-want +got):\n%s", diff)
			}
			for _, r := range reqs[1:] {
				wantIfRange := `"` + sha256Hex(tc.served)[:16] + `"`
				if tc.noVal {
					wantIfRange = ""
				}
				if r.IfRange != wantIfRange {
					t.Errorf("If-Range %q, want %q", r.IfRange, wantIfRange)
				}
			}
			if res.Resumes != tc.wantResumes || res.Served != int64(len(tc.served)) {
				t.Errorf("resumes %d served %d, want %d and %d", res.Resumes, res.Served, tc.wantResumes, len(tc.served))
			}
			checkNoLeak(t)
		})
	}
}

func TestStreamRetries(t *testing.T) {
	img := makeImage(3, 200_000)
	t.Run("503 once then the image", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		s.script = []fault{{status: 503}}
		srv := startServer(t, s)
		dst := newMemTarget()
		res, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", img), dst, testOptions(t))
		if err != nil {
			t.Fatal(err)
		}
		if res.Retries != 1 || res.Resumes != 0 || len(s.reqs()) != 2 || !bytes.Equal(dst.bytes(), img) {
			t.Errorf("retries %d resumes %d requests %d", res.Retries, res.Resumes, len(s.reqs()))
		}
	})
	t.Run("5xx every time gives up after the retries, retryable", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		s.always = &fault{status: 502}
		srv := startServer(t, s)
		dst := newMemTarget()
		opts := testOptions(t)
		_, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", img), dst, opts)
		msg := mustErr(t, err, nil)
		if IsPermanent(err) || !strings.Contains(msg, "502") || !strings.Contains(msg, "giving up after 4 attempts") {
			t.Errorf("error %q (permanent %v), want a retryable 502 after 4 attempts", msg, IsPermanent(err))
		}
		if n := len(s.reqs()); n != opts.Retries+1 {
			t.Errorf("%d requests, want %d", n, opts.Retries+1)
		}
		if dst.writes != 0 || dst.syncs != 0 {
			t.Errorf("%d writes, %d syncs", dst.writes, dst.syncs)
		}
	})
	t.Run("connections cut every time without progress give up", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		// After the first MiB the server always dies before sending a
		// new byte: Range requests make no progress.
		s.script = []fault{{cutAfter: 100_000}}
		s.always = &fault{status: 500}
		srv := startServer(t, s)
		_, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", img), newMemTarget(), testOptions(t))
		if err == nil || IsPermanent(err) {
			t.Fatalf("err %v, want a retryable failure", err)
		}
	})
	t.Run("progress resets the retry budget", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		// Ten cuts, each after some progress: more than Retries (3), but
		// every attempt moves forward.
		for range 10 {
			s.script = append(s.script, fault{cutAfter: 10_000})
		}
		srv := startServer(t, s)
		dst := newMemTarget()
		res, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", img), dst, testOptions(t))
		if err != nil {
			t.Fatal(err)
		}
		if res.Resumes != 10 || !bytes.Equal(dst.bytes(), img) {
			t.Errorf("resumes %d", res.Resumes)
		}
	})
	t.Run("Retry-After is honoured up to the backoff cap", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		s.script = []fault{{status: 503, retryAfter: 3600}}
		srv := startServer(t, s)
		opts := testOptions(t)
		opts.RetryInterval = 20 * time.Millisecond // cap 120 ms
		start := time.Now()
		if _, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", img), newMemTarget(), opts); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 100*time.Millisecond || d > 10*time.Second {
			t.Errorf("took %v, want the 120 ms cap", d)
		}
	})
}

func TestStreamPermanentFailures(t *testing.T) {
	img := makeImage(4, 300_000)
	flipped := bytes.Clone(img)
	flipped[200_000] ^= 0x01
	for _, tc := range []struct {
		name      string
		served    []byte // what the server has
		info      func(url string) api.ImageInfo
		script    []fault
		target    error
		wantInMsg []string
		wantReqs  int
	}{
		{name: "404 names the URL", served: img,
			info:      func(u string) api.ImageInfo { i := imageInfo(u, img); i.URLs[0] = u + ".missing"; return i },
			wantInMsg: []string{"404", "/disk.img.missing"}, wantReqs: 1},
		{name: "403 is not retried", served: img, script: []fault{{status: 403}},
			info:      func(u string) api.ImageInfo { return imageInfo(u, img) },
			wantInMsg: []string{"403 Forbidden", "/disk.img"}, wantReqs: 1},
		{name: "one flipped byte is a checksum mismatch with both digests", served: flipped,
			info:   func(u string) api.ImageInfo { return imageInfo(u, img) },
			target: ErrChecksum, wantInMsg: []string{sha256Hex(img), sha256Hex(flipped)}, wantReqs: 1},
		{name: "Content-Length shorter than the file: checksum mismatch", served: img, script: []fault{{lieLength: -1000}},
			info:   func(u string) api.ImageInfo { return imageInfo(u, img) },
			target: ErrChecksum, wantReqs: 1},
		{name: "Content-Length longer than the file: the resume is refused", served: img, script: []fault{{lieLength: 5000}},
			info:      func(u string) api.ImageInfo { return imageInfo(u, img) },
			wantInMsg: []string{"416"}, wantReqs: 2},
		{name: "close-delimited raw image cut short: checksum mismatch", served: img, script: []fault{{closeDelim: true, cutAfter: 100_000}},
			info:   func(u string) api.ImageInfo { return imageInfo(u, img) },
			target: ErrChecksum, wantReqs: 1},
		{name: "md5 not allowed: nothing downloaded", served: img,
			info: func(u string) api.ImageInfo {
				return api.ImageInfo{ID: "x", URLs: []string{u}, Checksum: "0123456789abcdef0123456789abcdef"}
			},
			target: ErrNoChecksum, wantInMsg: []string{"MD5"}, wantReqs: 0},
		{name: "no checksum at all: nothing downloaded", served: img,
			info:   func(u string) api.ImageInfo { return api.ImageInfo{ID: "x", URLs: []string{u}} },
			target: ErrNoChecksum, wantReqs: 0},
		{name: "not an http url", served: img,
			info:      func(u string) api.ImageInfo { i := imageInfo(u, img); i.URLs[0] = "ftp://x/disk.img"; return i },
			wantInMsg: []string{"not an http(s) URL"}, wantReqs: 0},
		{name: "bad image_request_authorization", served: img,
			info: func(u string) api.ImageInfo {
				i := imageInfo(u, img)
				i.ImageRequestAuthorization = "%%%"
				return i
			},
			wantInMsg: []string{"not base64"}, wantReqs: 0},
		{name: "empty image", served: []byte{},
			info:      func(u string) api.ImageInfo { return imageInfo(u, nil) },
			wantInMsg: []string{"empty"}, wantReqs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.img", tc.served)
			s.script = tc.script
			srv := startServer(t, s)
			dst := newMemTarget()
			_, err := Stream(t.Context(), tc.info(srv.URL+"/disk.img"), dst, testOptions(t))
			msg := mustErr(t, err, tc.target)
			if !IsPermanent(err) {
				t.Errorf("error %q is not permanent", msg)
			}
			for _, w := range tc.wantInMsg {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if n := len(s.reqs()); n != tc.wantReqs {
				t.Errorf("%d requests, want %d", n, tc.wantReqs)
			}
			if dst.syncs != 0 {
				t.Errorf("target synced after a failure")
			}
			checkNoLeak(t)
		})
	}
}

func TestStreamTruncatedCompressedImageFails(t *testing.T) {
	img := makeImage(5, testImageSize)
	for _, tc := range []struct {
		name   string
		served []byte
	}{
		{"zstd", zstdBytes(t, img, false)},
		{"gzip", gzipBytes(t, img)},
		{"xz", xzBytes(t, img[:600_000])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.img", tc.served)
			// The connection closes early and nothing says how long the
			// file was: only the decoder can tell.
			s.script = []fault{{closeDelim: true, cutAfter: int64(len(tc.served) / 2)}}
			srv := startServer(t, s)
			// The checksum matches the truncated bytes, so only the
			// decoder stands between this and a corrupt disk.
			info := imageInfo(srv.URL+"/disk.img", tc.served[:len(tc.served)/2])
			_, err := Stream(t.Context(), info, newMemTarget(), testOptions(t))
			msg := mustErr(t, err, io.ErrUnexpectedEOF)
			if !strings.Contains(msg, "truncated") {
				t.Errorf("error %q does not say truncated", msg)
			}
		})
	}
}

func TestStreamChangedFileIsNotSpliced(t *testing.T) {
	img := makeImage(6, 500_000)
	other := makeImage(7, 500_000)
	s := newImageServer()
	s.add("disk.img", img)
	s.script = []fault{{cutAfter: 100_000}, {swap: other}}
	srv := startServer(t, s)
	dst := newMemTarget()
	_, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", img), dst, testOptions(t))
	mustErr(t, err, ErrChanged)
	if IsPermanent(err) {
		t.Error("ErrChanged is permanent; a new attempt can succeed")
	}
	if got := dst.bytes(); len(got) > 100_000 {
		t.Errorf("%d bytes written; the new file was spliced onto the old", len(got))
	}
}

func TestStreamCorruptCompressedImageIsPermanent(t *testing.T) {
	img := makeImage(8, 1<<20)
	z := zstdBytes(t, img, false)
	z[len(z)/2] ^= 0xff
	s := newImageServer()
	s.add("disk.img", z)
	srv := startServer(t, s)
	_, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", z), newMemTarget(), testOptions(t))
	msg := mustErr(t, err, nil)
	if !IsPermanent(err) || !strings.Contains(msg, "corrupt") {
		t.Errorf("error %q (permanent %v), want a permanent corrupt-image error", msg, IsPermanent(err))
	}
}

func TestStreamCapacity(t *testing.T) {
	img := makeImage(9, testImageSize)
	capacity := int64(2 << 20)
	for _, tc := range []struct {
		name          string
		served        []byte
		wantNoWrites  bool
		noDecompress  bool
		wantBeforeAll bool
	}{
		{name: "raw image known too large by Content-Length", served: img, wantNoWrites: true},
		{name: "zstd image known too large by its frame content size", served: zstdBytes(t, img, true), wantNoWrites: true},
		{name: "zstd image without size fails when it crosses the capacity", served: zstdBytes(t, img, false)},
		{name: "gzip image fails when it crosses the capacity", served: gzipBytes(t, img)},
		{name: "NoDecompress compares the served size", served: append(bytes.Clone(img), 0), noDecompress: true, wantNoWrites: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.img", tc.served)
			srv := startServer(t, s)
			dst := newMemTarget()
			opts := testOptions(t)
			opts.Capacity, opts.NoDecompress = capacity, tc.noDecompress
			_, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", tc.served), dst, opts)
			msg := mustErr(t, err, ErrTooLarge)
			if !IsPermanent(err) || !strings.Contains(msg, fmt.Sprint(capacity)) {
				t.Errorf("error %q (permanent %v)", msg, IsPermanent(err))
			}
			if tc.wantNoWrites && dst.writes != 0 {
				t.Errorf("%d writes before failing", dst.writes)
			}
			if n := int64(len(dst.bytes())); n > capacity {
				t.Errorf("%d bytes written past the %d capacity", n, capacity)
			}
		})
	}
	t.Run("an image exactly the capacity fits", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img[:capacity])
		srv := startServer(t, s)
		opts := testOptions(t)
		opts.Capacity = capacity
		if _, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", img[:capacity]), newMemTarget(), opts); err != nil {
			t.Fatal(err)
		}
	})
}

func TestStreamRefusesContainersAndMismatches(t *testing.T) {
	qcow2 := append([]byte("QFI\xfb\x00\x00\x00\x03"), makeImage(10, 100_000)...)
	vmdk := append([]byte("KDMV\x01\x00\x00\x00"), makeImage(10, 100_000)...)
	raw := makeImage(10, 100_000)
	for _, tc := range []struct {
		name       string
		served     []byte
		diskFormat string
		wantInMsg  string
	}{
		{"qcow2 bytes said to be raw", qcow2, "raw", "qcow2"},
		{"gzip-compressed qcow2", gzipBytes(t, qcow2), "", "qcow2"},
		{"zstd-compressed vmdk", zstdBytes(t, vmdk, false), "vmdk", "vmdk"},
		{"raw bytes said to be qcow2", raw, "qcow2", "disk_format is qcow2"},
		{"lz4-compressed image", append([]byte{0x04, 0x22, 0x4d, 0x18}, raw...), "raw", "lz4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.img", tc.served)
			srv := startServer(t, s)
			dst := newMemTarget()
			info := imageInfo(srv.URL+"/disk.img", tc.served)
			info.DiskFormat = tc.diskFormat
			_, err := Stream(t.Context(), info, dst, testOptions(t))
			msg := mustErr(t, err, ErrUnsupportedFormat)
			if !strings.Contains(msg, tc.wantInMsg) || !IsPermanent(err) {
				t.Errorf("error %q, want a permanent error about %s", msg, tc.wantInMsg)
			}
			if dst.writes != 0 {
				t.Errorf("%d writes of a refused image", dst.writes)
			}
			checkNoLeak(t)
		})
	}
	t.Run("NoDecompress keeps a qcow2 image as served (a cache, not a disk)", func(t *testing.T) {
		s := newImageServer()
		gz := gzipBytes(t, qcow2)
		s.add("disk.img", gz)
		srv := startServer(t, s)
		dst := newMemTarget()
		opts := testOptions(t)
		opts.NoDecompress = true
		res, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", gz), dst, opts)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dst.bytes(), gz) || res.Format != FormatGzip || res.DiskFormat != FormatGzip {
			t.Errorf("result %+v", res)
		}
	})
	t.Run("a zstd window beyond MaxWindow is refused before decoding", func(t *testing.T) {
		z := zstdBytes(t, makeImage(10, 1<<20), false, zstd.WithWindowSize(8<<20))
		s := newImageServer()
		s.add("disk.img", z)
		srv := startServer(t, s)
		opts := testOptions(t)
		opts.MaxWindow = 1 << 20
		dst := newMemTarget()
		_, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", z), dst, opts)
		msg := mustErr(t, err, ErrUnsupportedFormat)
		if !strings.Contains(msg, "window is 8 MiB") || dst.writes != 0 {
			t.Errorf("error %q, %d writes", msg, dst.writes)
		}
	})
}

func TestStreamTargetFaults(t *testing.T) {
	img := makeImage(11, testImageSize)
	for _, tc := range []struct {
		name    string
		target  func() *memTarget
		wantErr error
	}{
		{"EIO at an offset fails, permanent", func() *memTarget { m := newMemTarget(); m.eioAt = 2<<20 + 5; return m }, syscall.EIO},
		{"short writes with an error fail", func() *memTarget { m := newMemTarget(); m.shortErr = true; return m }, io.ErrShortWrite},
		{"a failing Sync fails", func() *memTarget { m := newMemTarget(); m.syncErr = syscall.EIO; return m }, syscall.EIO},
		{"short writes without an error are completed", func() *memTarget { m := newMemTarget(); m.short = true; return m }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.img", img)
			srv := startServer(t, s)
			dst := tc.target()
			_, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", img), dst, testOptions(t))
			if tc.wantErr == nil {
				if err != nil || !bytes.Equal(dst.bytes(), img) {
					t.Fatalf("err %v; written sha256 %s", err, sha256Hex(dst.bytes()))
				}
				return
			}
			mustErr(t, err, tc.wantErr)
			if !IsPermanent(err) {
				t.Errorf("target failure %v is not permanent", err)
			}
			if tc.wantErr == syscall.EIO && dst.syncErr == nil && dst.syncs != 0 {
				t.Errorf("synced after a write error")
			}
			checkNoLeak(t)
		})
	}
}

func TestStreamCancel(t *testing.T) {
	img := makeImage(12, testImageSize)
	t.Run("while the server stalls", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		s.script = []fault{{stallAfter: 1 << 20}}
		s.wrote = make(chan struct{})
		srv := startServer(t, s)
		ctx, cancel := context.WithCancel(t.Context())
		opts := testOptions(t)
		opts.StallTimeout = time.Hour
		done := make(chan error, 1)
		go func() {
			_, err := Stream(ctx, imageInfo(srv.URL+"/disk.img", img), newMemTarget(), opts)
			done <- err
		}()
		<-s.wrote
		start := time.Now()
		cancel()
		err := <-done
		if d := time.Since(start); d > time.Second {
			t.Errorf("Stream returned %v after the cancel", d)
		}
		if !errors.Is(err, context.Canceled) || !IsPermanent(err) {
			t.Errorf("err %v, want a permanent context.Canceled", err)
		}
		checkNoLeak(t)
	})
	t.Run("while waiting to retry", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		s.always = &fault{status: 503}
		srv := startServer(t, s)
		ctx, cancel := context.WithCancel(t.Context())
		opts := testOptions(t)
		opts.RetryInterval = time.Hour
		var once sync.Once
		opts.Log = slog.New(hookHandler{fn: func(r slog.Record) {
			if strings.Contains(r.Message, "retrying") {
				once.Do(cancel)
			}
		}})
		start := time.Now()
		_, err := Stream(ctx, imageInfo(srv.URL+"/disk.img", img), newMemTarget(), opts)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Stream took %v", d)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err %v, want context.Canceled", err)
		}
		checkNoLeak(t)
	})
}

// hookHandler calls fn for every record.
type hookHandler struct{ fn func(slog.Record) }

func (h hookHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h hookHandler) Handle(_ context.Context, r slog.Record) error { h.fn(r); return nil }
func (h hookHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h hookHandler) WithGroup(string) slog.Handler                 { return h }

func TestStreamProgress(t *testing.T) {
	img := makeImage(13, 6<<20)
	for _, tc := range []struct {
		name      string
		served    []byte
		script    []fault
		wantTotal int64
	}{
		{"raw with a resume", img, []fault{{cutAfter: 3 << 20}}, int64(len(img))},
		{"zstd with content size", zstdBytes(t, img, true), nil, int64(len(img))},
		{"gzip (total unknown)", gzipBytes(t, img), nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.img", tc.served)
			s.script = tc.script
			srv := startServer(t, s)
			opts := testOptions(t)
			opts.ProgressInterval = time.Nanosecond
			var got []api.Progress
			opts.Progress = func(p api.Progress) { got = append(got, p) }
			res, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", tc.served), newMemTarget(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) < 3 {
				t.Fatalf("%d progress calls", len(got))
			}
			for i := 1; i < len(got); i++ {
				if got[i].Bytes < got[i-1].Bytes || got[i].Percent < got[i-1].Percent || got[i].Resumes < got[i-1].Resumes {
					t.Fatalf("progress went backwards: %+v then %+v", got[i-1], got[i])
				}
			}
			for _, p := range got {
				if p.Total != tc.wantTotal && p.Phase == PhaseStreaming {
					t.Fatalf("total %d, want %d", p.Total, tc.wantTotal)
				}
				if p.Percent < 0 || p.Percent > 100 {
					t.Fatalf("percent %v", p.Percent)
				}
			}
			last := got[len(got)-1]
			if last.Phase != PhaseDone || last.Bytes != res.Written || last.Percent != 100 || last.BytesPerSecond <= 0 ||
				last.Resumes != res.Resumes || got[len(got)-2].Phase != PhaseSyncing {
				t.Errorf("last progress %+v (before it %+v), result %+v", last, got[len(got)-2], res)
			}
			if tc.wantTotal == 0 && got[len(got)/2].Percent == 0 {
				t.Errorf("no percent from the served bytes: %+v", got[len(got)/2])
			}
		})
	}
	t.Run("rate limited", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		srv := startServer(t, s)
		opts := testOptions(t)
		opts.ProgressInterval = time.Hour
		n := 0
		opts.Progress = func(api.Progress) { n++ }
		if _, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", img), newMemTarget(), opts); err != nil {
			t.Fatal(err)
		}
		if n != 2 { // syncing and done
			t.Errorf("%d progress calls with an hour's interval, want 2", n)
		}
	})
}

func TestStreamTriesURLsInOrder(t *testing.T) {
	img := makeImage(14, 100_000)
	s := newImageServer()
	s.add("disk.img", img)
	srv := startServer(t, s)
	info := imageInfo(srv.URL+"/gone.img", img)
	info.URLs = append(info.URLs, srv.URL+"/disk.img")
	dst := newMemTarget()
	res, err := Stream(t.Context(), info, dst, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.URL != srv.URL+"/disk.img" || !bytes.Equal(dst.bytes(), img) {
		t.Errorf("result %+v", res)
	}
	t.Run("one failing for good and one for now is retryable", func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		s.always = &fault{status: 503}
		srv2 := startServer(t, s)
		info := imageInfo(srv.URL+"/a.img", img)
		info.URLs = append(info.URLs, srv2.URL+"/disk.img")
		_, err := Stream(t.Context(), info, newMemTarget(), testOptions(t))
		msg := mustErr(t, err, nil)
		if IsPermanent(err) || !strings.Contains(msg, "404") || !strings.Contains(msg, "503") {
			t.Errorf("error %q (permanent %v), want a retryable error naming both failures", msg, IsPermanent(err))
		}
	})
	t.Run("all failing permanently is permanent", func(t *testing.T) {
		info := imageInfo(srv.URL+"/a.img", img)
		info.URLs = append(info.URLs, srv.URL+"/b.img")
		_, err := Stream(t.Context(), info, newMemTarget(), testOptions(t))
		msg := mustErr(t, err, nil)
		if !IsPermanent(err) || !strings.Contains(msg, "/a.img") || !strings.Contains(msg, "/b.img") {
			t.Errorf("error %q (permanent %v)", msg, IsPermanent(err))
		}
	})
}

func TestStreamSecretsStayOut(t *testing.T) {
	img := makeImage(15, 100_000)
	s := newImageServer()
	s.add("disk.img", img)
	s.script = []fault{{cutAfter: 1000}, {status: 503}}
	srv := startServer(t, s)
	var logs bytes.Buffer
	opts := testOptions(t)
	opts.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	info := imageInfo(srv.URL+"/disk.img?temp_url_sig=s3cr3tsig&temp_url_expires=1", img)
	info.URLs[0] = strings.Replace(info.URLs[0], "http://", "http://user:hunter2@", 1)
	info.ImageRequestAuthorization = base64.StdEncoding.EncodeToString([]byte("Bearer t0k3n"))
	res, err := Stream(t.Context(), info, newMemTarget(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range s.reqs() {
		if r.Auth != "Bearer t0k3n" {
			t.Errorf("request without the image's Authorization: %+v", r)
		}
	}
	// A failure's message too.
	info.URLs[0] = strings.Replace(info.URLs[0], "/disk.img", "/nope.img", 1)
	_, ferr := Stream(t.Context(), info, newMemTarget(), opts)
	out := logs.String() + fmt.Sprint(res) + ferr.Error()
	for _, secret := range []string{"s3cr3tsig", "hunter2", "t0k3n"} {
		if strings.Contains(out, secret) {
			t.Errorf("%q leaked into logs, result or error:\n%s", secret, out)
		}
	}
	if !strings.Contains(ferr.Error(), "/nope.img") {
		t.Errorf("error %q does not name the URL", ferr)
	}
}

func TestStreamThroughProxy(t *testing.T) {
	img := makeImage(16, 100_000)
	s := newImageServer()
	s.add("disk.img", img)
	var proxied []string
	var mu sync.Mutex
	proxy := startServer(t, newImageServer())
	proxy.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		proxied = append(proxied, r.URL.String())
		mu.Unlock()
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/")
		r.URL.Path = "/" + r.URL.Path
		s.ServeHTTP(w, r)
	})
	info := imageInfo("http://images.example.invalid/disk.img", img)
	info.Proxies = map[string]string{"http": proxy.URL}
	dst := newMemTarget()
	if _, err := Stream(t.Context(), info, dst, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	if len(proxied) != 1 || proxied[0] != "http://images.example.invalid/disk.img" || !bytes.Equal(dst.bytes(), img) {
		t.Errorf("proxied %v", proxied)
	}
}

func TestBypassProxy(t *testing.T) {
	for _, tc := range []struct {
		name, url, noProxy string
		want               bool
	}{
		{"empty list", "http://a.example.com/x", "", false},
		{"exact host", "http://a.example.com/x", "b.example.com, a.example.com", true},
		{"domain suffix", "http://a.example.com/x", ".example.com", true},
		{"bare domain matches subdomains", "http://a.example.com/x", "example.com", true},
		{"no partial label match", "http://aexample.com/x", "example.com", false},
		{"host and port", "http://a.example.com:8080/x", "a.example.com:8080", true},
		{"other port", "http://a.example.com:8081/x", "a.example.com:8080", false},
		{"star", "http://10.0.0.1/x", "*", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := parseURL(tc.url)
			if got := bypassProxy(u, tc.noProxy); got != tc.want {
				t.Errorf("bypassProxy(%s, %q) = %v", tc.url, tc.noProxy, got)
			}
		})
	}
}

// TestStreamHostileReaders drives Stream through a transport whose bodies
// are testing/iotest's hostile readers.
func TestStreamHostileReaders(t *testing.T) {
	img := makeImage(17, 600_000)
	z := zstdBytes(t, img, false)
	for _, tc := range []struct {
		name    string
		wrap    func(io.Reader, int) io.Reader // n is the request's index
		wantErr bool
	}{
		{"one byte at a time", func(r io.Reader, _ int) io.Reader { return iotest.OneByteReader(r) }, false},
		{"half reads", func(r io.Reader, _ int) io.Reader { return iotest.HalfReader(r) }, false},
		{"data with EOF", func(r io.Reader, _ int) io.Reader { return iotest.DataErrReader(r) }, false},
		{"a timeout on the first connection", func(r io.Reader, n int) io.Reader {
			if n == 0 {
				return iotest.TimeoutReader(r)
			}
			return r
		}, false},
		{"a reset after 100 kB, every time", func(r io.Reader, _ int) io.Reader {
			return io.MultiReader(io.LimitReader(r, 100_000), iotest.ErrReader(syscall.ECONNRESET))
		}, false},
		{"an error before any byte, every time", func(io.Reader, int) io.Reader { return iotest.ErrReader(syscall.ECONNRESET) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, served := range [][]byte{img, z} {
				tr := &readerTransport{content: served, wrap: tc.wrap}
				opts := testOptions(t)
				opts.Client = &http.Client{Transport: tr}
				opts.Retries = 5
				dst := newMemTarget()
				_, err := Stream(t.Context(), imageInfo("http://images.invalid/disk.img", served), dst, opts)
				if tc.wantErr {
					if err == nil || IsPermanent(err) || !errors.Is(err, syscall.ECONNRESET) {
						t.Fatalf("err %v, want a retryable ECONNRESET", err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(dst.bytes(), img) {
					t.Fatalf("written sha256 %s, want %s", sha256Hex(dst.bytes()), sha256Hex(img))
				}
			}
		})
	}
}

// readerTransport answers GETs (with Range) from content, bodies wrapped
// by wrap.
type readerTransport struct {
	mu      sync.Mutex
	n       int
	content []byte
	wrap    func(io.Reader, int) io.Reader
}

func (rt *readerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	n := rt.n
	rt.n++
	rt.mu.Unlock()
	start := int64(0)
	status := http.StatusOK
	h := http.Header{"Etag": {`"v1"`}}
	if r := req.Header.Get("Range"); r != "" {
		fmt.Sscanf(r, "bytes=%d-", &start)
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(rt.content)-1, len(rt.content)))
	}
	body := rt.content[start:]
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: h,
		ContentLength: int64(len(body)), Body: io.NopCloser(rt.wrap(bytes.NewReader(body), n)), Request: req}, nil
}
