//go:build interop

package service_test

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/internal/peertest"
)

// TestInteropISCSIDeployWithoutAVM is TestInteropFullDeployWithoutAVM with
// the iscsi deploy interface: the real baremetal CLI switches the node to
// it, ipmi_sim's chassis hook boots our real agent as the machine, the
// agent exports its file-backed disk over iSCSI on the address it
// advertises, and the conductor writes the image itself (gzip, from its
// cache, decompressed and verified before any write). The disk must hold
// exactly the image; cleaning before and after goes through the agent as
// for direct.
func TestInteropISCSIDeployWithoutAVM(t *testing.T) {
	bm := peertest.Binary(t, "baremetal", "python3-ironicclient")
	peertest.Binary(t, "ipmi_sim", "openipmi")
	agent := buildAgent(t)
	work := t.TempDir()
	portal := freeTCPPort(t)
	url := startFastConductor(t, "--iscsi-portal-port", strconv.Itoa(portal), "--iscsi-verify", "full")

	const mac = "52:54:00:6b:00:02"
	m := newProcMachine(t, work, agent, url, mac)
	raw, image, zsum := writeTestImage(t, work, "image.raw.gz", 11<<20+4321, 9, // not a multiple of the block size
		func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
	sum := sha256.Sum256(raw)
	disk, nodeDir := m.disk, m.nodeDir

	cli := func(args ...string) string { return baremetal(t, bm, url, args...) }
	m.enroll(t, cli, "iscsinode")
	cli("node", "set", "iscsinode", "--deploy-interface", "iscsi")
	if got := cli("node", "show", "iscsinode", "-f", "value", "-c", "deploy_interface"); got != "iscsi" {
		t.Fatalf("deploy_interface %q after node set", got)
	}
	cli("node", "manage", "iscsinode", "--wait", "60")
	cli("node", "provide", "iscsinode", "--wait", "120") // automated cleaning boots the agent
	assertWiped(t, disk)

	cli("node", "set", "iscsinode", "--instance-info", "image_source=file://"+image,
		"--instance-info", "image_os_hash_algo=sha256", "--instance-info", "image_os_hash_value="+hex.EncodeToString(zsum[:]))
	start := time.Now()
	cli("node", "deploy", "iscsinode", "--wait", "120")
	t.Logf("iscsi deploy: %s", time.Since(start).Round(time.Millisecond))
	if gs := m.diskSum(t, len(raw)); gs != sum {
		t.Errorf("disk region sha256 %x, want the image's %x", gs, sum)
	}
	shownRaw := cli("node", "show", "iscsinode", "-f", "json")
	var shown map[string]any
	json.Unmarshal([]byte(shownRaw), &shown)
	if shown["power_state"] != "power on" || shown["provision_state"] != "active" || shown["last_error"] != nil {
		t.Errorf("active node: %v %v %v", shown["power_state"], shown["provision_state"], shown["last_error"])
	}
	if strings.Contains(strings.ToLower(shownRaw), "chap") {
		t.Errorf("the node shows CHAP data: %s", shownRaw)
	}
	waitFor(t, 20*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(nodeDir, "vm.log"))
		return strings.Contains(string(b), "booted from disk")
	}, "the machine to boot from its disk")
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(portal)), time.Second); err == nil {
		c.Close()
		t.Error("the agent's iSCSI portal still listens after the deployment")
	}
	b, _ := os.ReadFile(filepath.Join(nodeDir, "vm.log"))
	for _, want := range []string{"iscsi target exported", "iscsi target stopped"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the agent never logged %q", want)
		}
	}

	cli("node", "undeploy", "iscsinode", "--wait", "120")
	assertWiped(t, disk)
	json.Unmarshal([]byte(cli("node", "show", "iscsinode", "-f", "json")), &shown)
	if shown["provision_state"] != "available" || shown["power_state"] != "power off" {
		t.Errorf("after undeploy: %v %v", shown["provision_state"], shown["power_state"])
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
