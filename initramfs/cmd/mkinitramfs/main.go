// Command mkinitramfs builds the deploy agent's ramdisk (see package
// initramfs). `make initramfs` runs it against Debian's kernel; for
// another kernel:
//
//	go run ./initramfs/cmd/mkinitramfs -kernel /boot/vmlinuz-$(uname -r) -o build/initramfs.cpio.gz
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ingot-dev/ingot/initramfs"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mkinitramfs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kernel  = fs.String("kernel", "", "the kernel image, <root>/boot/vmlinuz-<release>: its modules are in <root>/lib/modules/<release>")
		modules = fs.String("kernel-modules", "", "the kernel's module directory, /lib/modules/<release> (overrides -kernel; neither: no modules)")
		lists   = fs.String("modules", "initramfs/modules.txt", "module lists, comma-separated")
		out     = fs.String("o", "build/initramfs.cpio.gz", "output archive")
		cmds    = fs.String("commands", "", "extra u-root commands, comma-separated import paths (debug shells)")
		root    = fs.String("C", ".", "the Go module's directory")
		force   = fs.Bool("force", false, "rebuild even when the archive is up to date")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *modules == "" && *kernel != "" {
		dir, err := initramfs.ModulesDirFor(*kernel)
		if err != nil {
			log.Error("initramfs", "err", err)
			return 2
		}
		*modules = dir
	}
	o := initramfs.Options{ModuleRoot: *root, Modules: *modules, Out: *out, Reuse: !*force, Log: log}
	if *modules != "" {
		for _, name := range strings.Split(*lists, ",") {
			reqs, err := readList(name)
			if err != nil {
				log.Error("module list", "err", err)
				return 1
			}
			o.List = append(o.List, reqs...)
		}
	}
	for _, c := range strings.Split(*cmds, ",") {
		if c = strings.TrimSpace(c); c != "" {
			o.Commands = append(o.Commands, c)
		}
	}
	res, err := initramfs.Build(ctx, o)
	if err != nil {
		log.Error("initramfs", "err", err)
		return 1
	}
	state := "built"
	if res.Reused {
		state = "up to date"
	}
	fmt.Fprintf(stdout, "%s %s: %.1f MiB gzip (%.1f MiB cpio), %d modules for %s, sha256 %s\n",
		res.Path, state, mib(res.Compressed), mib(res.Uncompressed), len(res.Plan.Load), res.Kernel, res.SHA256)
	return 0
}

func readList(name string) ([]initramfs.Request, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	reqs, err := initramfs.ParseList(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return reqs, nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
