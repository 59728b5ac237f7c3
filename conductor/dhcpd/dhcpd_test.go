package dhcpd

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

const (
	knownMAC   = "52:54:00:00:00:01"
	knownMAC2  = "52:54:00:00:00:02"
	unknownMAC = "52:54:00:99:99:99"
)

var serverIP = netip.MustParseAddr("10.99.0.1")

type nodes map[string]bool

func (n nodes) Known(_ context.Context, mac string) bool { return n[mac] }

func scriptURL(mac string) string {
	return "http://10.99.0.1:8080/ipxe/" + strings.ReplaceAll(mac, ":", "-")
}

func firmwareURL(file string) string { return "http://10.99.0.1:8080/firmware/" + file }

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newServer(t testing.TB, mode Mode, mutate func(o *Options)) *Server {
	t.Helper()
	opts := Options{Mode: mode, ServerIP: serverIP, ScriptURL: scriptURL, FirmwareURL: firmwareURL}
	if mode == ModeFull {
		pool, err := NewPool(netip.MustParseAddr("10.99.0.100"), netip.MustParseAddr("10.99.0.102"), time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		opts.Pool = pool
		opts.Netmask = net.CIDRMask(24, 32)
		opts.Router = netip.MustParseAddr("10.99.0.254")
		opts.DNS = []netip.Addr{netip.MustParseAddr("10.99.0.53")}
	}
	if mutate != nil {
		mutate(&opts)
	}
	s, err := New(nodes{knownMAC: true, knownMAC2: true}, testLog(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// client describes a test request.
type client struct {
	mac    string
	typ    dhcpv4.MessageType
	vendor string // option 60
	arch   []iana.Arch
	ipxe   bool
	xid    byte
	mods   []dhcpv4.Modifier
}

func (c client) packet(t testing.TB) *dhcpv4.DHCPv4 {
	t.Helper()
	hw, err := net.ParseMAC(c.mac)
	if err != nil {
		t.Fatal(err)
	}
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(c.typ), dhcpv4.WithTransactionID(dhcpv4.TransactionID{c.xid, 2, 3, 4})}
	if c.vendor != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(c.vendor)))
	}
	if len(c.arch) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientArch(c.arch...)))
	}
	if c.ipxe {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")))
	}
	mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}))
	mods = append(mods, c.mods...)
	p, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	biosPXE   = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover, vendor: "PXEClient:Arch:00000:UNDI:002001", arch: []iana.Arch{iana.INTEL_X86PC}}
	uefiPXE   = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover, vendor: "PXEClient:Arch:00007:UNDI:003016", arch: []iana.Arch{iana.EFI_X86_64}}
	uefiBC    = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover, vendor: "PXEClient:Arch:00009:UNDI:003016", arch: []iana.Arch{iana.EFI_BC}}
	uefiHTTP  = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover, vendor: "HTTPClient:Arch:00016:UNDI:003001", arch: []iana.Arch{iana.EFI_X86_64_HTTP}}
	ipxeBIOS  = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover, vendor: "PXEClient:Arch:00000:UNDI:002001", arch: []iana.Arch{iana.INTEL_X86PC}, ipxe: true}
	ipxeUEFI  = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover, vendor: "PXEClient:Arch:00007:UNDI:003010", arch: []iana.Arch{iana.EFI_X86_64}, ipxe: true}
	noArch    = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover, vendor: "PXEClient"}
	archInVC  = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover, vendor: "PXEClient:Arch:00007:UNDI:003016"}
	arm64     = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover, vendor: "PXEClient:Arch:00011:UNDI:003000", arch: []iana.Arch{iana.EFI_ARM64}}
	plainHost = client{mac: knownMAC, typ: dhcpv4.MessageTypeDiscover}
)

func with(c client, f func(c *client)) client { f(&c); return c }

