// Package pxe is the conductor's network boot interface (Ironic's "ipxe"
// and "pxe" boot interfaces): the single owner of every node's boot
// configuration, and the HTTP side of network boot.
//
// PrepareRamdisk writes a node's agent boot script (deploy, clean),
// PrepareInstance switches it to booting the local disk, CleanUp removes
// it. Configurations are files under the boot root, readable by an
// operator and surviving restarts, like Ironic's http_root:
//
//	<root>/nodes/<uuid>/boot.ipxe   the node's iPXE script
//	<root>/nodes/<uuid>/boot.json   what it was built from (images, MACs)
//	<root>/macs/<aa-bb-cc-dd-ee-ff> symbolic link to ../nodes/<uuid>, per pxe_enabled port
//	<root>/tftp/                    iPXE binaries, copied from Debian's ipxe package
//	<root>/dnsmasq/hosts/<mac>      dhcp-hostsdir entries, with an external dnsmasq
//
// Handler serves the per-MAC scripts, the agent kernel and initramfs
// (with Range support) and the iPXE binaries for UEFI HTTP boot. It never
// serves a file the node's configuration does not name.
package pxe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ingot-dev/ingot/conductor/ipxe"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/shared/bootparam"
)

// Files the boot root carries for firmware that is not iPXE yet.
var firmwareFiles = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}

// FirmwareFiles lists the iPXE binaries InstallFirmware copies.
func FirmwareFiles() []string { return slices.Clone(firmwareFiles) }

// Unknown-MAC behaviours.
const (
	UnknownExit  = "exit"
	UnknownRetry = "retry"
)

// Ports finds the port that carries a MAC address.
type Ports interface {
	GetPortByAddress(ctx context.Context, mac string) (*node.Port, error)
}

// Options configure a Booter. Zero values pick the documented defaults.
type Options struct {
	// Root is the boot root directory.
	Root string
	// HTTPURL is the boot HTTP server's base URL as nodes reach it
	// (http://10.99.0.1:8080).
	HTTPURL string
	// APIURL is the conductor API the agent talks to (ipa-api-url).
	APIURL string
	// DeployKernel and DeployRamdisk are the conductor-wide agent images:
	// http(s) URLs or local paths. A node's driver_info deploy_kernel and
	// deploy_ramdisk override them.
	DeployKernel  string
	DeployRamdisk string
	// KernelAppend is the default kernel command line for the agent
	// (driver_info kernel_append_params overrides it).
	KernelAppend string
	// AgentTLS is the agent's ingot.tls setting ("auto", "off"; unset when
	// empty) and AgentInsecure its ipa-insecure flag.
	AgentTLS      string
	AgentInsecure bool
	// AgentRetries and AgentPowerOffDelay (seconds) bound the script's
	// download retries and the wait before it powers a node off that
	// could not load the agent (ipxe's defaults, 10 and 30, when 0).
	AgentRetries       int
	AgentPowerOffDelay int
	// Unknown is what a machine with an unknown MAC is told: "exit"
	// (next boot device; the default) or "retry" (ask again after
	// UnknownRetryDelay seconds).
	Unknown           string
	UnknownRetryDelay int
	// AllowedPaths are the directories local images named in driver_info
	// may come from (<Root>/images when empty). The conductor-wide
	// images are always allowed.
	AllowedPaths []string
	// IPXEDir is where InstallFirmware finds the iPXE binaries
	// (/usr/lib/ipxe, Debian's ipxe package).
	IPXEDir string
	// DnsmasqHosts keeps a dhcp-hostsdir entry per prepared MAC, for an
	// external dnsmasq (DHCP mode "off").
	DnsmasqHosts bool
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Booter prepares and serves network boot.
type Booter struct {
	opts  Options
	log   *slog.Logger
	ports Ports // may be nil
	mu    sync.Mutex
}

// New checks opts, creates the boot root's directories and returns a
// Booter. ports answers Known for registered ports that have no boot
// configuration yet; it may be nil.
func New(log *slog.Logger, ports Ports, opts Options) (*Booter, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Unknown == "" {
		opts.Unknown = UnknownExit
	}
	if opts.IPXEDir == "" {
		opts.IPXEDir = "/usr/lib/ipxe"
	}
	var errs []error
	if !filepath.IsAbs(opts.Root) {
		errs = append(errs, fmt.Errorf("boot root %q: want an absolute path", opts.Root))
	}
	for name, u := range map[string]string{"boot HTTP URL": opts.HTTPURL, "agent API URL": opts.APIURL} {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || strings.ContainsAny(u, " \t\r\n") {
			errs = append(errs, fmt.Errorf("%s %q: want http(s)://host[:port]", name, u))
		}
	}
	if opts.Unknown != UnknownExit && opts.Unknown != UnknownRetry {
		errs = append(errs, fmt.Errorf("unknown-MAC behaviour %q: want exit or retry", opts.Unknown))
	}
	if opts.AgentTLS != "" && opts.AgentTLS != "auto" && opts.AgentTLS != "off" {
		errs = append(errs, fmt.Errorf("agent TLS %q: want auto or off", opts.AgentTLS))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	opts.HTTPURL = strings.TrimRight(opts.HTTPURL, "/")
	opts.APIURL = strings.TrimRight(opts.APIURL, "/")
	if len(opts.AllowedPaths) == 0 {
		opts.AllowedPaths = []string{filepath.Join(opts.Root, "images")}
	}
	b := &Booter{opts: opts, log: log, ports: ports}
	for _, d := range []string{b.path("nodes"), b.path("macs"), b.path("tftp"), b.path("images")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create boot root: %w", err)
		}
	}
	if opts.DnsmasqHosts {
		if err := os.MkdirAll(b.DnsmasqHostsDir(), 0o755); err != nil {
			return nil, fmt.Errorf("create boot root: %w", err)
		}
	}
	return b, nil
}

func (b *Booter) path(elem ...string) string {
	return filepath.Join(append([]string{b.opts.Root}, elem...)...)
}

// TFTPRoot is the directory the TFTP server serves.
func (b *Booter) TFTPRoot() string { return b.path("tftp") }

// DnsmasqHostsDir is the directory to name in dnsmasq's dhcp-hostsdir=.
func (b *Booter) DnsmasqHostsDir() string { return b.path("dnsmasq", "hosts") }

// DnsmasqConfPath is where the service writes dnsmasq's options file.
func (b *Booter) DnsmasqConfPath() string { return b.path("dnsmasq", "ingot.conf") }

// macName is the hyphenated form of a MAC used in file names and URLs.
func macName(mac string) string { return strings.ReplaceAll(mac, ":", "-") }

// ParseMAC reads a MAC in colon or hyphen form and returns it lower case
// with colons.
func ParseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%q is not an Ethernet MAC address", s)
	}
	return hw.String(), nil
}

