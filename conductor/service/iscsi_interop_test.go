//go:build interop

package service_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/conductor/power/ipmisim"
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
	disk := filepath.Join(work, "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const diskSize = 5 << 30 // sparse; the smallest disk of 4 GiB or more
	if err := os.Truncate(disk, diskSize); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(disk, os.O_RDWR, 0)
	f.WriteAt([]byte("EFI PART"), 512)
	f.WriteAt([]byte("EFI PART"), diskSize-512)
	f.Close()

	raw := make([]byte, 11<<20+4321) // not a multiple of the block size
	r := rand.New(rand.NewPCG(9, 9))
	for i := range raw {
		if i%4096 < 2048 {
			raw[i] = byte(r.Uint32())
		}
	}
	sum := sha256.Sum256(raw)
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(raw)
	zw.Close()
	image := filepath.Join(work, "image.raw.gz")
	os.WriteFile(image, zbuf.Bytes(), 0o600)
	zsum := sha256.Sum256(zbuf.Bytes())

	nodeDir := filepath.Join(work, "node")
	os.MkdirAll(nodeDir, 0o755)
	vm := fmt.Sprintf(`#!/bin/sh
# A machine: PXE boots the deploy agent, the disk boots "the OS".
if [ "$INGOT_BOOT_ORDER" = n ]; then
	exec %s --cmdline= --api-url %s --bootif %s --listen-host 127.0.0.1 --listen-port 0 \
		--disk %s --power exit --min-forced-heartbeat 200ms --retry-pause 1s
fi
echo "booted from disk"
exec sleep 3600
`, agent, url, mac, disk)
	if err := os.WriteFile(filepath.Join(nodeDir, "vm"), []byte(vm), 0o755); err != nil {
		t.Fatal(err)
	}
	bmc := ipmisim.Start(t, ipmisim.Options{NodeDir: nodeDir})
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(nodeDir, "vm.log")); err == nil && t.Failed() {
			t.Logf("the machine's log (agent and OS):\n%s", b)
		}
	})

	cli := func(args ...string) string { return baremetal(t, bm, url, args...) }
	di := bmc.DriverInfo()
	uuid := cli("node", "create", "--driver", "ipmi", "--name", "iscsinode",
		"--boot-interface", "fake", "--network-interface", "noop",
		"--driver-info", "ipmi_address="+di["ipmi_address"].(string),
		"--driver-info", fmt.Sprintf("ipmi_port=%d", bmc.Port),
		"--driver-info", "ipmi_username="+bmc.User, "--driver-info", "ipmi_password="+bmc.Password,
		"--driver-info", "ipmi_cipher_suite=3", "-f", "value", "-c", "uuid")
	cli("port", "create", mac, "--node", uuid)
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
	got := make([]byte, len(raw))
	f, _ = os.Open(disk)
	io.ReadFull(f, got)
	f.Close()
	if gs := sha256.Sum256(got); gs != sum {
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
