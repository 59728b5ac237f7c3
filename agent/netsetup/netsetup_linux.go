package netsetup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DHCP brings links up and configures them from a DHCP lease.
type DHCP struct {
	// Log receives what happened; nil discards.
	Log *slog.Logger
	// Timeout and Retries bound each DHCP exchange (5 s, 5).
	Timeout time.Duration
	Retries int
	// LinkUpTimeout bounds waiting for carrier (20 s).
	LinkUpTimeout time.Duration
	// ResolvConf is the file DNS servers are written to (/etc/resolv.conf).
	ResolvConf string

	mu   sync.Mutex
	done string // the link configured, so a repeated Up is a no-op
}

// Up configures the boot NIC by DHCP, once; later calls return at once
// while that link keeps an IPv4 address. Several candidate links ask in
// parallel and the first lease wins.
func (d *DHCP) Up(ctx context.Context, bootIF, iface string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if d.done != "" && hasIPv4(d.done) {
		return nil
	}
	all, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list network links: %w", err)
	}
	var links []Link
	byName := map[string]netlink.Link{}
	for _, l := range all {
		a := l.Attrs()
		byName[a.Name] = l
		links = append(links, Link{Name: a.Name, MAC: a.HardwareAddr, Loopback: a.Flags&net.FlagLoopback != 0,
			Virtual: l.Type() != "device"})
	}
	chosen, err := Select(links, bootIF, iface)
	if err != nil {
		return err
	}
	log.Info("requesting a DHCP lease", "links", names(chosen))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		link string
		cfg  Config
		err  error
	}
	results := make(chan result, len(chosen))
	for _, c := range chosen {
		go func(l netlink.Link) {
			cfg, err := d.lease(ctx, l)
			results <- result{l.Attrs().Name, cfg, err}
		}(byName[c.Name])
	}
	var errs []error
	for range chosen {
		r := <-results
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.link, r.err))
			continue
		}
		if err := d.configure(byName[r.link], r.cfg); err != nil {
			errs = append(errs, fmt.Errorf("configure %s: %w", r.link, err))
			continue
		}
		cancel() // the other links stop asking
		d.done = r.link
		log.Info("network configured", "link", r.link, "address", r.cfg.Address.String(),
			"gateway", r.cfg.Gateway, "dns", r.cfg.DNS, "server", r.cfg.Server, "lease", r.cfg.Lease)
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("no DHCP lease on %v: %w", names(chosen), errors.Join(errs...))
}

// lease sets l up, waits for carrier and runs one DORA exchange on it.
func (d *DHCP) lease(ctx context.Context, l netlink.Link) (Config, error) {
	timeout, retries, linkUp := d.Timeout, d.Retries, d.LinkUpTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	if retries == 0 {
		retries = 5
	}
	if linkUp == 0 {
		linkUp = 20 * time.Second
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return Config{}, fmt.Errorf("set link up: %w", err)
	}
	if err := waitCarrier(ctx, l.Attrs().Name, linkUp); err != nil {
		return Config{}, err
	}
	c, err := nclient4.New(l.Attrs().Name, nclient4.WithTimeout(timeout), nclient4.WithRetry(retries))
	if err != nil {
		return Config{}, fmt.Errorf("dhcp client: %w", err)
	}
	defer c.Close()
	lease, err := c.Request(ctx)
	if err != nil {
		return Config{}, fmt.Errorf("dhcp: %w", err)
	}
	return FromAck(lease.ACK)
}

// waitCarrier polls the link until it reports carrier or the wait ends.
func waitCarrier(ctx context.Context, name string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("link: %w", err)
		}
		a := l.Attrs()
		// IFF_LOWER_UP is the driver's carrier, reported at once; the
		// operational state follows it only after the kernel's linkwatch
		// delay (up to a second), which would be time lost at every boot.
		if a.RawFlags&unix.IFF_LOWER_UP != 0 || a.OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no carrier after %s (state %s)", wait, a.OperState)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// configure applies cfg: address, default route, resolver.
func (d *DHCP) configure(l netlink.Link, cfg Config) error {
	addr := &netlink.Addr{IPNet: &cfg.Address}
	if cfg.Lease > 0 {
		addr.ValidLft = int(cfg.Lease / time.Second)
		addr.PreferedLft = addr.ValidLft
	}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("add address %s: %w", &cfg.Address, err)
	}
	if cfg.Gateway != nil {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: cfg.Gateway}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s: %w", cfg.Gateway, err)
		}
	}
	if rc := cfg.ResolvConf(); rc != "" {
		path := d.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		if err := os.WriteFile(path, []byte(rc), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

func hasIPv4(name string) bool {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return false
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	return err == nil && len(addrs) > 0
}

func names(ls []Link) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Name
	}
	return out
}
