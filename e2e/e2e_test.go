//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ingot-dev/ingot/internal/peertest"
	"github.com/ingot-dev/ingot/internal/testimage"
	"github.com/ingot-dev/ingot/internal/vmrig"
	"github.com/ingot-dev/ingot/internal/vmtest"
)

// artifacts are built once per test binary: the conductor, the agent's
// kernel and ramdisk, and the test image.
type artifacts struct {
	conductor, kernel, ramdisk string
	imageRaw, imageZst         string
	imageSum                   string // sha256 of the zstd file, as instance_info names it
	imageID                    string
}

var (
	buildOnce sync.Once
	built     artifacts
	buildErr  error
)

func setup(t *testing.T) artifacts {
	t.Helper()
	peertest.Root(t, "network namespaces, tap devices and DHCP")
	for _, m := range vmrig.Missing(true) {
		peertest.Missing(t, m, "scripts/install-deps.sh")
	}
	kernel := vmtest.Kernel(t, "cloud-amd64")
	ramdisk := vmtest.Ramdisk(t, kernel)
	buildOnce.Do(func() { built, buildErr = buildArtifacts(t, kernel, ramdisk.Path) })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func buildArtifacts(t *testing.T, kernel, ramdisk string) (artifacts, error) {
	root := vmtest.Root(t)
	dir := filepath.Join(root, "build", "e2e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return artifacts{}, err
	}
	a := artifacts{kernel: kernel, ramdisk: ramdisk, conductor: filepath.Join(dir, "conductor"), imageID: "e2e"}
	cmd := exec.Command("go", "build", "-trimpath", "-o", a.conductor, "./conductor/cmd/conductor")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return a, fmt.Errorf("build conductor: %v\n%s", err, out)
	}
	initBin, err := testimage.BuildInit(context.Background(), dir)
	if err != nil {
		return a, err
	}
	a.imageRaw = filepath.Join(dir, "image.raw")
	if err := testimage.Build(a.imageRaw, testimage.Options{ID: a.imageID, Kernel: kernel, Init: initBin}); err != nil {
		return a, err
	}
	a.imageZst = a.imageRaw + ".zst"
	sum, err := compressZstd(a.imageRaw, a.imageZst)
	if err != nil {
		return a, err
	}
	a.imageSum = sum
	return a, nil
}

func compressZstd(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	defer out.Close()
	h := sha256.New()
	zw, err := zstd.NewWriter(io.MultiWriter(out, h))
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(zw, in); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), out.Close()
}

type env struct {
	t    *testing.T
	rig  *vmrig.Rig
	cond *vmrig.Conductor
	a    artifacts
}

func newEnv(t *testing.T, args ...string) *env {
	t.Helper()
	a := setup(t)
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rig, err := vmrig.New(t.Context(), vmrig.Options{Dir: dir, Name: "ingot-e2e", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rig.Close(); err != nil {
			t.Errorf("close rig: %v", err)
		}
	})
	cond, err := rig.StartConductor(t.Context(), vmrig.ConductorOptions{Binary: a.conductor, Kernel: a.kernel,
		Ramdisk: a.ramdisk, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(cond.Log)
			t.Logf("conductor log (tail):\n%s", tailLines(string(b), 80))
		}
	})
	return &env{t: t, rig: rig, cond: cond, a: a}
}

func (e *env) addNode(firmware string) (*vmrig.Node, string) {
	e.t.Helper()
	return e.addNodeWith(firmware, "direct")
}

func (e *env) addNodeWith(firmware, deploy string) (*vmrig.Node, string) {
	e.t.Helper()
	ctx := e.t.Context()
	n, err := e.rig.AddNode(ctx, vmrig.NodeOptions{Firmware: firmware})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if e.t.Failed() {
			e.t.Logf("node %s serial console (tail):\n%s", n.Name, tailLines(n.SerialLog(), 60))
		}
	})
	uuid, err := e.cond.Client.CreateNode(ctx, map[string]any{"name": n.Name, "driver": "ipmi",
		"boot_interface": "ipxe", "deploy_interface": deploy, "network_interface": "noop",
		"driver_info": n.DriverInfo(), "properties": map[string]any{"capabilities": "boot_mode:" + firmware}})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.cond.Client.CreatePort(ctx, uuid, n.MAC); err != nil {
		e.t.Fatal(err)
	}
	return n, uuid
}

