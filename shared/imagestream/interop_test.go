//go:build interop

package imagestream

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/ingot-dev/ingot/internal/peertest"
	"github.com/ingot-dev/ingot/shared/api"
)

// run runs a program and returns its standard output.
func run(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// TestInteropRealCompressors streams images compressed by the real
// programs (multi-block xz, long-window zstd, gzip, bzip2) and checks the
// bytes on the target.
func TestInteropRealCompressors(t *testing.T) {
	dir := t.TempDir()
	img := makeImage(50, 9<<20+4321)
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, prog, pkg string
		args            []string
		format          string
	}{
		{"zstd -3", "zstd", "zstd", []string{"-q", "-3", "-c", "disk.img"}, FormatZstd},
		{"zstd -19 --long=27 -T2", "zstd", "zstd", []string{"-q", "-19", "--long=27", "-T2", "-c", "disk.img"}, FormatZstd},
		{"zstd --ultra -22", "zstd", "zstd", []string{"-q", "--ultra", "-22", "-c", "disk.img"}, FormatZstd},
		{"xz -6", "xz", "xz-utils", []string{"-6", "-c", "disk.img"}, FormatXZ},
		{"xz -T2 --block-size=1MiB (blocks with sizes)", "xz", "xz-utils", []string{"-T2", "--block-size=1MiB", "-c", "disk.img"}, FormatXZ},
		{"xz -9e", "xz", "xz-utils", []string{"-9e", "-c", "disk.img"}, FormatXZ},
		{"gzip -6", "gzip", "gzip", []string{"-6", "-c", "disk.img"}, FormatGzip},
		{"bzip2 -9", "bzip2", "bzip2", []string{"-9", "-c", "disk.img"}, FormatBzip2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peertest.Binary(t, tc.prog, tc.pkg)
			served := run(t, dir, tc.prog, tc.args...)
			s := newImageServer()
			s.add("disk.img", served)
			s.script = []fault{{cutAfter: int64(len(served) / 3)}}
			srv := startServer(t, s)
			dst := newFileTarget(t)
			res, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", served), dst, testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst.content(t), img) || res.Format != tc.format || res.Resumes != 1 {
				t.Errorf("result %+v, written sha256 %s", res, sha256Hex(dst.content(t)))
			}
		})
	}
	t.Run("lz4 is refused", func(t *testing.T) {
		peertest.Binary(t, "lz4", "lz4")
		served := run(t, dir, "lz4", "-q", "-c", "disk.img")
		s := newImageServer()
		s.add("disk.img", served)
		srv := startServer(t, s)
		dst := newMemTarget()
		_, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", served), dst, testOptions(t))
		if msg := mustErr(t, err, ErrUnsupportedFormat); !strings.Contains(msg, "lz4") || dst.writes != 0 {
			t.Errorf("error %q, %d writes", msg, dst.writes)
		}
	})
}