// ScriptURL is the URL of a MAC's iPXE script.
func (b *Booter) ScriptURL(mac string) string { return b.opts.HTTPURL + "/ipxe/" + macName(mac) }

// ChainURL is the URL of the entry script that sends iPXE on to the
// booted MAC's own script (for DHCP servers that cannot build per-MAC
// URLs).
func (b *Booter) ChainURL() string { return b.opts.HTTPURL + "/boot.ipxe" }

// FirmwareURL is the HTTP URL of an iPXE binary, for UEFI HTTP boot.
func (b *Booter) FirmwareURL(file string) string { return b.opts.HTTPURL + "/firmware/" + file }

// InstallFirmware copies the iPXE binaries from IPXEDir into the TFTP
// root, replacing older copies atomically.
func (b *Booter) InstallFirmware() error {
	for _, f := range firmwareFiles {
		src := filepath.Join(b.opts.IPXEDir, f)
		in, err := os.Open(src)
		if err != nil {
			return fmt.Errorf("install iPXE binary %s: %w (install Debian's ipxe package, or set the iPXE directory)", f, err)
		}
		err = writeAtomic(filepath.Join(b.TFTPRoot(), f), 0o644, func(w io.Writer) error {
			_, err := io.Copy(w, in)
			return err
		})
		in.Close()
		if err != nil {
			return fmt.Errorf("install iPXE binary %s: %w", f, err)
		}
	}
	b.log.Info("iPXE binaries installed", "from", b.opts.IPXEDir, "to", b.TFTPRoot())
	return nil
}

// source is where an agent image comes from: a URL the node fetches
// directly, or a local file the boot HTTP server serves.
type source struct {
	URL  string `json:"url,omitempty"`
	Path string `json:"path,omitempty"`
}

// record is boot.json: what a node's configuration was built from.
type record struct {
	Node     string    `json:"node"`
	Mode     string    `json:"mode"` // "agent" or "local"
	Purpose  string    `json:"purpose,omitempty"`
	Firmware string    `json:"firmware"`
	Kernel   *source   `json:"kernel,omitempty"`
	Ramdisk  *source   `json:"ramdisk,omitempty"`
	MACs     []string  `json:"macs"`
	Updated  time.Time `json:"updated"`
}