func (e *env) wait(uuid string, timeout time.Duration, want ...string) vmrig.NodeState {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), timeout)
	defer cancel()
	start := time.Now()
	n, err := e.cond.Client.Wait(ctx, uuid, want, []string{"deploy failed", "clean failed", "inspect failed", "error"}, func(n vmrig.NodeState) {
		e.t.Logf("%6.1fs %s power=%s %v %s", time.Since(start).Seconds(), n.ProvisionState, deref(n.PowerState),
			n.DriverInternalInfo["deploy_progress"], n.Error())
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) provision(uuid, target string) {
	e.t.Helper()
	if err := e.cond.Client.Provision(e.t.Context(), uuid, target); err != nil {
		e.t.Fatal(err)
	}
}

// deployWithConfigDrive deploys with the object form of a config drive.
func (e *env) deployWithConfigDrive(uuid, hostname string) {
	e.t.Helper()
	if err := e.cond.Client.Do(e.t.Context(), http.MethodPut, "/v1/nodes/"+uuid+"/states/provision",
		map[string]any{"target": "active", "configdrive": map[string]any{
			"meta_data": map[string]any{"hostname": hostname}, "user_data": "#cloud-config\n"}}, nil); err != nil {
		e.t.Fatal(err)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// bootsImage checks that the node booted the deployed image (its marker on
// the console after offset) and that the disk holds the image, and its
// config drive when hostname is set.
func (e *env) bootsImage(n *vmrig.Node, offset int64, firmware, hostname string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 2*time.Minute)
	defer cancel()
	if err := n.WaitSerial(ctx, offset, testimage.Marker(e.a.imageID, firmware)); err != nil {
		e.t.Fatal(err)
	}
	raw, err := os.ReadFile(e.a.imageRaw)
	if err != nil {
		e.t.Fatal(err)
	}
	disk, err := os.Open(n.Disk)
	if err != nil {
		e.t.Fatal(err)
	}
	defer disk.Close()
	got := make([]byte, len(raw))
	if _, err := io.ReadFull(disk, got); err != nil {
		e.t.Fatal(err)
	}
	if hostname != "" {
		// The config drive's partition entry rewrote the GPT (LBA 1-33)
		// and cleared the image's backup header (its last sector): the
		// rest of the image is untouched.
		const table = 34 * 512
		if !bytes.Equal(got[:440], raw[:440]) || !bytes.Equal(got[table:len(raw)-512], raw[table:len(raw)-512]) {
			e.t.Error("the disk does not hold the image")
		}
		e.hasConfigDrive(n.Disk, hostname)
		return
	}
	// UEFI firmware writes boot variables, not the disk; the image's
	// bytes must all be there either way.
	if !bytes.Equal(got, raw) {
		e.t.Error("the disk does not hold the image")
	}
}

// hasConfigDrive checks the node's disk with the real tools: sgdisk sees
// a valid GPT with a config-2 partition, blkid an ISO 9660 labelled
// config-2 there, and isoinfo reads the hostname from its meta_data.json.
func (e *env) hasConfigDrive(diskPath, hostname string) {
	e.t.Helper()
	sgdisk := peertest.Binary(e.t, "sgdisk", "gdisk")
	out, err := exec.Command(sgdisk, "-v", diskPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		e.t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
	list, err := exec.Command(sgdisk, "-p", diskPath).CombinedOutput()
	m := regexp.MustCompile(`(?m)^\s+\d+\s+(\d+)\s+\d+\s.*\sconfig-2$`).FindSubmatch(list)
	if err != nil || m == nil {
		e.t.Fatalf("sgdisk -p shows no config-2 partition: %v\n%s", err, list)
	}
	first, _ := strconv.ParseInt(string(m[1]), 10, 64)
	out, err = exec.Command(peertest.Binary(e.t, "blkid", "util-linux"), "-p", "-O", strconv.FormatInt(first*512, 10), "-o", "export", diskPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "LABEL=config-2") || !strings.Contains(string(out), "TYPE=iso9660") {
		e.t.Fatalf("blkid at sector %d: %v\n%s", first, err, out)
	}
	part := filepath.Join(e.t.TempDir(), "config-2.iso")
	disk, err := os.Open(diskPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer disk.Close()
	iso := make([]byte, 1<<20)
	if _, err := disk.ReadAt(iso, first*512); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(part, iso, 0o600); err != nil {
		e.t.Fatal(err)
	}
	out, err = exec.Command(peertest.Binary(e.t, "isoinfo", "genisoimage"), "-R", "-x", "/openstack/latest/meta_data.json", "-i", part).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"hostname":"`+hostname+`"`) {
		e.t.Fatalf("meta_data.json on the node's config drive: %v\n%s", err, out)
	}
}

// TestE2EDeploy takes a BIOS and a UEFI node through Ironic's whole
// lifecycle: manage, provide (cleaning boots the agent), deploy (the agent
// writes the image), the node boots its own disk, undeploy.
func TestE2EDeploy(t *testing.T) {
	for _, fw := range []string{"bios", "uefi"} {
		t.Run(fw, func(t *testing.T) {
			e := newEnv(t)
			n, uuid := e.addNode(fw)
			e.provision(uuid, "manage")
			e.wait(uuid, time.Minute, "manageable")
			e.provision(uuid, "provide")
			e.wait(uuid, 3*time.Minute, "available")
			if err := e.cond.Client.Patch(t.Context(), uuid,
				map[string]any{"op": "add", "path": "/instance_info/image_source", "value": "file://" + e.a.imageZst},
				map[string]any{"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
				map[string]any{"op": "add", "path": "/instance_info/image_os_hash_value", "value": e.a.imageSum}); err != nil {
				t.Fatal(err)
			}
			off := n.SerialSize()
			// Deployed with a config drive, as Metal3 and Nova deploy:
			// the node must still boot with the partition added.
			hostname := "e2e-" + fw
			e.deployWithConfigDrive(uuid, hostname)
			e.wait(uuid, 3*time.Minute, "active")
			e.bootsImage(n, off, fw, hostname)
			e.provision(uuid, "deleted")
			e.wait(uuid, 3*time.Minute, "available")
		})
	}
}

// TestE2EInspect runs Ironic's built-in in-band inspection on a virtual
// node: the agent boots with the inspection callback, posts its
// inventory, and the node comes back manageable and off with its
// properties filled and the inventory served at API 1.81.
func TestE2EInspect(t *testing.T) {
	e := newEnv(t)
	n, uuid := e.addNode("bios")
	e.provision(uuid, "manage")
	e.wait(uuid, time.Minute, "manageable")
	if err := e.cond.Client.Patch(t.Context(), uuid,
		map[string]any{"op": "replace", "path": "/inspect_interface", "value": "agent"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.provision(uuid, "inspect")
	st := e.wait(uuid, 2*time.Minute, "manageable")
	t.Logf("inspection took %v", time.Since(start).Round(100*time.Millisecond))
	if deref(st.PowerState) != "power off" {
		t.Errorf("power %q after inspection", deref(st.PowerState))
	}
	var shown struct {
		Properties map[string]any `json:"properties"`
	}
	if err := e.cond.Client.Do(t.Context(), http.MethodGet, "/v1/nodes/"+uuid, nil, &shown); err != nil {
		t.Fatal(err)
	}
	p := shown.Properties
	if p["cpu_arch"] != "x86_64" || p["cpus"] != 1.0 || p["local_gb"] != 7.0 {
		t.Errorf("properties %v", p)
	}
	if mb, _ := p["memory_mb"].(float64); mb < 900 || mb > 1024 {
		t.Errorf("memory_mb %v for a 1024 MiB VM", p["memory_mb"])
	}
	var inv struct {
		Inventory struct {
			Disks []struct {
				Name, Serial string
				Size         int64
			} `json:"disks"`
			Interfaces []struct {
				MAC string `json:"mac_address"`
			} `json:"interfaces"`
		} `json:"inventory"`
		PluginData map[string]any `json:"plugin_data"`
	}
	if err := e.cond.Client.Inventory(t.Context(), uuid, &inv); err != nil {
		t.Fatal(err)
	}
	d := inv.Inventory.Disks
	if len(d) != 1 || d[0].Serial != n.DiskSerial || d[0].Size != 8<<30 || len(inv.Inventory.Interfaces) == 0 ||
		inv.Inventory.Interfaces[0].MAC != n.MAC || inv.PluginData["root_disk"] == nil {
		t.Errorf("inventory %+v", inv)
	}
}

// TestE2EISCSIDeploy deploys through the iSCSI fallback: the agent
// exports its disk, the conductor writes the image over iSCSI from its
// own cache, then the config drive, and the node boots the result.
func TestE2EISCSIDeploy(t *testing.T) {
	e := newEnv(t, "--automated-clean=false")
	n, uuid := e.addNodeWith("bios", "iscsi")
	e.provision(uuid, "manage")
	e.wait(uuid, time.Minute, "manageable")
	e.provision(uuid, "provide")
	e.wait(uuid, time.Minute, "available")
	e.setImage(uuid, "file://"+e.a.imageZst, e.a.imageSum)
	off := n.SerialSize()
	e.deployWithConfigDrive(uuid, "e2e-iscsi")
	e.wait(uuid, 3*time.Minute, "active")
	e.bootsImage(n, off, "bios", "e2e-iscsi")
	if b, _ := os.ReadFile(e.cond.Log); bytes.Contains(b, []byte("chap_secret\":\"")) {
		t.Error("the conductor logged a CHAP secret")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
