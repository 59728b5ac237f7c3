//go:build interop

package service_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ingot-dev/ingot/conductor/config"
	"github.com/ingot-dev/ingot/conductor/power/ipmisim"
	"github.com/ingot-dev/ingot/conductor/service"
	"github.com/ingot-dev/ingot/internal/peertest"
)

// buildAgent compiles the deploy agent for a test.
func buildAgent(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "deploy-agent")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", out, "github.com/ingot-dev/ingot/agent/cmd/deploy-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, b)
	}
	return out
}

// startFastConductor runs a conductor tuned for tests: agents beat about
// every second and tear-down polls are short.
func startFastConductor(t *testing.T, extra ...string) string {
	t.Helper()
	args := append([]string{"--api-listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--conductor-name", "test-conductor",
		"--heartbeat-timeout", "3s", "--post-deploy-power-off-retries", "5", "--post-deploy-power-off-interval", "500ms",
		"--power-sync-interval", "0", "--ipmi-cipher-suites", "3"}, extra...)
	cfg, err := config.Load(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return svc.APIURL()
}

// TestInteropFullDeployWithoutAVM: the conductor deploys and cleans a
// "machine" that is a process: ipmi_sim's chassis hook starts our real
// agent when the boot device is PXE and a stand-in OS when it is the disk.
// Driven with the real baremetal CLI; power and boot device go over IPMI.
// The image is zstd-compressed, served from the conductor's cache
// (file://), and lands uncompressed on a file-backed disk.
func TestInteropFullDeployWithoutAVM(t *testing.T) {
	bm := peertest.Binary(t, "baremetal", "python3-ironicclient")
	peertest.Binary(t, "ipmi_sim", "openipmi")
	agent := buildAgent(t)
	work := t.TempDir()
	url := startFastConductor(t)

	const mac = "52:54:00:6b:00:01"
	m := newProcMachine(t, work, agent, url, mac)
	raw, image, zsum := writeTestImage(t, work, "image.raw.zst", 9<<20+1234, 7,
		func(w io.Writer) io.WriteCloser { zw, _ := zstd.NewWriter(w); return zw })
	sum := sha256.Sum256(raw)
	disk, nodeDir, bmc := m.disk, m.nodeDir, m.bmc

	cli := func(args ...string) string { return baremetal(t, bm, url, args...) }
	m.enroll(t, cli, "procnode", "--deploy-interface", "direct")
	start := time.Now()
	cli("node", "manage", "procnode", "--wait", "60")
	cli("node", "provide", "procnode", "--wait", "120") // automated cleaning boots the agent
	t.Logf("provide with cleaning: %s", time.Since(start).Round(time.Millisecond))
	assertWiped(t, disk)

	cli("node", "set", "procnode", "--instance-info", "image_source=file://"+image,
		"--instance-info", "image_os_hash_algo=sha256", "--instance-info", "image_os_hash_value="+hex.EncodeToString(zsum[:]))
	start = time.Now()
	cli("node", "deploy", "procnode", "--wait", "120")
	t.Logf("deploy: %s", time.Since(start).Round(time.Millisecond))
	if gs := m.diskSum(t, len(raw)); gs != sum {
		t.Errorf("disk region sha256 %x, want the image's %x", gs, sum)
	}
	var shown map[string]any
	json.Unmarshal([]byte(cli("node", "show", "procnode", "-f", "json")), &shown)
	if shown["power_state"] != "power on" || shown["provision_state"] != "active" || shown["last_error"] != nil {
		t.Errorf("active node: %v %v %v", shown["power_state"], shown["provision_state"], shown["last_error"])
	}
	waitFor(t, 20*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(nodeDir, "vm.log"))
		return strings.Contains(string(b), "booted from disk")
	}, "the machine to boot from its disk")

	start = time.Now()
	cli("node", "undeploy", "procnode", "--wait", "120")
	t.Logf("undeploy with cleaning: %s", time.Since(start).Round(time.Millisecond))
	assertWiped(t, disk)
	json.Unmarshal([]byte(cli("node", "show", "procnode", "-f", "json")), &shown)
	if shown["provision_state"] != "available" || shown["power_state"] != "power off" {
		t.Errorf("after undeploy: %v %v", shown["provision_state"], shown["power_state"])
	}
	calls := strings.Join(bmc.HookCalls(), "\n")
	for _, want := range []string{"set boot pxe", "set boot default", "set power 1", "set power 0"} {
		if !strings.Contains(calls, want) {
			t.Errorf("the BMC never saw %q:\n%s", want, calls)
		}
	}
}

