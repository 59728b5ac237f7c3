// Package dhcpd is the conductor's DHCP service for network boot, built on
// github.com/insomniacslk/dhcp. It runs in one of three modes:
//
//   - proxy: ProxyDHCP. It answers only PXE clients of known nodes, with
//     boot options and no address; the network's DHCP server keeps
//     handing out addresses. PXE clients that ask the proxy again on port
//     4011 get the same answer there.
//   - full: an address pool for an isolated provisioning network, with a
//     small in-memory lease table; boot clients also get boot options.
//   - off: no DHCP socket at all. An external dnsmasq includes the files
//     DnsmasqOptions and DnsmasqHost render.
//
// The boot answer follows the client: iPXE (user class "iPXE") gets its
// per-MAC script URL, which breaks the chain-load loop, with option
// 175.176 so it skips its ProxyDHCP wait; legacy BIOS PXE gets
// undionly.kpxe and x86-64 UEFI PXE the iPXE EFI binary by TFTP (option
// 66/67, siaddr, and the PXE vendor options ProxyDHCP needs); UEFI HTTP
// boot clients (vendor class "HTTPClient") get the iPXE EFI binary by URL.
// Only machines whose MAC the Nodes interface knows get answers, unless
// discovery is on.
//
// Request handling is pure: Classify and the handler chain turn a request
// into a reply without sockets, coredhcp style. Serve only moves packets;
// malformed or oversized ones are dropped with a debug log. ServeRA
// answers IPv6 router solicitations so iPXE does not wait for IPv6.
package dhcpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Mode selects how the conductor takes part in DHCP.
type Mode string

// Modes.
const (
	ModeOff   Mode = "off"
	ModeProxy Mode = "proxy"
	ModeFull  Mode = "full"
)

// Ports.
const (
	ServerPort = 67
	ClientPort = 68
	// PXEPort is where PXE clients ask a ProxyDHCP server again (the PXE
	// boot server discovery port).
	PXEPort = 4011
)

// MaxPacket is the largest request accepted; larger ones are dropped.
// (Clients must accept 576-byte messages; Ethernet carries 1500.)
const MaxPacket = 1500

// Nodes tells the DHCP server which machines it boots.
type Nodes interface {
	// Known reports whether mac (lower case, colons) belongs to a node
	// the conductor manages.
	Known(ctx context.Context, mac string) bool
}

