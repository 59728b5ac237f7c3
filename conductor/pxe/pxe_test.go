package pxe

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingot-dev/ingot/conductor/node"
)

const (
	uuid1 = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
	uuid2 = "2be26c0b-03f2-4d2e-ae87-c02d7f33c456"
	mac1  = "52:54:00:00:00:01"
	mac2  = "52:54:00:00:00:02"
	mac3  = "52:54:00:00:00:03"
)

type rig struct {
	b       *Booter
	root    string
	kernel  []byte
	ramdisk []byte
	images  string // a directory outside the allowed paths
	srv     *httptest.Server
}

func newRig(t *testing.T, mutate func(o *Options)) *rig {
	t.Helper()
	base := t.TempDir()
	r := &rig{root: filepath.Join(base, "boot"), images: filepath.Join(base, "elsewhere")}
	must(t, os.MkdirAll(r.images, 0o755))
	r.kernel = bytes.Repeat([]byte("K"), 100_000)
	r.ramdisk = bytes.Repeat([]byte("R"), 300_000)
	must(t, os.WriteFile(filepath.Join(r.images, "vmlinuz"), r.kernel, 0o644))
	must(t, os.WriteFile(filepath.Join(r.images, "initrd.img"), r.ramdisk, 0o644))
	opts := Options{
		Root: r.root, HTTPURL: "http://10.99.0.1:8080/", APIURL: "http://10.99.0.1:6385",
		DeployKernel: filepath.Join(r.images, "vmlinuz"), DeployRamdisk: filepath.Join(r.images, "initrd.img"),
		KernelAppend: "console=ttyS0", AgentTLS: "off",
	}
	if mutate != nil {
		mutate(&opts)
	}
	b, err := New(slog.New(slog.NewTextHandler(t.Output(), nil)), nil, opts)
	must(t, err)
	r.b = b
	r.srv = httptest.NewServer(b.Handler())
	t.Cleanup(r.srv.Close)
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testNode(uuid string) *node.Node {
	return &node.Node{UUID: uuid, ProvisionState: node.StateDeploying, DriverInfo: map[string]any{}}
}

func port(mac, nodeUUID string, pxe bool) *node.Port {
	return &node.Port{UUID: "p-" + mac, Address: mac, NodeUUID: nodeUUID, PXEEnabled: pxe}
}

func (r *rig) get(t *testing.T, path string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.srv.URL+path, nil)
	must(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, string(body), resp.Header
}

func TestAgentBootLifecycle(t *testing.T) {
	r := newRig(t, nil)
	ctx := t.Context()
	n := testNode(uuid1)
	ports := []*node.Port{port(mac1, uuid1, true), port("52-54-00-00-00-02", uuid1, true), port(mac3, uuid1, false)}
	must(t, r.b.PrepareRamdisk(ctx, n, ports))

	t.Run("each pxe-enabled MAC gets the agent script", func(t *testing.T) {
		for _, mac := range []string{"52-54-00-00-00-01", "52:54:00:00:00:02", "52-54-00-00-00-02"} {
			code, body, hdr := r.get(t, "/ipxe/"+mac)
			if code != 200 || !strings.HasPrefix(body, "#!ipxe\n") {
				t.Fatalf("GET /ipxe/%s = %d %q", mac, code, body)
			}
			for _, want := range []string{
				"kernel http://10.99.0.1:8080/nodes/" + uuid1 + "/deploy_kernel initrd=deploy_ramdisk console=ttyS0 ipa-api-url=http://10.99.0.1:6385 ingot.tls=off BOOTIF=01-${netX/mac:hexhyp}",
				"initrd http://10.99.0.1:8080/nodes/" + uuid1 + "/deploy_ramdisk",
			} {
				if !strings.Contains(body, want) {
					t.Errorf("script lacks %q:\n%s", want, body)
				}
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Errorf("script may be cached: %q", hdr.Get("Cache-Control"))
			}
		}
		if !r.b.Known(ctx, mac1) || !r.b.Known(ctx, mac2) {
			t.Error("prepared MACs are not known to DHCP")
		}
	})
	t.Run("an inspecting node's agent gets the inspection callback", func(t *testing.T) {
		insp := testNode(uuid1)
		insp.ProvisionState = node.StateInspecting
		must(t, r.b.PrepareRamdisk(ctx, insp, ports))
		_, body, _ := r.get(t, "/ipxe/"+mac1)
		if !strings.Contains(body, "ipa-inspection-callback-url=http://10.99.0.1:6385/v1/continue_inspection") {
			t.Errorf("inspection script:\n%s", body)
		}
		must(t, r.b.PrepareRamdisk(ctx, n, ports))
		if _, body, _ := r.get(t, "/ipxe/"+mac1); strings.Contains(body, "inspection") {
			t.Errorf("deploy script with an inspection callback:\n%s", body)
		}
	})
	t.Run("a port without PXE gets nothing", func(t *testing.T) {
		if r.b.Known(ctx, mac3) {
			t.Error("a port with pxe_enabled=false is known")
		}
		_, body, _ := r.get(t, "/ipxe/"+mac3)
		if !strings.Contains(body, "no boot configuration") {
			t.Errorf("MAC without PXE got:\n%s", body)
		}
	})
	t.Run("kernel and ramdisk are served with Range", func(t *testing.T) {
		code, body, _ := r.get(t, "/nodes/"+uuid1+"/deploy_kernel")
		if code != 200 || body != string(r.kernel) {
			t.Errorf("kernel: %d, %d bytes", code, len(body))
		}
		code, body, hdr := r.get(t, "/nodes/"+uuid1+"/deploy_ramdisk", "Range", "bytes=1000-1999")
		if code != http.StatusPartialContent || body != string(r.ramdisk[1000:2000]) || hdr.Get("Content-Range") != "bytes 1000-1999/300000" {
			t.Errorf("ramdisk range: %d, %d bytes, %q", code, len(body), hdr.Get("Content-Range"))
		}
		code, _, _ = r.get(t, "/nodes/"+uuid1+"/deploy_ramdisk", "Range", "bytes=400000-")
		if code != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("range past the end: %d, want 416", code)
		}
	})
	t.Run("the configuration is on disk for the operator", func(t *testing.T) {
		for _, f := range []string{"nodes/" + uuid1 + "/boot.ipxe", "nodes/" + uuid1 + "/boot.json", "macs/52-54-00-00-00-01"} {
			if _, err := os.Stat(filepath.Join(r.root, f)); err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("a deployed node boots its disk", func(t *testing.T) {
		must(t, r.b.PrepareInstance(ctx, n, ports))
		_, body, _ := r.get(t, "/ipxe/"+mac1)
		if !strings.Contains(body, "booting from the local disk") || strings.Contains(body, "kernel ") {
			t.Errorf("local boot script:\n%s", body)
		}
		if code, _, _ := r.get(t, "/nodes/"+uuid1+"/deploy_kernel"); code != 404 {
			t.Errorf("the agent kernel is still served after deploy: %d", code)
		}
	})
	t.Run("a deleted port loses its link on the next prepare", func(t *testing.T) {
		must(t, r.b.PrepareRamdisk(ctx, n, ports[:1]))
		if r.b.Known(ctx, mac2) {
			t.Error("the deleted port's MAC is still known")
		}
	})
	t.Run("clean up forgets the node", func(t *testing.T) {
		must(t, r.b.CleanUp(ctx, n, nil)) // ports gone already: the record knows the MACs
		if r.b.Known(ctx, mac1) {
			t.Error("MAC still known after clean up")
		}
		_, body, _ := r.get(t, "/ipxe/"+mac1)
		if !strings.Contains(body, "no boot configuration") {
			t.Errorf("after clean up:\n%s", body)
		}
		if code, _, _ := r.get(t, "/nodes/"+uuid1+"/deploy_kernel"); code != 404 {
			t.Errorf("kernel after clean up: %d", code)
		}
		if _, err := os.Stat(filepath.Join(r.root, "nodes", uuid1)); !os.IsNotExist(err) {
			t.Errorf("node directory left behind: %v", err)
		}
		must(t, r.b.CleanUp(ctx, n, ports)) // again: nothing to do
	})
}

func TestMACMovesToAnotherNode(t *testing.T) {
	r := newRig(t, nil)
	ctx := t.Context()
	must(t, r.b.PrepareRamdisk(ctx, testNode(uuid1), []*node.Port{port(mac1, uuid1, true)}))
	must(t, r.b.PrepareInstance(ctx, testNode(uuid2), []*node.Port{port(mac1, uuid2, true)}))
	_, body, _ := r.get(t, "/ipxe/"+mac1)
	if !strings.Contains(body, uuid2) {
		t.Fatalf("MAC still points at the first node:\n%s", body)
	}
	// Cleaning the first node must not break the second's link.
	must(t, r.b.CleanUp(ctx, testNode(uuid1), []*node.Port{port(mac1, uuid1, true)}))
	if _, body, _ := r.get(t, "/ipxe/"+mac1); !strings.Contains(body, uuid2) {
		t.Errorf("cleaning the first node removed the second's link:\n%s", body)
	}
}

func TestImageSources(t *testing.T) {
	r := newRig(t, nil)
	allowed := filepath.Join(r.root, "images", "ipa.kernel")
	must(t, os.WriteFile(allowed, []byte("allowed kernel"), 0o644))
	must(t, os.Symlink("/etc/passwd", filepath.Join(r.root, "images", "escape")))
	for _, tc := range []struct {
		name       string
		driverInfo map[string]any
		wantErr    string
		wantKernel string // in the script
	}{
		{name: "conductor defaults", wantKernel: "http://10.99.0.1:8080/nodes/" + uuid1 + "/deploy_kernel"},
		{name: "URLs from driver_info", driverInfo: map[string]any{"deploy_kernel": "http://images/k", "deploy_ramdisk": "https://images/r.img"},
			wantKernel: "kernel http://images/k initrd=r.img "},
		{name: "local image in an allowed directory", driverInfo: map[string]any{"deploy_kernel": "file://" + allowed},
			wantKernel: "http://10.99.0.1:8080/nodes/" + uuid1 + "/deploy_kernel"},
		{name: "local image outside the allowed directories", driverInfo: map[string]any{"deploy_kernel": "/etc/passwd"}, wantErr: "must be under"},
		{name: "symlink out of an allowed directory", driverInfo: map[string]any{"deploy_kernel": filepath.Join(r.root, "images", "escape")}, wantErr: "must be under"},
		{name: "relative path", driverInfo: map[string]any{"deploy_kernel": "vmlinuz"}, wantErr: "absolute path"},
		{name: "missing file", driverInfo: map[string]any{"deploy_ramdisk": filepath.Join(r.root, "images", "nope")}, wantErr: "no such file"},
		{name: "directory", driverInfo: map[string]any{"deploy_ramdisk": filepath.Join(r.root, "images")}, wantErr: "not a regular file"},
		{name: "not a string", driverInfo: map[string]any{"deploy_kernel": 42.0}, wantErr: "want a string"},
		{name: "glance UUID", driverInfo: map[string]any{"deploy_kernel": "c6a6d9b0-7d8e-4b1e-9d5b-0c6b1d9e0f00"}, wantErr: "absolute path"},
		{name: "newline in kernel parameters", driverInfo: map[string]any{"kernel_append_params": "console=ttyS0\nshell"}, wantErr: "line breaks"},
		{name: "URL with a space", driverInfo: map[string]any{"deploy_kernel": "http://images/k shell"}, wantErr: "not a usable URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testNode(uuid1)
			n.DriverInfo = tc.driverInfo
			err := r.b.PrepareRamdisk(t.Context(), n, []*node.Port{port(mac1, uuid1, true)})
			verr := r.b.Validate(n)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("PrepareRamdisk = %v, want an error about %q", err, tc.wantErr)
				}
				if verr == nil {
					t.Errorf("Validate accepted what PrepareRamdisk refused")
				}
				return
			}
			if err != nil || verr != nil {
				t.Fatalf("PrepareRamdisk = %v, Validate = %v", err, verr)
			}
			_, body, _ := r.get(t, "/ipxe/"+mac1)
			if !strings.Contains(body, tc.wantKernel) {
				t.Errorf("script lacks %q:\n%s", tc.wantKernel, body)
			}
		})
	}
	t.Run("no images anywhere", func(t *testing.T) {
		r := newRig(t, func(o *Options) { o.DeployKernel, o.DeployRamdisk = "", "" })
		err := r.b.PrepareRamdisk(t.Context(), testNode(uuid1), nil)
		if err == nil || !strings.Contains(err.Error(), "no deploy_kernel") || !strings.Contains(err.Error(), "no deploy_ramdisk") {
			t.Errorf("PrepareRamdisk = %v, want both images reported missing", err)
		}
	})
	t.Run("a URL image is not proxied", func(t *testing.T) {
		n := testNode(uuid1)
		n.DriverInfo = map[string]any{"deploy_kernel": "http://images/k"}
		must(t, r.b.PrepareRamdisk(t.Context(), n, nil))
		if code, _, _ := r.get(t, "/nodes/"+uuid1+"/deploy_kernel"); code != 404 {
			t.Errorf("GET of a URL-sourced kernel = %d, want 404", code)
		}
	})
}

