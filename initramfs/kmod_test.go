package initramfs

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func modinfo(kv ...string) []byte {
	return []byte(strings.Join(kv, "\x00") + "\x00\x00\x00")
}

func TestParseModinfo(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		want    Modinfo
		wantErr string
	}{
		{name: "virtio_net",
			data: modinfo("license=GPL", "depends=virtio_ring,virtio,net_failover", "retpoline=Y", "name=virtio_net",
				"vermagic=6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions "),
			want: Modinfo{Name: "virtio_net", Depends: []string{"virtio_ring", "virtio", "net_failover"},
				Vermagic: "6.1.0-56-cloud-amd64 SMP preempt mod_unload modversions"}},
		{name: "dashes normalized", data: modinfo("depends=nvme-core", "name=nvme"),
			want: Modinfo{Name: "nvme", Depends: []string{"nvme_core"}}},
		{name: "no dependencies", data: modinfo("depends=", "name=e1000"), want: Modinfo{Name: "e1000"}},
		{name: "softdeps", data: modinfo("softdep=pre: crc32c post: foo-bar baz", "name=ext4", "softdep=pre: crc16"),
			want: Modinfo{Name: "ext4", SoftPre: []string{"crc32c", "crc16"}, SoftPost: []string{"foo_bar", "baz"}}},
		{name: "no name", data: modinfo("depends=virtio"), wantErr: "no name="},
		{name: "empty", data: nil, wantErr: "no name="},
		{name: "softdep without pre or post", data: modinfo("softdep=crc32c", "name=x"), wantErr: "before pre: or post:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseModinfo(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseModinfo = %+v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("ParseModinfo =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add(modinfo("depends=a,b-c", "name=x", "softdep=pre: y post: z"))
	f.Add([]byte("name=\x00depends=,,,"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseModinfo(b)
		if err != nil {
			return
		}
		for _, d := range slices.Concat([]string{m.Name}, m.Depends, m.SoftPre, m.SoftPost) {
			if d == "" || strings.Contains(d, "-") {
				t.Fatalf("unnormalized or empty name %q in %+v", d, m)
			}
		}
	})
}

func TestParseList(t *testing.T) {
	in := "# comment\nvirtio_pci\n\n  virtio-net   # trailing comment\ne1000?\n"
	got, err := ParseList(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{{Name: "virtio_pci"}, {Name: "virtio_net"}, {Name: "e1000", Optional: true}}
	if !slices.Equal(got, want) {
		t.Errorf("ParseList = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"two names\n", "?\n", "kernel/drivers/net/virtio_net.ko\n"} {
		if _, err := ParseList(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseList(%q) = %v, want an error naming line 1", bad, err)
		}
	}
}

func FuzzParseList(f *testing.F) {
	f.Add("virtio_net\ne1000?\n# x\n")
	f.Fuzz(func(t *testing.T, s string) {
		reqs, err := ParseList(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, r := range reqs {
			if r.Name == "" || strings.ContainsAny(r.Name, " \t/#?-") {
				t.Fatalf("bad request %+v", r)
			}
		}
	})
}

// fakeSource is a kernel: modules by name, plus built-ins.
type fakeSource struct {
	mods    map[string]Modinfo
	builtin []string
}

func (f fakeSource) Module(name string) (Modinfo, error) {
	if m, ok := f.mods[name]; ok {
		return m, nil
	}
	if slices.Contains(f.builtin, name) {
		return Modinfo{}, ErrBuiltin
	}
	return Modinfo{}, ErrNoModule
}

func kernel(builtin []string, mods ...Modinfo) fakeSource {
	f := fakeSource{mods: map[string]Modinfo{}, builtin: builtin}
	for _, m := range mods {
		if m.Vermagic == "" {
			m.Vermagic = "6.1.0-test SMP"
		}
		f.mods[m.Name] = m
	}
	return f
}

func names(ms []Modinfo) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Name)
	}
	return strings.Join(s, " ")
}

func TestResolve(t *testing.T) {
	// The virtio stack of Debian's 6.1 kernels, as their .modinfo says.
	virtio := kernel([]string{"nvme"},
		Modinfo{Name: "virtio_ring"},
		Modinfo{Name: "virtio", Depends: []string{"virtio_ring"}},
		Modinfo{Name: "virtio_pci_modern_dev"}, Modinfo{Name: "virtio_pci_legacy_dev"},
		Modinfo{Name: "virtio_pci", Depends: []string{"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_ring", "virtio"}},
		Modinfo{Name: "failover"}, Modinfo{Name: "net_failover", Depends: []string{"failover"}},
		Modinfo{Name: "virtio_net", Depends: []string{"virtio_ring", "virtio", "net_failover"}},
		Modinfo{Name: "virtio_blk", Depends: []string{"virtio", "virtio_ring"}},
		Modinfo{Name: "crc32c_generic"}, Modinfo{Name: "crc32c_intel"},
		Modinfo{Name: "libcrc32c", SoftPre: []string{"crc32c"}}, // crc32c: an alias, not a module here
		Modinfo{Name: "ext4", SoftPre: []string{"crc32c_generic"}, SoftPost: []string{"crc32c_intel"}},
		Modinfo{Name: "loop_a", Depends: []string{"loop_b"}}, Modinfo{Name: "loop_b", Depends: []string{"loop_a"}},
		Modinfo{Name: "needs_ghost", Depends: []string{"ghost"}},
		Modinfo{Name: "other_kernel", Vermagic: "5.10.0-30-amd64 SMP"},
	)
	tests := []struct {
		name     string
		reqs     []Request
		load     string
		builtin  string
		missing  string
		wantErr  string
		vermagic string
	}{
		{name: "virtio stack in dependency order",
			reqs: []Request{{Name: "virtio_pci"}, {Name: "virtio_net"}, {Name: "virtio_blk"}},
			load: "virtio_pci_modern_dev virtio_pci_legacy_dev virtio_ring virtio virtio_pci failover net_failover virtio_net virtio_blk"},
		{name: "each module once, request order kept",
			reqs: []Request{{Name: "virtio_blk"}, {Name: "virtio_net"}, {Name: "virtio_blk"}},
			load: "virtio_ring virtio virtio_blk failover net_failover virtio_net"},
		{name: "built-in and optional-missing are skipped",
			reqs:    []Request{{Name: "nvme"}, {Name: "e1000", Optional: true}, {Name: "virtio_blk"}},
			load:    "virtio_ring virtio virtio_blk",
			builtin: "nvme", missing: "e1000"},
		{name: "softdeps: pre first, post after, absent ones skipped",
			reqs: []Request{{Name: "ext4"}, {Name: "libcrc32c"}},
			load: "crc32c_generic ext4 crc32c_intel libcrc32c", missing: "crc32c"},
		{name: "required module missing", reqs: []Request{{Name: "e1000"}}, wantErr: "module e1000: no such module"},
		{name: "hard dependency missing even under an optional request",
			reqs: []Request{{Name: "needs_ghost", Optional: true}}, wantErr: "module ghost (needed by needs_ghost)"},
		{name: "cycle", reqs: []Request{{Name: "loop_a"}}, wantErr: "cycle: loop_a -> loop_b -> loop_a"},
		{name: "module of another kernel", reqs: []Request{{Name: "other_kernel"}}, vermagic: "6.1.0-test",
			wantErr: `built for kernel "5.10.0-30-amd64", not "6.1.0-test"`},
		{name: "vermagic matches", reqs: []Request{{Name: "virtio"}}, vermagic: "6.1.0-test", load: "virtio_ring virtio"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Resolve(virtio, tt.reqs, tt.vermagic)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Resolve = %s, %v; want error %q", names(p.Load), err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := names(p.Load); got != tt.load {
				t.Errorf("load order\n got %s\nwant %s", got, tt.load)
			}
			if got := strings.Join(p.Builtin, " "); got != tt.builtin {
				t.Errorf("builtin %q, want %q", got, tt.builtin)
			}
			if got := strings.Join(p.Missing, " "); got != tt.missing {
				t.Errorf("missing %q, want %q", got, tt.missing)
			}
			// Whatever the case, every module loads after its hard dependencies.
			at := map[string]int{}
			for i, m := range p.Load {
				at[m.Name] = i
			}
			for i, m := range p.Load {
				for _, d := range m.Depends {
					if j, ok := at[d]; ok && j > i {
						t.Errorf("%s loads before its dependency %s", m.Name, d)
					}
				}
			}
		})
	}
}