// Options configure a Server. Fields marked "full" matter in full mode
// only.
type Options struct {
	Mode Mode
	// ServerIP is the conductor's address on the provisioning network:
	// the DHCP server identifier, and the TFTP server (siaddr, option 66).
	ServerIP netip.Addr
	// ScriptURL returns the iPXE script URL of a MAC (lower case, colons).
	ScriptURL func(mac string) string
	// FirmwareURL returns the HTTP URL of a boot binary, for UEFI HTTP
	// boot.
	FirmwareURL func(file string) string
	// BIOSFile and UEFIFile are the iPXE binaries by TFTP (undionly.kpxe,
	// snponly.efi).
	BIOSFile string
	UEFIFile string
	// Discovery answers machines whose MAC no node has, so they can boot
	// and be enrolled.
	Discovery bool
	// ChainloadIPXE hands Ingot's iPXE binary even to machines whose
	// firmware is iPXE already (once per boot: the chain-loaded iPXE then
	// gets the script), for firmware whose built-in iPXE is too old.
	ChainloadIPXE bool

	// Pool is the address range (full).
	Pool *Pool
	// Netmask, Router and DNS describe the network (full). Router and
	// DNS are optional.
	Netmask net.IPMask
	Router  netip.Addr
	DNS     []netip.Addr

	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Server answers DHCP requests for network boot.
type Server struct {
	opts  Options
	nodes Nodes
	log   *slog.Logger

	mu    sync.Mutex
	chain map[string]chainState
}

// chainState remembers, per MAC, whether Ingot handed its iPXE binary to
// the machine's built-in iPXE in the current boot (ChainloadIPXE).
type chainState struct {
	xid    dhcpv4.TransactionID
	binary bool
	at     time.Time
}

// chainWindow is how long after handing out the iPXE binary a new DHCP
// exchange from the same MAC counts as the chain-loaded iPXE.
const chainWindow = 5 * time.Minute

// New checks opts and returns a Server.
func New(nodes Nodes, log *slog.Logger, opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BIOSFile == "" {
		opts.BIOSFile = "undionly.kpxe"
	}
	if opts.UEFIFile == "" {
		opts.UEFIFile = "snponly.efi"
	}
	var errs []error
	switch opts.Mode {
	case ModeProxy, ModeFull:
	default:
		errs = append(errs, fmt.Errorf("dhcp mode %q: a server runs in proxy or full mode", opts.Mode))
	}
	if !opts.ServerIP.Is4() {
		errs = append(errs, fmt.Errorf("dhcp server address %v: want an IPv4 address", opts.ServerIP))
	}
	if opts.ScriptURL == nil || opts.FirmwareURL == nil {
		errs = append(errs, errors.New("dhcp: script and firmware URLs are required"))
	}
	if opts.Mode == ModeFull {
		if opts.Pool == nil {
			errs = append(errs, errors.New("dhcp full mode needs an address range"))
		}
		if ones, bits := opts.Netmask.Size(); bits != 32 || ones == 0 {
			errs = append(errs, fmt.Errorf("dhcp netmask %v: want an IPv4 netmask", opts.Netmask))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Server{opts: opts, nodes: nodes, log: log, chain: map[string]chainState{}}, nil
}

// handler is one step of the reply chain (coredhcp's Handler4): it may
// change resp, and returns it with stop set when the chain ends there. A
// nil resp with stop means no answer.
type handler func(ctx context.Context, c Client, req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool)

func (s *Server) chainFor(pxePort bool) []handler {
	switch {
	case pxePort:
		return []handler{s.onlyBooting, s.onlyKnown, s.proxyAck, s.bootOptions}
	case s.opts.Mode == ModeProxy:
		return []handler{s.onlyBooting, s.onlyKnown, s.proxyOffer, s.bootOptions}
	default:
		return []handler{s.onlyKnown, s.lease, s.network, s.bootOptions}
	}
}

// Handle answers one request that arrived on the DHCP server port, or on
// the PXE port when pxePort is set. A nil reply means no answer.
func (s *Server) Handle(ctx context.Context, req *dhcpv4.DHCPv4, pxePort bool) (*dhcpv4.DHCPv4, error) {
	c, err := Classify(req)
	if err != nil {
		return nil, err
	}
	resp, err := dhcpv4.NewReplyFromRequest(req)
	if err != nil {
		return nil, fmt.Errorf("build reply: %w", err)
	}
	resp.UpdateOption(dhcpv4.OptServerIdentifier(s.opts.ServerIP.AsSlice()))
	for _, h := range s.chainFor(pxePort) {
		var stop bool
		resp, stop = h(ctx, c, req, resp)
		if stop {
			break
		}
	}
	return resp, nil
}

func (s *Server) debug(c Client, msg string, args ...any) {
	s.log.Debug(msg, append([]any{"mac", c.MAC, "type", c.Type.String()}, args...)...)
}

// onlyBooting ignores clients that do not network-boot (proxy mode).
func (s *Server) onlyBooting(_ context.Context, c Client, _, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	if !c.Booting() {
		s.debug(c, "dhcp ignored: not a network boot client")
		return nil, true
	}
	return resp, false
}

// onlyKnown ignores machines no node has, unless discovery is on.
func (s *Server) onlyKnown(ctx context.Context, c Client, _, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	if s.opts.Discovery || s.nodes.Known(ctx, c.MAC) {
		return resp, false
	}
	s.debug(c, "dhcp ignored: unknown MAC")
	return nil, true
}

// proxyOffer answers a DISCOVER with a ProxyDHCP offer (no address), and
// a REQUEST only when it names this server.
func (s *Server) proxyOffer(_ context.Context, c Client, req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	switch c.Type {
	case dhcpv4.MessageTypeDiscover:
		resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		if !req.ServerIdentifier().Equal(s.opts.ServerIP.AsSlice()) {
			s.debug(c, "dhcp ignored: request for another server")
			return nil, true
		}
		resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
	default:
		return nil, true
	}
	resp.YourIPAddr = net.IPv4zero
	return resp, false
}

// proxyAck answers on the PXE port: every request gets an ACK with the
// boot options.
func (s *Server) proxyAck(_ context.Context, c Client, _, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	if c.Type != dhcpv4.MessageTypeRequest && c.Type != dhcpv4.MessageTypeInform {
		return nil, true
	}
	resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
	resp.YourIPAddr = net.IPv4zero
	return resp, false
}

// lease runs the address pool (full mode).
func (s *Server) lease(_ context.Context, c Client, req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	pool := s.opts.Pool
	requested, _ := netip.AddrFromSlice(req.RequestedIPAddress().To4())
	ciaddr, _ := netip.AddrFromSlice(req.ClientIPAddr.To4())
	ours := req.ServerIdentifier() == nil || req.ServerIdentifier().Equal(s.opts.ServerIP.AsSlice())
	switch c.Type {
	case dhcpv4.MessageTypeDiscover:
		ip, err := pool.Offer(c.MAC, requested)
		if err != nil {
			s.log.Warn("dhcp cannot offer an address", "mac", c.MAC, "err", err)
			return nil, true
		}
		resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
		resp.YourIPAddr = ip.AsSlice()
	case dhcpv4.MessageTypeRequest:
		if !ours {
			s.debug(c, "dhcp ignored: the client chose another server")
			return nil, true
		}
		ip := requested
		if !ip.IsValid() || ip.IsUnspecified() {
			ip = ciaddr
		}
		l, err := pool.Commit(c.MAC, ip)
		if err != nil {
			if errors.Is(err, ErrNotOurs) && req.ServerIdentifier() == nil && !ip.IsValid() {
				return nil, true // nothing to acknowledge or refuse
			}
			s.log.Info("dhcp nak", "mac", c.MAC, "ip", ip.String(), "err", err)
			nak, _ := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.opts.ServerIP.AsSlice())))
			return nak, true
		}
		resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
		resp.YourIPAddr = l.IP.AsSlice()
		s.log.Info("dhcp lease", "mac", c.MAC, "ip", l.IP.String(), "until", l.Expires.Format(time.RFC3339))
	case dhcpv4.MessageTypeInform:
		resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
		resp.YourIPAddr = net.IPv4zero
		return resp, false
	case dhcpv4.MessageTypeRelease:
		if ours {
			pool.Release(c.MAC, ciaddr)
			s.debug(c, "dhcp release", "ip", ciaddr.String())
		}
		return nil, true
	case dhcpv4.MessageTypeDecline:
		if ours {
			pool.Decline(c.MAC, requested)
			s.log.Warn("dhcp decline: address in use on the network", "mac", c.MAC, "ip", requested.String())
		}
		return nil, true
	default:
		return nil, true
	}
	resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(pool.LeaseTime()))
	return resp, false
}