func TestHTTPRefusesEverythingElse(t *testing.T) {
	r := newRig(t, nil)
	must(t, r.b.PrepareRamdisk(t.Context(), testNode(uuid1), []*node.Port{port(mac1, uuid1, true)}))
	must(t, os.WriteFile(filepath.Join(r.b.TFTPRoot(), "snponly.efi"), []byte("EFI"), 0o644))
	for _, path := range []string{
		"/nodes/" + uuid1 + "/boot.json",
		"/nodes/" + uuid1 + "/boot.ipxe",
		"/nodes/" + uuid1 + "/..%2f..%2fmacs",
		"/nodes/..%2f..%2f..%2fetc/passwd",
		"/nodes/not-a-uuid/deploy_kernel",
		"/nodes/" + strings.ToUpper(uuid1) + "/deploy_kernel",
		"/firmware/boot.json",
		"/firmware/..%2f..%2fnodes",
		"/firmware/ipxe.efi", // not installed
		"/ipxe/not-a-mac",
		"/ipxe/52-54-00-00-00-01-02",
		"/",
		"/macs/52-54-00-00-00-01",
	} {
		if code, body, _ := r.get(t, path); code != 404 {
			t.Errorf("GET %s = %d %q, want 404", path, code, body)
		}
	}
	if code, body, _ := r.get(t, "/firmware/snponly.efi"); code != 200 || body != "EFI" {
		t.Errorf("GET /firmware/snponly.efi = %d %q", code, body)
	}
	resp, err := http.Post(r.srv.URL+"/ipxe/"+mac1, "text/plain", strings.NewReader("x"))
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d, want 405", resp.StatusCode)
	}
}