// Boot modes of a record.
const (
	modeAgent = "agent"
	modeLocal = "local"
)

// Image names in a node's URL space.
const (
	kernelName  = "deploy_kernel"
	ramdiskName = "deploy_ramdisk"
)

// Validate reports what keeps n from booting the agent: a missing or
// unusable deploy kernel or ramdisk, or kernel parameters that cannot go
// into a script.
func (b *Booter) Validate(n *node.Node) error {
	_, err := b.agentScript(n)
	return err
}

// PrepareRamdisk writes n's agent boot configuration: the node's pxe
// enabled ports boot the deploy agent.
func (b *Booter) PrepareRamdisk(ctx context.Context, n *node.Node, ports []*node.Port) error {
	a, err := b.agentScript(n)
	if err != nil {
		return fmt.Errorf("prepare ramdisk boot of node %s: %w", n.UUID, err)
	}
	script, err := ipxe.RenderAgent(a.Agent)
	if err != nil {
		return fmt.Errorf("prepare ramdisk boot of node %s: %w", n.UUID, err)
	}
	rec := record{Node: n.UUID, Mode: modeAgent, Purpose: a.Purpose, Firmware: string(a.Firmware),
		Kernel: &a.kernel, Ramdisk: &a.ramdisk}
	return b.write(ctx, n, ports, rec, script)
}

// PrepareInstance switches n to booting its local disk, so a node left
// PXE-first boots the deployed OS.
func (b *Booter) PrepareInstance(ctx context.Context, n *node.Node, ports []*node.Port) error {
	fw := firmware(n)
	script, err := ipxe.RenderLocal(ipxe.Local{Node: n.UUID, Firmware: fw})
	if err != nil {
		return fmt.Errorf("prepare instance boot of node %s: %w", n.UUID, err)
	}
	return b.write(ctx, n, ports, record{Node: n.UUID, Mode: modeLocal, Firmware: string(fw)}, script)
}

// write stores a node's configuration and points its MACs at it.
func (b *Booter) write(_ context.Context, n *node.Node, ports []*node.Port, rec record, script []byte) error {
	if !safeUUID(n.UUID) {
		return fmt.Errorf("write boot configuration: node UUID %q is not a UUID", n.UUID)
	}
	macs, err := pxeMACs(ports)
	if err != nil {
		return fmt.Errorf("write boot configuration of node %s: %w", n.UUID, err)
	}
	rec.MACs = macs
	rec.Updated = b.opts.Now().UTC()
	b.mu.Lock()
	defer b.mu.Unlock()
	old, _ := b.readRecord(n.UUID)
	dir := b.path("nodes", n.UUID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write boot configuration of node %s: %w", n.UUID, err)
	}
	js, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "boot.ipxe"), script); err != nil {
		return fmt.Errorf("write boot configuration of node %s: %w", n.UUID, err)
	}
	if err := writeFile(filepath.Join(dir, "boot.json"), append(js, '\n')); err != nil {
		return fmt.Errorf("write boot configuration of node %s: %w", n.UUID, err)
	}
	for _, mac := range macs {
		if err := b.link(mac, n.UUID); err != nil {
			return fmt.Errorf("write boot configuration of node %s: %w", n.UUID, err)
		}
	}
	// MACs the node no longer boots from (port deleted or PXE disabled).
	if old != nil {
		for _, mac := range old.MACs {
			if !slices.Contains(macs, mac) {
				b.unlink(mac, n.UUID)
			}
		}
	}
	b.log.Info("boot configuration written", "node", n.UUID, "mode", rec.Mode, "purpose", rec.Purpose, "macs", strings.Join(macs, ","))
	return nil
}

