package config

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Boot is the network boot configuration: the boot HTTP server, TFTP,
// DHCP and what nodes are booted into. Network boot is off unless
// HTTPListen is set.
type Boot struct {
	// HTTPListen is the boot HTTP server's address (iPXE scripts, agent
	// images, iPXE binaries); empty turns network boot off.
	HTTPListen string
	// HTTPURL is the boot HTTP server's URL as nodes reach it; derived
	// from HTTPListen when that names one IP address.
	HTTPURL string
	// Root holds per-node boot files and the TFTP root (<state-dir>/boot).
	Root string
	// TFTPListen is the TFTP server's address; empty means no TFTP.
	TFTPListen string

	// DHCPMode is off (an external DHCP server such as dnsmasq includes
	// Ingot's files), proxy (ProxyDHCP next to the network's DHCP server)
	// or full (Ingot hands out addresses on an isolated network).
	DHCPMode      string
	DHCPInterface string
	// DHCPRange is "first-last" (full mode).
	DHCPRange     string
	DHCPRouter    string
	DHCPDNS       string
	DHCPLeaseTime time.Duration
	// DHCPDiscovery answers machines no node has.
	DHCPDiscovery bool
	// DHCPChainloadIPXE hands Ingot's iPXE binary even to iPXE firmware,
	// once per boot.
	DHCPChainloadIPXE bool
	// RouterAdvertisements answers IPv6 router solicitations on the DHCP
	// interface so iPXE does not wait for IPv6.
	RouterAdvertisements bool

	// DeployKernel and DeployRamdisk are the default agent images (URL or
	// local path); driver_info deploy_kernel/deploy_ramdisk override them.
	DeployKernel  string
	DeployRamdisk string
	// KernelAppendParams is the default agent kernel command line.
	KernelAppendParams string
	// IPAAPIURL is the conductor API URL handed to agents (ipa-api-url);
	// the public URL by default.
	IPAAPIURL string
	// AgentTLS (auto, off; empty leaves the agent's default) and
	// AgentInsecure are handed to the agent as ingot.tls and ipa-insecure.
	AgentTLS      string
	AgentInsecure bool
	// UnknownMAC is what a machine nobody provisions is told: exit (next
	// boot device) or retry.
	UnknownMAC           string
	UnknownMACRetryDelay time.Duration
	// IPXEDir is where the iPXE binaries are copied from.
	IPXEDir string
	// AllowedPaths are directories local driver_info images may come
	// from (comma-separated; <boot-root>/images by default).
	AllowedPaths string
}

// DHCP modes.
const (
	DHCPOff   = "off"
	DHCPProxy = "proxy"
	DHCPFull  = "full"
)