// procMachine is a machine made of processes: a sparse file-backed disk
// carrying old GPT headers (so cleaning has metadata to wipe), and a BMC
// (ipmi_sim) whose chassis hook starts our real agent when the boot
// device is PXE and a stand-in OS when it is the disk.
type procMachine struct {
	mac, disk, nodeDir string
	bmc                *ipmisim.Sim
}

func newProcMachine(t *testing.T, work, agent, url, mac string) *procMachine {
	t.Helper()
	m := &procMachine{mac: mac, disk: filepath.Join(work, "disk.img"), nodeDir: filepath.Join(work, "node")}
	if err := os.WriteFile(m.disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Sparse, and at least 4 GiB: with no root device hints the agent
	// takes the smallest disk of 4 GiB or more, as IPA does.
	const diskSize = 5 << 30
	if err := os.Truncate(m.disk, diskSize); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("EFI PART"), 512)
	f.WriteAt([]byte("EFI PART"), diskSize-512)
	f.Close()
	if err := os.MkdirAll(m.nodeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	vm := fmt.Sprintf(`#!/bin/sh
# A machine: PXE boots the deploy agent, the disk boots "the OS".
if [ "$INGOT_BOOT_ORDER" = n ]; then
	exec %s --cmdline= --api-url %s --bootif %s --listen-host 127.0.0.1 --listen-port 0 \
		--disk %s --power exit --min-forced-heartbeat 200ms --retry-pause 1s
fi
echo "booted from disk"
exec sleep 3600
`, agent, url, mac, m.disk)
	if err := os.WriteFile(filepath.Join(m.nodeDir, "vm"), []byte(vm), 0o755); err != nil {
		t.Fatal(err)
	}
	m.bmc = ipmisim.Start(t, ipmisim.Options{NodeDir: m.nodeDir})
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(m.nodeDir, "vm.log")); err == nil && t.Failed() {
			t.Logf("the machine's log (agent and OS):\n%s", b)
		}
	})
	return m
}

// enroll creates the machine's node (ipmi hardware type, fake boot, noop
// network) and its port with the baremetal CLI, and returns its UUID.
func (m *procMachine) enroll(t *testing.T, cli func(...string) string, name string, extra ...string) string {
	t.Helper()
	di := m.bmc.DriverInfo()
	args := append([]string{"node", "create", "--driver", "ipmi", "--name", name,
		"--boot-interface", "fake", "--network-interface", "noop",
		"--driver-info", "ipmi_address=" + di["ipmi_address"].(string),
		"--driver-info", fmt.Sprintf("ipmi_port=%d", m.bmc.Port),
		"--driver-info", "ipmi_username=" + m.bmc.User, "--driver-info", "ipmi_password=" + m.bmc.Password,
		"--driver-info", "ipmi_cipher_suite=3", "-f", "value", "-c", "uuid"}, extra...)
	uuid := cli(args...)
	cli("port", "create", m.mac, "--node", uuid)
	return uuid
}

// diskSum is the sha256 of the disk's first n bytes.
func (m *procMachine) diskSum(t *testing.T, n int) [32]byte {
	t.Helper()
	f, err := os.Open(m.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, n)
	if _, err := io.ReadFull(f, got); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(got)
}

// writeTestImage writes a size-byte image (half random, half zero in each
// 4 KiB block) compressed by compress into work/name, and returns the raw
// bytes, the file and the compressed file's sha256.
func writeTestImage(t *testing.T, work, name string, size int, seed uint64, compress func(io.Writer) io.WriteCloser) ([]byte, string, [32]byte) {
	t.Helper()
	raw := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range raw {
		if i%4096 < 2048 {
			raw[i] = byte(r.Uint32())
		}
	}
	var zbuf bytes.Buffer
	zw := compress(&zbuf)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(work, name)
	if err := os.WriteFile(image, zbuf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return raw, image, sha256.Sum256(zbuf.Bytes())
}

// assertWiped checks both GPT headers and the first MiB are gone.
func assertWiped(t *testing.T, disk string) {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	head, tail := make([]byte, 1<<20), make([]byte, 1<<20)
	f.ReadAt(head, 0)
	f.ReadAt(tail, fi.Size()-1<<20)
	if bytes.Contains(head, []byte("EFI PART")) || bytes.Contains(tail, []byte("EFI PART")) {
		t.Error("a GPT header survived cleaning")
	}
	if !bytes.Equal(head, make([]byte, 1<<20)) {
		t.Error("the disk's first MiB is not zero after cleaning")
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