func TestClassify(t *testing.T) {
	rfcUserClass := with(plainHost, func(c *client) {
		c.mods = []dhcpv4.Modifier{dhcpv4.WithUserClass("iPXE", true)}
	})
	for _, tc := range []struct {
		name string
		in   client
		want Client
	}{
		{"BIOS PXE", biosPXE, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareBIOS, Arch: iana.INTEL_X86PC}},
		{"UEFI x86-64 PXE (arch 7)", uefiPXE, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareUEFI, Arch: iana.EFI_X86_64}},
		{"UEFI PXE, arch 9", uefiBC, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareUEFI, Arch: iana.EFI_BC}},
		{"UEFI HTTP boot", uefiHTTP, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareUEFIHTTP, Arch: iana.EFI_X86_64_HTTP}},
		{"iPXE on BIOS", ipxeBIOS, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareBIOS, Arch: iana.INTEL_X86PC, IPXE: true}},
		{"iPXE on UEFI", ipxeUEFI, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareUEFI, Arch: iana.EFI_X86_64, IPXE: true}},
		{"PXE without option 93 is BIOS", noArch, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareBIOS}},
		{"arch from the vendor class", archInVC, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareUEFI, Arch: iana.EFI_X86_64}},
		{"ARM64 UEFI has no binary", arm64, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareUnsupported, Arch: iana.EFI_ARM64}},
		{"plain host", plainHost, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover}},
		{"RFC 3004 user class", rfcUserClass, Client{MAC: knownMAC, Type: dhcpv4.MessageTypeDiscover, IPXE: true}},
		{"request", with(biosPXE, func(c *client) { c.typ = dhcpv4.MessageTypeRequest }),
			Client{MAC: knownMAC, Type: dhcpv4.MessageTypeRequest, Firmware: FirmwareBIOS, Arch: iana.INTEL_X86PC}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Classify(tc.in.packet(t))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestClassifyRefuses(t *testing.T) {
	good := func() *dhcpv4.DHCPv4 { return biosPXE.packet(t) }
	for _, tc := range []struct {
		name   string
		mutate func(p *dhcpv4.DHCPv4)
	}{
		{"a reply", func(p *dhcpv4.DHCPv4) { p.OpCode = dhcpv4.OpcodeBootReply }},
		{"an offer", func(p *dhcpv4.DHCPv4) { p.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer)) }},
		{"no message type", func(p *dhcpv4.DHCPv4) { p.Options.Del(dhcpv4.OptionDHCPMessageType) }},
		{"long message type", func(p *dhcpv4.DHCPv4) {
			p.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionDHCPMessageType, []byte{1, 1}))
		}},
		{"InfiniBand hardware", func(p *dhcpv4.DHCPv4) { p.HWType = iana.HWTypeInfiniband }},
		{"short hardware address", func(p *dhcpv4.DHCPv4) { p.ClientHWAddr = p.ClientHWAddr[:4] }},
		{"relay loop", func(p *dhcpv4.DHCPv4) { p.HopCount = 17 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := good()
			tc.mutate(p)
			if _, err := Classify(p); !errors.Is(err, ErrMalformed) {
				t.Errorf("Classify = %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := Classify(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("Classify(nil) = %v", err)
	}
}

// answer summarises a reply for table comparisons.
type answer struct {
	Type     string
	YourIP   string
	NextSrv  string
	File     string // option 67
	FileHdr  string // legacy file field
	Vendor   string // option 60
	TFTPName string // option 66
	PXEOpt   []byte // option 43
	IPXEOpt  []byte // option 175
	GUID     bool   // option 97 echoed
	ServerID string
	Mask     string
	Router   string
	Lease    time.Duration
}

func summarize(r *dhcpv4.DHCPv4) *answer {
	if r == nil {
		return nil
	}
	a := &answer{
		Type: r.MessageType().String(), File: r.BootFileNameOption(), FileHdr: r.BootFileName,
		Vendor: r.ClassIdentifier(), TFTPName: r.TFTPServerName(),
		PXEOpt: r.Options.Get(dhcpv4.OptionVendorSpecificInformation), IPXEOpt: r.Options.Get(dhcpv4.GenericOptionCode(175)),
		GUID: r.Options.Has(dhcpv4.OptionClientMachineIdentifier),
	}
	str := func(ip net.IP) string {
		if ip == nil || ip.IsUnspecified() {
			return ""
		}
		return ip.String()
	}
	a.YourIP, a.NextSrv, a.ServerID = str(r.YourIPAddr), str(r.ServerIPAddr), str(r.ServerIdentifier())
	if m := r.SubnetMask(); m != nil {
		a.Mask = net.IP(m).String()
	}
	if rs := r.Router(); len(rs) > 0 {
		a.Router = rs[0].String()
	}
	a.Lease = r.IPAddressLeaseTime(0)
	return a
}

var (
	pxeVendorOpt  = []byte{6, 1, 8, 255}
	ipxeNoPXEDHCP = []byte{176, 1, 1}
)

func TestProxyMode(t *testing.T) {
	tftpOffer := func(file string) *answer {
		return &answer{Type: "OFFER", NextSrv: "10.99.0.1", File: file, FileHdr: file, Vendor: "PXEClient",
			TFTPName: "10.99.0.1", PXEOpt: pxeVendorOpt, GUID: true, ServerID: "10.99.0.1"}
	}
	script := scriptURL(knownMAC)
	for _, tc := range []struct {
		name    string
		in      client
		pxePort bool
		opts    func(o *Options)
		want    *answer
	}{
		{name: "BIOS PXE gets undionly.kpxe by TFTP", in: biosPXE, want: tftpOffer("undionly.kpxe")},
		{name: "UEFI PXE gets snponly.efi by TFTP", in: uefiPXE, want: tftpOffer("snponly.efi")},
		{name: "UEFI PXE arch 9 gets snponly.efi", in: uefiBC, want: tftpOffer("snponly.efi")},
		{name: "configured UEFI binary", in: uefiPXE, opts: func(o *Options) { o.UEFIFile = "ipxe.efi" }, want: tftpOffer("ipxe.efi")},
		{name: "iPXE gets its script URL and skips the ProxyDHCP wait", in: ipxeBIOS, want: &answer{
			Type: "OFFER", NextSrv: "10.99.0.1", File: script, FileHdr: script, Vendor: "PXEClient", IPXEOpt: ipxeNoPXEDHCP, GUID: true, ServerID: "10.99.0.1"}},
		{name: "UEFI HTTP boot gets the EFI binary by URL", in: uefiHTTP, want: &answer{
			Type: "OFFER", NextSrv: "10.99.0.1", File: firmwareURL("snponly.efi"), FileHdr: firmwareURL("snponly.efi"), Vendor: "HTTPClient", GUID: true, ServerID: "10.99.0.1"}},
		{name: "unknown MAC gets no answer", in: with(biosPXE, func(c *client) { c.mac = unknownMAC })},
		{name: "unknown MAC is answered with discovery", in: with(biosPXE, func(c *client) { c.mac = unknownMAC }),
			opts: func(o *Options) { o.Discovery = true }, want: tftpOffer("undionly.kpxe")},
		{name: "a host that does not network-boot gets no answer", in: plainHost},
		{name: "an architecture without a binary gets no answer", in: arm64},
		{name: "a request to the real DHCP server is left alone", in: with(biosPXE, func(c *client) {
			c.typ = dhcpv4.MessageTypeRequest
			c.mods = []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 2)))}
		})},
		{name: "a release is left alone", in: with(biosPXE, func(c *client) { c.typ = dhcpv4.MessageTypeRelease })},
		{name: "request on the PXE port gets an ACK", in: with(biosPXE, func(c *client) { c.typ = dhcpv4.MessageTypeRequest }), pxePort: true,
			want: func() *answer { a := tftpOffer("undionly.kpxe"); a.Type = "ACK"; return a }()},
		{name: "iPXE request on the PXE port gets the script", in: with(ipxeUEFI, func(c *client) { c.typ = dhcpv4.MessageTypeRequest }), pxePort: true,
			want: &answer{Type: "ACK", NextSrv: "10.99.0.1", File: script, FileHdr: script, Vendor: "PXEClient", IPXEOpt: ipxeNoPXEDHCP, GUID: true, ServerID: "10.99.0.1"}},
		{name: "discover on the PXE port is ignored", in: biosPXE, pxePort: true},
		{name: "unknown MAC on the PXE port gets no answer", in: with(biosPXE, func(c *client) {
			c.typ = dhcpv4.MessageTypeRequest
			c.mac = unknownMAC
		}), pxePort: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, ModeProxy, tc.opts)
			resp, err := s.Handle(t.Context(), tc.in.packet(t), tc.pxePort)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, summarize(resp)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestFullMode(t *testing.T) {
	s := newServer(t, ModeFull, nil)
	ctx := t.Context()
	step := func(c client) *answer {
		t.Helper()
		resp, err := s.Handle(ctx, c.packet(t), false)
		if err != nil {
			t.Fatal(err)
		}
		return summarize(resp)
	}
	network := func(a *answer) *answer {
		a.Mask, a.Router, a.ServerID, a.Lease = "255.255.255.0", "10.99.0.254", "10.99.0.1", time.Hour
		return a
	}
	request := func(c client, ip string, mods ...dhcpv4.Modifier) client {
		return with(c, func(c *client) {
			c.typ = dhcpv4.MessageTypeRequest
			c.mods = append([]dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip)))}, mods...)
		})
	}
	ours := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP.AsSlice()))

	t.Run("a PXE client gets an address and its boot file", func(t *testing.T) {
		got := step(biosPXE)
		want := network(&answer{Type: "OFFER", YourIP: "10.99.0.100", NextSrv: "10.99.0.1", File: "undionly.kpxe", FileHdr: "undionly.kpxe",
			Vendor: "PXEClient", TFTPName: "10.99.0.1", PXEOpt: pxeVendorOpt, GUID: true})
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("offer (-want +got):\n%s", diff)
		}
		got = step(request(biosPXE, "10.99.0.100", ours))
		want.Type = "ACK"
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ack (-want +got):\n%s", diff)
		}
	})
	t.Run("iPXE keeps its address and gets the script", func(t *testing.T) {
		got := step(with(ipxeBIOS, func(c *client) { c.xid = 9 }))
		u := scriptURL(knownMAC)
		want := network(&answer{Type: "OFFER", YourIP: "10.99.0.100", NextSrv: "10.99.0.1", File: u, FileHdr: u, Vendor: "PXEClient", IPXEOpt: ipxeNoPXEDHCP, GUID: true})
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("the agent asking for an address gets no boot file", func(t *testing.T) {
		got := step(request(plainHost, "10.99.0.100"))
		if diff := cmp.Diff(network(&answer{Type: "ACK", YourIP: "10.99.0.100"}), got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("a second node gets another address", func(t *testing.T) {
		got := step(with(plainHost, func(c *client) { c.mac = knownMAC2 }))
		if got == nil || got.YourIP != "10.99.0.101" {
			t.Fatalf("second node got %+v, want 10.99.0.101", got)
		}
		got = step(request(with(plainHost, func(c *client) { c.mac = knownMAC2 }), "10.99.0.100", ours))
		if got == nil || got.Type != "NAK" {
			t.Errorf("request for the first node's address = %+v, want a NAK", got)
		}
	})
	t.Run("an address outside the pool is refused", func(t *testing.T) {
		got := step(request(plainHost, "192.168.1.5"))
		if got == nil || got.Type != "NAK" {
			t.Errorf("got %+v, want a NAK", got)
		}
	})
	t.Run("a request for another server is left alone", func(t *testing.T) {
		if got := step(request(plainHost, "10.99.0.100", dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 2))))); got != nil {
			t.Errorf("got %+v, want no answer", got)
		}
	})
	t.Run("unknown machines get nothing", func(t *testing.T) {
		if got := step(with(biosPXE, func(c *client) { c.mac = unknownMAC })); got != nil {
			t.Errorf("got %+v, want no answer", got)
		}
	})
	t.Run("inform gets options without an address", func(t *testing.T) {
		got := step(with(plainHost, func(c *client) {
			c.typ = dhcpv4.MessageTypeInform
			c.mods = []dhcpv4.Modifier{dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 100))}
		}))
		if got == nil || got.Type != "ACK" || got.YourIP != "" || got.Mask != "255.255.255.0" {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("release frees the address", func(t *testing.T) {
		step(with(plainHost, func(c *client) {
			c.typ = dhcpv4.MessageTypeRelease
			c.mac = knownMAC2
			c.mods = []dhcpv4.Modifier{dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 101)), ours}
		}))
		for _, l := range s.opts.Pool.Leases() {
			if l.MAC == knownMAC2 && l.Expires.After(time.Now()) {
				t.Errorf("lease %+v still active after release", l)
			}
		}
	})
}

