package netsetup

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Config is what a lease tells the agent to configure on its link.
type Config struct {
	Address net.IPNet // the leased address with its mask
	Gateway net.IP    // default route; nil when the lease names none
	DNS     []net.IP
	Domain  string
	Lease   time.Duration
	Server  net.IP
}

// FromAck reads the address, route and resolver settings out of a DHCP
// ACK. It refuses an ACK without a usable address or mask, or whose router
// is outside the leased subnet and so unreachable without more routes.
func FromAck(ack *dhcpv4.DHCPv4) (Config, error) {
	if ack == nil {
		return Config{}, fmt.Errorf("dhcp: no ACK")
	}
	ip := ack.YourIPAddr.To4()
	if ip == nil || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() {
		return Config{}, fmt.Errorf("dhcp: ACK offers no usable address (%v)", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ip.DefaultMask() // RFC 2132 lets a server leave it out
	}
	if ones, bits := mask.Size(); bits != 32 || ones == 0 {
		return Config{}, fmt.Errorf("dhcp: ACK has an invalid subnet mask %v", net.IP(mask))
	}
	c := Config{Address: net.IPNet{IP: ip, Mask: mask}, Lease: ack.IPAddressLeaseTime(0),
		Server: ack.ServerIdentifier(), Domain: ack.DomainName()}
	for _, r := range ack.Router() {
		if r4 := r.To4(); r4 != nil && !r4.IsUnspecified() {
			if !c.Address.Contains(r4) {
				return Config{}, fmt.Errorf("dhcp: router %v is outside the leased subnet %v", r4, &c.Address)
			}
			c.Gateway = r4
			break
		}
	}
	for _, d := range ack.DNS() {
		if d4 := d.To4(); d4 != nil && !d4.IsUnspecified() {
			c.DNS = append(c.DNS, d4)
		}
	}
	return c, nil
}

// ResolvConf renders /etc/resolv.conf for c, or "" when the lease named
// no resolver.
func (c Config) ResolvConf() string {
	if len(c.DNS) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("# written by the ingot deploy agent from its DHCP lease\n")
	if c.Domain != "" && !strings.ContainsAny(c.Domain, " \t\n") {
		fmt.Fprintf(&b, "search %s\n", c.Domain)
	}
	for _, d := range c.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return b.String()
}
