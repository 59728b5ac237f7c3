package imagestream

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ingot-dev/ingot/internal/peertest"
	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/imagestream/internal/testimage"
)

// BenchmarkStreamZstd measures Stream on a semi-compressible raw image,
// zstd-compressed (zstd -3), served over loopback HTTP and written to a
// file with its sha256 verified, against baselines run side by side in
// the same iteration:
//
//   - shell: the pipeline curl | zstd -d | tee >(sha256sum) | dd
//   - shell-served-hash: curl | tee >(sha256sum) | zstd -d | dd, which
//     hashes the served bytes as Stream does
//   - each of Stream's stages alone: HTTP fetch, sha256 of the served
//     bytes, zstd decode, write+fsync; the slowest bounds any pipeline.
//
// Times are the best of b.N iterations for every candidate alike
// (-benchtime=3x on a shared machine). Metrics: MB/s of each (image bytes,
// 1e6), x-shell and x-shell-served-hash (Stream's speed-up), frac-slowest
// (Stream's speed over the slowest stage's), frac-bound (over the best any
// pipeline of these stages can do on this many CPUs: the slowest stage,
// or the stages' summed time divided by GOMAXPROCS) and peak-RSS-MiB
// (Stream in a child process); and, since wall time depends on what else
// the machine runs, CPU time: stream-cpu-s, x-shell-cpu (the shell
// pipeline's CPU time over Stream's) and cpu-vs-stages (Stream's over the
// stages' alone summed: the pipeline's overhead). The target file lives in INGOT_BENCH_DIR, else /dev/shm
// when it has room (a fast disk), else the temp dir. The compressed image
// is cached in the temp dir across runs.
func BenchmarkStreamZstd(b *testing.B) {
	for _, size := range []int64{256 << 20, 1 << 30} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) { benchStreamZstd(b, size) })
	}
}

func benchStreamZstd(b *testing.B, size int64) {
	for _, p := range [][2]string{{"bash", "bash"}, {"curl", "curl"}, {"zstd", "zstd"}, {"sha256sum", "coreutils"}, {"tee", "coreutils"}, {"dd", "coreutils"}} {
		peertest.Binary(b, p[0], p[1])
	}
	img := cachedBenchImage(b, 1, size)
	dir := benchDir(b, size)
	b.Logf("image %d MiB raw, %d MiB zstd; target directory %s", size>>20, img.compressed>>20, dir)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(img.path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		http.ServeContent(w, r, "image.raw.zst", st.ModTime(), f) // sendfile
	}))
	defer srv.Close()
	url := srv.URL + "/image.raw.zst"
	out := filepath.Join(dir, "ingot-bench-target.img")
	defer os.Remove(out)
	sumFile := filepath.Join(dir, "ingot-bench-sum")
	defer os.Remove(sumFile)

	names := []string{"stream", "shell", "shell-served-hash", "fetch", "sha256", "decode", "write"}
	best := map[string]time.Duration{}
	bestCPU := map[string]time.Duration{}
	timeIt := func(name string, fn func() error) {
		cpu0 := cpuTime()
		start := time.Now()
		if err := fn(); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		d, c := time.Since(start), cpuTime()-cpu0
		if old, ok := best[name]; !ok || d < old {
			best[name] = d
		}
		if old, ok := bestCPU[name]; !ok || c < old {
			bestCPU[name] = c
		}
	}
	info := api.ImageInfo{ID: "bench", URLs: []string{url}, OSHashAlgo: "sha256", OSHashValue: img.zstSum}
	shell := func(script, wantSum string) func() error {
		return func() error {
			cmd := exec.Command("bash", "-c", "set -eo pipefail; "+script+"; wait $!")
			cmd.Env = append(os.Environ(), "URL="+url, "OUT="+out, "SUM="+sumFile)
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %s", err, b)
			}
			got, err := os.ReadFile(sumFile)
			if err != nil || !strings.HasPrefix(string(got), wantSum) {
				return fmt.Errorf("pipeline sha256 %q, want %s (%v)", got, wantSum, err)
			}
			return nil
		}
	}

	for i := 0; b.Loop(); i++ {
		os.Remove(out)
		timeIt("stream", func() error {
			f, err := os.Create(out)
			if err != nil {
				return err
			}
			defer f.Close()
			res, err := Stream(context.Background(), info, f, Options{Log: slog.New(slog.DiscardHandler)})
			if err == nil && res.Written != size {
				err = fmt.Errorf("wrote %d bytes", res.Written)
			}
			return err
		})
		if i == 0 {
			b.StopTimer()
			if got := fileSHA256(b, out); got != img.rawSum {
				b.Fatalf("Stream wrote sha256 %s, want %s", got, img.rawSum)
			}
			b.StartTimer()
		}
		os.Remove(out)
		timeIt("shell", shell(`curl -sf "$URL" | zstd -dc | tee >(sha256sum > "$SUM") | dd of="$OUT" bs=1M conv=fsync status=none`, img.rawSum))
		os.Remove(out)
		timeIt("shell-served-hash", shell(`curl -sf "$URL" | tee >(sha256sum > "$SUM") | zstd -dc | dd of="$OUT" bs=1M conv=fsync status=none`, img.zstSum))
		os.Remove(out)
		timeIt("fetch", func() error { return benchFetch(url) })
		timeIt("sha256", func() error { return benchHash(img.path, img.zstSum) })
		timeIt("decode", func() error { return benchDecode(img.path, size) })
		timeIt("write", func() error { return benchWrite(out, size) })
		os.Remove(out)
	}
	b.StopTimer()

	mbps := func(name string) float64 { return float64(size) / 1e6 / best[name].Seconds() }
	slowest := "fetch"
	for _, n := range []string{"sha256", "decode", "write"} {
		if best[n] > best[slowest] {
			slowest = n
		}
	}
	for _, n := range names {
		b.ReportMetric(mbps(n), n+"-MB/s")
	}
	b.ReportMetric(best["shell"].Seconds()/best["stream"].Seconds(), "x-shell")
	b.ReportMetric(best["shell-served-hash"].Seconds()/best["stream"].Seconds(), "x-shell-served-hash")
	b.ReportMetric(best[slowest].Seconds()/best["stream"].Seconds(), "frac-slowest")
	// No pipeline of these stages can beat the slowest one, nor the sum
	// of their work spread over the CPUs it has.
	var sum time.Duration
	for _, n := range []string{"fetch", "sha256", "decode", "write"} {
		sum += best[n]
	}
	bound := max(best[slowest], sum/time.Duration(runtime.GOMAXPROCS(0)))
	b.ReportMetric(bound.Seconds()/best["stream"].Seconds(), "frac-bound")
	b.ReportMetric(float64(best["stream"].Nanoseconds()), "ns/op")
	// CPU time (user+sys of this process and its children) does not
	// depend on what else the machine runs.
	var stagesCPU time.Duration
	for _, n := range []string{"fetch", "sha256", "decode", "write"} {
		stagesCPU += bestCPU[n]
	}
	b.ReportMetric(bestCPU["stream"].Seconds(), "stream-cpu-s")
	b.ReportMetric(bestCPU["shell"].Seconds()/bestCPU["stream"].Seconds(), "x-shell-cpu")
	b.ReportMetric(bestCPU["stream"].Seconds()/stagesCPU.Seconds(), "cpu-vs-stages")

	rss := streamChild(b, helperBinary(b), url, img.zstSum, out)
	b.ReportMetric(float64(rss.VmHWM)/(1<<20), "peak-RSS-MiB")
	b.Logf("slowest stage alone: %s; Stream %.0f MB/s, shell %.0f MB/s, shell hashing served bytes %.0f MB/s, peak RSS %.1f MiB",
		slowest, mbps("stream"), mbps("shell"), mbps("shell-served-hash"), float64(rss.VmHWM)/(1<<20))
}

