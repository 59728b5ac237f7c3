package netsetup

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func ack(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFromAck(t *testing.T) {
	ip := net.IPv4(192, 0, 2, 10)
	tests := []struct {
		name    string
		mods    []dhcpv4.Modifier
		want    string // Address
		gw      string
		dns     string
		wantErr string
	}{
		{name: "full lease",
			mods: []dhcpv4.Modifier{dhcpv4.WithYourIP(ip), dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
				dhcpv4.WithRouter(net.IPv4(192, 0, 2, 1)), dhcpv4.WithDNS(net.IPv4(192, 0, 2, 53), net.IPv4(0, 0, 0, 0)),
				dhcpv4.WithLeaseTime(600)},
			want: "192.0.2.10/24", gw: "192.0.2.1", dns: "[192.0.2.53]"},
		{name: "no mask takes the class default",
			mods: []dhcpv4.Modifier{dhcpv4.WithYourIP(ip)}, want: "192.0.2.10/24", gw: "<nil>", dns: "[]"},
		{name: "first usable router wins",
			mods: []dhcpv4.Modifier{dhcpv4.WithYourIP(net.IPv4(10, 1, 2, 3)), dhcpv4.WithNetmask(net.CIDRMask(16, 32)),
				dhcpv4.WithRouter(net.IPv4zero, net.IPv4(10, 1, 0, 1))},
			want: "10.1.2.3/16", gw: "10.1.0.1", dns: "[]"},
		{name: "no address", mods: nil, wantErr: "no usable address"},
		{name: "multicast address", mods: []dhcpv4.Modifier{dhcpv4.WithYourIP(net.IPv4(224, 0, 0, 1))}, wantErr: "no usable address"},
		{name: "zero mask",
			mods:    []dhcpv4.Modifier{dhcpv4.WithYourIP(ip), dhcpv4.WithNetmask(net.CIDRMask(0, 32))},
			wantErr: "invalid subnet mask"},
		{name: "non-contiguous mask",
			mods:    []dhcpv4.Modifier{dhcpv4.WithYourIP(ip), dhcpv4.WithNetmask(net.IPv4Mask(255, 0, 255, 0))},
			wantErr: "invalid subnet mask"},
		{name: "router off subnet",
			mods: []dhcpv4.Modifier{dhcpv4.WithYourIP(ip), dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
				dhcpv4.WithRouter(net.IPv4(198, 51, 100, 1))},
			wantErr: "outside the leased subnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := FromAck(ack(t, tt.mods...))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FromAck = %+v, %v; want error containing %q", c, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Address.String(); got != tt.want {
				t.Errorf("address %s, want %s", got, tt.want)
			}
			if got := c.Gateway.String(); got != tt.gw {
				t.Errorf("gateway %s, want %s", got, tt.gw)
			}
			if got := "[" + fmtIPs(c.DNS) + "]"; got != tt.dns {
				t.Errorf("dns %s, want %s", got, tt.dns)
			}
		})
	}
	if _, err := FromAck(nil); err == nil {
		t.Error("FromAck(nil) succeeded")
	}
}

func fmtIPs(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, " ")
}

func TestFromAckLeaseTime(t *testing.T) {
	c, err := FromAck(ack(t, dhcpv4.WithYourIP(net.IPv4(192, 0, 2, 10)), dhcpv4.WithLeaseTime(3600)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Lease != time.Hour {
		t.Errorf("lease %s, want 1h", c.Lease)
	}
}

func TestResolvConf(t *testing.T) {
	c := Config{DNS: []net.IP{net.IPv4(192, 0, 2, 53), net.IPv4(192, 0, 2, 54)}, Domain: "lab.example"}
	want := "# written by the ingot deploy agent from its DHCP lease\nsearch lab.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"
	if got := c.ResolvConf(); got != want {
		t.Errorf("ResolvConf =\n%s\nwant\n%s", got, want)
	}
	c.Domain = "evil\nnameserver 6.6.6.6"
	if got := c.ResolvConf(); strings.Contains(got, "6.6.6.6") {
		t.Errorf("a domain with a newline was written: %q", got)
	}
	if got := (Config{}).ResolvConf(); got != "" {
		t.Errorf("no DNS gives %q, want empty", got)
	}
}

func FuzzFromAck(f *testing.F) {
	m, _ := dhcpv4.New(dhcpv4.WithYourIP(net.IPv4(192, 0, 2, 10)), dhcpv4.WithRouter(net.IPv4(192, 0, 2, 1)))
	f.Add(m.ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		c, err := FromAck(msg)
		if err != nil {
			return
		}
		if c.Gateway != nil && !c.Address.Contains(c.Gateway) {
			t.Fatalf("gateway %v outside %v", c.Gateway, &c.Address)
		}
		if strings.Count(c.ResolvConf(), "\n") > len(c.DNS)+2 {
			t.Fatalf("resolv.conf grew lines: %q", c.ResolvConf())
		}
	})
}