func TestPoolExhaustion(t *testing.T) {
	s := newServer(t, ModeFull, func(o *Options) { o.Discovery = true })
	for i := range 3 {
		mac := net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}.String()
		resp, err := s.Handle(t.Context(), with(plainHost, func(c *client) { c.mac = mac; c.typ = dhcpv4.MessageTypeRequest }).packet(t), false)
		_ = resp
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.opts.Pool.Offer(mac, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := s.Handle(t.Context(), with(plainHost, func(c *client) { c.mac = unknownMAC }).packet(t), false)
	if err != nil || resp != nil {
		t.Errorf("with the pool exhausted: %v, %v; want no answer", summarize(resp), err)
	}
}

func TestNewPoolRefuses(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name        string
		first, last netip.Addr
		lease       time.Duration
	}{
		{"reversed", a("10.0.0.9"), a("10.0.0.1"), time.Hour},
		{"IPv6", a("fd00::1"), a("fd00::9"), time.Hour},
		{"larger than a /16", a("10.0.0.0"), a("10.1.0.0"), time.Hour},
		{"no lease time", a("10.0.0.1"), a("10.0.0.9"), 0},
	} {
		if _, err := NewPool(tc.first, tc.last, tc.lease, nil); err == nil {
			t.Errorf("%s: NewPool accepted %s-%s", tc.name, tc.first, tc.last)
		}
	}
	if _, err := NewPool(a("10.0.0.0"), a("10.0.255.255"), time.Hour, nil); err != nil {
		t.Errorf("a /16: %v", err)
	}
}

