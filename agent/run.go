package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/ingot-dev/ingot/agent/cmdapi"
	"github.com/ingot-dev/ingot/agent/extension"
	"github.com/ingot-dev/ingot/agent/inspect"
	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/apiclient"
	"github.com/ingot-dev/ingot/shared/buildinfo"
)

// Config is the agent's configuration: the kernel command line's IPA
// parameters, overridden by flags. Zero values take IPA's defaults.
type Config struct {
	// APIURLs are Ironic's (or Ingot's conductor's) API endpoints.
	APIURLs []string
	// BootIF is the MAC the machine PXE-booted from; sent first.
	BootIF string
	// Interface pins the NIC to bring up by name (ingot.interface).
	Interface string
	// NodeUUID, when known, is sent with the lookup (it takes precedence
	// over MACs on the server).
	NodeUUID string
	// Insecure skips TLS verification towards the API.
	Insecure bool

	LookupTimeout  time.Duration // 600 s
	LookupInterval time.Duration // 1 s
	// ConflictPauses override IPA's 5/10/30 s waits after 409s (tests).
	ConflictPauses []time.Duration

	// ListenHost and ListenPort are where the command API listens (all
	// addresses, 9999). Port 0 picks a free port and advertises it.
	ListenHost string
	ListenPort int
	// AdvertiseHost, AdvertisePort and AdvertiseProtocol make the
	// callback_url; the host defaults to the address that routes to the
	// API, the port to the one listened on, the protocol to https with
	// auto TLS and http otherwise.
	AdvertiseHost     string
	AdvertisePort     int
	AdvertiseProtocol string

	// AgentToken is a pre-generated token (ipa-agent-token), used when
	// lookup masks the one it handed out.
	AgentToken string
	// HTTPRequestTimeout bounds each request to the API (30 s).
	HTTPRequestTimeout time.Duration
	// IronicAPIVersion overrides version discovery.
	IronicAPIVersion string
	GlobalRequestID  string
	// TLS is "auto" (self-signed certificate, sent as agent_verify_ca) or
	// "off".
	TLS string
	// RequireTokenOnGet makes GET /v1/commands demand the token too.
	RequireTokenOnGet bool

	// MinForcedHeartbeat coalesces forced heartbeats (5 s).
	MinForcedHeartbeat time.Duration
	// NICWait bounds the wait for a network interface with a MAC (60 s).
	NICWait time.Duration
	// RetryPause is the wait before starting over after a lookup that
	// timed out or a configuration the agent cannot work with (30 s).
	RetryPause time.Duration

	// InspectionCallbackURL, when set, receives the inventory once,
	// before the first lookup (ipa-inspection-callback-url).
	InspectionCallbackURL string
	// InspectionPauses override IPA's waits between inspection posts
	// (tests).
	InspectionPauses []time.Duration
}

func (c *Config) defaults() {
	if c.LookupTimeout <= 0 {
		c.LookupTimeout = DefaultLookupTimeout
	}
	if c.LookupInterval <= 0 {
		c.LookupInterval = DefaultLookupInterval
	}
	if c.ListenPort < 0 {
		c.ListenPort = api.AgentPort
	}
	if c.HTTPRequestTimeout <= 0 {
		c.HTTPRequestTimeout = 30 * time.Second
	}
	if c.MinForcedHeartbeat <= 0 {
		c.MinForcedHeartbeat = DefaultMinForcedInterval
	}
	if c.NICWait <= 0 {
		c.NICWait = 60 * time.Second
	}
	if c.RetryPause <= 0 {
		c.RetryPause = 30 * time.Second
	}
	if c.TLS == "" {
		c.TLS = "off"
	}
}

// Interfaces lists the machine's network interfaces (agent/inspect).
type Interfaces interface {
	Interfaces(ctx context.Context) ([]api.Interface, error)
}

// Network brings up the link the agent talks through: DHCP on the BOOTIF
// NIC, or on the one ingot.interface names (agent/netsetup, with the
// initramfs).
type Network interface {
	Up(ctx context.Context, bootIF, iface string) error
}

// Deps are what the agent runs on.
type Deps struct {
	// Network, when set, is brought up before every lookup; nil means the
	// network is already configured (tests, or an init that did it).
	Network Network
	// NICs provides the MACs sent with the lookup.
	NICs Interfaces
	// Extension configures the commands; Run fills MD5Allowed and
	// LookupNode from the lookup answer.
	Extension extension.Options
	// Log is the agent's logger.
	Log *slog.Logger
}