func TestScripts(t *testing.T) {
	t.Run("entry script chains by MAC", func(t *testing.T) {
		r := newRig(t, nil)
		_, body, _ := r.get(t, "/boot.ipxe")
		if !strings.Contains(body, "chain --replace --autofree http://10.99.0.1:8080/ipxe/${netX/mac:hexhyp}") {
			t.Errorf("entry script:\n%s", body)
		}
	})
	t.Run("unknown MACs retry when configured", func(t *testing.T) {
		r := newRig(t, func(o *Options) { o.Unknown = UnknownRetry; o.UnknownRetryDelay = 15 })
		_, body, _ := r.get(t, "/ipxe/52-54-00-aa-bb-cc")
		if !strings.Contains(body, "sleep 15") || !strings.Contains(body, "chain --replace --autofree http://10.99.0.1:8080/ipxe/52-54-00-aa-bb-cc") {
			t.Errorf("retry script:\n%s", body)
		}
	})
	t.Run("BIOS nodes sanboot their disk", func(t *testing.T) {
		r := newRig(t, nil)
		n := testNode(uuid1)
		n.Properties = map[string]any{"capabilities": "boot_mode:bios,other:x"}
		must(t, r.b.PrepareInstance(t.Context(), n, []*node.Port{port(mac1, uuid1, true)}))
		_, body, _ := r.get(t, "/ipxe/"+mac1)
		if !strings.Contains(body, "sanboot --no-describe --drive 0x80") {
			t.Errorf("BIOS local boot:\n%s", body)
		}
	})
	t.Run("cleaning says so", func(t *testing.T) {
		r := newRig(t, nil)
		n := testNode(uuid1)
		n.ProvisionState = node.StateCleaning
		must(t, r.b.PrepareRamdisk(t.Context(), n, []*node.Port{port(mac1, uuid1, true)}))
		_, body, _ := r.get(t, "/ipxe/"+mac1)
		if !strings.Contains(body, "Ingot: clean:") {
			t.Errorf("clean script:\n%s", body)
		}
	})
}

