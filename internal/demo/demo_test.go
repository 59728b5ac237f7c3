package demo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLastDeployment(t *testing.T) {
	log := `not json
{"time":"2026-11-24T16:00:00Z","msg":"provision state changed","to":"deploying","event":"deploy"}
{"time":"2026-11-24T16:00:01Z","msg":"power state changed","to":"power on"}
{"time":"2026-11-24T16:00:05Z","msg":"agent looked up"}
{"time":"2026-11-24T16:00:20Z","msg":"provision state changed","to":"active","event":"done"}
{"time":"2026-11-24T16:01:00Z","msg":"provision state changed","to":"deploying","event":"deploy"}
{"time":"2026-11-24T16:01:02Z","msg":"power state changed","to":"power on"}
{"time":"2026-11-24T16:01:08Z","msg":"agent looked up"}
{"time":"2026-11-24T16:01:09Z","msg":"agent looked up"}
{"time":"2026-11-24T16:01:12Z","msg":"power state changed","to":"power off"}
{"time":"2026-11-24T16:01:13Z","msg":"power state changed","to":"power on"}
{"time":"2026-11-24T16:01:14Z","msg":"provision state changed","to":"active","event":"done"}
{"time":"2026-11-24T16:01:30Z","msg":"power state changed","to":"power on"}
`
	path := filepath.Join(t.TempDir(), "conductor.log")
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	ev, err := readEvents(path)
	if err != nil {
		t.Fatal(err)
	}
	d := ev.lastDeployment()
	if got := since(d.powerOn, d.lookup); got != 6*time.Second {
		t.Errorf("power on → lookup %s, want 6s (the last deployment's first lookup)", got)
	}
	if got := since(d.powerOn, d.active); got != 12*time.Second {
		t.Errorf("power on → active %s, want 12s", got)
	}
	if got := since(d.bootOn, d.active); got != time.Second {
		t.Errorf("boot_instance's power on is %s before active, want 1s (not a later power on)", got)
	}
	if since(time.Time{}, d.active) != 0 || (events{}).lastDeployment() != (deployment{}) {
		t.Error("an unknown milestone must give no duration")
	}
}

func TestProgressLine(t *testing.T) {
	got := progressLine(map[string]any{"step": "write_image", "phase": "streaming", "percent": 50.0,
		"bytes": float64(32 << 20), "bytes_per_second": float64(16 << 20), "resumes": 1.0})
	want := "write_image (streaming) [############............]  50% 32.0 MiB at 16.0 MiB/s, resumed 1×"
	if got != want {
		t.Errorf("progressLine =\n%q\nwant\n%q", got, want)
	}
	if got := progressLine(map[string]any{"step": "write_image", "percent": 250.0}); !strings.Contains(got, "[########################]") {
		t.Errorf("an out-of-range percent overflows the bar: %q", got)
	}
}

func TestWriteLine(t *testing.T) {
	got := writeLine(map[string]any{"bytes": 67108864.0, "bytes_per_second": 38830605.0, "format": "zstd",
		"checksum": "sha256:1861b936801d3ec793523f262bfc626791ea613e", "resumes": 0.0, "seconds": 1.728})
	want := "image written: 64.0 MiB from zstd in 1.7 s (37.0 MiB/s), sha256:1861b936801d3…"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
