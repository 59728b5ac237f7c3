package initramfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// Options says what to build.
type Options struct {
	// ModuleRoot is the Go module's directory (where go.mod pins u-root).
	ModuleRoot string
	// Modules is the kernel's module directory, /lib/modules/<release>;
	// empty builds a ramdisk without modules (for a kernel with its
	// drivers built in).
	Modules string
	// List names the modules to carry (see ParseList).
	List []Request
	// Commands are extra u-root commands (import paths) for debugging,
	// e.g. github.com/u-root/u-root/cmds/core/gosh; each must be pinned
	// with a tool directive in go.mod.
	Commands []string
	// Out is the gzip-compressed cpio archive written.
	Out string
	// Go is the go command ("go").
	Go string
	// Reuse keeps an existing Out built from the same inputs (sources of
	// every package linked, go version, modules, options) instead of
	// rebuilding it.
	Reuse bool
	Log   *slog.Logger
}

// Result describes a built archive.
type Result struct {
	Path         string
	Compressed   int64
	Uncompressed int64
	SHA256       string
	Kernel       string // the release the modules belong to
	Plan         Plan
	Reused       bool // Out was already built from these inputs
}

// AgentPackage is the uinit: the deploy agent's main package.
const AgentPackage = "./agent/cmd/deploy-agent"

// initPackage is u-root's init, which mounts the pseudo file systems,
// loads /lib/modules/*.ko in name order and runs the uinit.
const initPackage = "github.com/u-root/u-root/cmds/core/init"

// ModuleFileName is where the i-th module to load goes in the archive:
// u-root's init loads /lib/modules/*.ko in glob order, so the index
// prefix is the dependency order.
func ModuleFileName(i int, name string) string {
	return fmt.Sprintf("lib/modules/%03d-%s.ko", i, name)
}

// Build resolves the modules, runs `go tool u-root` (pinned in go.mod),
// and writes the archive compressed with gzip -9 and no timestamps, so
// the same inputs give the same bytes.
func Build(ctx context.Context, o Options) (Result, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	goCmd := o.Go
	if goCmd == "" {
		goCmd = "go"
	}
	res := Result{Path: o.Out}
	args := []string{"tool", "u-root", "-uinitcmd=deploy-agent", "-defaultsh=", "-initcmd=init"}
	if o.Modules != "" {
		tree, err := OpenTree(o.Modules)
		if err != nil {
			return res, err
		}
		res.Kernel = tree.Version()
		plan, err := Resolve(tree, o.List, res.Kernel)
		if err != nil {
			return res, fmt.Errorf("kernel %s: %w", res.Kernel, err)
		}
		res.Plan = plan
		for i, m := range plan.Load {
			args = append(args, "-files", m.Path+":"+ModuleFileName(i, m.Name))
		}
		log.Info("kernel modules resolved", "kernel", res.Kernel, "load", len(plan.Load),
			"builtin", len(plan.Builtin), "absent", plan.Missing)
	}
	args = append(args, "-o", "OUT", initPackage)
	args = append(args, o.Commands...)
	args = append(args, AgentPackage)
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOAMD64=v1", "GOFLAGS=-mod=readonly")

	var key string
	if o.Reuse {
		var err error
		key, err = inputsKey(ctx, goCmd, o.ModuleRoot, env, args, res.Plan, append([]string{initPackage, AgentPackage}, o.Commands...))
		if err != nil {
			return res, err
		}
		if prev, err := os.ReadFile(o.Out + ".inputs"); err == nil && strings.TrimSpace(string(prev)) == key {
			if err := describe(o.Out, &res); err == nil {
				res.Reused = true
				log.Info("ramdisk is up to date", "out", o.Out)
				return res, nil
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return res, err
	}
	os.Remove(o.Out + ".inputs")
	tmp, err := os.MkdirTemp(filepath.Dir(o.Out), ".initramfs-*")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	cpio := filepath.Join(tmp, "initramfs.cpio")
	args[slices.Index(args, "OUT")] = cpio

	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = o.ModuleRoot
	// A static agent for any x86-64 machine: v1 is the baseline ISA.
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	log.Info("building the ramdisk with u-root", "out", o.Out)
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("go tool u-root: %w\n%s", err, lastLines(out.String(), 30))
	}
	if err := compress(cpio, o.Out, &res); err != nil {
		return res, err
	}
	if key != "" {
		if err := os.WriteFile(o.Out+".inputs", []byte(key+"\n"), 0o644); err != nil {
			return res, err
		}
	}
	return res, nil
}

// inputsKey digests everything the archive is made from: the go version,
// the u-root arguments, the content of every Go source and embedded file
// of every package linked into the commands, and the module files.
func inputsKey(ctx context.Context, goCmd, dir string, env, args []string, plan Plan, pkgs []string) (string, error) {
	h := sha256.New()
	ver, err := exec.CommandContext(ctx, goCmd, "version").Output()
	if err != nil {
		return "", fmt.Errorf("go version: %w", err)
	}
	fmt.Fprintf(h, "%s\n%q\n", ver, args)
	list := exec.CommandContext(ctx, goCmd, append([]string{"list", "-deps", "-f",
		`{{.Dir}}{{range .GoFiles}}|{{.}}{{end}}{{range .EmbedFiles}}|{{.}}{{end}}`}, pkgs...)...)
	list.Dir, list.Env = dir, env
	out, err := list.Output()
	if err != nil {
		return "", fmt.Errorf("go list: %w", err)
	}
	files := []string{filepath.Join(dir, "go.mod"), filepath.Join(dir, "go.sum")}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		for _, f := range parts[1:] {
			files = append(files, filepath.Join(parts[0], f))
		}
	}
	for _, m := range plan.Load {
		files = append(files, m.Path)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		s := sha256.Sum256(b)
		fmt.Fprintf(h, "%s %x\n", f, s)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// describe fills in the sizes and digest of an existing archive.
func describe(path string, res *Result) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	zr, err := gzip.NewReader(io.TeeReader(f, h))
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil {
		return err
	}
	if _, err := io.Copy(h, f); err != nil { // the gzip trailer's padding, if any
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	res.Uncompressed, res.Compressed, res.SHA256 = n, st.Size(), hex.EncodeToString(h.Sum(nil))
	return nil
}

// compress writes src gzipped into dst atomically and fills in the sizes
// and digest.
func compress(src, dst string, res *Result) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.CreateTemp(filepath.Dir(dst), ".initramfs-gz-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	zw, err := gzip.NewWriterLevel(io.MultiWriter(f, h), gzip.BestCompression)
	if err != nil {
		return err
	}
	// The header carries no name and no modification time (like gzip -n).
	n, err := io.Copy(zw, in)
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("compress the ramdisk: %w", err)
	}
	st, err := os.Stat(f.Name())
	if err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return err
	}
	res.Uncompressed, res.Compressed, res.SHA256 = n, st.Size(), hex.EncodeToString(h.Sum(nil))
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