func TestPoolLeases(t *testing.T) {
	now := time.Unix(1e9, 0)
	p, err := NewPool(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), time.Hour, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	ip1, _ := p.Offer("m1", netip.Addr{})
	if _, err := p.Commit("m1", ip1); err != nil {
		t.Fatal(err)
	}
	ip2, _ := p.Offer("m2", ip1) // asks for a taken address: gets the other
	if ip2 == ip1 {
		t.Fatalf("m2 offered m1's address %s", ip1)
	}
	if _, err := p.Offer("m3", netip.Addr{}); err == nil {
		t.Error("a third client got an address from a full two-address pool (m2's offer still holds)")
	}
	now = now.Add(time.Minute) // m2's offer expired
	if ip, err := p.Offer("m3", netip.Addr{}); err != nil || ip != ip2 {
		t.Errorf("after m2's offer expired, m3 got %s, %v", ip, err)
	}
	if _, err := p.Commit("m2", ip1); !errors.Is(err, ErrTaken) {
		t.Errorf("m2 committing m1's address: %v, want ErrTaken", err)
	}
	p.Decline("m1", ip1)
	if _, err := p.Commit("m1", ip1); !errors.Is(err, ErrTaken) {
		t.Errorf("a declined address was leased again: %v", err)
	}
	now = now.Add(2 * time.Hour)
	if _, err := p.Commit("m1", ip1); err != nil {
		t.Errorf("after the decline expired: %v", err)
	}
	p.Release("m1", ip1)
	if ip, err := p.Offer("m9", ip1); err != nil || ip != ip1 {
		t.Errorf("a released address is not offered again: %s, %v", ip, err)
	}
}

