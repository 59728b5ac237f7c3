// Command conductor runs Ingot's conductor: the Ironic-compatible API, the
// provisioning engine and (as they are configured) the boot services.
//
// Usage:
//
//	conductor [flags]
//
// Every flag can also be set as an INGOT_* environment variable (--api-listen
// is INGOT_API_LISTEN) or as a key of the YAML file named by --config. With
// no configuration at all it serves the API on 127.0.0.1:6385 and keeps its
// state in an SQLite database under /var/lib/ingot (root) or
// ~/.local/state/ingot. SIGTERM or SIGINT shut it down gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ingot-dev/ingot/conductor/config"
	"github.com/ingot-dev/ingot/conductor/service"
)

func main() {
	cfg, err := config.Load(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "conductor:", err)
		os.Exit(2)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "conductor: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	log := newLogger(cfg)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("conductor failed", "err", err)
		os.Exit(1)
	}
}

func newLogger(cfg *config.Config) *slog.Logger {
	level, _ := config.ParseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	svc, err := service.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
