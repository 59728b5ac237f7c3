package dhcpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/net/ipv6"
)

// ICMPv6 message types (RFC 4861).
const (
	icmpRouterSolicitation  = 133
	icmpRouterAdvertisement = 134
)

// RouterAdvertisement returns a minimal RA from a router with link-layer
// address mac: no managed or other configuration (M=0, O=0), router
// lifetime 0 (not a default router) and no prefix. It tells iPXE there is
// no IPv6 to configure, so it stops waiting for one (about 16 s
// otherwise). The kernel fills in the checksum.
func RouterAdvertisement(mac net.HardwareAddr) []byte {
	ra := []byte{
		icmpRouterAdvertisement, 0, 0, 0, // type, code, checksum
		64,   // current hop limit
		0,    // M=0, O=0
		0, 0, // router lifetime 0: not a default router
		0, 0, 0, 0, // reachable time: unspecified
		0, 0, 0, 0, // retransmission timer: unspecified
	}
	if len(mac) == 6 {
		ra = append(ra, 1, 1) // source link-layer address option, 8 bytes
		ra = append(ra, mac...)
	}
	return ra
}

// IsRouterSolicitation reports whether an ICMPv6 message received with
// hop limit hops is a valid router solicitation (RFC 4861 6.1.1).
func IsRouterSolicitation(b []byte, hops int) bool {
	return len(b) >= 8 && b[0] == icmpRouterSolicitation && b[1] == 0 && hops == 255
}

// ServeRA answers router solicitations on iface with RouterAdvertisement
// until ctx ends. It needs root (a raw ICMPv6 socket).
func ServeRA(ctx context.Context, iface string, log *slog.Logger) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("serve router advertisements: %w", err)
	}
	c, err := net.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return fmt.Errorf("serve router advertisements on %s: %w", iface, err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	p := ipv6.NewPacketConn(c)
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(icmpRouterSolicitation)
	allRouters := &net.IPAddr{IP: net.ParseIP("ff02::2")}
	allNodes := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: iface}
	for _, step := range []error{
		p.SetICMPFilter(&f),
		p.JoinGroup(ifi, allRouters),
		p.SetControlMessage(ipv6.FlagInterface|ipv6.FlagHopLimit, true),
		p.SetMulticastHopLimit(255),
		p.SetMulticastInterface(ifi),
	} {
		if step != nil {
			return fmt.Errorf("serve router advertisements on %s: %w", iface, step)
		}
	}
	ra := RouterAdvertisement(ifi.HardwareAddr)
	buf := make([]byte, 1500)
	log.Info("answering IPv6 router solicitations", "interface", iface)
	for {
		n, cm, src, err := p.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("serve router advertisements on %s: %w", iface, err)
		}
		if cm == nil || cm.IfIndex != ifi.Index {
			continue
		}
		if !IsRouterSolicitation(buf[:n], cm.HopLimit) {
			log.Debug("ipv6 packet dropped: not a router solicitation", "from", src.String(), "bytes", n)
			continue
		}
		if _, err := p.WriteTo(ra, &ipv6.ControlMessage{IfIndex: ifi.Index, HopLimit: 255}, allNodes); err != nil {
			log.Warn("router advertisement failed", "interface", iface, "err", err)
			continue
		}
		log.Debug("router advertisement sent", "to", src.String())
	}
}