// network adds the subnet's options (full mode).
func (s *Server) network(_ context.Context, _ Client, _, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	resp.UpdateOption(dhcpv4.OptSubnetMask(s.opts.Netmask))
	if s.opts.Router.IsValid() {
		resp.UpdateOption(dhcpv4.OptRouter(s.opts.Router.AsSlice()))
	}
	if len(s.opts.DNS) > 0 {
		var ips []net.IP
		for _, d := range s.opts.DNS {
			ips = append(ips, d.AsSlice())
		}
		resp.UpdateOption(dhcpv4.OptDNS(ips...))
	}
	return resp, false
}

// Option codes Ingot sets by number.
const (
	optVendorSpecific = 43
	optIPXEEncap      = 175
	optIPXENoPXEDHCP  = 176
)

// bootOptions tells a booting client where its boot file is.
func (s *Server) bootOptions(ctx context.Context, c Client, req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	if !c.Booting() {
		return resp, true
	}
	if c.Firmware == FirmwareUnsupported {
		s.debug(c, "dhcp: no boot file for this architecture", "arch", c.Arch.String())
		if s.opts.Mode == ModeProxy {
			return nil, true // a proxy offer without a boot file says nothing
		}
		return resp, true // the address alone
	}
	// PXE clients need the GUID option echoed in a ProxyDHCP answer.
	if guid := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); guid != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid))
	}
	file, kind := s.bootFile(c, req)
	// iPXE only accepts a ProxyDHCP answer with a next-server and a
	// file name ("PXE options"), whatever the file is.
	resp.ServerIPAddr = s.opts.ServerIP.AsSlice()
	switch kind {
	case "script":
		// iPXE: the script URL, and no wait for ProxyDHCP offers.
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClassIdentifier, []byte("PXEClient")))
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(optIPXEEncap), []byte{optIPXENoPXEDHCP, 1, 1}))
	case "http":
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClassIdentifier, []byte("HTTPClient")))
	case "tftp":
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClassIdentifier, []byte("PXEClient")))
		resp.UpdateOption(dhcpv4.OptTFTPServerName(s.opts.ServerIP.String()))
		// PXE boot server discovery control: bit 3, boot the file named
		// in this offer without further discovery.
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(optVendorSpecific), []byte{6, 1, 8, 255}))
	}
	resp.UpdateOption(dhcpv4.OptBootFileName(file))
	if len(file) < 128 {
		resp.BootFileName = file
	}
	if c.Type == dhcpv4.MessageTypeRequest || c.Type == dhcpv4.MessageTypeInform || c.Type == dhcpv4.MessageTypeDiscover {
		level := slog.LevelDebug
		if c.Type != dhcpv4.MessageTypeDiscover {
			level = slog.LevelInfo
		}
		s.log.Log(ctx, level, "dhcp boot answer", "mac", c.MAC, "type", c.Type.String(),
			"firmware", string(c.Firmware), "ipxe", c.IPXE, "file", file)
	}
	return resp, true
}

