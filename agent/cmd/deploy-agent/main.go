// Command deploy-agent is Ingot's deploy agent, a drop-in for
// ironic-python-agent. It runs as the initramfs's uinit, reading IPA's
// kernel parameters (ipa-api-url, BOOTIF, ipa-insecure, ...) and Ingot's
// (ingot.tls, ingot.disk, ...) from /proc/cmdline; it also runs as a plain
// process for tests, where flags override the command line:
//
//	deploy-agent --cmdline= --api-url http://127.0.0.1:6385 --bootif 52:54:00:12:34:56 \
//	    --listen-host 127.0.0.1 --listen-port 0 --disk /tmp/disk.img --power exit
//
// Outside a ramdisk it refuses to touch the machine's disks unless --disk
// names one or --host-disks is given. With --power exit, power off and
// reboot end the process (exit status 0) instead of the machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/ingot-dev/ingot/agent"
	"github.com/ingot-dev/ingot/agent/efiboot"
	"github.com/ingot-dev/ingot/agent/extension"
	"github.com/ingot-dev/ingot/agent/inspect"
	"github.com/ingot-dev/ingot/agent/netsetup"
	"github.com/ingot-dev/ingot/shared/bootparam"
	"github.com/ingot-dev/ingot/shared/buildinfo"
	"github.com/ingot-dev/ingot/shared/imagestream"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// settings are the kernel command line's parameters with the flags
// applied, plus the flags that have no kernel parameter.
type settings struct {
	p         bootparam.Params
	paramErr  error // invalid kernel parameters: logged, not fatal
	nodeUUID  string
	hostDisks bool
	power     string
	efivars   string
	forced    time.Duration
	retry     time.Duration
	logFormat string
	network   string // auto, dhcp or none
}

