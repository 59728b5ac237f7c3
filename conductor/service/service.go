// Package service assembles a conductor from its configuration: it binds
// the listeners, opens and migrates the store, builds the driver table, the
// engine and the API server, and runs them until the context ends. The
// conductor command is a thin main over it; end-to-end tests start it
// in-process.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ingot-dev/ingot/conductor/agentclient"
	"github.com/ingot-dev/ingot/conductor/config"
	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/httpapi"
	"github.com/ingot-dev/ingot/conductor/imagecache"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power"
	"github.com/ingot-dev/ingot/conductor/power/ipmi"
	"github.com/ingot-dev/ingot/conductor/store"
	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/buildinfo"
	"github.com/ingot-dev/ingot/shared/imagestream"
)

// Service is a configured conductor, ready to Run.
type Service struct {
	cfg   *config.Config
	log   *slog.Logger
	db    *store.DB
	eng   *engine.Engine
	api   *httpapi.Server
	apiLn net.Listener
	boot  *bootServers // nil when network boot is off
}

// Drivers adapts the power package's driver table to what the engine
// consumes.
type Drivers struct{ *power.Drivers }

// Power returns n's power controller.
func (d Drivers) Power(n *node.Node) (engine.Power, error) {
	c, err := d.Drivers.Power(n)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Management returns n's boot device controller.
func (d Drivers) Management(n *node.Node) (engine.Management, error) {
	c, err := d.Drivers.Management(n)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Agent adapts the agent client to what the engine consumes.
type Agent struct{ C *agentclient.Client }

// Execute runs a command on an agent.
func (a Agent) Execute(ctx context.Context, ep engine.AgentEndpoint, name string, params any, wait bool) (*api.CommandResult, error) {
	res, err := a.C.Execute(ctx, agentclient.Endpoint(ep), name, params, wait)
	return res, agentErr(err)
}

// Commands lists an agent's commands.
func (a Agent) Commands(ctx context.Context, ep engine.AgentEndpoint) ([]api.CommandResult, error) {
	res, err := a.C.Commands(ctx, agentclient.Endpoint(ep))
	return res, agentErr(err)
}

func agentErr(err error) error {
	switch {
	case errors.Is(err, agentclient.ErrBusy):
		return fmt.Errorf("%w: %v", engine.ErrAgentBusy, err)
	case errors.Is(err, agentclient.ErrUnreachable):
		return fmt.Errorf("%w: %v", engine.ErrAgentUnreachable, err)
	}
	return err
}

// Download is the image cache's downloader: the shared streamer, writing
// the image as served (still compressed) and verifying its checksum.
func Download(log *slog.Logger) imagecache.Downloader {
	return func(ctx context.Context, info api.ImageInfo, dst *os.File) (string, string, error) {
		res, err := imagestream.Stream(ctx, info, dst, imagestream.Options{NoDecompress: true, Log: log})
		return res.Algo, res.Digest, err
	}
}

// DriverTable returns the power and management drivers this conductor
// enables, by interface name; "ipmitool" talks to BMCs with ipmiOpts and
// logs to log.
func DriverTable(log *slog.Logger, ipmiOpts ipmi.Options) *power.Drivers {
	ipmiDrv := ipmi.New(log, ipmiOpts)
	return &power.Drivers{
		PowerDrivers: map[string]power.PowerDriver{
			"fake":     {New: power.NewFake},
			"ipmitool": ipmiDrv.PowerDriver(),
		},
		ManagementDrivers: map[string]power.ManagementDriver{
			"fake":     {New: power.NewNoopManagement},
			"noop":     {New: power.NewNoopManagement},
			"ipmitool": ipmiDrv.ManagementDriver(),
		},
	}
}

// New validates cfg, binds the API listener and opens the store. Nothing
// is served until Run.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	apiLn, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return nil, fmt.Errorf("listen for the API: %w", err)
	}
	db, err := store.Open(ctx, cfg.Database, store.Options{})
	if err != nil {
		apiLn.Close()
		return nil, err
	}
	var boot *bootServers
	var booter engine.Booter
	if cfg.Boot.Enabled() {
		if boot, err = newBoot(ctx, cfg, log, db); err != nil {
			apiLn.Close()
			db.Close()
			return nil, err
		}
		booter = boot.booter
	}
	suites, _ := cfg.IPMICipherSuiteList() // checked by Validate
	drivers := DriverTable(log.With("component", "ipmi"), ipmi.Options{CipherSuites: suites})
	automated := cfg.AutomatedClean
	powerSync := cfg.PowerSyncInterval
	if powerSync == 0 {
		powerSync = -1 // disabled
	}
	progress := cfg.DeployProgressInterval
	if progress == 0 {
		progress = -1 // disabled
	}
	imageBase := cfg.PublicURL
	if imageBase == "" {
		imageBase = "http://" + apiLn.Addr().String()
	}
	images, err := imagecache.New(imagecache.Options{Dir: cfg.ImageCacheDir, MaxBytes: cfg.ImageCacheSize,
		BaseURL: imageBase, Download: Download(log.With("component", "imagecache")), Log: log.With("component", "imagecache")})
	if err != nil {
		apiLn.Close()
		db.Close()
		if boot != nil {
			boot.close()
		}
		return nil, err
	}
	agents := Agent{agentclient.New(agentclient.Options{Timeout: cfg.AgentCommandTimeout, Log: log.With("component", "agentclient")})}
	eng := engine.New(db, Drivers{drivers}, log.With("component", "engine"), engine.Options{
		Conductor:                  cfg.ConductorName,
		AutomatedClean:             &automated,
		PowerStateTimeout:          cfg.PowerStateTimeout,
		ShutdownTimeout:            cfg.ShutdownTimeout,
		Agent:                      agents,
		HeartbeatTimeout:           cfg.HeartbeatTimeout,
		DeployCallbackTimeout:      cfg.DeployCallbackTimeout,
		CleanCallbackTimeout:       cfg.CleanCallbackTimeout,
		CheckInterval:              cfg.CheckInterval,
		ProgressInterval:           progress,
		PowerSyncInterval:          powerSync,
		PostDeployPowerOffRetries:  cfg.PostDeployPowerOffRetries,
		PostDeployPowerOffInterval: cfg.PostDeployPowerOffInterval,
		CleanStepPriorities: map[string]int{"erase_devices": cfg.EraseDevicesPriority,
			"erase_devices_metadata": cfg.EraseDevicesMetadataPriority},
		MD5Allowed:          cfg.MD5Allowed,
		Images:              images,
		ImageDownloadSource: cfg.ImageDownloadSource,
		Booter:              booter,
		ISCSI:               engine.ISCSIOptions{PortalPort: cfg.ISCSIPortalPort, Verify: cfg.ISCSIVerify},
	})
	api := httpapi.New(eng, db, log.With("component", "api"), httpapi.Options{
		PublicURL: cfg.PublicURL,
		MaxLimit:  cfg.MaxLimit,
		Agent:     httpapi.AgentConfig{HeartbeatTimeout: int(cfg.HeartbeatTimeout.Seconds()), MD5Allowed: cfg.MD5Allowed},
		Images:    images.Handler(),
	})
	return &Service{cfg: cfg, log: log, db: db, eng: eng, api: api, apiLn: apiLn, boot: boot}, nil
}

