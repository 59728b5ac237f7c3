// Command demo is `make demo`: it provisions a QEMU virtual node end to
// end with Ingot (see package demo). It needs root; the Makefile target
// installs the Debian packages and builds the conductor and the agent's
// ramdisk first.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ingot-dev/ingot/internal/demo"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demo.Options
	fs.StringVar(&o.Conductor, "conductor", "bin/conductor", "conductor binary")
	fs.StringVar(&o.Kernel, "kernel", "build/vmlinuz", "agent kernel (make initramfs)")
	fs.StringVar(&o.Ramdisk, "ramdisk", "build/initramfs.cpio.gz", "agent ramdisk (make initramfs)")
	fs.StringVar(&o.Firmware, "firmware", "bios", "virtual node firmware: bios or uefi")
	fs.StringVar(&o.Accel, "accel", "tcg", "QEMU accelerator: tcg, or kvm on real hardware")
	fs.StringVar(&o.Dir, "dir", "", "work directory (default: a temporary one)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work directory (logs, disk, console)")
	verbose := fs.Bool("v", false, "log what the rig does")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "demo: needs root (network namespace, tap device, DHCP port): run it with sudo")
		return 1
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	o.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	o.Out = stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C ends the process at once
	}()
	sum, err := demo.Run(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(demo.ErrInterrupted, err)
		}
		fmt.Fprintf(stderr, "\ndemo failed: %v\n", err)
		return 1
	}
	sum.Print(stdout)
	return 0
}
