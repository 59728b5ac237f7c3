package dhcpd

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Dnsmasq describes the boot answers an external dnsmasq gives in "off"
// mode, where Ingot runs no DHCP socket.
type Dnsmasq struct {
	// TFTPServer is the conductor's TFTP address.
	TFTPServer netip.Addr
	// ChainURL is the entry script every iPXE client is sent to; it
	// chains to the machine's own script (dnsmasq cannot build per-MAC
	// URLs).
	ChainURL string
	// FirmwareURL returns the HTTP URL of a boot binary (UEFI HTTP boot).
	FirmwareURL func(file string) string
	// BIOSFile and UEFIFile are the iPXE binaries by TFTP.
	BIOSFile, UEFIFile string
	// Discovery answers every machine, not only those with a host file.
	Discovery bool
}

// DnsmasqTag marks the machines Ingot boots; DnsmasqHost sets it.
const DnsmasqTag = "ingot"

// DnsmasqOptions renders a file for dnsmasq's conf-file= (or conf-dir=):
// tags for iPXE (user class), UEFI (option 93) and UEFI HTTP boot, and the
// boot file each gets. Machines are only answered when a host file
// (DnsmasqHost, in the directory named by dnsmasq's dhcp-hostsdir=) tags
// them, unless discovery is on.
func DnsmasqOptions(d Dnsmasq) ([]byte, error) {
	if !d.TFTPServer.Is4() {
		return nil, fmt.Errorf("dnsmasq options: tftp server %v: want an IPv4 address", d.TFTPServer)
	}
	if d.BIOSFile == "" {
		d.BIOSFile = "undionly.kpxe"
	}
	if d.UEFIFile == "" {
		d.UEFIFile = "snponly.efi"
	}
	httpFile := ""
	if d.FirmwareURL != nil {
		httpFile = d.FirmwareURL(d.UEFIFile)
	}
	for _, v := range []string{d.ChainURL, httpFile, d.BIOSFile, d.UEFIFile} {
		if v == "" || strings.ContainsAny(v, ", \t\r\n#") {
			return nil, fmt.Errorf("dnsmasq options: %q cannot be written into a dnsmasq option", v)
		}
	}
	known := "tag:" + DnsmasqTag + ","
	if d.Discovery {
		known = ""
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Ingot network boot options for dnsmasq, written by the conductor.\n")
	fmt.Fprintf(&b, "# Include this file (conf-file=) and point dhcp-hostsdir= at Ingot's host\n")
	fmt.Fprintf(&b, "# directory; dnsmasq rereads that directory when a node is prepared.\n")
	fmt.Fprintf(&b, "dhcp-userclass=set:ingot-ipxe,iPXE\n")
	fmt.Fprintf(&b, "dhcp-match=set:ingot-efi64,option:client-arch,7\n")
	fmt.Fprintf(&b, "dhcp-match=set:ingot-efi64,option:client-arch,9\n")
	fmt.Fprintf(&b, "dhcp-vendorclass=set:ingot-http,HTTPClient\n")
	fmt.Fprintf(&b, "# iPXE: the entry script, and no wait for ProxyDHCP offers (175.176)\n")
	fmt.Fprintf(&b, "dhcp-boot=%stag:ingot-ipxe,%s\n", known, d.ChainURL)
	fmt.Fprintf(&b, "dhcp-option-force=%stag:ingot-ipxe,encap:175,176,1b\n", known)
	fmt.Fprintf(&b, "# UEFI HTTP boot: the iPXE EFI binary by URL\n")
	fmt.Fprintf(&b, "dhcp-option-force=%stag:!ingot-ipxe,tag:ingot-http,option:vendor-class,HTTPClient\n", known)
	fmt.Fprintf(&b, "dhcp-boot=%stag:!ingot-ipxe,tag:ingot-http,%s\n", known, httpFile)
	fmt.Fprintf(&b, "# PXE: the iPXE binary by TFTP\n")
	fmt.Fprintf(&b, "dhcp-boot=%stag:!ingot-ipxe,tag:!ingot-http,tag:ingot-efi64,%s,,%s\n", known, d.UEFIFile, d.TFTPServer)
	fmt.Fprintf(&b, "dhcp-boot=%stag:!ingot-ipxe,tag:!ingot-http,tag:!ingot-efi64,%s,,%s\n", known, d.BIOSFile, d.TFTPServer)
	return b.Bytes(), nil
}

// DnsmasqHost renders the dhcp-hostsdir file that tags one MAC as a
// machine Ingot boots.
func DnsmasqHost(mac string) ([]byte, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("dnsmasq host: %q is not a MAC address", mac)
	}
	return []byte(hw.String() + ",set:" + DnsmasqTag + "\n"), nil
}
