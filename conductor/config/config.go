// Package config defines the conductor's configuration: every setting with
// its documented default, loading from flags, INGOT_* environment variables
// and an optional YAML file (in that order of precedence), and validation
// that runs before anything binds a port.
//
// Secrets (the database password) never appear in String or log output.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffyaml"
)

// EnvPrefix prefixes every environment variable: --api-listen is
// INGOT_API_LISTEN.
const EnvPrefix = "INGOT"

// Config is the conductor's whole configuration.
type Config struct {
	// ConfigFile is the YAML file the rest was read from, if any.
	ConfigFile string

	// APIListen is the address of the Ironic-compatible API.
	APIListen string
	// PublicURL is the API's externally visible base URL, used in links
	// and handed to agents; derived from requests when empty.
	PublicURL string

	// StateDir holds the SQLite database and other conductor state.
	StateDir string
	// Database is a sqlite:// or postgres:// URL; empty means an SQLite
	// file in StateDir.
	Database string

	// ConductorName names this conductor in reservations and
	// /v1/conductors; the host name by default.
	ConductorName  string
	ConductorGroup string

	LogLevel  string
	LogFormat string

	// MaxLimit caps API page sizes.
	MaxLimit int
	// AutomatedClean runs cleaning on provide and undeploy.
	AutomatedClean bool
	// PowerStateTimeout bounds the wait for a power state change.
	PowerStateTimeout time.Duration
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration
	// ConductorHeartbeat is how often this conductor refreshes its
	// liveness record.
	ConductorHeartbeat time.Duration

	// Boot configures network boot (boot.go).
	Boot Boot
	// Agent-driven provisioning (Ironic's [api], [agent], [conductor] and
	// [deploy] options of the same names).
	HeartbeatTimeout             time.Duration
	DeployCallbackTimeout        time.Duration
	CleanCallbackTimeout         time.Duration
	CheckInterval                time.Duration
	DeployProgressInterval       time.Duration
	PowerSyncInterval            time.Duration
	AgentCommandTimeout          time.Duration
	PostDeployPowerOffRetries    int
	PostDeployPowerOffInterval   time.Duration
	EraseDevicesPriority         int
	EraseDevicesMetadataPriority int
	MD5Allowed                   bool

	// ImageCacheDir and ImageCacheSize bound the conductor's image cache;
	// ImageDownloadSource "local" makes agents fetch every image from it
	// instead of from the image's own URL ("http", Ironic's default).
	ImageCacheDir       string
	ImageCacheSize      int64
	ImageDownloadSource string
	// IPMICipherSuites lists the RMCP+ cipher suites the ipmitool driver
	// tries, in order, for nodes whose driver_info pins none ("17,3").
	IPMICipherSuites string
	// ISCSIPortalPort and ISCSIVerify configure the iscsi deploy
	// interface: the port agents export their disk on (3260) and how
	// much of a written image is read back (none, sampled, full); a
	// node's driver_info iscsi_portal_port and iscsi_verify override them.
	ISCSIPortalPort int
	ISCSIVerify     string
}

// DefaultStateDir is /var/lib/ingot for root and the XDG state directory
// otherwise.
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/ingot"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "ingot")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "ingot")
	}
	return ".ingot-state"
}

func defaultHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "ingot-conductor"
	}
	return h
}