func TestChainloadIPXE(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := newServer(t, ModeFull, func(o *Options) {
		o.ChainloadIPXE = true
		o.Now = func() time.Time { return now }
	})
	file := func(xid byte, typ dhcpv4.MessageType) string {
		t.Helper()
		resp, err := s.Handle(t.Context(), with(ipxeBIOS, func(c *client) {
			c.xid, c.typ = xid, typ
			if typ == dhcpv4.MessageTypeRequest {
				c.mods = []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 100)))}
			}
		}).packet(t), false)
		if err != nil || resp == nil {
			t.Fatalf("no answer: %v", err)
		}
		return resp.BootFileNameOption()
	}
	script := scriptURL(knownMAC)
	for i, tc := range []struct {
		xid  byte
		typ  dhcpv4.MessageType
		want string
	}{
		{1, dhcpv4.MessageTypeDiscover, "undionly.kpxe"}, // firmware iPXE: load Ingot's
		{1, dhcpv4.MessageTypeRequest, "undionly.kpxe"},  // same exchange, same answer
		{2, dhcpv4.MessageTypeDiscover, script},          // the chain-loaded iPXE
		{2, dhcpv4.MessageTypeRequest, script},
		{3, dhcpv4.MessageTypeDiscover, "undionly.kpxe"}, // next boot starts over
	} {
		if got := file(tc.xid, tc.typ); got != tc.want {
			t.Errorf("step %d (xid %d %v): boot file %q, want %q", i, tc.xid, tc.typ, got, tc.want)
		}
	}
	// A chain-loaded iPXE that comes back much later is a new boot.
	now = now.Add(chainWindow + time.Second)
	if got := file(4, dhcpv4.MessageTypeDiscover); got != "undionly.kpxe" {
		t.Errorf("after the window: %q, want the binary again", got)
	}
}