type fakePorts map[string]*node.Port

func (f fakePorts) GetPortByAddress(_ context.Context, mac string) (*node.Port, error) {
	if mac == "52:54:00:ee:ee:ee" {
		return nil, errors.New("database is down")
	}
	if p, ok := f[mac]; ok {
		return p, nil
	}
	return nil, node.ErrNotFound
}

func TestKnownFromRegisteredPorts(t *testing.T) {
	r := newRig(t, nil)
	b, err := New(slog.New(slog.DiscardHandler), fakePorts{mac1: port(mac1, uuid1, true), mac2: port(mac2, uuid1, false)}, r.b.opts)
	must(t, err)
	for mac, want := range map[string]bool{mac1: true, mac2: false, mac3: false, "52:54:00:ee:ee:ee": false} {
		if got := b.Known(t.Context(), mac); got != want {
			t.Errorf("Known(%s) = %v, want %v", mac, got, want)
		}
	}
}

func TestDnsmasqHosts(t *testing.T) {
	r := newRig(t, func(o *Options) { o.DnsmasqHosts = true })
	n := testNode(uuid1)
	must(t, r.b.PrepareRamdisk(t.Context(), n, []*node.Port{port(mac1, uuid1, true)}))
	data, err := os.ReadFile(filepath.Join(r.b.DnsmasqHostsDir(), "52-54-00-00-00-01"))
	if err != nil || string(data) != mac1+",set:ingot\n" {
		t.Errorf("host file = %q, %v", data, err)
	}
	must(t, r.b.CleanUp(t.Context(), n, nil))
	if _, err := os.Stat(filepath.Join(r.b.DnsmasqHostsDir(), "52-54-00-00-00-01")); !os.IsNotExist(err) {
		t.Errorf("host file left after clean up: %v", err)
	}
}

