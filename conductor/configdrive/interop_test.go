//go:build interop

package configdrive

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingot-dev/ingot/internal/peertest"
	shared "github.com/ingot-dev/ingot/shared/configdrive"
)

// TestInteropISOTools reads a built drive with the tools of Debian's
// genisoimage and util-linux: the volume id, Rock Ridge names
// and the files' contents as cloud-init would find them.
func TestInteropISOTools(t *testing.T) {
	isoinfo := peertest.Binary(t, "isoinfo", "genisoimage")
	blkid := peertest.Binary(t, "blkid", "util-linux")
	cd := map[string]any{"meta_data": map[string]any{"hostname": "interop-host"}, "user_data": "#cloud-config\nfqdn: a.b\n",
		"network_data": map[string]any{"services": []any{}}}
	packed, err := Build(n, cd, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	iso, err := shared.Decode([]byte(packed))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cd.iso")
	if err := os.WriteFile(p, iso, 0o600); err != nil {
		t.Fatal(err)
	}
	out := func(name string, args ...string) string {
		t.Helper()
		b, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, b)
		}
		return string(b)
	}
	if got := out(isoinfo, "-d", "-i", p); !strings.Contains(got, "Volume id: config-2") {
		t.Errorf("isoinfo -d:\n%s", got)
	}
	for _, mode := range []string{"-R"} {
		list := out(isoinfo, mode, "-f", "-i", p)
		for _, f := range []string{"/openstack/latest/meta_data.json", "/openstack/latest/user_data", "/openstack/latest/network_data.json"} {
			if !strings.Contains(list, f+"\n") {
				t.Errorf("isoinfo %s -f lacks %s:\n%s", mode, f, list)
			}
		}
	}
	if got := out(isoinfo, "-R", "-x", "/openstack/latest/meta_data.json", "-i", p); !strings.Contains(got, `"hostname":"interop-host"`) || !strings.Contains(got, n.UUID) {
		t.Errorf("meta_data.json: %q", got)
	}
	if got := out(isoinfo, "-R", "-x", "/openstack/latest/user_data", "-i", p); got != "#cloud-config\nfqdn: a.b\n" {
		t.Errorf("user_data: %q", got)
	}
	if got := out(blkid, "-p", "-o", "export", p); !strings.Contains(got, "LABEL=config-2") || !strings.Contains(got, "TYPE=iso9660") {
		t.Errorf("blkid:\n%s", got)
	}
}