func TestReplyAddr(t *testing.T) {
	peer := &net.UDPAddr{IP: net.IPv4(10, 99, 0, 50), Port: 68}
	offer, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer))
	nak, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeNak))
	req := func(mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		p, _ := dhcpv4.New(mods...)
		return p
	}
	for _, tc := range []struct {
		name      string
		req, resp *dhcpv4.DHCPv4
		pxePort   bool
		want      string
	}{
		{"client without address: broadcast", req(), offer, false, "255.255.255.255:68"},
		{"relayed: back to the relay", req(dhcpv4.WithRelay(net.IPv4(10, 1, 0, 1))), offer, false, "10.1.0.1:67"},
		{"renewing client: unicast", req(dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 50))), offer, false, "10.99.0.50:68"},
		{"NAK: broadcast", req(dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 50))), nak, false, "255.255.255.255:68"},
		{"PXE port: back to the sender", req(), offer, true, "10.99.0.50:68"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ReplyAddr(tc.req, tc.resp, peer, tc.pxePort).String(); got != tc.want {
				t.Errorf("ReplyAddr = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"off mode has no server", Options{Mode: ModeOff, ServerIP: serverIP, ScriptURL: scriptURL, FirmwareURL: firmwareURL}},
		{"IPv6 server address", Options{Mode: ModeProxy, ServerIP: netip.MustParseAddr("fe80::1"), ScriptURL: scriptURL, FirmwareURL: firmwareURL}},
		{"no URLs", Options{Mode: ModeProxy, ServerIP: serverIP}},
		{"full mode without a pool", Options{Mode: ModeFull, ServerIP: serverIP, ScriptURL: scriptURL, FirmwareURL: firmwareURL, Netmask: net.CIDRMask(24, 32)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(nodes{}, testLog(t), tc.opts); err == nil {
				t.Error("New accepted bad options")
			}
		})
	}
}

// packetConn is an in-memory net.PacketConn: tests feed datagrams in and
// read replies out.
type packetConn struct {
	in     chan []byte
	mu     sync.Mutex
	out    []sent
	closed chan struct{}
	once   sync.Once
}

type sent struct {
	to  string
	pkt *dhcpv4.DHCPv4
}

func newPacketConn() *packetConn {
	return &packetConn{in: make(chan []byte, 16), closed: make(chan struct{})}
}

func (c *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p), &net.UDPAddr{IP: net.IPv4zero, Port: 68}, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *packetConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	p, err := dhcpv4.FromBytes(b)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.out = append(c.out, sent{addr.String(), p})
	c.mu.Unlock()
	return len(b), nil
}

func (c *packetConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *packetConn) LocalAddr() net.Addr              { return &net.UDPAddr{Port: 67} }
func (c *packetConn) SetDeadline(time.Time) error      { return nil }
func (c *packetConn) SetReadDeadline(time.Time) error  { return nil }
func (c *packetConn) SetWriteDeadline(time.Time) error { return nil }

func (c *packetConn) replies() []sent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sent(nil), c.out...)
}

// logCounter counts log records by message.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.n[r.Message]++
	l.mu.Unlock()
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }
func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[msg]
}

