package bootparam

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseIronicTemplateCommandLine(t *testing.T) {
	// What Ironic's iPXE template renders for a node, plus kernel noise.
	cmdline := `BOOT_IMAGE=/vmlinuz selinux=0 troubleshoot=0 text nofb vga=normal ipa-debug=1 ` +
		`ipa-api-url=http://192.0.2.1:6385/ ipa-global-request-id=req-1 BOOTIF=01-52-54-00-12-34-56 ` +
		`initrd=deploy_ramdisk console=ttyS0,115200n8 "ingot.modules=virtio_net, virtio_blk" ingot.tls=auto ` +
		`ipa-inspection-callback-url=http://192.0.2.1:6385/v1/continue_inspection`
	got, err := Parse(cmdline)
	if err != nil {
		t.Fatal(err)
	}
	want := Params{
		APIURLs: []string{"http://192.0.2.1:6385"}, BootIF: "52:54:00:12:34:56", Debug: true,
		GlobalRequestID: "req-1", Modules: []string{"virtio_net", "virtio_blk"}, TLS: "auto",
		InspectionCallbackURL: "http://192.0.2.1:6385/v1/continue_inspection",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, cmdline, wantErr string }{
		{"bad BOOTIF", "BOOTIF=01-zz", "BOOTIF"},
		{"bad api url", "ipa-api-url=ftp://x", "ipa-api-url"},
		{"bad port", "ipa-listen-port=70000", "ipa-listen-port"},
		{"bad timeout", "ipa-lookup-timeout=-1", "ipa-lookup-timeout"},
		{"bad bool", "ipa-insecure=maybe", "ipa-insecure"},
		{"bad tls", "ingot.tls=sometimes", "ingot.tls"},
		{"bad inspection url", "ipa-inspection-callback-url=file:///x", "ipa-inspection-callback-url"},
		{"relative disk", "ingot.disk=disk.img", "ingot.disk"},
		{"all errors reported", "ipa-listen-port=0 BOOTIF=x", "BOOTIF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.cmdline)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse(%q) = %v, want an error about %s", tc.cmdline, err, tc.wantErr)
			}
		})
	}
}

func TestBareFlagsAndLastWins(t *testing.T) {
	p, err := Parse("ipa-insecure ipa-debug ipa-listen-port=1 ipa-listen-port=2")
	if err != nil || !p.Insecure || !p.Debug || p.ListenPort != 2 {
		t.Errorf("%+v %v", p, err)
	}
}

func TestDefaults(t *testing.T) {
	p := Params{ListenPort: 8443}.WithDefaults()
	if p.LookupTimeout != 600*time.Second || p.AdvertisePort != 8443 || p.ImageDownloadRetries != 9 {
		t.Errorf("%+v", p)
	}
}

func TestRoundTrip(t *testing.T) {
	p := Defaults()
	p.APIURLs = []string{"http://10.0.0.1:6385", "https://[2001:db8::1]:6385"}
	p.BootIF = "aa:bb:cc:dd:ee:ff"
	p.Insecure, p.Debug = true, true
	p.AgentToken = "tok"
	p.Interface, p.Disk = "eth0", "/dev/vda"
	p.Modules = []string{"a", "b"}
	p.LookupInterval = 1500 * time.Millisecond
	got, err := Parse(Format(p))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s\ncmdline: %s", diff, Format(p))
	}
}

// FuzzParse: any command line parses without panicking, and whatever it
// yields survives Format and Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add("ipa-api-url=http://192.0.2.1:6385 BOOTIF=01-52-54-00-12-34-56 ipa-debug=1")
	f.Add(`"ingot.modules=a, b" ingot.disk=/dev/vda ipa-lookup-timeout=0.5`)
	f.Add("ipa-agent-token=\"a b\" ipa-global-request-id=x")
	f.Add("ipa-inspection-callback-url=http://192.0.2.1:6385/v1/continue_inspection")
	f.Fuzz(func(t *testing.T, cmdline string) {
		p, _ := Parse(cmdline)
		again, err := Parse(Format(p))
		if err != nil {
			t.Fatalf("reparse of %q: %v", Format(p), err)
		}
		if diff := cmp.Diff(p, again); diff != "" {
			t.Fatalf("round trip of %q (formatted %q):\n%s", cmdline, Format(p), diff)
		}
	})
}