// FlagSet returns a flag set bound to c, with every default filled in.
func (c *Config) FlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.ConfigFile, "config", "", "YAML configuration file (keys are the flag names)")
	fs.StringVar(&c.APIListen, "api-listen", "127.0.0.1:6385", "address of the Ironic-compatible API")
	fs.StringVar(&c.PublicURL, "public-url", "", "externally visible base URL of the API (default: derived from each request)")
	fs.StringVar(&c.StateDir, "state-dir", DefaultStateDir(), "directory for the SQLite database and conductor state")
	fs.StringVar(&c.Database, "database", "", "database URL, sqlite:///path or postgres://user:pass@host/db (default: sqlite in --state-dir)")
	fs.StringVar(&c.ConductorName, "conductor-name", defaultHostname(), "name of this conductor")
	fs.StringVar(&c.ConductorGroup, "conductor-group", "", "conductor group this conductor serves")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.IntVar(&c.MaxLimit, "max-limit", 1000, "largest page an API list returns")
	fs.BoolVar(&c.AutomatedClean, "automated-clean", true, "clean nodes on provide and undeploy")
	fs.DurationVar(&c.PowerStateTimeout, "power-state-timeout", 60*time.Second, "how long to wait for a power state change")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long graceful shutdown waits for running work")
	fs.DurationVar(&c.ConductorHeartbeat, "conductor-heartbeat", 10*time.Second, "how often this conductor refreshes its liveness record")
	c.Boot.flags(fs)
	fs.DurationVar(&c.HeartbeatTimeout, "heartbeat-timeout", 300*time.Second, "handed to agents: they heartbeat every 0.3-0.6 of it")
	fs.DurationVar(&c.DeployCallbackTimeout, "deploy-callback-timeout", 1800*time.Second, "fail a deployment whose agent is silent this long")
	fs.DurationVar(&c.CleanCallbackTimeout, "clean-callback-timeout", 1800*time.Second, "fail a cleaning whose agent is silent this long")
	fs.DurationVar(&c.CheckInterval, "check-interval", 60*time.Second, "how often callback timeouts are checked")
	fs.DurationVar(&c.DeployProgressInterval, "deploy-progress-interval", 2*time.Second, "how often agents writing an image are asked for progress (0 disables)")
	fs.DurationVar(&c.PowerSyncInterval, "power-sync-interval", 120*time.Second, "how often power states are compared with the BMCs (0 disables)")
	fs.DurationVar(&c.AgentCommandTimeout, "agent-command-timeout", 60*time.Second, "timeout of each request to an agent")
	fs.IntVar(&c.PostDeployPowerOffRetries, "post-deploy-power-off-retries", 30, "power state polls after the agent's power off before forcing it (Ironic: 6 polls 5 s apart; the same 30 s, noticed sooner)")
	fs.DurationVar(&c.PostDeployPowerOffInterval, "post-deploy-power-off-interval", time.Second, "interval of those polls")
	fs.IntVar(&c.EraseDevicesPriority, "erase-devices-priority", 0, "priority of the full-disk erase in automated cleaning (0 disables)")
	fs.IntVar(&c.EraseDevicesMetadataPriority, "erase-devices-metadata-priority", 99, "priority of the metadata erase in automated cleaning (0 disables)")
	fs.BoolVar(&c.MD5Allowed, "md5-allowed", false, "let agents verify images against MD5 checksums")
	fs.StringVar(&c.ImageCacheDir, "image-cache-dir", "", "image cache directory (default: <state-dir>/images)")
	fs.Int64Var(&c.ImageCacheSize, "image-cache-size", 20<<30, "largest size of the image cache in bytes")
	fs.StringVar(&c.ImageDownloadSource, "image-download-source", "http", "http: agents fetch images from their URLs; local: from the conductor's cache")
	fs.StringVar(&c.IPMICipherSuites, "ipmi-cipher-suites", "17,3", "IPMI lanplus cipher suites tried in order when a node's driver_info has no ipmi_cipher_suite")
	fs.IntVar(&c.ISCSIPortalPort, "iscsi-portal-port", 3260, "iscsi deploy interface: port agents export their disk on")
	fs.StringVar(&c.ISCSIVerify, "iscsi-verify", "sampled", "iscsi deploy interface: read-back of written images: none, sampled or full")
	return fs
}

// Load builds a Config from args, INGOT_* environment variables and the
// YAML file named by --config (or INGOT_CONFIG). Flags win over the
// environment, which wins over the file.
func Load(args []string, usage io.Writer) (*Config, error) {
	c := &Config{}
	fs := c.FlagSet("conductor")
	fs.SetOutput(usage)
	err := ff.Parse(fs, args,
		ff.WithEnvVarPrefix(EnvPrefix),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(ffyaml.Parser),
	)
	if err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if c.ImageCacheDir == "" && c.StateDir != "" {
		c.ImageCacheDir = filepath.Join(c.StateDir, "images")
	}
	if c.Database == "" && c.StateDir != "" {
		abs, err := filepath.Abs(filepath.Join(c.StateDir, "ingot.db"))
		if err != nil {
			return nil, err
		}
		c.Database = "sqlite://" + abs
	}
	return c, nil
}

