package blockdev_test

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/blockdev/blockdevtest"
)

// BenchmarkErase compares Erase with what IPA runs for erase_devices,
// coreutils `shred --force --iterations 1 --zero`, side by side on the
// same file in every iteration (one random pass, one zero pass, each
// synced). Reported: both throughputs and ingot/shred, the ratio.
func BenchmarkErase(b *testing.B) {
	shred, err := exec.LookPath("shred")
	if err != nil {
		b.Skip("shred (coreutils) is missing")
	}
	const size = 128 << 20
	path := blockdevtest.Disk(b, size)
	d, err := blockdev.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var ingot, baseline time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := blockdev.Erase(b.Context(), d, size, blockdev.EraseOptions{Iterations: 1, Zeroize: true}); err != nil {
			b.Fatal(err)
		}
		ingot += time.Since(start)
		start = time.Now()
		if out, err := exec.Command(shred, "--force", "--iterations", "1", "--zero", "--size", strconv.Itoa(size), path).CombinedOutput(); err != nil {
			b.Fatalf("shred: %v: %s", err, out)
		}
		baseline += time.Since(start)
	}
	b.StopTimer()
	mb := float64(2*size*b.N) / (1 << 20)
	b.ReportMetric(mb/ingot.Seconds(), "ingot-MiB/s")
	b.ReportMetric(mb/baseline.Seconds(), "shred-MiB/s")
	b.ReportMetric(baseline.Seconds()/ingot.Seconds(), "ingot/shred")
	if _, err := os.Stat(path); err != nil {
		b.Fatal(err)
	}
}
