package inspect

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseWWID(t *testing.T) {
	for _, tc := range []struct {
		name, wwid string
		want       wwnParts
	}{
		{"NAA 5", "naa.5000C500A1B2C3D4", wwnParts{wwn: "0x5000c500a1b2c3d4", withExt: "0x5000c500a1b2c3d4"}},
		{"NAA 6 with vendor extension", "naa.6d0946606c47d8002a1b7c0a1e5b2b4f",
			wwnParts{wwn: "0x6d0946606c47d800", withExt: "0x6d0946606c47d8002a1b7c0a1e5b2b4f", vendorExt: "0x2a1b7c0a1e5b2b4f"}},
		{"EUI-64 of an NVMe namespace", "eui.0025388b91b3c2a1", wwnParts{wwn: "eui.0025388b91b3c2a1", withExt: "eui.0025388b91b3c2a1"}},
		{"T10 vendor id is not a WWN", "t10.ATA     QEMU HARDDISK", wwnParts{}},
		{"garbage after naa", "naa.xyz", wwnParts{}},
		{"empty", "", wwnParts{}},
		{"no type", "5000c500a1b2c3d4", wwnParts{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ParseWWID(tc.wwid), cmp.AllowUnexported(wwnParts{})); diff != "" {
				t.Error(diff)
			}
		})
	}
}

func TestParseVPD80(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"serial with padding", []byte("\x00\x80\x00\x0cdrive-scsi0 "), "drive-scsi0"},
		{"length beyond the buffer is clamped", []byte("\x00\x80\x00\x40ABC"), "ABC"},
		{"wrong page", []byte("\x00\x83\x00\x03ABC"), ""},
		{"binary junk is not a serial", []byte("\x00\x80\x00\x03A\x01C"), ""},
		{"short", []byte("\x00\x80"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseVPD80(tc.b); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseCPUInfoARM(t *testing.T) {
	ci := ParseCPUInfo("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n\nprocessor\t: 1\nFeatures\t: fp asimd\n")
	if ci.Count != 2 || ci.Sockets != 1 || strings.Join(ci.Flags, " ") != "fp asimd evtstrm aes" {
		t.Errorf("%+v", ci)
	}
}

func TestParseMemTotal(t *testing.T) {
	for in, want := range map[string]int64{"MemTotal:  1024 kB\n": 1 << 20, "MemTotal: 7\n": 7, "MemFree: 3 kB\n": 0, "MemTotal: x kB": 0, "MemTotal:": 0} {
		if got := ParseMemTotal(in); got != want {
			t.Errorf("ParseMemTotal(%q) = %d, want %d", in, got, want)
		}
	}
}

const lanPrint = `Set in Progress         : Set Complete
IP Address Source       : Static Address
IP Address              : 192.0.2.10
Subnet Mask             : 255.255.255.0
MAC Address             : d0:94:66:00:00:01
Default Gateway IP      : 192.0.2.1
`

func TestIPMIToolBMC(t *testing.T) {
	var asked []string
	run := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		asked = append(asked, strings.Join(args, " "))
		switch args[2] {
		case "1":
			return nil, errors.New("Invalid channel 1")
		case "2":
			return []byte(strings.Replace(lanPrint, "192.0.2.10", "0.0.0.0", 1)), nil
		}
		return []byte(lanPrint), nil
	}
	b, err := IPMIToolBMC(run)(t.Context())
	if err != nil || b.Address != "192.0.2.10" || b.MAC != "d0:94:66:00:00:01" {
		t.Errorf("got %+v, %v", b, err)
	}
	if want := []string{"lan print 1", "lan print 2", "lan print 3"}; !cmp.Equal(asked, want) {
		t.Errorf("asked %v", asked)
	}
	_, err = IPMIToolBMC(func(context.Context, string, ...string) ([]byte, error) { return []byte("IP Address : 0.0.0.0\n"), nil })(t.Context())
	if !errors.Is(err, ErrNoBMCAddress) {
		t.Errorf("err = %v", err)
	}
}

// FuzzParsers: every parser here reads files the kernel or a BMC tool
// wrote; none may panic, and what they return stays well formed.
func FuzzParsers(f *testing.F) {
	f.Add([]byte(fixtureCPUInfo))
	f.Add([]byte("MemTotal:        4028332 kB\n"))
	f.Add([]byte("naa.6d0946606c47d8002a1b7c0a1e5b2b4f"))
	f.Add([]byte("\x00\x80\x00\x0cdrive-scsi0 "))
	f.Add([]byte(lanPrint))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := string(b)
		ci := ParseCPUInfo(s)
		if ci.Count < 0 || ci.Sockets < 0 {
			t.Fatal(ci)
		}
		if ParseMemTotal(s) < 0 {
			t.Fatal("negative memory")
		}
		w := ParseWWID(s)
		if w.vendorExt != "" && (w.wwn == "" || !strings.HasPrefix(w.withExt, w.wwn)) {
			t.Fatalf("inconsistent %+v", w)
		}
		if v := ParseVPD80(b); strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			t.Fatalf("unprintable serial %q", v)
		}
		_ = ParseLANPrint(s)
	})
}