// bootFile picks the boot file and how the client fetches it: "script"
// (iPXE script URL), "http" (binary by URL) or "tftp" (binary name).
func (s *Server) bootFile(c Client, req *dhcpv4.DHCPv4) (string, string) {
	binary := s.opts.BIOSFile
	if c.Firmware == FirmwareUEFI || c.Firmware == FirmwareUEFIHTTP {
		binary = s.opts.UEFIFile
	}
	if c.IPXE && !s.chainloadNow(c, req) {
		return s.opts.ScriptURL(c.MAC), "script"
	}
	if c.Firmware == FirmwareUEFIHTTP {
		return s.opts.FirmwareURL(binary), "http"
	}
	return binary, "tftp"
}

// chainloadNow decides, with ChainloadIPXE, whether an iPXE client gets
// Ingot's iPXE binary (its firmware's iPXE, first exchange of a boot) or
// its script (the chain-loaded iPXE, the next exchange). Both messages of
// one exchange (same transaction ID) get the same answer.
func (s *Server) chainloadNow(c Client, req *dhcpv4.DHCPv4) bool {
	if !s.opts.ChainloadIPXE {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	for mac, st := range s.chain {
		if now.Sub(st.at) > chainWindow {
			delete(s.chain, mac)
		}
	}
	st, ok := s.chain[c.MAC]
	switch {
	case ok && st.xid == req.TransactionID:
		return st.binary
	case ok && st.binary:
		s.chain[c.MAC] = chainState{xid: req.TransactionID, binary: false, at: now}
		return false
	default:
		s.chain[c.MAC] = chainState{xid: req.TransactionID, binary: true, at: now}
		return true
	}
}

// ReplyAddr is where a reply to a request goes (RFC 2131 4.1): back to the
// relay, to the client's address if it has one, else broadcast. Replies
// on the PXE port go back to the sender.
func ReplyAddr(req, resp *dhcpv4.DHCPv4, peer net.Addr, pxePort bool) net.Addr {
	if pxePort {
		return peer
	}
	if ip := req.GatewayIPAddr.To4(); ip != nil && !ip.IsUnspecified() {
		return &net.UDPAddr{IP: ip, Port: ServerPort}
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return &net.UDPAddr{IP: net.IPv4bcast, Port: ClientPort}
	}
	if ip := req.ClientIPAddr.To4(); ip != nil && !ip.IsUnspecified() {
		return &net.UDPAddr{IP: ip, Port: ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: ClientPort}
}

// Serve answers requests arriving on conn (the DHCP server port) until ctx
// ends, then closes conn.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	return s.serve(ctx, conn, false)
}

// ServePXE answers ProxyDHCP requests on the PXE port (4011) until ctx
// ends, then closes conn.
func (s *Server) ServePXE(ctx context.Context, conn net.PacketConn) error {
	return s.serve(ctx, conn, true)
}

func (s *Server) serve(ctx context.Context, conn net.PacketConn, pxePort bool) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	buf := make([]byte, 65536)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("serve dhcp: %w", err)
		}
		s.packet(ctx, conn, buf[:n], peer, pxePort)
	}
}

// packet handles one datagram; nothing in it can stop the server.
func (s *Server) packet(ctx context.Context, conn net.PacketConn, b []byte, peer net.Addr, pxePort bool) {
	if len(b) > MaxPacket {
		s.log.Debug("dhcp packet dropped: oversized", "bytes", len(b), "from", peer.String())
		return
	}
	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		s.log.Debug("dhcp packet dropped: malformed", "bytes", len(b), "from", peer.String(), "err", err)
		return
	}
	resp, err := s.Handle(ctx, req, pxePort)
	if err != nil {
		s.log.Debug("dhcp packet dropped", "from", peer.String(), "err", err)
		return
	}
	if resp == nil {
		return
	}
	dst := ReplyAddr(req, resp, peer, pxePort)
	if _, err := conn.WriteTo(resp.ToBytes(), dst); err != nil {
		s.log.Warn("dhcp reply failed", "mac", req.ClientHWAddr.String(), "to", dst.String(), "err", err)
	}
}