// CleanUp removes n's boot configuration and every MAC link to it: those
// of ports and those it recorded (ports may be gone already). A node
// without a configuration is fine.
func (b *Booter) CleanUp(_ context.Context, n *node.Node, ports []*node.Port) error {
	if !safeUUID(n.UUID) {
		return fmt.Errorf("clean up boot configuration: node UUID %q is not a UUID", n.UUID)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var macs []string
	if rec, err := b.readRecord(n.UUID); err == nil {
		macs = rec.MACs
	}
	for _, p := range ports {
		if mac, err := ParseMAC(p.Address); err == nil {
			macs = append(macs, mac)
		}
	}
	for _, mac := range macs {
		b.unlink(mac, n.UUID)
	}
	if err := os.RemoveAll(b.path("nodes", n.UUID)); err != nil {
		return fmt.Errorf("clean up boot configuration of node %s: %w", n.UUID, err)
	}
	b.log.Info("boot configuration removed", "node", n.UUID)
	return nil
}

// link points a MAC at a node's directory, replacing a link to another
// node (the port moved).
func (b *Booter) link(mac, uuid string) error {
	name := b.path("macs", macName(mac))
	target := filepath.Join("..", "nodes", uuid)
	if cur, err := os.Readlink(name); err == nil && cur == target {
		return b.dnsmasqHost(mac, true)
	}
	tmp := name + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return b.dnsmasqHost(mac, true)
}

// unlink removes a MAC's link if it points at uuid.
func (b *Booter) unlink(mac, uuid string) {
	name := b.path("macs", macName(mac))
	if cur, err := os.Readlink(name); err == nil && cur == filepath.Join("..", "nodes", uuid) {
		if err := os.Remove(name); err != nil {
			b.log.Warn("remove MAC link", "mac", mac, "err", err)
		}
		if err := b.dnsmasqHost(mac, false); err != nil {
			b.log.Warn("remove dnsmasq host", "mac", mac, "err", err)
		}
	}
}

// nodeOf returns the node UUID a MAC is linked to.
func (b *Booter) nodeOf(mac string) (string, bool) {
	cur, err := os.Readlink(b.path("macs", macName(mac)))
	if err != nil {
		return "", false
	}
	uuid := filepath.Base(cur)
	if filepath.Join("..", "nodes", uuid) != cur || !safeUUID(uuid) {
		return "", false
	}
	return uuid, true
}

func (b *Booter) readRecord(uuid string) (*record, error) {
	if !safeUUID(uuid) {
		return nil, os.ErrNotExist
	}
	data, err := os.ReadFile(b.path("nodes", uuid, "boot.json"))
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("read boot record of node %s: %w", uuid, err)
	}
	return &r, nil
}

// Known reports whether a MAC has a boot configuration, or belongs to a
// registered port with PXE enabled: the DHCP server answers those.
func (b *Booter) Known(ctx context.Context, mac string) bool {
	if _, ok := b.nodeOf(mac); ok {
		return true
	}
	if b.ports == nil {
		return false
	}
	p, err := b.ports.GetPortByAddress(ctx, mac)
	if err != nil {
		if !errors.Is(err, node.ErrNotFound) {
			b.log.Warn("look up port", "mac", mac, "err", err)
		}
		return false
	}
	return p.PXEEnabled
}

// pxeMACs returns the normalised MACs of the pxe_enabled ports.
func pxeMACs(ports []*node.Port) ([]string, error) {
	var macs []string
	for _, p := range ports {
		if !p.PXEEnabled {
			continue
		}
		mac, err := ParseMAC(p.Address)
		if err != nil {
			return nil, fmt.Errorf("port %s: %w", p.UUID, err)
		}
		if !slices.Contains(macs, mac) {
			macs = append(macs, mac)
		}
	}
	slices.Sort(macs)
	return macs, nil
}

func safeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if r != '-' {
				return false
			}
		case ('0' <= r && r <= '9') || ('a' <= r && r <= 'f'):
		default:
			return false
		}
	}
	return true
}

// agentBoot is a rendered agent boot's inputs.
type agentBoot struct {
	ipxe.Agent
	kernel, ramdisk source
}