func (b *Boot) flags(fs *flag.FlagSet) {
	fs.StringVar(&b.HTTPListen, "boot-http-listen", "", "address of the boot HTTP server (iPXE scripts and agent images); empty turns network boot off")
	fs.StringVar(&b.HTTPURL, "boot-http-url", "", "boot HTTP server URL as nodes reach it (default: http://<boot-http-listen>)")
	fs.StringVar(&b.Root, "boot-root", "", "directory for per-node boot files and the TFTP root (default: <state-dir>/boot)")
	fs.StringVar(&b.TFTPListen, "tftp-listen", "", "address of the TFTP server for the iPXE binaries, e.g. :69; empty means no TFTP")
	fs.StringVar(&b.DHCPMode, "dhcp-mode", DHCPOff, "DHCP: off (external DHCP includes Ingot's dnsmasq files), proxy (ProxyDHCP) or full (address pool)")
	fs.StringVar(&b.DHCPInterface, "dhcp-interface", "", "provisioning network interface DHCP serves (proxy and full modes)")
	fs.StringVar(&b.DHCPRange, "dhcp-range", "", "address pool first-last, e.g. 10.99.0.100-10.99.0.200 (full mode)")
	fs.StringVar(&b.DHCPRouter, "dhcp-router", "", "default gateway handed out (full mode, optional)")
	fs.StringVar(&b.DHCPDNS, "dhcp-dns", "", "comma-separated DNS servers handed out (full mode, optional)")
	fs.DurationVar(&b.DHCPLeaseTime, "dhcp-lease-time", time.Hour, "lease time (full mode)")
	fs.BoolVar(&b.DHCPDiscovery, "dhcp-discovery", false, "answer machines whose MAC no registered port has")
	fs.BoolVar(&b.DHCPChainloadIPXE, "dhcp-chainload-ipxe", false, "hand Ingot's iPXE binary even to iPXE firmware, once per boot")
	fs.BoolVar(&b.RouterAdvertisements, "dhcp-router-advertisements", true, "answer IPv6 router solicitations on the DHCP interface so iPXE skips IPv6 (proxy and full modes)")
	fs.StringVar(&b.DeployKernel, "deploy-kernel", "", "default agent kernel: http(s) URL or local path")
	fs.StringVar(&b.DeployRamdisk, "deploy-ramdisk", "", "default agent initramfs: http(s) URL or local path")
	fs.StringVar(&b.KernelAppendParams, "kernel-append-params", "nofb nomodeset vga=normal", "default agent kernel command line (driver_info kernel_append_params overrides it)")
	fs.StringVar(&b.IPAAPIURL, "ipa-api-url", "", "conductor API URL handed to agents (default: --public-url, else http://<boot-http-listen host>:<api port>)")
	fs.StringVar(&b.AgentTLS, "agent-tls", "", "agent command API transport handed to the agent: auto or off (default: the agent's)")
	fs.BoolVar(&b.AgentInsecure, "agent-insecure", false, "tell agents to skip TLS verification (ipa-insecure)")
	fs.StringVar(&b.UnknownMAC, "unknown-mac", "exit", "what a network-booting machine nobody provisions is told: exit (next boot device) or retry")
	fs.DurationVar(&b.UnknownMACRetryDelay, "unknown-mac-retry-delay", 30*time.Second, "how long an unknown machine waits before asking again (--unknown-mac retry)")
	fs.StringVar(&b.IPXEDir, "ipxe-dir", "/usr/lib/ipxe", "directory holding undionly.kpxe, ipxe.efi and snponly.efi (Debian's ipxe package)")
	fs.StringVar(&b.AllowedPaths, "boot-file-allowed-paths", "", "comma-separated directories local driver_info images may come from (default: <boot-root>/images)")
}

// Enabled reports whether the conductor serves network boot.
func (b *Boot) Enabled() bool { return b.HTTPListen != "" }

// BootRoot is the boot root directory.
func (c *Config) BootRoot() string {
	if c.Boot.Root != "" {
		return c.Boot.Root
	}
	return filepath.Join(c.StateDir, "boot")
}

// BootHTTPURL is the boot HTTP server's URL as nodes reach it.
func (c *Config) BootHTTPURL() (string, error) {
	if c.Boot.HTTPURL != "" {
		return strings.TrimRight(c.Boot.HTTPURL, "/"), nil
	}
	host, _, err := net.SplitHostPort(c.Boot.HTTPListen)
	if ip := net.ParseIP(host); err != nil || ip == nil || ip.IsUnspecified() || ip.IsLoopback() {
		return "", fmt.Errorf("boot-http-url: cannot derive it from boot-http-listen %q (not one reachable IP address): set --boot-http-url", c.Boot.HTTPListen)
	}
	return "http://" + c.Boot.HTTPListen, nil
}

