//go:build interop

package initramfs_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/ingot-dev/ingot/initramfs"
	"github.com/ingot-dev/ingot/internal/vmtest"
)

// The ramdisk must stay small: it crosses the network at every boot.
const sizeBudget = 16 << 20

func readList(t *testing.T, names ...string) []initramfs.Request {
	t.Helper()
	var out []initramfs.Request
	for _, n := range names {
		f, err := os.Open(filepath.Join(vmtest.Root(t), "initramfs", n))
		if err != nil {
			t.Fatal(err)
		}
		reqs, err := initramfs.ParseList(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, reqs...)
	}
	return out
}

// TestInteropDebianKernelModules resolves the module lists against the
// real .ko files of Debian's kernels: every module's .modinfo must parse,
// and the order must put each after what it needs.
func TestInteropDebianKernelModules(t *testing.T) {
	tests := []struct {
		flavor  string
		lists   []string
		load    []string // must be loaded, in this relative order
		builtin []string
		missing []string
	}{
		{flavor: "cloud-amd64", lists: []string{"modules.txt"},
			load:    []string{"virtio_ring", "virtio", "virtio_pci", "net_failover", "virtio_net", "virtio_blk"},
			builtin: []string{"nvme"}, missing: []string{"e1000", "ahci"}},
		{flavor: "amd64", lists: []string{"modules.txt", "modules-server.txt"},
			load: []string{"virtio_ring", "virtio_net", "scsi_mod", "e1000", "libata", "ahci", "nvme_core", "nvme", "sd_mod", "igb", "mlx5_core"}},
	}
	for _, tt := range tests {
		t.Run(tt.flavor, func(t *testing.T) {
			kernel := vmtest.Kernel(t, tt.flavor)
			dir, err := initramfs.ModulesDirFor(kernel)
			if err != nil {
				t.Fatal(err)
			}
			tree, err := initramfs.OpenTree(dir)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := initramfs.Resolve(tree, readList(t, tt.lists...), tree.Version())
			if err != nil {
				t.Fatal(err)
			}
			var order []string
			at := map[string]int{}
			for i, m := range plan.Load {
				order = append(order, m.Name)
				at[m.Name] = i
				if !strings.HasPrefix(m.Vermagic, tree.Version()+" ") {
					t.Errorf("%s: vermagic %q is not the kernel's", m.Name, m.Vermagic)
				}
				for _, d := range m.Depends {
					if j, ok := at[d]; !ok || j > i {
						t.Errorf("%s loads before its dependency %s", m.Name, d)
					}
				}
			}
			last := -1
			for _, name := range tt.load {
				i, ok := at[name]
				if !ok {
					t.Errorf("%s is not loaded; order: %v", name, order)
					continue
				}
				if i < last {
					t.Errorf("%s loads too early; order: %v", name, order)
				}
				last = i
			}
			for _, b := range tt.builtin {
				if !slices.Contains(plan.Builtin, b) {
					t.Errorf("%s not reported built in: %v", b, plan.Builtin)
				}
			}
			for _, m := range tt.missing {
				if !slices.Contains(plan.Missing, m) {
					t.Errorf("%s not reported missing: %v", m, plan.Missing)
				}
			}
			t.Logf("%s: %d modules: %v; built in %v; absent %v", tree.Version(), len(order), order, plan.Builtin, plan.Missing)
		})
	}
}

// TestInteropBuildReproducible builds the real ramdisk twice from
// scratch: the same bytes both times, within the size budget, with u-root's
// init, the agent as uinit and the modules named in load order.
func TestInteropBuildReproducible(t *testing.T) {
	kernel := vmtest.Kernel(t, "cloud-amd64")
	mods, err := initramfs.ModulesDirFor(kernel)
	if err != nil {
		t.Fatal(err)
	}
	root := vmtest.Root(t)
	dir := t.TempDir()
	build := func(out string, reuse bool) initramfs.Result {
		res, err := initramfs.Build(context.Background(), initramfs.Options{ModuleRoot: root, Modules: mods,
			List: readList(t, "modules.txt"), Out: filepath.Join(dir, out), Reuse: reuse})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a := build("a.cpio.gz", true)
	b := build("b.cpio.gz", false)
	if a.SHA256 != b.SHA256 {
		t.Errorf("two builds differ: %s and %s", a.SHA256, b.SHA256)
	}
	if a.Compressed > sizeBudget {
		t.Errorf("ramdisk is %d bytes compressed, budget %d", a.Compressed, sizeBudget)
	}
	t.Logf("ramdisk: %.1f MiB gzip, %.1f MiB cpio, %d modules, sha256 %s",
		float64(a.Compressed)/(1<<20), float64(a.Uncompressed)/(1<<20), len(a.Plan.Load), a.SHA256)

	again := build("a.cpio.gz", true)
	if !again.Reused || again.SHA256 != a.SHA256 {
		t.Errorf("an unchanged rebuild was not reused: %+v", again)
	}

	links := map[string]string{}
	files := map[string]bool{}
	var modules []string
	for _, r := range readCPIO(t, a.Path) {
		switch r.Mode & cpio.S_IFMT {
		case cpio.S_IFLNK:
			target := make([]byte, r.FileSize)
			if _, err := r.ReadAt(target, 0); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			links[r.Name] = string(target)
		case cpio.S_IFREG:
			files[r.Name] = true
		}
		if r.MTime != 0 || r.UID != 0 || r.GID != 0 {
			t.Errorf("%s: mtime %d uid %d gid %d: not reproducible", r.Name, r.MTime, r.UID, r.GID)
		}
		if strings.HasPrefix(r.Name, "lib/modules/") {
			modules = append(modules, r.Name)
		}
	}
	if links["init"] != "bbin/init" || links["bin/uinit"] != "../bbin/deploy-agent" {
		t.Errorf("init -> %q, bin/uinit -> %q; want u-root's init running the agent", links["init"], links["bin/uinit"])
	}
	if _, ok := links["bin/sh"]; ok {
		t.Errorf("the ramdisk has a shell (bin/sh -> %s); it carries only init and the agent", links["bin/sh"])
	}
	if !files["bbin/bb"] {
		t.Error("no busybox binary bbin/bb")
	}
	want := make([]string, len(a.Plan.Load))
	for i, m := range a.Plan.Load {
		want[i] = initramfs.ModuleFileName(i, m.Name)
	}
	slices.Sort(modules)
	if !slices.Equal(modules, want) {
		t.Errorf("modules in the archive:\n%v\nwant\n%v", modules, want)
	}
}

func readCPIO(t *testing.T, path string) []cpio.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}