type benchImage struct {
	path           string
	compressed     int64
	rawSum, zstSum string
}

// cachedBenchImage returns the zstd -3 compression of test image seed,
// generating it once per (generator version, seed, size) under the temp
// directory.
func cachedBenchImage(b *testing.B, seed uint64, size int64) benchImage {
	b.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("ingot-bench-v%d-s%d-n%d", testimage.Version, seed, size))
	path := filepath.Join(dir, "image.raw.zst")
	sums := filepath.Join(dir, "sha256")
	if s, err := os.ReadFile(sums); err == nil {
		if f := strings.Fields(string(s)); len(f) == 2 {
			if st, err := os.Stat(path); err == nil {
				return benchImage{path: path, compressed: st.Size(), rawSum: f[0], zstSum: f[1]}
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Logf("generating the %d MiB benchmark image in %s (once)", size>>20, dir)
	out, err := os.Create(path + ".tmp")
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	rawH, zstH := sha256.New(), sha256.New()
	cmd := exec.Command("zstd", "-3", "-T0", "-q", "-c")
	cmd.Stdout = io.MultiWriter(out, zstH)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(io.MultiWriter(stdin, rawH), 1<<20)
	if err := testimage.Write(bw, seed, size); err != nil {
		b.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
	img := benchImage{path: path, rawSum: hex.EncodeToString(rawH.Sum(nil)), zstSum: hex.EncodeToString(zstH.Sum(nil))}
	if err := os.WriteFile(sums, []byte(img.rawSum+" "+img.zstSum+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(path)
	img.compressed = st.Size()
	return img
}

// benchDir picks where the target file goes: INGOT_BENCH_DIR, else the
// temp directory (a file on the machine's disk).
func benchDir(b *testing.B, size int64) string {
	d := os.Getenv("INGOT_BENCH_DIR")
	if d == "" {
		d = os.TempDir()
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d, &st); err != nil || int64(st.Bavail)*st.Bsize < 2*size {
		b.Skipf("%s has no room for a %d MiB target (%v)", d, size>>20, err)
	}
	return d
}

// cpuTime is the user+system time of this process and its waited-for
// children so far.
func cpuTime() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

// The stages alone.

func benchFetch(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.CopyBuffer(io.Discard, resp.Body, make([]byte, 1<<20))
	return err
}

func benchHash(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("sha256 %s, want %s", got, want)
	}
	return nil
}

func benchDecode(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := zstd.NewReader(bufio.NewReaderSize(f, 1<<20), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return err
	}
	defer zr.Close()
	// Into a buffer, as a streaming consumer (Stream, zstd -d) must: the
	// struct hides the decoder's WriteTo.
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{zr}, make([]byte, 1<<20))
	if err == nil && n != size {
		err = fmt.Errorf("decoded %d bytes", n)
	}
	return err
}

func benchWrite(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	testimage.Fill(1, buf, 0)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
	}
	return f.Sync()
}

func fileSHA256(b *testing.B, path string) string {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		b.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