// AgentAPIURL is the API URL handed to agents: --ipa-api-url, else
// --public-url, else the API port on the boot HTTP server's address.
func (c *Config) AgentAPIURL() (string, error) {
	for _, u := range []string{c.Boot.IPAAPIURL, c.PublicURL} {
		if u != "" {
			return strings.TrimRight(u, "/"), nil
		}
	}
	apiHost, apiPort, err := net.SplitHostPort(c.APIListen)
	if err != nil {
		return "", err
	}
	boot, err := c.BootHTTPURL()
	if err != nil {
		return "", fmt.Errorf("ipa-api-url: %w", err)
	}
	u, _ := url.Parse(boot)
	host := u.Hostname()
	if ip := net.ParseIP(apiHost); apiHost != "" && (ip == nil || !ip.IsUnspecified()) && apiHost != host {
		return "", fmt.Errorf("ipa-api-url: the API listens on %s, which agents on the boot network may not reach: set --ipa-api-url or --public-url", c.APIListen)
	}
	return "http://" + net.JoinHostPort(host, apiPort), nil
}

// DHCPPool parses --dhcp-range.
func (c *Config) DHCPPool() (netip.Addr, netip.Addr, error) {
	first, last, ok := strings.Cut(c.Boot.DHCPRange, "-")
	a, err1 := netip.ParseAddr(strings.TrimSpace(first))
	b, err2 := netip.ParseAddr(strings.TrimSpace(last))
	if !ok || err1 != nil || err2 != nil || !a.Is4() || !b.Is4() || b.Less(a) {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("dhcp-range %q: want first-last IPv4 addresses, e.g. 10.99.0.100-10.99.0.200", c.Boot.DHCPRange)
	}
	return a, b, nil
}

// DHCPDNSServers parses --dhcp-dns.
func (c *Config) DHCPDNSServers() ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range strings.Split(c.Boot.DHCPDNS, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("dhcp-dns %q: want IPv4 addresses", c.Boot.DHCPDNS)
		}
		out = append(out, a)
	}
	return out, nil
}