func TestInstallFirmware(t *testing.T) {
	src := t.TempDir()
	for _, f := range FirmwareFiles() {
		must(t, os.WriteFile(filepath.Join(src, f), []byte("binary "+f), 0o644))
	}
	r := newRig(t, func(o *Options) { o.IPXEDir = src })
	must(t, r.b.InstallFirmware())
	must(t, r.b.InstallFirmware()) // again, over the old copies
	for _, f := range FirmwareFiles() {
		data, err := os.ReadFile(filepath.Join(r.b.TFTPRoot(), f))
		if err != nil || string(data) != "binary "+f {
			t.Errorf("%s: %q, %v", f, data, err)
		}
	}
	os.Remove(filepath.Join(src, "snponly.efi"))
	err := r.b.InstallFirmware()
	if err == nil || !strings.Contains(err.Error(), "ipxe package") {
		t.Errorf("InstallFirmware without snponly.efi = %v, want a hint at the ipxe package", err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	good := Options{Root: t.TempDir(), HTTPURL: "http://10.0.0.1:8080", APIURL: "http://10.0.0.1:6385"}
	for _, tc := range []struct {
		name   string
		mutate func(o *Options)
	}{
		{"relative root", func(o *Options) { o.Root = "boot" }},
		{"no HTTP URL", func(o *Options) { o.HTTPURL = "" }},
		{"API URL without scheme", func(o *Options) { o.APIURL = "10.0.0.1:6385" }},
		{"unknown behaviour", func(o *Options) { o.Unknown = "reboot" }},
		{"agent TLS", func(o *Options) { o.AgentTLS = "on" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.mutate(&o)
			if _, err := New(slog.New(slog.DiscardHandler), nil, o); err == nil {
				t.Error("New accepted bad options")
			}
		})
	}
}

func TestBadNodeUUIDs(t *testing.T) {
	r := newRig(t, nil)
	for _, id := range []string{"../../etc", "", "1BE26C0B-03F2-4D2E-AE87-C02D7F33C123"} {
		n := testNode(id)
		if err := r.b.PrepareRamdisk(t.Context(), n, nil); err == nil {
			t.Errorf("PrepareRamdisk accepted node UUID %q", id)
		}
		if err := r.b.CleanUp(t.Context(), n, nil); err == nil {
			t.Errorf("CleanUp accepted node UUID %q", id)
		}
	}
}