// Validate checks every setting and reports all problems at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := checkListen(c.APIListen); err != nil {
		bad("api-listen: %v", err)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("public-url %q: want http(s)://host[:port]", c.PublicURL)
		}
	}
	switch {
	case strings.HasPrefix(c.Database, "sqlite://"):
		if c.StateDir == "" {
			bad("state-dir is required for an SQLite database")
		}
	case strings.HasPrefix(c.Database, "postgres://"), strings.HasPrefix(c.Database, "postgresql://"):
		u, err := url.Parse(c.Database)
		switch {
		case err != nil:
			bad("database: %v", redactErr(err, c.Database))
		case u.Hostname() == "" && u.Query().Get("host") == "":
			bad("database %q: no host", RedactURL(c.Database))
		case u.Port() != "" && checkPort(u.Port()) != nil:
			bad("database %q: %v", RedactURL(c.Database), checkPort(u.Port()))
		case strings.Trim(u.Path, "/") == "" || strings.ContainsAny(strings.Trim(u.Path, "/"), "/ "):
			bad("database %q: want one database name in the path", RedactURL(c.Database))
		}
	default:
		bad("database %q: want sqlite:// or postgres://", RedactURL(c.Database))
	}
	if c.ConductorName == "" || strings.ContainsAny(c.ConductorName, " \t\n") {
		bad("conductor-name %q: must be a non-empty name without spaces", c.ConductorName)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		bad("log-level: %v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log-format %q: want text or json", c.LogFormat)
	}
	if c.MaxLimit < 1 {
		bad("max-limit %d: must be positive", c.MaxLimit)
	}
	for name, d := range map[string]time.Duration{"power-state-timeout": c.PowerStateTimeout,
		"shutdown-timeout": c.ShutdownTimeout, "conductor-heartbeat": c.ConductorHeartbeat,
		"heartbeat-timeout": c.HeartbeatTimeout, "deploy-callback-timeout": c.DeployCallbackTimeout,
		"clean-callback-timeout": c.CleanCallbackTimeout, "check-interval": c.CheckInterval,
		"agent-command-timeout": c.AgentCommandTimeout, "post-deploy-power-off-interval": c.PostDeployPowerOffInterval} {
		if d <= 0 {
			bad("%s %s: must be positive", name, d)
		}
	}
	errs = append(errs, c.validateBoot()...)
	if c.DeployProgressInterval < 0 {
		bad("deploy-progress-interval %s: must not be negative", c.DeployProgressInterval)
	}
	if c.PowerSyncInterval < 0 {
		bad("power-sync-interval %s: must not be negative", c.PowerSyncInterval)
	}
	if c.HeartbeatTimeout > 0 && c.DeployCallbackTimeout > 0 && c.DeployCallbackTimeout < c.HeartbeatTimeout {
		bad("deploy-callback-timeout %s is shorter than heartbeat-timeout %s: live agents would time out", c.DeployCallbackTimeout, c.HeartbeatTimeout)
	}
	if c.ImageDownloadSource != "http" && c.ImageDownloadSource != "local" {
		bad("image-download-source %q: want http or local", c.ImageDownloadSource)
	}
	if c.ImageCacheSize <= 0 {
		bad("image-cache-size %d: must be positive", c.ImageCacheSize)
	}
	if c.PostDeployPowerOffRetries < 0 || c.EraseDevicesPriority < 0 || c.EraseDevicesMetadataPriority < 0 {
		bad("retry counts and step priorities must not be negative")
	}
	if _, err := c.IPMICipherSuiteList(); err != nil {
		bad("ipmi-cipher-suites: %v", err)
	}
	if c.ISCSIPortalPort < 1 || c.ISCSIPortalPort > 65535 {
		bad("iscsi-portal-port %d: want a TCP port", c.ISCSIPortalPort)
	}
	if c.ISCSIVerify != "none" && c.ISCSIVerify != "sampled" && c.ISCSIVerify != "full" {
		bad("iscsi-verify %q: want none, sampled or full", c.ISCSIVerify)
	}
	return errors.Join(errs...)
}

// IPMICipherSuiteList parses IPMICipherSuites: comma-separated cipher
// suite IDs from 0 to 19, at least one.
func (c *Config) IPMICipherSuiteList() ([]int, error) {
	var out []int
	for _, f := range strings.Split(c.IPMICipherSuites, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, err := strconv.Atoi(f)
		if err != nil || id < 0 || id > 19 {
			return nil, fmt.Errorf("%q is not a cipher suite ID (0 to 19)", f)
		}
		out = append(out, id)
	}
	if len(out) == 0 {
		return nil, errors.New("want at least one cipher suite ID, e.g. 17,3")
	}
	return out, nil
}

func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("host %q is not an IP address", host)
	}
	return checkPort(port)
}

func checkPort(port string) error {
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q out of range", port)
	}
	return nil
}

func redactErr(err error, secret string) error {
	return errors.New(strings.ReplaceAll(err.Error(), secret, RedactURL(secret)))
}

// userinfoRE finds the password of a URL that does not parse.
var userinfoRE = regexp.MustCompile(`(://[^:/@]*):[^@/]*@`)

// RedactURL hides the password of a URL, even a malformed one.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return userinfoRE.ReplaceAllString(s, "$1:******@")
	}
	if u.User == nil {
		return s
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "******")
	}
	return u.String()
}

// ParseLevel maps a level name to a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown level %q", s)
	}
	return l, nil
}

// LogValue logs the configuration with secrets redacted.
func (c *Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("api_listen", c.APIListen),
		slog.String("public_url", c.PublicURL),
		slog.String("state_dir", c.StateDir),
		slog.String("database", RedactURL(c.Database)),
		slog.String("conductor", c.ConductorName),
		slog.Bool("automated_clean", c.AutomatedClean),
		c.bootLogValue(),
		slog.String("ipmi_cipher_suites", c.IPMICipherSuites),
	)
}

// String renders the configuration with secrets redacted.
func (c *Config) String() string {
	return fmt.Sprintf("api-listen=%s database=%s state-dir=%s conductor=%s", c.APIListen, RedactURL(c.Database), c.StateDir, c.ConductorName)
}
