package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ingot-dev/ingot/conductor/config"
	"github.com/ingot-dev/ingot/conductor/dhcpd"
	"github.com/ingot-dev/ingot/conductor/pxe"
	"github.com/ingot-dev/ingot/conductor/tftpd"
)

// bootServers are the network boot servers of a conductor: the boot HTTP
// server, TFTP, DHCP (and the PXE port in proxy mode) and the IPv6 router
// advertisement responder. Every socket is bound in newBoot, so a taken
// port fails start-up.
type bootServers struct {
	cfg    *config.Config
	log    *slog.Logger
	booter *pxe.Booter

	httpLn  net.Listener
	httpURL string

	tftp     *tftpd.Server
	tftpDir  *tftpd.Dir
	tftpConn net.PacketConn

	dhcp     *dhcpd.Server
	dhcpConn net.PacketConn
	pxeConn  net.PacketConn
}

// newBoot builds the boot interface and binds the boot servers' sockets.
func newBoot(ctx context.Context, cfg *config.Config, log *slog.Logger, ports pxe.Ports) (_ *bootServers, err error) {
	log = log.With("component", "boot")
	b := &bootServers{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	httpURL, err := cfg.BootHTTPURL()
	if err != nil {
		return nil, err
	}
	apiURL, err := cfg.AgentAPIURL()
	if err != nil {
		return nil, err
	}
	b.httpURL = httpURL
	bc := cfg.Boot
	b.booter, err = pxe.New(log, ports, pxe.Options{
		Root: cfg.BootRoot(), HTTPURL: httpURL, APIURL: apiURL,
		DeployKernel: bc.DeployKernel, DeployRamdisk: bc.DeployRamdisk, KernelAppend: bc.KernelAppendParams,
		AgentTLS: bc.AgentTLS, AgentInsecure: bc.AgentInsecure,
		Unknown: bc.UnknownMAC, UnknownRetryDelay: int(bc.UnknownMACRetryDelay / time.Second),
		AllowedPaths: cfg.BootAllowedPaths(), IPXEDir: bc.IPXEDir,
		DnsmasqHosts: bc.DHCPMode == config.DHCPOff,
	})
	if err != nil {
		return nil, fmt.Errorf("network boot: %w", err)
	}
	if err := b.booter.InstallFirmware(); err != nil {
		if bc.TFTPListen != "" || bc.DHCPMode != config.DHCPOff {
			return nil, err
		}
		log.Warn("iPXE binaries not installed: UEFI HTTP boot will not work", "err", err)
	}

	b.httpLn, err = net.Listen("tcp", bc.HTTPListen)
	if err != nil {
		return nil, fmt.Errorf("listen for boot HTTP: %w", err)
	}
	if bc.TFTPListen != "" {
		if b.tftpDir, err = tftpd.OpenDir(b.booter.TFTPRoot()); err != nil {
			return nil, err
		}
		b.tftp = tftpd.New(log.With("server", "tftp"), tftpd.Options{}, b.tftpDir)
		if b.tftpConn, err = tftpd.Listen(bc.TFTPListen); err != nil {
			return nil, err
		}
	}
	switch bc.DHCPMode {
	case config.DHCPOff:
		if err := b.writeDnsmasq(); err != nil {
			log.Warn("dnsmasq options not written", "err", err)
		}
	case config.DHCPProxy, config.DHCPFull:
		if err := b.newDHCP(ctx); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// newDHCP builds the DHCP server and binds its sockets.
func (b *bootServers) newDHCP(ctx context.Context) error {
	bc := b.cfg.Boot
	opts := dhcpd.Options{
		Mode: dhcpd.Mode(bc.DHCPMode), ScriptURL: b.booter.ScriptURL, FirmwareURL: b.booter.FirmwareURL,
		Discovery: bc.DHCPDiscovery, ChainloadIPXE: bc.DHCPChainloadIPXE,
	}
	var first netip.Addr
	if bc.DHCPMode == config.DHCPFull {
		f, last, err := b.cfg.DHCPPool()
		if err != nil {
			return err
		}
		first = f
		if opts.Pool, err = dhcpd.NewPool(f, last, bc.DHCPLeaseTime, nil); err != nil {
			return err
		}
		if bc.DHCPRouter != "" {
			opts.Router = netip.MustParseAddr(bc.DHCPRouter)
		}
		if opts.DNS, err = b.cfg.DHCPDNSServers(); err != nil {
			return err
		}
	}
	ip, mask, err := interfaceAddr(bc.DHCPInterface, first)
	if err != nil {
		return err
	}
	opts.ServerIP, opts.Netmask = ip, mask
	if b.dhcp, err = dhcpd.New(b.booter, b.log.With("server", "dhcp"), opts); err != nil {
		return err
	}
	if b.dhcpConn, err = dhcpd.Listen(ctx, bc.DHCPInterface, fmt.Sprintf("0.0.0.0:%d", dhcpd.ServerPort)); err != nil {
		return err
	}
	if bc.DHCPMode == config.DHCPProxy {
		if b.pxeConn, err = dhcpd.Listen(ctx, bc.DHCPInterface, fmt.Sprintf("0.0.0.0:%d", dhcpd.PXEPort)); err != nil {
			return err
		}
	}
	b.log.Info("dhcp ready", "mode", bc.DHCPMode, "interface", bc.DHCPInterface, "server_ip", ip.String())
	return nil
}

// interfaceAddr returns the IPv4 address and netmask of iface: the one
// whose subnet holds want when it is valid, else the first.
func interfaceAddr(iface string, want netip.Addr) (netip.Addr, net.IPMask, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("dhcp-interface %s: %w", iface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("dhcp-interface %s: %w", iface, err)
	}
	var found *net.IPNet
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() == nil {
			continue
		}
		if want.IsValid() && n.Contains(want.AsSlice()) {
			found = n
			break
		}
		if found == nil {
			found = n
		}
	}
	if found == nil {
		return netip.Addr{}, nil, fmt.Errorf("dhcp-interface %s has no IPv4 address", iface)
	}
	if want.IsValid() && !found.Contains(want.AsSlice()) {
		return netip.Addr{}, nil, fmt.Errorf("dhcp-range starts at %s, outside %s's subnet %s", want, iface, found)
	}
	ip, _ := netip.AddrFromSlice(found.IP.To4())
	return ip, found.Mask, nil
}

// writeDnsmasq writes the options file an external dnsmasq includes.
func (b *bootServers) writeDnsmasq() error {
	host := ""
	if b.cfg.Boot.TFTPListen != "" {
		host, _, _ = net.SplitHostPort(b.cfg.Boot.TFTPListen)
	}
	if ip, err := netip.ParseAddr(host); err != nil || ip.IsUnspecified() {
		u, _ := url.Parse(b.httpURL)
		host = u.Hostname()
	}
	tftp, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("no IPv4 address for the TFTP server in dnsmasq's options (set --tftp-listen to an address)")
	}
	conf, err := dhcpd.DnsmasqOptions(dhcpd.Dnsmasq{TFTPServer: tftp, ChainURL: b.booter.ChainURL(),
		FirmwareURL: b.booter.FirmwareURL, Discovery: b.cfg.Boot.DHCPDiscovery})
	if err != nil {
		return err
	}
	path := b.booter.DnsmasqConfPath()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		return err
	}
	b.log.Info("dnsmasq options written", "file", path, "hostsdir", b.booter.DnsmasqHostsDir())
	return nil
}

