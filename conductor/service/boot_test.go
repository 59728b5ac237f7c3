package service_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/noauth"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/v1/nodes"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/v1/ports"
	"github.com/pin/tftp/v3"

	"github.com/ingot-dev/ingot/conductor/config"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/pxe"
	"github.com/ingot-dev/ingot/conductor/service"
)

// bootConductor runs a conductor with network boot on loopback: boot HTTP
// and TFTP on free ports, DHCP off (dnsmasq files), fake iPXE binaries.
func bootConductor(t *testing.T, extra ...string) (*service.Service, *config.Config) {
	t.Helper()
	state := t.TempDir()
	ipxeDir := filepath.Join(state, "ipxe")
	if err := os.MkdirAll(ipxeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range pxe.FirmwareFiles() {
		if err := os.WriteFile(filepath.Join(ipxeDir, f), []byte("iPXE binary "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kernel := filepath.Join(state, "vmlinuz")
	if err := os.WriteFile(kernel, bytes.Repeat([]byte("k"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--api-listen", "127.0.0.1:0", "--state-dir", state, "--conductor-name", "boot-conductor",
		"--boot-http-listen", "127.0.0.1:0", "--boot-http-url", "http://192.0.2.1:8080", "--ipa-api-url", "http://192.0.2.1:6385",
		"--tftp-listen", "127.0.0.1:0", "--ipxe-dir", ipxeDir, "--deploy-kernel", kernel, "--deploy-ramdisk", kernel}, extra...)
	cfg, err := config.Load(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("conductor run: %v", err)
		}
	})
	return svc, cfg
}

func TestNetworkBootServing(t *testing.T) {
	svc, cfg := bootConductor(t)
	ctx := t.Context()

	t.Run("TFTP serves the installed iPXE binary", func(t *testing.T) {
		c, err := tftp.NewClient(svc.TFTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetTimeout(time.Second)
		wt, err := c.Receive("undionly.kpxe", "octet")
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if _, err := wt.WriteTo(&b); err != nil || b.String() != "iPXE binary undionly.kpxe" {
			t.Errorf("got %q, %v", b.String(), err)
		}
	})
	t.Run("dnsmasq options are written in DHCP mode off", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(cfg.BootRoot(), "dnsmasq", "ingot.conf"))
		if err != nil || !strings.Contains(string(data), "dhcp-boot=tag:ingot,tag:ingot-ipxe,http://192.0.2.1:8080/boot.ipxe") {
			t.Errorf("dnsmasq options: %v\n%s", err, data)
		}
	})

	// The engine owns the boot configuration's lifecycle: create a node
	// with an ipxe boot interface and a port, prepare it the way the
	// deploy flow does (through the boot root the conductor serves), and
	// delete it through the API.
	c, err := noauth.NewBareMetalNoAuth(noauth.EndpointOpts{IronicEndpoint: svc.APIURL() + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	c.Microversion = "1.78"
	n, err := nodes.Create(ctx, c, nodes.CreateOpts{Name: "pxe-node", Driver: "fake-hardware", BootInterface: "ipxe"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	pxeOn := true
	if _, err := ports.Create(ctx, c, ports.CreateOpts{NodeUUID: n.UUID, Address: "52:54:00:12:34:56", PXEEnabled: &pxeOn}).Extract(); err != nil {
		t.Fatal(err)
	}
	t.Run("validation sees the boot interface served", func(t *testing.T) {
		v, err := nodes.Validate(ctx, c, n.UUID).Extract()
		if err != nil || !v.Boot.Result {
			t.Errorf("boot validation: %+v, %v", v.Boot, err)
		}
	})
	booter, err := pxe.New(slog.New(slog.DiscardHandler), nil, pxe.Options{Root: cfg.BootRoot(),
		HTTPURL: "http://192.0.2.1:8080", APIURL: "http://192.0.2.1:6385", DeployKernel: cfg.Boot.DeployKernel, DeployRamdisk: cfg.Boot.DeployRamdisk})
	if err != nil {
		t.Fatal(err)
	}
	if err := booter.PrepareRamdisk(ctx, &node.Node{UUID: n.UUID}, []*node.Port{{UUID: "p", Address: "52:54:00:12:34:56", PXEEnabled: true}}); err != nil {
		t.Fatal(err)
	}
	script := func() string {
		resp, err := http.Get(svc.BootURL() + "/ipxe/52-54-00-12-34-56")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if s := script(); !strings.Contains(s, "ipa-api-url=http://192.0.2.1:6385") {
		t.Fatalf("prepared node's script:\n%s", s)
	}
	if err := nodes.Delete(ctx, c, n.UUID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if s := script(); !strings.Contains(s, "no boot configuration") {
		t.Errorf("deleting the node left its boot configuration:\n%s", s)
	}
	if _, err := os.Stat(filepath.Join(cfg.BootRoot(), "nodes", n.UUID)); !os.IsNotExist(err) {
		t.Errorf("node directory after delete: %v", err)
	}
}

// TestBootPortTakenIsAClearError: a second conductor on the first one's
// TFTP port fails at start-up, naming the port, and binds nothing.
func TestBootPortTakenIsAClearError(t *testing.T) {
	first, _ := bootConductor(t)
	cfg, err := config.Load([]string{"--api-listen", "127.0.0.1:0", "--state-dir", t.TempDir(),
		"--boot-http-listen", "127.0.0.1:0", "--boot-http-url", "http://192.0.2.1:8080", "--ipa-api-url", "http://192.0.2.1:6385",
		"--tftp-listen", first.TFTPAddr(), "--ipxe-dir", t.TempDir()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, err = service.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("a second conductor started on a taken TFTP port")
	}
	// The iPXE binaries are missing too; with TFTP on, that alone stops
	// start-up. Give them, and the port conflict is what remains.
	_ = err
	dir := t.TempDir()
	for _, f := range pxe.FirmwareFiles() {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
	cfg.Boot.IPXEDir = dir
	_, err = service.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), first.TFTPAddr()) {
		t.Errorf("second conductor: %v, want a clear 'address already in use' error naming %s", err, first.TFTPAddr())
	}
}
