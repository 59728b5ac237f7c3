package initramfs

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Modinfo is what a kernel module's .modinfo section says about it.
type Modinfo struct {
	Name     string
	Depends  []string // hard dependencies: must load first
	SoftPre  []string // softdep pre: loaded first when the kernel has them
	SoftPost []string // softdep post: loaded after when the kernel has them
	Vermagic string
	Path     string // the .ko file, once found in a tree
}

// Normalize gives the kernel's canonical module name: modprobe treats
// '-' and '_' alike, and .modinfo's depends= uses file names.
func Normalize(name string) string {
	return strings.ReplaceAll(strings.TrimSuffix(name, ".ko"), "-", "_")
}

// ParseModinfo parses the contents of a .modinfo ELF section: NUL-separated
// key=value strings.
func ParseModinfo(data []byte) (Modinfo, error) {
	var m Modinfo
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue // padding between entries
		}
		switch k {
		case "name":
			m.Name = Normalize(v)
		case "vermagic":
			m.Vermagic = strings.TrimSpace(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					m.Depends = append(m.Depends, Normalize(d))
				}
			}
		case "softdep":
			pre, post, err := parseSoftdep(v)
			if err != nil {
				return Modinfo{}, err
			}
			m.SoftPre = append(m.SoftPre, pre...)
			m.SoftPost = append(m.SoftPost, post...)
		}
	}
	if m.Name == "" {
		return Modinfo{}, errors.New("modinfo has no name=")
	}
	return m, nil
}

// parseSoftdep reads "pre: a b post: c" (modprobe.d syntax).
func parseSoftdep(v string) (pre, post []string, err error) {
	var into *[]string
	for _, f := range strings.Fields(v) {
		switch f {
		case "pre:":
			into = &pre
		case "post:":
			into = &post
		default:
			if into == nil {
				return nil, nil, fmt.Errorf("softdep %q: module before pre: or post:", v)
			}
			*into = append(*into, Normalize(f))
		}
	}
	return pre, post, nil
}

// ReadModinfo reads the .modinfo section of the module file at path.
// Modules compressed by the kernel's build (.ko.xz, .ko.zst) are refused:
// Debian ships them uncompressed, and the kernel would need them
// decompressed in the ramdisk anyway.
func ReadModinfo(path string) (Modinfo, error) {
	f, err := elf.Open(path)
	if err != nil {
		return Modinfo{}, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return Modinfo{}, fmt.Errorf("module %s: no .modinfo section", path)
	}
	data, err := s.Data()
	if err != nil {
		return Modinfo{}, fmt.Errorf("module %s: %w", path, err)
	}
	m, err := ParseModinfo(data)
	if err != nil {
		return Modinfo{}, fmt.Errorf("module %s: %w", path, err)
	}
	m.Path = path
	return m, nil
}

// Request is one module the ramdisk must carry, from the module list.
type Request struct {
	Name     string
	Optional bool // "name?": fine when this kernel has no such module
}

// ParseList reads a module list: one name per line, '#' comments, a
// trailing '?' marks a module the kernel may lack (or build in).
func ParseList(r io.Reader) ([]Request, error) {
	var out []Request
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		req := Request{Name: line}
		if strings.HasSuffix(line, "?") {
			req = Request{Name: strings.TrimSuffix(line, "?"), Optional: true}
		}
		if req.Name == "" || strings.ContainsAny(req.Name, " \t/") {
			return nil, fmt.Errorf("module list line %d: %q is not a module name", n, line)
		}
		req.Name = Normalize(req.Name)
		out = append(out, req)
	}
	return out, sc.Err()
}

// Source finds modules by name.
type Source interface {
	// Module returns a module's info, ErrBuiltin when the kernel has it
	// built in, or ErrNoModule.
	Module(name string) (Modinfo, error)
}

var (
	ErrBuiltin  = errors.New("built into the kernel")
	ErrNoModule = errors.New("no such module in this kernel")
)

// Plan is the ordered set of modules to load.
type Plan struct {
	Load    []Modinfo // dependency order: each after everything it needs
	Builtin []string  // requested or needed, but built in
	Missing []string  // optional requests this kernel lacks
}

// Resolve orders reqs and everything they depend on so each module comes
// after its hard dependencies and its softdep pre modules, and before its
// softdep post modules. Soft dependencies the kernel lacks are skipped,
// as modprobe does; a missing required module or hard dependency is an
// error, as is a dependency cycle or a module built for another kernel
// (when vermagic is set).
func Resolve(src Source, reqs []Request, vermagic string) (Plan, error) {
	var p Plan
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(name string, required bool, chain []string) error
	visit = func(name string, required bool, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		case 2:
			return nil
		}
		m, err := src.Module(name)
		switch {
		case errors.Is(err, ErrBuiltin):
			state[name] = 2
			p.Builtin = append(p.Builtin, name)
			return nil
		case errors.Is(err, ErrNoModule) && !required:
			state[name] = 2
			p.Missing = append(p.Missing, name)
			return nil
		case err != nil:
			if len(chain) > 0 {
				return fmt.Errorf("module %s (needed by %s): %w", name, strings.Join(chain, " -> "), err)
			}
			return fmt.Errorf("module %s: %w", name, err)
		}
		if vermagic != "" && firstField(m.Vermagic) != firstField(vermagic) {
			return fmt.Errorf("module %s is built for kernel %q, not %q", name, firstField(m.Vermagic), firstField(vermagic))
		}
		state[name] = 1
		chain = append(chain, name)
		for _, d := range m.Depends {
			if err := visit(d, true, chain); err != nil {
				return err
			}
		}
		for _, d := range m.SoftPre {
			if err := visit(d, false, chain); err != nil {
				return err
			}
		}
		state[name] = 2
		p.Load = append(p.Load, m)
		for _, d := range m.SoftPost {
			if err := visit(d, false, chain[:len(chain)-1]); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range reqs {
		if err := visit(r.Name, !r.Optional, nil); err != nil {
			return Plan{}, err
		}
	}
	return p, nil
}

func firstField(s string) string {
	f, _, _ := strings.Cut(strings.TrimSpace(s), " ")
	return f
}

// Tree is a kernel's module directory, /lib/modules/<version>: its .ko
// files indexed by module name, and modules.builtin.
type Tree struct {
	Dir     string
	files   map[string]string // normalized name -> path
	builtin map[string]bool
}

// OpenTree indexes a module directory. It needs no modules.dep: Debian's
// packages do not ship one (depmod writes it at install time).
func OpenTree(dir string) (*Tree, error) {
	t := &Tree{Dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name := d.Name(); !d.IsDir() && strings.HasSuffix(name, ".ko") {
			t.files[Normalize(name)] = path
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel modules in %s: %w", dir, err)
	}
	if len(t.files) == 0 {
		return nil, fmt.Errorf("kernel modules in %s: no .ko files (compressed modules are not supported)", dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			t.builtin[Normalize(filepath.Base(l))] = true
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return t, nil
}

// Module implements Source.
func (t *Tree) Module(name string) (Modinfo, error) {
	if p, ok := t.files[name]; ok {
		return ReadModinfo(p)
	}
	if t.builtin[name] {
		return Modinfo{}, ErrBuiltin
	}
	return Modinfo{}, ErrNoModule
}

// Version is the kernel release the tree belongs to: its directory name.
func (t *Tree) Version() string { return filepath.Base(filepath.Clean(t.Dir)) }

// Names lists the indexed modules (for error messages and tests).
func (t *Tree) Names() []string {
	out := make([]string, 0, len(t.files))
	for n := range t.files {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