// TestInteropQemuImgContainers checks every container qemu-img writes,
// qcow2 aside, is refused (also compressed), and that qemu-img's raw
// conversion of the same image streams.
func TestInteropQemuImgContainers(t *testing.T) {
	qemuImg := peertest.Binary(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	img := makeImage(51, 4<<20)
	if err := os.WriteFile(filepath.Join(dir, "src.raw"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ qemu, want string }{
		{"qed", "qed"}, {"vmdk", "vmdk"}, {"vhdx", "vhdx"}, {"vdi", "vdi"}, {"vpc", "vhd"}, {"parallels", "ploop"},
	} {
		t.Run(f.qemu, func(t *testing.T) {
			run(t, dir, qemuImg, "convert", "-q", "-f", "raw", "-O", f.qemu, "src.raw", "img."+f.qemu)
			b, err := os.ReadFile(filepath.Join(dir, "img."+f.qemu))
			if err != nil {
				t.Fatal(err)
			}
			if got := SniffContainer(b[:SniffLen]); got != f.want {
				t.Fatalf("SniffContainer = %q, want %q", got, f.want)
			}
			for _, served := range [][]byte{b, zstdBytes(t, b, false)} {
				s := newImageServer()
				s.add("disk.img", served)
				srv := startServer(t, s)
				dst := newMemTarget()
				info := imageInfo(srv.URL+"/disk.img", served)
				info.DiskFormat = f.want
				_, err := Stream(t.Context(), info, dst, testOptions(t))
				if msg := mustErr(t, err, ErrUnsupportedFormat); !strings.Contains(msg, f.want) || dst.writes != 0 {
					t.Errorf("error %q, %d writes", msg, dst.writes)
				}
			}
			// Converted back to raw by qemu-img, it streams.
			run(t, dir, qemuImg, "convert", "-q", "-f", f.qemu, "-O", "raw", "img."+f.qemu, "back.raw")
			raw, err := os.ReadFile(filepath.Join(dir, "back.raw"))
			if err != nil {
				t.Fatal(err)
			}
			raw = raw[:len(img)] // vpc rounds the size up to its geometry
			if !bytes.Equal(raw, img) {
				t.Fatal("qemu-img round trip changed the image")
			}
			s := newImageServer()
			s.add("disk.img", raw)
			srv := startServer(t, s)
			dst := newMemTarget()
			if _, err := Stream(t.Context(), imageInfo(srv.URL+"/disk.img", raw), dst, testOptions(t)); err != nil || !bytes.Equal(dst.bytes(), img) {
				t.Fatalf("raw conversion: %v", err)
			}
		})
	}
}

// TestInteropChecksumFilesFromRealTools parses what sha256sum, sha512sum
// --tag, md5sum and openssl dgst print.
func TestInteropChecksumFilesFromRealTools(t *testing.T) {
	dir := t.TempDir()
	img := makeImage(52, 100_000)
	if err := os.WriteFile(filepath.Join(dir, "disk image.img"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other.img"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, prog, pkg string
		args            []string
		wantAlgo        string
		md5             bool
	}{
		{"sha256sum", "sha256sum", "coreutils", []string{"other.img", "disk image.img"}, "sha256", false},
		{"sha256sum --binary", "sha256sum", "coreutils", []string{"-b", "other.img", "disk image.img"}, "sha256", false},
		{"sha512sum --tag", "sha512sum", "coreutils", []string{"--tag", "other.img", "disk image.img"}, "sha512", false},
		{"md5sum", "md5sum", "coreutils", []string{"disk image.img", "other.img"}, "md5", true},
		{"openssl dgst -sha384", "openssl", "openssl", []string{"dgst", "-sha384", "other.img", "disk image.img"}, "sha384", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peertest.Binary(t, tc.prog, tc.pkg)
			sums := run(t, dir, tc.prog, tc.args...)
			s := newImageServer()
			s.add("disk image.img", img)
			s.add("SUMS", sums)
			srv := startServer(t, s)
			opts := testOptions(t)
			opts.MD5Allowed = tc.md5
			info := api.ImageInfo{ID: "i", URLs: []string{srv.URL + "/disk%20image.img"}, Checksum: srv.URL + "/SUMS"}
			dst := newMemTarget()
			res, err := Stream(t.Context(), info, dst, opts)
			if err != nil {
				t.Fatalf("%v\nchecksum file:\n%s", err, sums)
			}
			if res.Algo != tc.wantAlgo || !bytes.Equal(dst.bytes(), img) {
				t.Errorf("result %+v", res)
			}
		})
	}
}

// TestInteropPythonHTTPServer streams from Python's http.server, which
// ignores Range, through a proxy that cuts the first two connections
// (the second after the skipped part): each resume reads the file again
// from the start and skips what was already consumed.
func TestInteropPythonHTTPServer(t *testing.T) {
	python := peertest.Binary(t, "python3", "python3")
	dir := t.TempDir()
	img := makeImage(53, 3<<20+17)
	z := zstdBytes(t, img, false)
	if err := os.WriteFile(filepath.Join(dir, "disk.img.zst"), z, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`port (\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("python said %q", line)
	}
	go io.Copy(io.Discard, stdout)
	proxy := cuttingProxy(t, "127.0.0.1:"+m[1], []int64{300_000, 450_000})
	dst := newFileTarget(t)
	res, err := Stream(t.Context(), imageInfo("http://"+proxy+"/disk.img.zst", z), dst, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.content(t), img) || res.Resumes != 2 || res.Retries != 2 {
		t.Errorf("result %+v", res)
	}
}

// cuttingProxy forwards TCP connections to addr, closing the n-th one
// after cuts[n] bytes from the server (no cut past the list).
func cuttingProxy(t *testing.T, addr string, cuts []int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			limit := int64(-1)
			if i < len(cuts) {
				limit = cuts[i]
			}
			wg.Go(func() { io.Copy(s, c); s.Close() })
			wg.Go(func() {
				if limit >= 0 {
					io.CopyN(c, s, limit)
				} else {
					io.Copy(c, s)
				}
				c.Close()
				s.Close()
			})
		}
	})
	return ln.Addr().String()
}

// TestInteropQemuImgQcow2 converts qcow2 images made by qemu-img (sparse,
// compressed clusters, v2, big and small clusters, extended L2) and checks
// the written disk against the raw image; the variants the converter
// refuses are refused before any write.
func TestInteropQemuImgQcow2(t *testing.T) {
	qemuImg := peertest.Binary(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	disk := sparseDisk()
	// A long unallocated tail, to a whole number of sectors (qemu-img
	// rounds the virtual size up to one).
	disk = append(disk, make([]byte, 5<<20+512-len(disk)%512)...)
	if err := os.WriteFile(filepath.Join(dir, "src.raw"), disk, 0o644); err != nil {
		t.Fatal(err)
	}
	convert := func(t *testing.T, name string, args ...string) []byte {
		t.Helper()
		run(t, dir, qemuImg, append(append([]string{"convert", "-q", "-f", "raw", "-O", "qcow2"}, args...), "src.raw", name)...)
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"compressed clusters", []string{"-c"}},
		{"compat 0.10 (v2)", []string{"-o", "compat=0.10"}},
		{"512 B clusters", []string{"-o", "cluster_size=512"}},
		{"2 MiB clusters", []string{"-o", "cluster_size=2M"}},
		{"extended L2", []string{"-o", "extended_l2=on"}},
		{"preallocated metadata", []string{"-o", "preallocation=metadata"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := convert(t, "img.qcow2", tc.args...)
			s := newImageServer()
			s.add("disk.qcow2", q)
			srv := startServer(t, s)
			dst := garbageTarget(len(disk))
			info := imageInfo(srv.URL+"/disk.qcow2", q)
			info.DiskFormat = "qcow2"
			res, err := Stream(t.Context(), info, dst, testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst.bytes(), disk) || res.DiskFormat != "qcow2" {
				t.Errorf("result %+v; written sha256 %s, want %s", res, sha256Hex(dst.bytes()), sha256Hex(disk))
			}
		})
	}
	for _, tc := range []struct {
		name, wantInMsg string
		make            func(t *testing.T) []byte
	}{
		{"zstd clusters", "only zlib", func(t *testing.T) []byte {
			return convert(t, "z.qcow2", "-c", "-o", "compression_type=zstd")
		}},
		{"backing file", "backing file", func(t *testing.T) []byte {
			convert(t, "base.qcow2")
			run(t, dir, qemuImg, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "overlay.qcow2")
			b, err := os.ReadFile(filepath.Join(dir, "overlay.qcow2"))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"encrypted", "encrypted", func(t *testing.T) []byte {
			// LUKS creation times its key derivation by the thread's CPU
			// clock, which a loaded machine sometimes fails to read
			// ("Unable to get accurate CPU usage"): try a few times.
			var out []byte
			var err error
			for range 5 {
				cmd := exec.CommandContext(t.Context(), qemuImg, "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=pw",
					"-o", "encrypt.format=luks,encrypt.key-secret=s0", "enc.qcow2", "4M")
				cmd.Dir = dir
				if out, err = cmd.CombinedOutput(); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("qemu-img create (LUKS): %v: %s", err, out)
			}
			b, err := os.ReadFile(filepath.Join(dir, "enc.qcow2"))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.make(t)
			s := newImageServer()
			s.add("disk.qcow2", q)
			srv := startServer(t, s)
			dst := newMemTarget()
			info := imageInfo(srv.URL+"/disk.qcow2", q)
			info.DiskFormat = "qcow2"
			_, err := Stream(t.Context(), info, dst, testOptions(t))
			if msg := mustErr(t, err, ErrUnsupportedFormat); !strings.Contains(msg, tc.wantInMsg) || dst.writes != 0 {
				t.Errorf("error %q, %d writes", msg, dst.writes)
			}
		})
	}
}