func TestServeDropsBadPacketsAndKeepsServing(t *testing.T) {
	logs := &logCounter{n: map[string]int{}}
	s, err := New(nodes{knownMAC: true}, slog.New(logs), Options{Mode: ModeProxy, ServerIP: serverIP, ScriptURL: scriptURL, FirmwareURL: firmwareURL})
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	conn := newPacketConn()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()

	good := biosPXE.packet(t).ToBytes()
	truncated := good[:100]
	badCookie := append([]byte(nil), good...)
	badCookie[236] = 0
	badOption := append(append([]byte(nil), good[:240]...), 53, 200, 1) // option longer than the packet
	oversized := append(append([]byte(nil), good...), bytes.Repeat([]byte{0}, MaxPacket)...)
	reply := append([]byte(nil), good...)
	reply[0] = 2 // BOOTREPLY
	for _, p := range [][]byte{{}, {1}, truncated, badCookie, badOption, oversized, reply} {
		conn.in <- p
	}
	conn.in <- good
	deadline := time.Now().Add(5 * time.Second)
	for len(conn.replies()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v after cancel, want nil", err)
	}
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("goroutines leaked: %d before Serve, %d after", before, runtime.NumGoroutine())
			break
		}
	}
	r := conn.replies()
	if len(r) != 1 || r[0].to != "255.255.255.255:68" || r[0].pkt.BootFileNameOption() != "undionly.kpxe" {
		t.Fatalf("replies = %+v, want one broadcast offer of undionly.kpxe", r)
	}
	dropped := logs.count("dhcp packet dropped: malformed") + logs.count("dhcp packet dropped: oversized") + logs.count("dhcp packet dropped")
	if dropped != 7 {
		t.Errorf("%d bad packets logged as dropped, want 7 (%v)", dropped, logs.n)
	}
	if logs.count("dhcp packet dropped: oversized") != 1 {
		t.Errorf("the oversized packet was not logged as such: %v", logs.n)
	}
}

func TestListenTwiceIsAClearError(t *testing.T) {
	first, err := Listen(t.Context(), "", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = Listen(t.Context(), "", first.LocalAddr().String())
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "another DHCP server") {
		t.Errorf("second Listen = %v, want a clear 'already in use' error", err)
	}
}

func TestRouterAdvertisement(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}
	want := []byte{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}
	if got := RouterAdvertisement(mac); !bytes.Equal(got, want) {
		t.Errorf("RA = % x, want % x", got, want)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		hops int
		want bool
	}{
		{"solicitation", []byte{133, 0, 0, 0, 0, 0, 0, 0}, 255, true},
		{"solicitation with an option", []byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 4, 5, 6}, 255, true},
		{"forwarded (hop limit below 255)", []byte{133, 0, 0, 0, 0, 0, 0, 0}, 254, false},
		{"short", []byte{133, 0, 0, 0}, 255, false},
		{"non-zero code", []byte{133, 1, 0, 0, 0, 0, 0, 0}, 255, false},
		{"advertisement", []byte{134, 0, 0, 0, 0, 0, 0, 0}, 255, false},
	} {
		if got := IsRouterSolicitation(tc.b, tc.hops); got != tc.want {
			t.Errorf("%s: IsRouterSolicitation = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDnsmasqFiles(t *testing.T) {
	for _, discovery := range []bool{false, true} {
		name := "dnsmasq-ingot.conf"
		if discovery {
			name = "dnsmasq-ingot-discovery.conf"
		}
		got, err := DnsmasqOptions(Dnsmasq{TFTPServer: serverIP, ChainURL: "http://10.99.0.1:8080/boot.ipxe",
			FirmwareURL: firmwareURL, Discovery: discovery})
		if err != nil {
			t.Fatal(err)
		}
		golden(t, name, got)
	}
	host, err := DnsmasqHost("52:54:00:AA:BB:CC")
	if err != nil || string(host) != "52:54:00:aa:bb:cc,set:ingot\n" {
		t.Errorf("DnsmasqHost = %q, %v", host, err)
	}
	for _, bad := range []string{"", "52:54:00", "52:54:00:aa:bb:cc\nset:x", "52:54:00:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:00"} {
		if _, err := DnsmasqHost(bad); err == nil {
			t.Errorf("DnsmasqHost(%q) accepted", bad)
		}
	}
	if _, err := DnsmasqOptions(Dnsmasq{TFTPServer: serverIP, ChainURL: "http://x/a,b", FirmwareURL: firmwareURL}); err == nil {
		t.Error("a URL with a comma was written into a dnsmasq option")
	}
	if _, err := DnsmasqOptions(Dnsmasq{ChainURL: "http://x/", FirmwareURL: firmwareURL}); err == nil {
		t.Error("options without a TFTP server were rendered")
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	file := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs from the golden file (-want +got):\n%s", name, diff)
	}
}

// FuzzHandle feeds arbitrary bytes through parsing, classification and
// both modes' handlers: nothing panics, and every reply is a well-formed
// BOOTREPLY to the requesting MAC that parses back.
func FuzzHandle(f *testing.F) {
	for _, c := range []client{biosPXE, uefiPXE, uefiHTTP, ipxeBIOS, plainHost, arm64, with(biosPXE, func(c *client) { c.typ = dhcpv4.MessageTypeRequest })} {
		f.Add(c.packet(f).ToBytes())
	}
	if entries, err := os.ReadDir(filepath.Join("testdata", "packets")); err == nil {
		for _, e := range entries {
			if b, err := os.ReadFile(filepath.Join("testdata", "packets", e.Name())); err == nil {
				f.Add(b)
			}
		}
	}
	proxy := newServer(f, ModeProxy, func(o *Options) { o.Discovery = true })
	full := newServer(f, ModeFull, func(o *Options) { o.Discovery = true; o.ChainloadIPXE = true })
	proxy.log, full.log = slog.New(slog.DiscardHandler), slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		for _, s := range []*Server{proxy, full} {
			for _, pxePort := range []bool{false, true} {
				resp, err := s.Handle(context.Background(), req, pxePort)
				if err != nil || resp == nil {
					continue
				}
				back, err := dhcpv4.FromBytes(resp.ToBytes())
				if err != nil {
					t.Fatalf("reply does not parse: %v", err)
				}
				if back.OpCode != dhcpv4.OpcodeBootReply || !bytes.Equal(back.ClientHWAddr, req.ClientHWAddr) || back.TransactionID != req.TransactionID {
					t.Fatalf("reply %s does not answer request %s", back.Summary(), req.Summary())
				}
				_ = ReplyAddr(req, resp, &net.UDPAddr{}, pxePort)
			}
		}
	})
}