// ErrNoToken means lookup handed out no usable agent token: it was
// already given to an earlier agent ("******") and none was
// pre-generated, or the API is older than 1.62.
var ErrNoToken = errors.New("no agent token: lookup returned none (an earlier agent received it) and ipa-agent-token is not set")

// ErrNoAPIURL means there is nowhere to look up.
var ErrNoAPIURL = errors.New("no API URL: set ipa-api-url on the kernel command line")

// Run is the agent: it returns only when ctx ends (shutdown, or a power
// off through a test power seam), with ctx's cause. Everything else is
// logged and retried after cfg.RetryPause.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	cfg.defaults()
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	inspected := false
	for {
		err := runOnce(ctx, cfg, deps, log, &inspected)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		log.Error("the agent cannot go on; starting over", "err", err, "wait", cfg.RetryPause)
		t := time.NewTimer(cfg.RetryPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

// session is what one successful lookup gives the agent.
type session struct {
	mu    sync.Mutex
	node  map[string]any
	md5   bool
	token string
}

func (s *session) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

func runOnce(ctx context.Context, cfg Config, deps Deps, log *slog.Logger, inspected *bool) error {
	if len(cfg.APIURLs) == 0 {
		return ErrNoAPIURL
	}
	if deps.Network != nil {
		if err := deps.Network.Up(ctx, cfg.BootIF, cfg.Interface); err != nil {
			return fmt.Errorf("bring the network up: %w", err)
		}
	}
	macs := waitForMACs(ctx, cfg, deps.NICs, log)
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	hc := apiHTTPClient(cfg)
	defer hc.CloseIdleConnections()
	if cfg.InspectionCallbackURL != "" && !*inspected {
		// Inspection comes first, once: the answer may name the node.
		*inspected = true
		log.Info("posting inspection data", "url", cfg.InspectionCallbackURL)
		uuid, err := postInspection(ctx, cfg.InspectionCallbackURL, hc, deps.Extension.Inventory, cfg.BootIF, cfg.InspectionPauses, log)
		switch {
		case err != nil:
			log.Error("inspection failed; looking up anyway", "err", err)
		case uuid != "" && cfg.NodeUUID == "":
			cfg.NodeUUID = uuid
			log.Info("inspection data accepted", "node", uuid)
		default:
			log.Info("inspection data accepted")
		}
	}
	log.Info("looking up the node", "api", cfg.APIURLs, "mac", macs, "node", cfg.NodeUUID)
	res, err := Lookup(ctx, LookupConfig{URLs: cfg.APIURLs, Timeout: cfg.LookupTimeout, Interval: cfg.LookupInterval,
		ConflictPauses: cfg.ConflictPauses, HTTPClient: hc, Version: cfg.IronicAPIVersion,
		GlobalRequestID: cfg.GlobalRequestID, Log: log.With("phase", "lookup")},
		apiclient.LookupQuery{Addresses: macs, NodeUUID: cfg.NodeUUID})
	if err != nil {
		return fmt.Errorf("look up the node: %w", err)
	}
	lr := res.Response
	token := ""
	if t := lr.Config.AgentToken; t != nil && *t != api.MaskedToken && len(*t) >= api.MinTokenLength {
		token = *t
	} else if cfg.AgentToken != "" {
		token = cfg.AgentToken
	}
	if token == "" {
		return ErrNoToken
	}
	log = log.With("node", lr.Node.UUID)
	log.Info("node found", "heartbeat_timeout", lr.Config.HeartbeatTimeout)
	sess := &session{node: nodeMap(lr.Node), md5: lr.Config.AgentMD5ChecksumEnable, token: token}

	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.ListenPort)))
	if err != nil {
		return fmt.Errorf("listen for commands: %w", err)
	}
	defer ln.Close()
	port := cfg.AdvertisePort
	if port == 0 {
		port = ln.Addr().(*net.TCPAddr).Port
	}
	host := cfg.AdvertiseHost
	if host == "" {
		if host, err = routeSource(res.URL); err != nil {
			return fmt.Errorf("find the address to advertise: %w", err)
		}
	}
	proto := cfg.AdvertiseProtocol
	var tlsCfg *tls.Config
	verifyCA := ""
	if cfg.TLS == "auto" {
		cert, pemCert, err := SelfSignedCert(host, time.Now())
		if err != nil {
			return err
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: TLSMinVersion(lr.Config.TLSMinVersion)}
		verifyCA, proto = pemCert, "https"
	}
	if proto == "" {
		proto = "http"
	}
	callback := proto + "://" + net.JoinHostPort(host, strconv.Itoa(port))

	opts := deps.Extension
	opts.MD5Allowed = func() bool { sess.mu.Lock(); defer sess.mu.Unlock(); return sess.md5 }
	opts.LookupNode = func() map[string]any { sess.mu.Lock(); defer sess.mu.Unlock(); return sess.node }
	if opts.Log == nil {
		opts.Log = log
	}
	if opts.ISCSIHost == "" {
		opts.ISCSIHost = host // the conductor dials the host of the callback URL
	}
	ext := extension.New(opts)
	defer ext.Close()

	client := apiclient.New(res.URL, hc, apiclient.Options{UserAgent: buildinfo.UserAgent("deploy-agent"), GlobalRequestID: cfg.GlobalRequestID})
	hbReq := api.HeartbeatRequest{CallbackURL: callback, AgentToken: token, AgentVersion: buildinfo.Version(), AgentVerifyCA: verifyCA}
	hb := NewHeartbeater(func(ctx context.Context) error {
		return client.Heartbeat(ctx, res.HeartbeatVersion, lr.Node.UUID, hbReq)
	}, time.Duration(lr.Config.HeartbeatTimeout)*time.Second, cfg.MinForcedHeartbeat, log.With("phase", "heartbeat"))

	srv := cmdapi.New(ext.Registry(), cmdapi.Options{Token: sess.Token, RequireTokenOnGet: cfg.RequireTokenOnGet,
		OnAsyncDone: hb.Force, Version: buildinfo.Version(), Log: log.With("phase", "commands")})
	log.Info("command API listening", "listen", ln.Addr().String(), "callback_url", callback, "tls", cfg.TLS)

	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var srvErr error
	wg.Go(func() {
		srvErr = srv.Serve(rctx, ln, tlsCfg)
		cancel(srvErr)
	})
	hbErr := hb.Run(rctx)
	cancel(hbErr)
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if srvErr != nil {
		return srvErr
	}
	return hbErr
}