// run starts the boot servers in g; they stop when ctx ends.
func (b *bootServers) run(ctx context.Context, g *errgroup.Group) {
	srv := &http.Server{Handler: b.booter.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(b.log.Handler(), slog.LevelWarn)}
	g.Go(func() error {
		b.log.Info("boot HTTP listening", "addr", b.httpLn.Addr().String(), "url", b.httpURL)
		if err := srv.Serve(b.httpLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve boot HTTP: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.ShutdownTimeout)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	if b.tftp != nil {
		g.Go(func() error {
			defer b.tftpDir.Close()
			b.log.Info("tftp listening", "addr", b.tftpConn.LocalAddr().String(), "root", b.booter.TFTPRoot())
			return b.tftp.Serve(ctx, b.tftpConn)
		})
	}
	if b.dhcp != nil {
		g.Go(func() error { return b.dhcp.Serve(ctx, b.dhcpConn) })
		if b.pxeConn != nil {
			g.Go(func() error { return b.dhcp.ServePXE(ctx, b.pxeConn) })
		}
		if b.cfg.Boot.RouterAdvertisements {
			g.Go(func() error {
				// Without router advertisements iPXE waits longer; that is
				// no reason to stop the conductor.
				if err := dhcpd.ServeRA(ctx, b.cfg.Boot.DHCPInterface, b.log.With("server", "ra")); err != nil {
					b.log.Warn("router advertisements off", "err", err)
				}
				return nil
			})
		}
	}
}

// close releases whatever newBoot bound, for a failed start.
func (b *bootServers) close() {
	for _, c := range []net.PacketConn{b.tftpConn, b.dhcpConn, b.pxeConn} {
		if c != nil {
			c.Close()
		}
	}
	if b.httpLn != nil {
		b.httpLn.Close()
	}
	if b.tftpDir != nil {
		b.tftpDir.Close()
	}
}