// parseArgs reads the kernel command line named by --cmdline and lets the
// flags that were given override it. Invalid flags are errors (exit 2);
// invalid kernel parameters only warnings, since the agent must run.
func parseArgs(args []string, stderr io.Writer) (settings, error) {
	fs := flag.NewFlagSet("deploy-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cmdline    = fs.String("cmdline", "/proc/cmdline", "kernel command line to read IPA and ingot.* parameters from (empty: none)")
		apiURL     = fs.String("api-url", "", "Ironic API URL(s), comma-separated (ipa-api-url)")
		bootIF     = fs.String("bootif", "", "MAC of the NIC the machine booted from (BOOTIF)")
		nodeUUID   = fs.String("node-uuid", "", "look the node up by UUID too")
		insecure   = fs.Bool("insecure", false, "do not verify TLS certificates of the API and image servers (ipa-insecure)")
		debug      = fs.Bool("debug", false, "debug logging (ipa-debug)")
		lookupTO   = fs.Duration("lookup-timeout", 0, "total lookup budget (ipa-lookup-timeout, 600s)")
		lookupInt  = fs.Duration("lookup-interval", 0, "first lookup backoff (ipa-lookup-interval, 1s)")
		listenHost = fs.String("listen-host", "", "command API address (ipa-listen-host, all)")
		listenPort = fs.Int("listen-port", 0, "command API port (ipa-listen-port, 9999; 0 with this flag: any free port)")
		advHost    = fs.String("advertise-host", "", "host in the callback URL (ipa-advertise-host)")
		advPort    = fs.Int("advertise-port", 0, "port in the callback URL (ipa-advertise-port)")
		iface      = fs.String("interface", "", "NIC to bring up (ingot.interface)")
		tlsMode    = fs.String("tls", "", "command API TLS: auto or off (ingot.tls)")
		disk       = fs.String("disk", "", "the only disk: a block device or a file standing in for one (ingot.disk)")
		hostDisks  = fs.Bool("host-disks", false, "allow touching this machine's disks outside a ramdisk")
		power      = fs.String("power", "system", "power seam: system (really power off/reboot) or exit (end the process)")
		efivars    = fs.String("efivars", "", "efivarfs directory for UEFI boot entries (/sys/firmware/efi/efivars)")
		forced     = fs.Duration("min-forced-heartbeat", 0, "least time between a heartbeat and a forced one (5s)")
		retryPause = fs.Duration("retry-pause", 0, "wait before starting over after a failed lookup (30s)")
		logFormat  = fs.String("log-format", "text", "log format: text or json")
		network    = fs.String("network", "auto", "bring the boot NIC up by DHCP: dhcp, none, or auto (dhcp inside a ramdisk)")
	)
	if err := fs.Parse(args); err != nil {
		return settings{}, err
	}
	if fs.NArg() > 0 {
		return settings{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	switch *network {
	case "auto", "dhcp", "none":
	default:
		return settings{}, fmt.Errorf("--network %q: want auto, dhcp or none", *network)
	}
	st := settings{nodeUUID: *nodeUUID, hostDisks: *hostDisks, power: *power, efivars: *efivars,
		forced: *forced, retry: *retryPause, logFormat: *logFormat, network: *network}
	if *cmdline != "" {
		b, err := os.ReadFile(*cmdline)
		if err != nil {
			st.paramErr = fmt.Errorf("read kernel command line: %w", err)
		} else {
			st.p, st.paramErr = bootparam.Parse(string(b))
		}
	}
	p := &st.p
	if set["api-url"] {
		// The kernel parameter's own validation applies to the flag too.
		q, err := bootparam.Parse("ipa-api-url=" + *apiURL)
		if err != nil || len(q.APIURLs) == 0 {
			return settings{}, fmt.Errorf("--api-url %q: want http(s)://host[:port], comma-separated", *apiURL)
		}
		p.APIURLs = q.APIURLs
	}
	if set["bootif"] {
		mac, err := bootparam.ParseBootIF(*bootIF)
		if err != nil {
			return settings{}, fmt.Errorf("--bootif %q: %v", *bootIF, err)
		}
		p.BootIF = mac
	}
	for name, apply := range map[string]func(){
		"insecure":        func() { p.Insecure = *insecure },
		"debug":           func() { p.Debug = *debug },
		"lookup-timeout":  func() { p.LookupTimeout = *lookupTO },
		"lookup-interval": func() { p.LookupInterval = *lookupInt },
		"listen-host":     func() { p.ListenHost = *listenHost },
		"advertise-host":  func() { p.AdvertiseHost = *advHost },
		"advertise-port":  func() { p.AdvertisePort = *advPort },
		"interface":       func() { p.Interface = *iface },
		"tls":             func() { p.TLS = *tlsMode },
		"disk":            func() { p.Disk = *disk },
	} {
		if set[name] {
			apply()
		}
	}
	switch {
	case st.power != "system" && st.power != "exit":
		return settings{}, fmt.Errorf("--power %q: want system or exit", st.power)
	case p.TLS != "" && p.TLS != "auto" && p.TLS != "off":
		return settings{}, fmt.Errorf("--tls %q: want auto or off", p.TLS)
	case st.logFormat != "text" && st.logFormat != "json":
		return settings{}, fmt.Errorf("--log-format %q: want text or json", st.logFormat)
	case *listenPort < 0 || *listenPort > 65535 || *advPort < 0 || *advPort > 65535:
		return settings{}, fmt.Errorf("ports must be 0-65535")
	}
	anyPort := set["listen-port"] && *listenPort == 0
	if set["listen-port"] {
		p.ListenPort = *listenPort
	}
	*p = p.WithDefaults()
	if anyPort {
		p.ListenPort = 0
		if !set["advertise-port"] {
			p.AdvertisePort = 0
		}
	}
	return st, nil
}

func run(args []string, stderr io.Writer) int {
	st, err := parseArgs(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "deploy-agent: %v\n", err)
		}
		return 2
	}
	p := st.p
	paramErr := st.paramErr

	logBuf := agent.NewLogBuffer(4 << 20)
	level := slog.LevelInfo
	if p.Debug {
		level = slog.LevelDebug
	}
	out := io.MultiWriter(stderr, logBuf)
	var h slog.Handler = slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})
	if st.logFormat == "json" {
		h = slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(h)
	log.Info("deploy agent starting", "version", buildinfo.Version(), "pid", os.Getpid())
	if paramErr != nil {
		log.Warn("kernel command line has invalid parameters; they are ignored", "err", paramErr)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var pw extension.Power = agent.SystemPower{}
	if st.power == "exit" {
		pw = agent.ProcessPower{Stop: cancel}
	}
	ins := inspect.New(inspect.Options{BootIF: p.BootIF, Log: log.With("phase", "inspect"), BMC: bmcReader()})
	ext := extension.Options{
		Disks: ins, Disk: p.Disk, HostDisks: st.hostDisks || agent.InRamdisk(),
		ImageOptions: imagestream.Options{Insecure: p.Insecure, Retries: p.ImageDownloadRetries,
			RetryInterval: p.ImageDownloadRetryInterval, StallTimeout: p.ImageDownloadConnectionTimeout},
		Power: pw, SyncFS: agent.SyncFS, EFIVars: st.efivars, Inventory: ins.Inventory,
		Logs: extension.LogSources{Root: "/", AgentLog: logBuf.Bytes, Dmesg: agent.Dmesg},
	}
	cfg := agent.Config{
		APIURLs: p.APIURLs, BootIF: p.BootIF, Interface: p.Interface, NodeUUID: st.nodeUUID, Insecure: p.Insecure,
		LookupTimeout: p.LookupTimeout, LookupInterval: p.LookupInterval,
		ListenHost: p.ListenHost, ListenPort: p.ListenPort,
		AdvertiseHost: p.AdvertiseHost, AdvertisePort: p.AdvertisePort, AdvertiseProtocol: p.AdvertiseProtocol,
		AgentToken: p.AgentToken, HTTPRequestTimeout: p.HTTPRequestTimeout, IronicAPIVersion: p.IronicAPIVersion,
		GlobalRequestID: p.GlobalRequestID, InspectionCallbackURL: p.InspectionCallbackURL, TLS: p.TLS, MinForcedHeartbeat: st.forced, RetryPause: st.retry,
	}
	deps := agent.Deps{NICs: ins, Extension: ext, Log: log}
	if agent.InRamdisk() && st.efivars == "" {
		if ok, err := agent.MountEFIVars(efiboot.DefaultDir); err != nil {
			log.Warn("UEFI variables unavailable: install_bootloader cannot add boot entries", "err", err)
		} else if ok {
			log.Info("UEFI variables mounted", "dir", efiboot.DefaultDir)
		}
	}
	if st.network == "dhcp" || (st.network == "auto" && agent.InRamdisk()) {
		deps.Network = &netsetup.DHCP{Log: log.With("phase", "network")}
	}
	err = agent.Run(ctx, cfg, deps)
	switch {
	case errors.Is(err, agent.ErrPoweredOff), errors.Is(err, agent.ErrRebooted):
		log.Info("agent stopped", "reason", err)
	case ctx.Err() != nil:
		log.Info("agent stopped by signal")
	default:
		log.Error("agent stopped", "err", err)
		return 1
	}
	return 0
}

// bmcReader reads the BMC address in band with ipmitool when the ramdisk
// has it.
func bmcReader() func(ctx context.Context) (inspect.BMC, error) {
	if _, err := exec.LookPath("ipmitool"); err != nil {
		return nil
	}
	return inspect.IPMIToolBMC(func(ctx context.Context, name string, args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return exec.CommandContext(ctx, name, args...).Output()
	})
}
