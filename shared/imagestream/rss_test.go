package imagestream

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// maxRSS is the streamer's peak resident memory budget, whatever the
// image's size (for images whose decompression window is at most 32 MiB:
// every zstd level up to 19, xz up to -8).
const maxRSS = 64 << 20

// TestStreamPeakRSS streams a 256 MiB zstd image in a child process built
// without the race detector and checks its peak RSS (VmHWM). The image
// server is another child, so its memory does not count.
func TestStreamPeakRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs helper processes")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	bin := helperBinary(t)
	for _, tc := range []struct {
		name   string
		size   int64
		window int
	}{
		{"256 MiB image, default zstd window", 256 << 20, 0},
		{"128 MiB image, 32 MiB zstd window", 128 << 20, 32 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, sum := serveChild(t, bin, 7, tc.size, tc.window)
			got := streamChild(t, bin, url, sum, filepath.Join(t.TempDir(), "disk.img"))
			t.Logf("peak RSS %.1f MiB, %.0f MiB/s", float64(got.VmHWM)/(1<<20), float64(got.Written)/(1<<20)/got.Seconds)
			if got.Written != tc.size || got.Format != FormatZstd {
				t.Fatalf("child wrote %d bytes of %s", got.Written, got.Format)
			}
			if got.VmHWM > maxRSS {
				t.Errorf("peak RSS %d MiB, budget %d MiB", got.VmHWM>>20, maxRSS>>20)
			}
		})
	}
}

// helperBinary builds testdata/rsschild without the race detector.
func helperBinary(tb testing.TB) string {
	tb.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(tb.TempDir(), "rsschild")
	cmd := exec.Command(goBin, "build", "-o", out, "./testdata/rsschild")
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build rsschild: %v\n%s", err, b)
	}
	return out
}

// serveChild starts "rsschild serve" for a cached zstd test image and
// returns its URL and sha256; the server stops with the test.
func serveChild(tb testing.TB, bin string, seed uint64, size int64, window int) (url, sum string) {
	tb.Helper()
	cmd := exec.Command(bin, "serve", "-seed", strconv.FormatUint(seed, 10), "-size", strconv.FormatInt(size, 10),
		"-window", strconv.Itoa(window), "-dir", os.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	var got struct {
		URL    string `json:"url"`
		SHA256 string `json:"sha256"`
	}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		tb.Fatalf("rsschild serve: %v", err)
	}
	if err := json.Unmarshal(line, &got); err != nil {
		tb.Fatalf("rsschild serve said %q: %v", line, err)
	}
	return got.URL, got.SHA256
}

type childResult struct {
	Written int64   `json:"written"`
	Format  string  `json:"format"`
	Seconds float64 `json:"seconds"`
	VmHWM   int64   `json:"vmhwm_bytes"`
}

// streamChild runs "rsschild stream" and returns what it measured.
func streamChild(tb testing.TB, bin, url, sum, out string) childResult {
	tb.Helper()
	defer os.Remove(out)
	cmd := exec.Command(bin, "stream", "-url", url, "-sha256", sum, "-out", out)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		tb.Fatalf("rsschild stream: %v", err)
	}
	var got childResult
	if err := json.Unmarshal(b, &got); err != nil {
		tb.Fatalf("rsschild stream said %q: %v", b, err)
	}
	return got
}
