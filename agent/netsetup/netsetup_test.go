package netsetup

import (
	"errors"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

func TestSelect(t *testing.T) {
	links := []Link{
		{Name: "lo", MAC: nil, Loopback: true},
		{Name: "eno1", MAC: mac("52:54:00:00:00:01")},
		{Name: "eno2", MAC: mac("52:54:00:00:00:02")},
		{Name: "bond0", MAC: mac("52:54:00:00:00:01"), Virtual: true},
	}
	for _, tc := range []struct {
		name, bootIF, iface string
		want                []string
		wantErr             error
	}{
		{name: "BOOTIF picks the NIC with that MAC", bootIF: "52:54:00:00:00:02", want: []string{"eno2"}},
		{name: "BOOTIF is matched case-insensitively", bootIF: "52:54:00:00:00:0A", wantErr: ErrNoLink},
		{name: "a name picks that link", iface: "eno1", want: []string{"eno1"}},
		{name: "an unknown name fails", iface: "eth9", wantErr: ErrNoLink},
		{name: "nothing given: every physical link", want: []string{"eno1", "eno2"}},
		{name: "BOOTIF wins over a name", bootIF: "52:54:00:00:00:01", iface: "eno2", want: []string{"eno1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Select(links, tc.bootIF, tc.iface)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			var names []string
			for _, l := range got {
				names = append(names, l.Name)
			}
			if diff := cmp.Diff(tc.want, names); diff != "" {
				t.Error(diff)
			}
		})
	}
	if _, err := Select([]Link{{Name: "lo", Loopback: true}}, "", ""); !errors.Is(err, ErrNoLink) {
		t.Errorf("only loopback: %v", err)
	}
	if _, err := Select(links, "zz", ""); err == nil {
		t.Error("bad BOOTIF accepted")
	}
}