// TestCapturedPackets classifies and answers DHCP requests captured from
// real firmware booting in QEMU (the QEMU PXE test with
// INGOT_CAPTURE_DHCP set): the iPXE ROM on BIOS and UEFI, the chain-loaded
// undionly.kpxe and snponly.efi, and OVMF's own UEFI PXE.
func TestCapturedPackets(t *testing.T) {
	const vm = "52:54:00:12:34:56"
	script := "http://10.99.0.1:8080/ipxe/52-54-00-12-34-56"
	for _, tc := range []struct {
		file     string
		want     Client
		wantFile string // proxy mode's answer
	}{
		{"ipxe-rom-bios-discover.bin", Client{MAC: vm, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareBIOS, Arch: iana.INTEL_X86PC, IPXE: true}, script},
		// Captured in full mode: it names 10.99.0.1, so it is answered.
		{"ipxe-rom-bios-request.bin", Client{MAC: vm, Type: dhcpv4.MessageTypeRequest, Firmware: FirmwareBIOS, Arch: iana.INTEL_X86PC, IPXE: true}, script},
		{"undionly-kpxe-discover.bin", Client{MAC: vm, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareBIOS, Arch: iana.INTEL_X86PC, IPXE: true}, script},
		{"ipxe-rom-efi-discover.bin", Client{MAC: vm, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareUEFI, Arch: iana.EFI_X86_64, IPXE: true}, script},
		{"snponly-efi-discover.bin", Client{MAC: vm, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareUEFI, Arch: iana.EFI_X86_64, IPXE: true}, script},
		{"ovmf-pxe-discover.bin", Client{MAC: vm, Type: dhcpv4.MessageTypeDiscover, Firmware: FirmwareUEFI, Arch: iana.EFI_X86_64}, "snponly.efi"},
		// The request goes to the real DHCP server (udhcpd): left alone.
		{"ovmf-pxe-request.bin", Client{MAC: vm, Type: dhcpv4.MessageTypeRequest, Firmware: FirmwareUEFI, Arch: iana.EFI_X86_64}, ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "packets", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			req, err := dhcpv4.FromBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Classify(req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Classify (-want +got):\n%s", diff)
			}
			s, err := New(nodes{vm: true}, testLog(t), Options{Mode: ModeProxy, ServerIP: serverIP, ScriptURL: scriptURL, FirmwareURL: firmwareURL})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := s.Handle(t.Context(), req, false)
			if err != nil {
				t.Fatal(err)
			}
			gotFile := ""
			if resp != nil {
				gotFile = resp.BootFileNameOption()
				if guid := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); guid != nil && !bytes.Equal(resp.Options.Get(dhcpv4.OptionClientMachineIdentifier), guid) {
					t.Errorf("the client's GUID (option 97) is not echoed")
				}
			}
			if gotFile != tc.wantFile {
				t.Errorf("proxy answer file %q, want %q", gotFile, tc.wantFile)
			}
		})
	}
}