func TestModuleFileNamesSortInLoadOrder(t *testing.T) {
	var names []string
	for i, n := range []string{"virtio_ring", "virtio", "b", "a"} {
		names = append(names, ModuleFileName(i, n))
	}
	for i := 4; i < 120; i++ {
		names = append(names, ModuleFileName(i, "m"))
	}
	if !slices.IsSorted(names) {
		t.Errorf("module file names do not sort in load order: %v", names[:8])
	}
	if got := ModuleFileName(7, "virtio_net"); got != "lib/modules/007-virtio_net.ko" {
		t.Errorf("ModuleFileName = %s", got)
	}
}

func TestModulesDirFor(t *testing.T) {
	tests := []struct{ in, want, wantErr string }{
		{in: "/boot/vmlinuz-6.1.0-56-amd64", want: "/lib/modules/6.1.0-56-amd64"},
		{in: "build/kernel/6.1.0-56-cloud-amd64/boot/vmlinuz-6.1.0-56-cloud-amd64",
			want: "build/kernel/6.1.0-56-cloud-amd64/lib/modules/6.1.0-56-cloud-amd64"},
		{in: "/tmp/bzImage", wantErr: "vmlinuz-<release>"},
		{in: "/tmp/vmlinuz-6.1", wantErr: "not in a boot directory"},
	}
	for _, tt := range tests {
		got, err := ModulesDirFor(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ModulesDirFor(%s) = %s, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ModulesDirFor(%s) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestOpenTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "6.1.0-test")
	for _, p := range []string{"kernel/drivers/net/virtio_net.ko", "kernel/drivers/nvme/host/nvme-core.ko", "kernel/README"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("not an ELF file"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/block/virtio_blk.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr, err := OpenTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tr.Names(), " "); got != "nvme_core virtio_net" {
		t.Errorf("indexed %q", got)
	}
	if tr.Version() != "6.1.0-test" {
		t.Errorf("Version = %s", tr.Version())
	}
	if _, err := tr.Module("virtio_blk"); err != ErrBuiltin {
		t.Errorf("virtio_blk: %v, want ErrBuiltin", err)
	}
	if _, err := tr.Module("e1000"); err != ErrNoModule {
		t.Errorf("e1000: %v, want ErrNoModule", err)
	}
	// A file that is not a module is a clear error naming it.
	if _, err := tr.Module("virtio_net"); err == nil || !strings.Contains(err.Error(), "virtio_net.ko") {
		t.Errorf("a corrupt module: %v", err)
	}
	if _, err := OpenTree(t.TempDir()); err == nil {
		t.Error("an empty directory opened as a module tree")
	}
}
