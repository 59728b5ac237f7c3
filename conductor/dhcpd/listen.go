package dhcpd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Listen opens a UDP socket for DHCP on addr ("0.0.0.0:67", or ":4011"
// for the PXE port), bound to the network interface iface when it is not
// empty (which needs root or CAP_NET_RAW). Unlike most DHCP libraries it
// sets neither SO_REUSEADDR nor SO_REUSEPORT, so a second server on the
// same port and interface (dnsmasq, another conductor) is a clear error
// instead of a silent split of the traffic.
func Listen(ctx context.Context, iface, addr string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
			if serr == nil && iface != "" {
				serr = bindToDevice(int(fd), iface)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := lc.ListenPacket(ctx, "udp4", addr)
	where := addr
	if iface != "" {
		where = addr + " on " + iface
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen for dhcp on %s: %w (is another DHCP server, such as dnsmasq or a second conductor, running there? with an existing DHCP server use --dhcp-mode proxy from another host, or off)", where, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listen for dhcp on %s: %w", where, err)
	}
	return conn, nil
}