// agentScript builds n's agent boot from its driver_info and the
// conductor's defaults.
func (b *Booter) agentScript(n *node.Node) (*agentBoot, error) {
	var errs []error
	kernel, err := b.resolve(n, kernelName, b.opts.DeployKernel)
	if err != nil {
		errs = append(errs, err)
	}
	ramdisk, err := b.resolve(n, ramdiskName, b.opts.DeployRamdisk)
	if err != nil {
		errs = append(errs, err)
	}
	appendParams := b.opts.KernelAppend
	if v, ok := n.DriverInfo["kernel_append_params"]; ok {
		s, isString := v.(string)
		if !isString {
			errs = append(errs, fmt.Errorf("driver_info kernel_append_params: want a string, got %T", v))
		}
		appendParams = s
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	a := &agentBoot{kernel: kernel, ramdisk: ramdisk}
	params := bootparam.Params{APIURLs: []string{b.opts.APIURL}, Insecure: b.opts.AgentInsecure, TLS: b.opts.AgentTLS}
	if purpose(n.ProvisionState) == "inspect" {
		// Ironic's built-in inspection: the agent posts its inventory
		// before looking up.
		params.InspectionCallbackURL = strings.TrimRight(b.opts.APIURL, "/") + "/v1/continue_inspection"
	}
	a.Agent = ipxe.Agent{
		Node: n.UUID, Purpose: purpose(n.ProvisionState), Firmware: firmware(n),
		KernelURL: b.imageURL(n.UUID, kernelName, kernel), RamdiskURL: b.imageURL(n.UUID, ramdiskName, ramdisk),
		Append:  appendParams,
		Params:  params,
		Retries: b.opts.AgentRetries, PowerOffDelay: b.opts.AgentPowerOffDelay,
	}
	if _, err := ipxe.RenderAgent(a.Agent); err != nil {
		return nil, err
	}
	return a, nil
}

func (b *Booter) imageURL(uuid, name string, s source) string {
	if s.URL != "" {
		return s.URL
	}
	return b.opts.HTTPURL + "/nodes/" + uuid + "/" + name
}

// resolve finds an agent image: driver_info's value, else the default. A
// URL stays a URL; a local path (or file:// URL) must be a regular file in
// an allowed directory, unless it is the conductor-wide default.
func (b *Booter) resolve(n *node.Node, key, def string) (source, error) {
	v := def
	fromNode := false
	if raw, ok := n.DriverInfo[key]; ok && raw != nil && raw != "" {
		s, isString := raw.(string)
		if !isString {
			return source{}, fmt.Errorf("driver_info %s: want a string, got %T", key, raw)
		}
		v, fromNode = s, true
	}
	if v == "" {
		return source{}, fmt.Errorf("no %s: set driver_info %s or the conductor's default", key, key)
	}
	if strings.HasPrefix(v, "http://") || strings.HasPrefix(v, "https://") {
		if u, err := url.Parse(v); err != nil || u.Host == "" || strings.ContainsAny(v, " \t\r\n") {
			return source{}, fmt.Errorf("%s %q: not a usable URL", key, v)
		}
		return source{URL: v}, nil
	}
	p := strings.TrimPrefix(v, "file://")
	if !filepath.IsAbs(p) {
		return source{}, fmt.Errorf("%s %q: want an http(s) URL or an absolute path", key, v)
	}
	real, err := filepath.EvalSymlinks(filepath.Clean(p))
	if err != nil {
		return source{}, fmt.Errorf("%s %q: %w", key, v, err)
	}
	st, err := os.Stat(real)
	if err != nil || !st.Mode().IsRegular() {
		return source{}, fmt.Errorf("%s %q: not a regular file", key, v)
	}
	if fromNode && !b.allowed(real) {
		return source{}, fmt.Errorf("%s %q: local images must be under %s", key, v, strings.Join(b.opts.AllowedPaths, ", "))
	}
	return source{Path: real}, nil
}

func (b *Booter) allowed(real string) bool {
	for _, dir := range b.opts.AllowedPaths {
		d, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(d, real); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && rel != "." {
			return true
		}
	}
	return false
}

// purpose names why the agent boots, from the node's state.
func purpose(s node.State) string {
	switch s {
	case node.StateCleaning, node.StateCleanWait, node.StateCleanFailed:
		return "clean"
	case node.StateInspecting, node.StateInspectWait, node.StateInspectFailed:
		return "inspect"
	default:
		return "deploy"
	}
}

// firmware is the node's boot mode: its cached boot_mode, else the
// boot_mode capability of instance_info or properties, else UEFI
// (Ironic's default), as the engine decides it.
func firmware(n *node.Node) ipxe.Firmware {
	mode := n.BootMode
	for _, src := range []map[string]any{n.InstanceInfo, n.Properties} {
		if mode != "" {
			break
		}
		switch c := src["capabilities"].(type) {
		case map[string]any:
			mode, _ = c["boot_mode"].(string)
		case string:
			for _, kv := range strings.Split(c, ",") {
				if k, v, ok := strings.Cut(strings.TrimSpace(kv), ":"); ok && k == "boot_mode" {
					mode = v
				}
			}
		}
	}
	if mode == "bios" {
		return ipxe.BIOS
	}
	return ipxe.UEFI
}