// APIURL is the base URL the API listens on.
func (s *Service) APIURL() string { return "http://" + s.apiLn.Addr().String() }

// Engine returns the service's engine.
func (s *Service) Engine() *engine.Engine { return s.eng }

// BootURL is the boot HTTP server's base URL as it listens ("" when
// network boot is off).
func (s *Service) BootURL() string {
	if s.boot == nil {
		return ""
	}
	return "http://" + s.boot.httpLn.Addr().String()
}

// TFTPAddr is the TFTP server's address ("" when it is off).
func (s *Service) TFTPAddr() string {
	if s.boot == nil || s.boot.tftpConn == nil {
		return ""
	}
	return s.boot.tftpConn.LocalAddr().String()
}

// Store returns the service's store.
func (s *Service) Store() *store.DB { return s.db }

// Run serves until ctx ends, then shuts down gracefully and closes the
// store.
func (s *Service) Run(ctx context.Context) error {
	defer s.db.Close()
	s.log.Info("starting conductor", "version", buildinfo.Version(), "config", s.cfg)
	srv := &http.Server{Handler: s.api, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	if err := s.eng.Recover(ctx); err != nil {
		return err
	}
	var hwNames []string
	for _, h := range node.HardwareTypes() {
		hwNames = append(hwNames, h.Name)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.eng.Run(gctx) })
	g.Go(func() error {
		return s.db.KeepAlive(gctx, node.Conductor{Hostname: s.cfg.ConductorName, ConductorGroup: s.cfg.ConductorGroup,
			Drivers: hwNames}, s.cfg.ConductorHeartbeat)
	})
	g.Go(func() error {
		s.log.Info("API listening", "addr", s.apiLn.Addr().String())
		if err := srv.Serve(s.apiLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve API: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), s.cfg.ShutdownTimeout)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	if s.boot != nil {
		s.boot.run(gctx, g)
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	s.log.Info("conductor stopped")
	return err
}
