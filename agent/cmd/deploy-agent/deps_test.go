package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The agent ships in an initramfs fetched over TFTP/HTTP at every boot:
// what it links is budgeted (tailscale's deptest pattern). Raise a budget
// only deliberately, in the same commit as the dependency that needs it.
const (
	// depBudget is the number of non-standard-library packages outside
	// this module the agent may link. 60 until the agent configured its
	// own network; insomniacslk/dhcp's client (with u-root/uio, which
	// brings pierrec/lz4), vishvananda/netlink and mdlayher/packet added 17;
	// go-diskfs's GPT writer (config drives) and google/uuid brought 4;
	// its FAT32 writer and ISO reader (config drives on disks with
	// 4096-byte sectors) 9 more.
	depBudget = 90
	// sizeBudget bounds the static (CGO_ENABLED=0) binary, unstripped.
	sizeBudget = 16 << 20
)

func agentDeps(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var deps []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			deps = append(deps, l)
		}
	}
	return deps
}

func TestDeps(t *testing.T) {
	deps := agentDeps(t)
	forbidden := []string{"database/sql", "github.com/ingot-dev/ingot/conductor", "modernc.org/sqlite",
		"github.com/jackc/pgx", "github.com/pressly/goose", "github.com/gophercloud"}
	// database/sql is standard: ask for it separately.
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	all, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	// database/sql/driver alone is a few interfaces, which
	// github.com/google/uuid (through go-diskfs's GPT writer, for config
	// drives) implements; database/sql itself stays out.
	allowed := []string{"database/sql/driver"}
	for _, d := range append(deps, strings.Fields(string(all))...) {
		if slices.Contains(allowed, d) {
			continue
		}
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("the agent must not link %s (via %s)", f, d)
			}
		}
	}
	var external []string
	for _, d := range deps {
		if !strings.HasPrefix(d, "github.com/ingot-dev/ingot") {
			external = append(external, d)
		}
	}
	slices.Sort(external)
	if len(external) > depBudget {
		t.Errorf("the agent links %d third-party packages, budget %d:\n%s", len(external), depBudget, strings.Join(external, "\n"))
	}
	t.Logf("%d third-party packages (budget %d)", len(external), depBudget)
}

func TestStaticBuildSize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	bin := filepath.Join(t.TempDir(), "deploy-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 build: %v\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > sizeBudget {
		t.Errorf("the static agent is %d bytes, budget %d", fi.Size(), sizeBudget)
	}
	t.Logf("static agent: %.1f MiB (budget %d MiB)", float64(fi.Size())/(1<<20), sizeBudget>>20)
}
