package demo

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/internal/vmrig"
)

// printer is the progress display: one line per step and per node change,
// each with the time since the demo started.
type printer struct {
	w          io.Writer
	start      time.Time
	last       vmrig.NodeState
	onProgress func(map[string]any)
}

func (p *printer) stamp() string {
	return fmt.Sprintf("[%6.1fs]", time.Since(p.start).Seconds())
}

func (p *printer) step(format string, args ...any) {
	fmt.Fprintf(p.w, "%s ▶ %s\n", p.stamp(), fmt.Sprintf(format, args...))
}

func (p *printer) info(format string, args ...any) {
	fmt.Fprintf(p.w, "%s     %s\n", p.stamp(), fmt.Sprintf(format, args...))
}

// node shows what changed in a node.
func (p *printer) node(n vmrig.NodeState) {
	var parts []string
	if n.ProvisionState != p.last.ProvisionState {
		s := n.ProvisionState
		if t := deref(n.TargetProvision); t != "" {
			s += " → " + t
		}
		parts = append(parts, "state "+s)
	}
	if ps := deref(n.PowerState); ps != deref(p.last.PowerState) && ps != "" {
		parts = append(parts, ps)
	}
	if prog, ok := n.DriverInternalInfo["deploy_progress"].(map[string]any); ok {
		if p.onProgress != nil {
			p.onProgress(prog)
		}
		if fmt.Sprint(prog) != fmt.Sprint(p.last.DriverInternalInfo["deploy_progress"]) {
			parts = append(parts, progressLine(prog))
		}
	}
	if e := n.Error(); e != "" && e != p.last.Error() {
		parts = append(parts, "error: "+e)
	}
	p.last = n
	if len(parts) > 0 {
		fmt.Fprintf(p.w, "%s     %s\n", p.stamp(), strings.Join(parts, ", "))
	}
}

func progressLine(prog map[string]any) string {
	pct, _ := prog["percent"].(float64)
	bytes, _ := prog["bytes"].(float64)
	const width = 24
	filled := int(math.Round(pct / 100 * width))
	filled = min(max(filled, 0), width)
	step := fmt.Sprint(prog["step"])
	if ph, ok := prog["phase"].(string); ok {
		step += " (" + ph + ")"
	}
	s := fmt.Sprintf("%s [%s%s] %3.0f%% %.1f MiB", step, strings.Repeat("#", filled), strings.Repeat(".", width-filled), pct, bytes/(1<<20))
	if r, ok := prog["bytes_per_second"].(float64); ok && r > 0 {
		s += fmt.Sprintf(" at %.1f MiB/s", r/(1<<20))
	}
	if n, ok := prog["resumes"].(float64); ok && n > 0 {
		s += fmt.Sprintf(", resumed %.0f×", n)
	}
	return s
}

// writeLine describes the agent's report of a finished image write
// (driver_internal_info.image_write).
func writeLine(w map[string]any) string {
	bytes, _ := w["bytes"].(float64)
	secs, _ := w["seconds"].(float64)
	s := fmt.Sprintf("image written: %.1f MiB", bytes/(1<<20))
	if f, ok := w["format"].(string); ok && f != "" {
		s += " from " + f
	}
	if secs > 0 {
		s += fmt.Sprintf(" in %.1f s", secs)
	}
	if r, ok := w["bytes_per_second"].(float64); ok && r > 0 {
		s += fmt.Sprintf(" (%.1f MiB/s)", r/(1<<20))
	}
	if c, ok := w["checksum"].(string); ok && c != "" {
		if len(c) > 20 {
			c = c[:20] + "…"
		}
		s += ", " + c
	}
	if n, ok := w["resumes"].(float64); ok && n > 0 {
		s += fmt.Sprintf(", resumed %.0f×", n)
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Print writes the summary.
func (s Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "\nIngot demo: a %s virtual node went enroll → available → active, booted its new disk, and back to available.\n\n", strings.ToUpper(s.Firmware))
	row := func(k, v string) { fmt.Fprintf(w, "  %-34s %s\n", k, v) }
	row("deploy ramdisk (gzip)", fmt.Sprintf("%.1f MiB", float64(s.RamdiskBytes)/(1<<20)))
	row("image written", fmt.Sprintf("%.0f MiB", float64(s.ImageBytes)/(1<<20)))
	row("manage + provide (with cleaning)", dur(s.Enroll))
	row("power on → first agent lookup", dur(s.PowerOnToLookup))
	if s.WriteMiBps > 0 {
		row("image write throughput", fmt.Sprintf("%.1f MiB/s (download, decompress, verify, write; the agent's figure)", s.WriteMiBps))
	} else {
		row("image write throughput", "not reported")
	}
	row("PXE (power on) → active", dur(s.PXEToActive))
	row("power on from disk → image booted", dur(s.BootedFromDisk))
	row("undeploy (with cleaning)", dur(s.Undeploy))
	row("total", dur(s.Total))
}

func dur(d time.Duration) string {
	if d <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}
