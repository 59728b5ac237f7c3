//go:build interop

package dhcpd

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/ingot-dev/ingot/internal/netnstest"
	"github.com/ingot-dev/ingot/internal/peertest"
)

// rig is a server namespace and a client namespace joined by a veth
// pair: the server end "vs" has 10.98.0.1/24, the client end "vc" is
// bare.
type rig struct {
	srv, cli *netnstest.NS
	cliMAC   string
}

func newRig(t *testing.T) *rig {
	r := &rig{srv: netnstest.New(t, "ingot-dhcp-srv"), cli: netnstest.New(t, "ingot-dhcp-cli")}
	for _, ns := range []*netnstest.NS{r.srv, r.cli} {
		ns.Sysctl("net.ipv6.conf.default.accept_dad", "0") // link-local addresses at once
	}
	r.srv.Veth("vs", r.cli, "vc")
	r.srv.IP("addr", "add", "10.98.0.1/24", "dev", "vs")
	r.srv.IP("link", "set", "vs", "up")
	r.cli.IP("link", "set", "vc", "address", "02:00:00:00:00:c1")
	r.cli.IP("link", "set", "vc", "up")
	r.cliMAC = "02:00:00:00:00:c1"
	return r
}

// startFull runs a full-mode server in the server namespace.
func (r *rig) startFull(t *testing.T, known nodes) *Server {
	t.Helper()
	pool, err := NewPool(netip.MustParseAddr("10.98.0.100"), netip.MustParseAddr("10.98.0.110"), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(known, testLog(t), Options{Mode: ModeFull, ServerIP: netip.MustParseAddr("10.98.0.1"),
		ScriptURL: scriptURL, FirmwareURL: firmwareURL, Pool: pool, Netmask: net.CIDRMask(24, 32),
		Router: netip.MustParseAddr("10.98.0.1"), DNS: []netip.Addr{netip.MustParseAddr("10.98.0.53")}})
	if err != nil {
		t.Fatal(err)
	}
	var conn net.PacketConn
	if err := r.srv.Do(func() (err error) {
		conn, err = Listen(t.Context(), "vs", "0.0.0.0:67")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// udhcpc runs busybox udhcpc in the client namespace and returns what its
// script was told ("bound ip=... subnet=..."), or the error.
func (r *rig) udhcpc(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := peertest.Binary(t, "udhcpc", "udhcpc")
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	out := filepath.Join(dir, "events")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 ip=$ip subnet=$subnet router=$router dns=$dns serverid=$serverid lease=$lease\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	argv := append([]string{"-i", "vc", "-f", "-q", "-n", "-t", "3", "-T", "1", "-s", script}, args...)
	cmdOut, err := r.cli.Command(ctx, bin, argv...).CombinedOutput()
	t.Logf("udhcpc %s:\n%s", strings.Join(argv, " "), cmdOut)
	events, _ := os.ReadFile(out)
	return string(events), err
}

// TestInteropUdhcpcLease: busybox udhcpc, a real DHCP client, gets a lease
// from full mode across a veth pair, keeps its address when it asks
// again, and gets nothing when its MAC is unknown.
func TestInteropUdhcpcLease(t *testing.T) {
	r := newRig(t)
	s := r.startFull(t, nodes{r.cliMAC: true})
	events, err := r.udhcpc(t)
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, events)
	}
	want := "bound ip=10.98.0.100 subnet=255.255.255.0 router=10.98.0.1 dns=10.98.0.53 serverid=10.98.0.1 lease=3600"
	if !strings.Contains(events, want) {
		t.Fatalf("udhcpc events:\n%s\nwant %q", events, want)
	}
	leases := s.opts.Pool.Leases()
	if len(leases) != 1 || leases[0].MAC != r.cliMAC || leases[0].IP.String() != "10.98.0.100" || leases[0].Offered {
		t.Errorf("lease table: %+v", leases)
	}

	t.Run("the same client gets the same address again", func(t *testing.T) {
		events, err := r.udhcpc(t)
		if err != nil || !strings.Contains(events, "bound ip=10.98.0.100 ") {
			t.Errorf("second lease: %v\n%s", err, events)
		}
	})
	t.Run("an unknown MAC gets no answer", func(t *testing.T) {
		r.cli.IP("link", "set", "vc", "address", "02:00:00:00:00:99")
		defer r.cli.IP("link", "set", "vc", "address", r.cliMAC)
		events, err := r.udhcpc(t)
		if err == nil || strings.Contains(events, "bound") {
			t.Errorf("unknown MAC got a lease: %v\n%s", err, events)
		}
	})
	t.Run("a second server on the interface is a clear error", func(t *testing.T) {
		err := r.srv.Do(func() error {
			c, err := Listen(t.Context(), "vs", "0.0.0.0:67")
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "vs") {
			t.Errorf("second Listen = %v, want 'address already in use' on vs", err)
		}
	})
}

// TestInteropRouterAdvertisement: a router solicitation sent across the
// veth pair is answered with the minimal RA (lifetime 0, M=0, O=0).
func TestInteropRouterAdvertisement(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	raDone := r.srv.Go(func() error { return ServeRA(ctx, "vs", testLog(t)) })
	t.Cleanup(func() {
		cancel()
		if err := <-raDone; err != nil {
			t.Errorf("ServeRA: %v", err)
		}
	})
	var got []byte
	err := r.cli.Do(func() error {
		c, err := net.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		defer c.Close()
		p := ipv6.NewPacketConn(c)
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(icmpRouterAdvertisement)
		if err := p.SetICMPFilter(&f); err != nil {
			return err
		}
		p.SetMulticastHopLimit(255)
		ifi, err := net.InterfaceByName("vc")
		if err != nil {
			return err
		}
		if err := p.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::1")}); err != nil {
			return err
		}
		rs := []byte{icmpRouterSolicitation, 0, 0, 0, 0, 0, 0, 0}
		buf := make([]byte, 1500)
		// The server's socket may still be opening: solicit until
		// answered, as hosts do.
		// IPv6 comes up on the link asynchronously, too.
		var werr error
		for range 20 {
			if _, werr = p.WriteTo(rs, &ipv6.ControlMessage{HopLimit: 255, IfIndex: ifi.Index}, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: "vc"}); werr != nil {
				time.Sleep(250 * time.Millisecond)
				continue
			}
			p.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, _, _, err := p.ReadFrom(buf)
			if err == nil && n > 0 && buf[0] == icmpRouterAdvertisement {
				got = append([]byte(nil), buf[:n]...)
				return nil
			}
		}
		if werr != nil {
			return werr
		}
		return context.DeadlineExceeded
	})
	if err != nil {
		t.Fatalf("no router advertisement: %v", err)
	}
	if len(got) < 16 || got[5] != 0 || got[6] != 0 || got[7] != 0 {
		t.Errorf("RA % x: want M=0, O=0, router lifetime 0", got)
	}
}
