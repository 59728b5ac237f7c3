package dhcpd

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Firmware is what a network-booting client runs, as far as the boot file
// it needs goes.
type Firmware string

// Firmware kinds, from option 93 (client system architecture) and option
// 60 (vendor class).
const (
	// FirmwareNone: not a network boot client (an OS or the agent asking
	// for an address).
	FirmwareNone Firmware = ""
	// FirmwareBIOS: legacy x86 PXE; it gets undionly.kpxe by TFTP.
	FirmwareBIOS Firmware = "bios"
	// FirmwareUEFI: x86-64 UEFI PXE; it gets the iPXE EFI binary by TFTP.
	FirmwareUEFI Firmware = "uefi"
	// FirmwareUEFIHTTP: x86-64 UEFI HTTP boot (vendor class HTTPClient);
	// it gets the iPXE EFI binary by URL.
	FirmwareUEFIHTTP Firmware = "uefi-http"
	// FirmwareUnsupported: a boot client for which Ingot has no binary
	// (32-bit UEFI, ARM, ...).
	FirmwareUnsupported Firmware = "unsupported"
)

// Client is what one DHCP request says about the machine that sent it.
type Client struct {
	// MAC is the client's hardware address, lower case with colons.
	MAC string
	// Type is the DHCP message type.
	Type dhcpv4.MessageType
	// Firmware is the kind of boot client; FirmwareNone for clients that
	// are not network booting.
	Firmware Firmware
	// Arch is the raw option 93 value (or the one in option 60).
	Arch iana.Arch
	// IPXE is set when the client is already iPXE (user class "iPXE"): it
	// gets the script URL, which breaks the chain-load loop.
	IPXE bool
}

// Booting reports whether the client asks for a boot file.
func (c Client) Booting() bool { return c.Firmware != FirmwareNone }

// ErrMalformed means a packet is not a DHCP request Ingot can answer.
var ErrMalformed = errors.New("malformed dhcp request")

// Classify reads a request: its client, whether it network-boots, with
// which firmware, and whether it is iPXE. It refuses packets no server
// should answer (replies, non-Ethernet hardware, no message type, relay
// loops). It is pure and never panics, whatever the packet holds.
func Classify(req *dhcpv4.DHCPv4) (Client, error) {
	var c Client
	if req == nil {
		return c, fmt.Errorf("%w: no packet", ErrMalformed)
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return c, fmt.Errorf("%w: opcode %v is not a request", ErrMalformed, req.OpCode)
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return c, fmt.Errorf("%w: hardware type %v with a %d-byte address is not Ethernet", ErrMalformed, req.HWType, len(req.ClientHWAddr))
	}
	if req.HopCount > 16 {
		return c, fmt.Errorf("%w: %d relay hops", ErrMalformed, req.HopCount)
	}
	c.MAC = req.ClientHWAddr.String()
	mt := req.Options.Get(dhcpv4.OptionDHCPMessageType)
	if len(mt) != 1 {
		return c, fmt.Errorf("%w: no message type", ErrMalformed)
	}
	c.Type = dhcpv4.MessageType(mt[0])
	switch c.Type {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeDecline,
		dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform:
	default:
		return c, fmt.Errorf("%w: message type %v is not sent by clients", ErrMalformed, c.Type)
	}
	c.IPXE = slices.Contains(userClasses(req), "iPXE")

	vendor := string(req.Options.Get(dhcpv4.OptionClassIdentifier))
	pxe := strings.HasPrefix(vendor, "PXEClient")
	http := strings.HasPrefix(vendor, "HTTPClient")
	if !pxe && !http {
		return c, nil
	}
	arch, ok := clientArch(req, vendor)
	c.Arch = arch
	switch {
	case !ok:
		c.Firmware = FirmwareBIOS // PXE 2.1 clients without option 93 are BIOS
	case http && arch == iana.EFI_X86_64_HTTP:
		c.Firmware = FirmwareUEFIHTTP
	case http:
		c.Firmware = FirmwareUnsupported
	case arch == iana.INTEL_X86PC:
		c.Firmware = FirmwareBIOS
	case arch == iana.EFI_X86_64 || arch == iana.EFI_BC:
		c.Firmware = FirmwareUEFI
	default:
		c.Firmware = FirmwareUnsupported
	}
	return c, nil
}

// userClasses reads option 77 both as iPXE sends it (the bare string) and
// in RFC 3004 form (length-prefixed strings).
func userClasses(req *dhcpv4.DHCPv4) []string {
	v := req.Options.Get(dhcpv4.OptionUserClassInformation)
	if len(v) == 0 {
		return nil
	}
	var rfc dhcpv4.Strings
	if err := rfc.FromBytes(v); err == nil {
		return append([]string(rfc), string(v))
	}
	return []string{string(v)}
}

// clientArch reads option 93, or the "Arch:NNNNN" field of the vendor
// class when option 93 is missing or malformed.
func clientArch(req *dhcpv4.DHCPv4, vendor string) (iana.Arch, bool) {
	if v := req.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(v) >= 2 && len(v)%2 == 0 {
		return iana.Arch(uint16(v[0])<<8 | uint16(v[1])), true
	}
	parts := strings.Split(vendor, ":")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "Arch" {
			n, err := strconv.ParseUint(parts[i+1], 10, 16)
			if err == nil {
				return iana.Arch(n), true
			}
		}
	}
	return 0, false
}