// waitForMACs waits up to cfg.NICWait (polling every 5 s) for network
// interfaces with MACs, as IPA does; a BOOTIF or node UUID is enough to
// go on without.
func waitForMACs(ctx context.Context, cfg Config, nics Interfaces, log *slog.Logger) []string {
	deadline := time.Now().Add(cfg.NICWait)
	for {
		var ifaces []api.Interface
		if nics != nil {
			var err error
			if ifaces, err = nics.Interfaces(ctx); err != nil {
				log.Warn("cannot list network interfaces", "err", err)
			}
		}
		macs := inspect.LookupMACs(ifaces, cfg.BootIF)
		if len(inspect.LookupMACs(ifaces, "")) > 0 || cfg.NodeUUID != "" || time.Now().After(deadline) {
			return macs
		}
		log.Info("waiting for a network interface with a MAC")
		t := time.NewTimer(min(5*time.Second, time.Until(deadline)+time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return macs
		case <-t.C:
		}
	}
}

// apiHTTPClient is the client for lookup and heartbeats: a per-request
// timeout and, with ipa-insecure, no certificate verification.
func apiHTTPClient(cfg Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.Insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // ipa-insecure asks for it
	}
	return &http.Client{Transport: tr, Timeout: cfg.HTTPRequestTimeout}
}

// routeSource returns the local address that routes to the API's host,
// found without sending anything (a connected UDP socket).
func routeSource(apiURL string) (string, error) {
	u, err := url.Parse(apiURL)
	if err != nil {
		return "", err
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	conn, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// nodeMap turns the looked-up node into the generic map step parameters
// use (properties, instance_info, driver_internal_info).
func nodeMap(n api.LookupNode) map[string]any {
	return map[string]any{"uuid": n.UUID, "properties": n.Properties, "instance_info": n.InstanceInfo,
		"driver_internal_info": n.DriverInternalInfo}
}