// BootAllowedPaths lists the directories local driver_info images may
// come from.
func (c *Config) BootAllowedPaths() []string {
	var out []string
	for _, p := range strings.Split(c.Boot.AllowedPaths, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// validateBoot checks the network boot settings.
func (c *Config) validateBoot() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	b := &c.Boot
	switch b.DHCPMode {
	case DHCPOff, DHCPProxy, DHCPFull:
	default:
		bad("dhcp-mode %q: want off, proxy or full", b.DHCPMode)
	}
	if b.UnknownMAC != "exit" && b.UnknownMAC != "retry" {
		bad("unknown-mac %q: want exit or retry", b.UnknownMAC)
	}
	if b.AgentTLS != "" && b.AgentTLS != "auto" && b.AgentTLS != "off" {
		bad("agent-tls %q: want auto or off", b.AgentTLS)
	}
	if !b.Enabled() {
		if b.TFTPListen != "" || b.DHCPMode != DHCPOff {
			bad("tftp-listen and dhcp-mode need network boot: set --boot-http-listen (nodes fetch scripts and images over HTTP)")
		}
		return errs
	}
	if err := checkListen(b.HTTPListen); err != nil {
		bad("boot-http-listen: %v", err)
	} else {
		if _, err := c.BootHTTPURL(); err != nil {
			bad("%v", err)
		}
		if _, err := c.AgentAPIURL(); err != nil {
			bad("%v", err)
		}
	}
	for name, u := range map[string]string{"boot-http-url": b.HTTPURL, "ipa-api-url": b.IPAAPIURL} {
		if u == "" {
			continue
		}
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || strings.ContainsAny(u, " \t\r\n") {
			bad("%s %q: want http(s)://host[:port]", name, u)
		}
	}
	if b.TFTPListen != "" {
		if err := checkListen(b.TFTPListen); err != nil {
			bad("tftp-listen: %v", err)
		}
	}
	if b.Root != "" && !filepath.IsAbs(b.Root) {
		bad("boot-root %q: want an absolute path", b.Root)
	}
	for name, v := range map[string]string{"deploy-kernel": b.DeployKernel, "deploy-ramdisk": b.DeployRamdisk} {
		if v != "" && !strings.HasPrefix(v, "http://") && !strings.HasPrefix(v, "https://") && !filepath.IsAbs(v) {
			bad("%s %q: want an http(s) URL or an absolute path", name, v)
		}
	}
	for _, p := range c.BootAllowedPaths() {
		if !filepath.IsAbs(p) {
			bad("boot-file-allowed-paths: %q is not an absolute path", p)
		}
	}
	if b.UnknownMAC == "retry" && (b.UnknownMACRetryDelay < time.Second || b.UnknownMACRetryDelay > 24*time.Hour) {
		bad("unknown-mac-retry-delay %s: want 1s to 24h", b.UnknownMACRetryDelay)
	}
	if b.DHCPMode != DHCPOff && b.DHCPInterface == "" {
		bad("dhcp-mode %s needs --dhcp-interface", b.DHCPMode)
	}
	if b.DHCPMode == DHCPFull {
		if _, _, err := c.DHCPPool(); err != nil {
			bad("%v", err)
		}
		if b.DHCPLeaseTime < time.Minute {
			bad("dhcp-lease-time %s: want at least 1m", b.DHCPLeaseTime)
		}
		if b.DHCPRouter != "" {
			if a, err := netip.ParseAddr(b.DHCPRouter); err != nil || !a.Is4() {
				bad("dhcp-router %q: want an IPv4 address", b.DHCPRouter)
			}
		}
		if _, err := c.DHCPDNSServers(); err != nil {
			bad("%v", err)
		}
	}
	errs = append(errs, c.portConflicts()...)
	return errs
}

// portConflicts reports two of the conductor's own servers on one port:
// the API and boot HTTP (TCP); TFTP and DHCP (UDP).
func (c *Config) portConflicts() []error {
	type listener struct{ name, proto, addr string }
	ls := []listener{{"api-listen", "tcp", c.APIListen}, {"boot-http-listen", "tcp", c.Boot.HTTPListen}}
	if c.Boot.TFTPListen != "" {
		ls = append(ls, listener{"tftp-listen", "udp", c.Boot.TFTPListen})
	}
	if c.Boot.DHCPMode == DHCPProxy || c.Boot.DHCPMode == DHCPFull {
		ls = append(ls, listener{"dhcp-mode " + c.Boot.DHCPMode + " (DHCP server port)", "udp", ":67"})
	}
	if c.Boot.DHCPMode == DHCPProxy {
		ls = append(ls, listener{"dhcp-mode proxy (PXE port)", "udp", ":4011"})
	}
	var errs []error
	for i, a := range ls {
		for _, b := range ls[i+1:] {
			if a.proto == b.proto && overlap(a.addr, b.addr) {
				errs = append(errs, fmt.Errorf("%s %s and %s %s: two servers on one %s port", a.name, a.addr, b.name, b.addr, strings.ToUpper(a.proto)))
			}
		}
	}
	return errs
}

// overlap reports whether two listen addresses would take the same port.
func overlap(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	unspecified := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "" || (ip != nil && ip.IsUnspecified())
	}
	if unspecified(ha) || unspecified(hb) {
		return true
	}
	ia, ib := net.ParseIP(ha), net.ParseIP(hb)
	if ia != nil && ib != nil {
		return ia.Equal(ib)
	}
	return ha == hb
}

// bootLogValue is the boot part of LogValue.
func (c *Config) bootLogValue() slog.Attr {
	if !c.Boot.Enabled() {
		return slog.String("network_boot", "off")
	}
	return slog.Group("network_boot", "http_listen", c.Boot.HTTPListen, "tftp_listen", c.Boot.TFTPListen,
		"dhcp_mode", c.Boot.DHCPMode, "dhcp_interface", c.Boot.DHCPInterface, "root", c.BootRoot())
}
