// Package netsetup brings up the network link the agent talks through, in
// the ramdisk where nothing else does: it picks the boot NIC (by BOOTIF's
// MAC, or by the name ingot.interface gives), sets the link up, asks for
// an IPv4 lease by DHCP (insomniacslk/dhcp's nclient4) and configures the
// address, the default route and DNS from it (netlink). With neither
// BOOTIF nor a name, every wired link asks and the first lease wins.
//
// Link selection and reading a lease are pure functions; the netlink and
// DHCP work is in netsetup_linux.go.
package netsetup

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// Link is what selection needs to know about a network link.
type Link struct {
	Name     string
	MAC      net.HardwareAddr
	Loopback bool
	// Virtual links (bridges, bonds, veths, tunnels) are skipped when no
	// NIC is named.
	Virtual bool
}

// ErrNoLink means no link matches what the command line asked for.
var ErrNoLink = errors.New("no matching network link")

// Select returns the links to bring up: the one whose MAC is bootIF, else
// the one named iface, else every physical link.
func Select(links []Link, bootIF, iface string) ([]Link, error) {
	switch {
	case bootIF != "":
		want, err := net.ParseMAC(bootIF)
		if err != nil {
			return nil, fmt.Errorf("select link: BOOTIF %q: %w", bootIF, err)
		}
		for _, l := range links {
			if strings.EqualFold(l.MAC.String(), want.String()) && !l.Loopback {
				return []Link{l}, nil
			}
		}
		return nil, fmt.Errorf("%w: no link has the BOOTIF MAC %s", ErrNoLink, want)
	case iface != "":
		for _, l := range links {
			if l.Name == iface {
				return []Link{l}, nil
			}
		}
		return nil, fmt.Errorf("%w: no link is named %s", ErrNoLink, iface)
	}
	var out []Link
	for _, l := range links {
		if !l.Loopback && !l.Virtual && len(l.MAC) == 6 {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no physical network link", ErrNoLink)
	}
	return out, nil
}
