//go:build interop

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/blockdev/blockdevtest"
	"github.com/ingot-dev/ingot/agent/efiboot"
	"github.com/ingot-dev/ingot/internal/peertest"
	"github.com/ingot-dev/ingot/shared/configdrive"
)

// One real Ironic serves every test of this package run
// (scripts/ironic-peer.sh); TestMain stops it.
var peer struct {
	once    sync.Once
	url     string
	workdir string
	pid     int
	err     error
	agent   string // the deploy-agent binary under test
}

func TestMain(m *testing.M) {
	code := m.Run()
	if peer.pid > 0 {
		syscall.Kill(-peer.pid, syscall.SIGTERM) // the process group scripts/ironic-peer.sh made
	}
	if peer.workdir != "" && code == 0 {
		os.RemoveAll(peer.workdir)
	} else if peer.workdir != "" {
		fmt.Fprintf(os.Stderr, "Ironic's logs are kept in %s/logs\n", peer.workdir)
	}
	os.Exit(code)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ironic starts the shared Ironic (once) and builds the agent.
func ironic(t *testing.T) string {
	t.Helper()
	peertest.Binary(t, "ironic", "ironic-api ironic-conductor")
	peertest.Binary(t, "ironic-dbsync", "ironic-api ironic-conductor")
	peer.once.Do(func() {
		root := repoRoot(t)
		dir, err := os.MkdirTemp("", "ingot-ironic-peer-")
		if err != nil {
			peer.err = err
			return
		}
		peer.workdir = dir
		peer.agent = filepath.Join(dir, "deploy-agent")
		build := exec.Command("go", "build", "-o", peer.agent, "./agent/cmd/deploy-agent")
		build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			peer.err = fmt.Errorf("build the agent: %v\n%s", err, out)
			return
		}
		port := freePort(t)
		start := time.Now()
		out, err := exec.Command(filepath.Join(root, "scripts/ironic-peer.sh"), dir, fmt.Sprint(port)).CombinedOutput()
		if pid, perr := os.ReadFile(filepath.Join(dir, "ironic.pid")); perr == nil {
			fmt.Sscan(string(pid), &peer.pid)
		}
		if err != nil {
			peer.err = fmt.Errorf("scripts/ironic-peer.sh: %v\n%s", err, out)
			return
		}
		peer.url = fmt.Sprintf("http://127.0.0.1:%d", port)
		fmt.Fprintf(os.Stderr, "real Ironic up at %s in %v\n", peer.url, time.Since(start).Round(100*time.Millisecond))
	})
	if peer.err != nil {
		t.Fatal(peer.err)
	}
	return peer.url
}

// --- a minimal Ironic REST client -------------------------------------------

type ironicClient struct {
	t    *testing.T
	base string
}

func (c ironicClient) do(method, path string, body any, want int) map[string]any {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(c.t.Context(), method, c.base+path, rd)
	req.Header.Set("X-OpenStack-Ironic-API-Version", "1.82")
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		c.t.Fatalf("%s %s: %d, want %d: %s", method, path, res.StatusCode, want, b)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func (c ironicClient) provision(node, target string) {
	c.t.Helper()
	c.do("PUT", "/v1/nodes/"+node+"/states/provision", map[string]any{"target": target}, http.StatusAccepted)
}

// waitState polls until the node reaches one of want; a failure state
// ends the test with last_error.
func (c ironicClient) waitState(node string, timeout time.Duration, onFail func(), want ...string) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		n := c.do("GET", "/v1/nodes/"+node, nil, 200)
		st, _ := n["provision_state"].(string)
		last = st
		for _, w := range want {
			if st == w {
				return st
			}
		}
		if strings.HasSuffix(st, "failed") || st == "error" {
			onFail()
			c.t.Fatalf("node %s went to %q: %v", node, st, n["last_error"])
		}
		time.Sleep(250 * time.Millisecond)
	}
	onFail()
	c.t.Fatalf("node %s still %q after %v, want %v", node, last, timeout, want)
	return ""
}

// --- the machine: a disk file, an image server, agent processes -------------

type machine struct {
	t      *testing.T
	name   string
	mac    string
	disk   string
	efi    string
	tls    string
	logDir string
	n      int
}

// boot starts an agent process, as the machine booting the ramdisk would.
func (m *machine) boot(api string) *exec.Cmd {
	m.t.Helper()
	m.n++
	logf, err := os.Create(filepath.Join(m.logDir, fmt.Sprintf("agent-%d.log", m.n)))
	if err != nil {
		m.t.Fatal(err)
	}
	cmd := exec.Command(peer.agent, "--cmdline=", "--api-url", api, "--bootif", m.mac, "--listen-host", "127.0.0.1",
		"--listen-port", "0", "--disk", m.disk, "--power", "exit", "--efivars", m.efi, "--tls", m.tls,
		"--lookup-interval", "200ms", "--min-forced-heartbeat", "200ms", "--debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill() // our own child, by pid
			cmd.Wait()
		}
		logf.Close()
	})
	return cmd
}

// powerOff plays the node's power: the agent process is ended.
func (m *machine) powerOff(cmd *exec.Cmd) {
	if cmd.ProcessState == nil {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
}

// waitExit waits for an agent that powered itself off.
func (m *machine) waitExit(cmd *exec.Cmd, timeout time.Duration) {
	m.t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			m.t.Errorf("agent exited with %v", err)
		}
	case <-time.After(timeout):
		m.t.Errorf("the agent did not power off within %v", timeout)
		cmd.Process.Kill()
		<-done
	}
}

func (m *machine) dumpLogs() {
	for i := 1; i <= m.n; i++ {
		b, _ := os.ReadFile(filepath.Join(m.logDir, fmt.Sprintf("agent-%d.log", i)))
		if len(b) > 20000 {
			b = b[len(b)-20000:]
		}
		m.t.Logf("agent %d log:\n%s", i, b)
	}
	b, _ := os.ReadFile(filepath.Join(peer.workdir, "logs", "ironic.out"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	m.t.Logf("ironic.out tail:\n%s", b)
}

const (
	mib      = 1 << 20
	espUUID  = "7a3f0d2c-51e4-4a3b-9c1e-2f6b8d0a4e11"
	diskGUID = "5d2e8c1a-3b4f-4e6a-9d7c-1a2b3c4d5e6f"
)

// wholeDiskImage: GPT, an ESP and a root partition, random content.
func wholeDiskImage(t *testing.T, size int64, seed uint64) []byte {
	t.Helper()
	p := blockdevtest.Disk(t, size)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, seed))
	data := make([]byte, size-2*mib)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	f.WriteAt(data, mib)
	blockdevtest.GPT(t, f, size, diskGUID, []blockdevtest.Part{
		{Start: mib, Size: 2 * mib, TypeGUID: blockdev.ESPTypeGUID, UUID: espUUID, Name: "EFI System"},
		{Start: 3 * mib, Size: size - 4*mib, TypeGUID: "0fc63daf-8483-4772-8e79-3d69d8477de4", UUID: "b9a4c0de-0000-4000-8000-00000000beef", Name: "root"},
	})
	f.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// imageTime is the images' Last-Modified: streaming a qcow2 image needs a
// validator for its Range reads, as every real web server sends.
var imageTime = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// toQcow2 converts a raw image with qemu-img.
func toQcow2(t *testing.T, raw []byte) []byte {
	t.Helper()
	qemuImg := peertest.Binary(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	in, out := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	if err := os.WriteFile(in, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(qemuImg, "convert", "-f", "raw", "-O", "qcow2", in, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loopDevice attaches a file to a loop device, detached at cleanup.
func loopDevice(t *testing.T, file string) string {
	t.Helper()
	losetup := peertest.Binary(t, "losetup", "mount")
	out, err := exec.Command(losetup, "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// TestInteropIronicDrivesAgent: a real Ironic 21.4 conductor deploys a
// whole-disk image through our agent process onto a file-backed disk, in
// UEFI and BIOS boot modes (and a qcow2 image, converted while streaming),
// then undeploys with automated cleaning, which wipes the disk's metadata
// through the agent.
func TestInteropIronicDrivesAgent(t *testing.T) {
	api := ironic(t)
	ic := ironicClient{t: t, base: api}

	for i, tc := range []struct {
		name, boot string
		qcow2      bool
		// configDrive deploys with the object form of a config drive,
		// which Ironic builds into an ISO with genisoimage.
		configDrive bool
	}{
		{name: "uefi", boot: "uefi", configDrive: true},
		{name: "bios", boot: "bios", configDrive: true},
		{name: "bios-qcow2", boot: "bios", qcow2: true},
	} {
		mode := tc.boot
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ic := ironicClient{t: t, base: ic.base}
			img := wholeDiskImage(t, 8*mib, uint64(i+1))
			served, format := img, "raw"
			if tc.qcow2 {
				served, format = toQcow2(t, img), "qcow2"
			}
			sum := sha256.Sum256(served)
			digest := hex.EncodeToString(sum[:])
			rawSum := sha256.Sum256(img)
			rawDigest := hex.EncodeToString(rawSum[:])
			images := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/disk.raw":
					http.ServeContent(w, r, "disk.raw", imageTime, bytes.NewReader(served))
				case "/kernel", "/ramdisk":
					io.WriteString(w, "not a kernel\n") // pxe prepare only copies them
				default:
					http.NotFound(w, r)
				}
			}))
			t.Cleanup(images.Close)

			m := &machine{t: t, name: "ingot-" + tc.name, mac: fmt.Sprintf("52:54:00:12:34:%02x", 0x60+i),
				disk: blockdevtest.Disk(t, 5<<30), efi: t.TempDir(), logDir: t.TempDir(), tls: "off"}
			if mode == "uefi" {
				m.tls = "auto" // the conductor verifies the agent with agent_verify_ca
			} else if tc.qcow2 {
				// a plain file disk
			} else if os.Geteuid() == 0 {
				m.disk = loopDevice(t, m.disk) // a real block device: BLKRRPART and all
			} else {
				t.Log("not root: the BIOS machine's disk is a plain file, not a loop device")
			}
			props := map[string]any{"cpu_arch": "x86_64"}
			if mode == "bios" {
				props["root_device"] = map[string]any{"size": ">= 5"}
			}
			n := ic.do("POST", "/v1/nodes", map[string]any{"name": m.name, "driver": "manual-management",
				"deploy_interface": "direct", "boot_interface": "pxe", "power_interface": "fake",
				"management_interface": "noop", "network_interface": "noop", "automated_clean": false,
				"driver_info": map[string]any{"deploy_kernel": images.URL + "/kernel", "deploy_ramdisk": images.URL + "/ramdisk"},
				"properties":  props}, http.StatusCreated)
			uuid := n["uuid"].(string)
			t.Cleanup(func() {
				req, _ := http.NewRequest("DELETE", api+"/v1/nodes/"+uuid, nil)
				req.Header.Set("X-OpenStack-Ironic-API-Version", "1.82")
				if res, err := http.DefaultClient.Do(req); err == nil {
					res.Body.Close()
				}
			})
			ic.do("POST", "/v1/ports", map[string]any{"address": m.mac, "node_uuid": uuid}, http.StatusCreated)
			ic.provision(uuid, "manage")
			ic.waitState(uuid, 60*time.Second, m.dumpLogs, "manageable")
			ic.provision(uuid, "provide")
			ic.waitState(uuid, 60*time.Second, m.dumpLogs, "available")
			patch := []map[string]any{
				{"op": "add", "path": "/instance_info/image_source", "value": images.URL + "/disk.raw"},
				{"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
				{"op": "add", "path": "/instance_info/image_os_hash_value", "value": digest},
				{"op": "add", "path": "/instance_info/image_disk_format", "value": format},
			}
			if mode == "bios" {
				patch = append(patch, map[string]any{"op": "add", "path": "/instance_info/capabilities", "value": map[string]any{"boot_mode": "bios"}})
			}
			ic.do("PATCH", "/v1/nodes/"+uuid, patch, 200)

			// Deploy: Ironic PXE-prepares and "powers on" the node; the
			// machine boots the agent.
			start := time.Now()
			hostname := "ironic-" + tc.name
			if tc.configDrive {
				ic.do("PUT", "/v1/nodes/"+uuid+"/states/provision", map[string]any{"target": "active",
					"configdrive": map[string]any{"meta_data": map[string]any{"hostname": hostname}}}, http.StatusAccepted)
			} else {
				ic.provision(uuid, "active")
			}
			ic.waitState(uuid, 60*time.Second, m.dumpLogs, "wait call-back")
			agent := m.boot(api)
			ic.waitState(uuid, 120*time.Second, m.dumpLogs, "active")
			t.Logf("%s deploy: wait call-back to active in %v", tc.name, time.Since(start).Round(100*time.Millisecond))
			m.waitExit(agent, 30*time.Second) // standby.power_off ends the process

			got := make([]byte, len(img))
			if f, err := os.Open(m.disk); err != nil {
				t.Fatal(err)
			} else if _, err := io.ReadFull(f, got); err != nil {
				t.Fatal(err)
			} else {
				f.Close()
			}
			if tc.configDrive {
				// The config drive's partition rewrote the GPT (the
				// protective MBR's entry, LBA 1-33)
				// and cleared the image's backup header.
				const table = 34 * 512
				if !bytes.Equal(got[:440], img[:440]) || !bytes.Equal(got[table:len(img)-512], img[table:len(img)-512]) {
					m.dumpLogs()
					t.Fatalf("the disk does not hold the image")
				}
				hasConfigDrive(t, m.disk, hostname, uuid)
			} else if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != rawDigest {
				m.dumpLogs()
				t.Fatalf("the disk does not hold the image")
			}
			node := ic.do("GET", "/v1/nodes/"+uuid, nil, 200)
			dii, _ := node["driver_internal_info"].(map[string]any)
			if mode == "uefi" {
				// Ironic kept the agent's auto-TLS certificate and talked
				// to it over https with it.
				if b, err := os.ReadFile(filepath.Join(peer.workdir, "certificates", uuid+".crt")); err != nil ||
					!strings.Contains(string(b), "BEGIN CERTIFICATE") {
					t.Errorf("Ironic stored no agent certificate: %v", err)
				}
				if dii["root_uuid_or_disk_id"] != "0x12345678" {
					t.Errorf("root_uuid_or_disk_id = %v", dii["root_uuid_or_disk_id"])
				}
				order, err := efiboot.Vars{Dir: m.efi}.BootOrder()
				ents, _ := efiboot.Vars{Dir: m.efi}.Entries()
				g, _ := blockdev.ParseGUID(espUUID)
				if err != nil || len(order) != 1 || len(ents) != 1 || !bytes.Contains(ents[order[0]], g[:]) {
					m.dumpLogs()
					t.Errorf("no UEFI boot entry for the image's ESP: order %v, %d entries, %v", order, len(ents), err)
				}
			} else if ents, _ := os.ReadDir(m.efi); len(ents) != 0 {
				t.Errorf("BIOS deploy created UEFI variables: %v", ents)
			}

			// Undeploy with automated cleaning: the machine boots the agent
			// again, Ironic runs erase_devices_metadata through it.
			ic.do("PATCH", "/v1/nodes/"+uuid, []map[string]any{{"op": "replace", "path": "/automated_clean", "value": true}}, 200)
			start = time.Now()
			ic.provision(uuid, "deleted")
			ic.waitState(uuid, 60*time.Second, m.dumpLogs, "clean wait")
			agent = m.boot(api)
			ic.waitState(uuid, 120*time.Second, m.dumpLogs, "available")
			t.Logf("%s undeploy with cleaning: %v", tc.name, time.Since(start).Round(100*time.Millisecond))
			m.powerOff(agent) // Ironic powered the node off (fake power)
			if os.Getenv("INGOT_TEST_AGENT_LOGS") != "" {
				m.dumpLogs()
			}

			d, err := blockdev.Open(m.disk)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if tab, _ := blockdev.ReadTable(d, d.Size()); tab.Kind != "" {
				t.Errorf("partition table survived cleaning: %+v", tab)
			}
			for _, off := range []int64{0, d.Size() - mib} {
				b := make([]byte, mib)
				d.ReadAt(b, off)
				if !bytes.Equal(b, make([]byte, mib)) {
					t.Errorf("the MiB at %d was not wiped", off)
				}
			}
			mid := make([]byte, 4096)
			d.ReadAt(mid, 4*mib)
			if !bytes.Equal(mid, img[4*mib:4*mib+4096]) {
				t.Error("cleaning touched more than the metadata (erase_devices ran?)")
			}
		})
	}
}

// TestInteropIronicDeployFailure: an image whose checksum does not match
// fails the deploy in the real Ironic with both digests in last_error, and
// the conductor collects the agent's logs (log.collect_system_logs) into
// its deploy_logs directory.
func TestInteropIronicDeployFailure(t *testing.T) {
	api := ironic(t)
	ic := ironicClient{t: t, base: api}
	img := wholeDiskImage(t, 4*mib, 9)
	sum := sha256.Sum256(img)
	images := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/disk.raw" {
			http.ServeContent(w, r, "disk.raw", time.Unix(0, 0), bytes.NewReader(img))
			return
		}
		io.WriteString(w, "not a kernel\n")
	}))
	t.Cleanup(images.Close)
	m := &machine{t: t, name: "ingot-bad-checksum", mac: "52:54:00:12:34:7f", disk: blockdevtest.Disk(t, 5<<30),
		efi: t.TempDir(), logDir: t.TempDir(), tls: "off"}
	n := ic.do("POST", "/v1/nodes", map[string]any{"name": m.name, "driver": "manual-management",
		"deploy_interface": "direct", "boot_interface": "pxe", "power_interface": "fake",
		"management_interface": "noop", "network_interface": "noop", "automated_clean": false,
		"driver_info": map[string]any{"deploy_kernel": images.URL + "/kernel", "deploy_ramdisk": images.URL + "/ramdisk"},
		"properties":  map[string]any{"cpu_arch": "x86_64"}}, http.StatusCreated)
	uuid := n["uuid"].(string)
	t.Cleanup(func() {
		req, _ := http.NewRequest("DELETE", api+"/v1/nodes/"+uuid, nil)
		req.Header.Set("X-OpenStack-Ironic-API-Version", "1.82")
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	})
	ic.do("POST", "/v1/ports", map[string]any{"address": m.mac, "node_uuid": uuid}, http.StatusCreated)
	ic.provision(uuid, "manage")
	ic.waitState(uuid, 60*time.Second, m.dumpLogs, "manageable")
	ic.provision(uuid, "provide")
	ic.waitState(uuid, 60*time.Second, m.dumpLogs, "available")
	wrong := strings.Repeat("0", 64)
	ic.do("PATCH", "/v1/nodes/"+uuid, []map[string]any{
		{"op": "add", "path": "/instance_info/image_source", "value": images.URL + "/disk.raw"},
		{"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
		{"op": "add", "path": "/instance_info/image_os_hash_value", "value": wrong},
		{"op": "add", "path": "/instance_info/image_disk_format", "value": "raw"},
	}, 200)
	ic.provision(uuid, "active")
	ic.waitState(uuid, 60*time.Second, m.dumpLogs, "wait call-back")
	agent := m.boot(api)
	defer m.powerOff(agent)

	deadline := time.Now().Add(120 * time.Second)
	var node map[string]any
	for time.Now().Before(deadline) {
		node = ic.do("GET", "/v1/nodes/"+uuid, nil, 200)
		if node["provision_state"] == "deploy failed" || node["provision_state"] == "active" {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	lastErr, _ := node["last_error"].(string)
	if node["provision_state"] != "deploy failed" || !strings.Contains(lastErr, wrong) || !strings.Contains(lastErr, hex.EncodeToString(sum[:])) {
		m.dumpLogs()
		t.Fatalf("state %v, last_error %q: want deploy failed naming both digests", node["provision_state"], lastErr)
	}
	t.Logf("last_error: %s", lastErr)
	// The conductor asked for the logs; they are a gzipped tarball.
	var logs []string
	for time.Now().Before(deadline) {
		logs, _ = filepath.Glob(filepath.Join(peer.workdir, "deploy_logs", uuid+"*"))
		if len(logs) > 0 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(logs) == 0 {
		m.dumpLogs()
		t.Fatal("Ironic stored no deploy logs")
	}
	out, err := exec.Command("tar", "-tzf", logs[0]).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "agent.log") {
		t.Errorf("deploy logs %s: %v\n%s", logs[0], err, out)
	}
}

// hasConfigDrive checks the disk holds the config drive Ironic built: a
// GPT partition named config-2 with an ISO 9660 labelled config-2 whose
// meta_data.json has the hostname and the node's uuid.
func hasConfigDrive(t *testing.T, disk, hostname, uuid string) {
	t.Helper()
	d, err := blockdev.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tab, err := blockdev.ReadTable(d, d.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tab.Partitions {
		if p.Name != configdrive.Label {
			continue
		}
		if label, _ := configdrive.FilesystemLabel(d, p.Start); label != configdrive.Label {
			t.Fatalf("partition %d holds %q, not the config drive", p.Number, label)
		}
		b := make([]byte, 1<<20)
		d.ReadAt(b, p.Start)
		if !bytes.Contains(b, []byte(`"hostname": "`+hostname+`"`)) && !bytes.Contains(b, []byte(`"hostname":"`+hostname+`"`)) {
			t.Errorf("the config drive lacks the hostname %q", hostname)
		}
		if !bytes.Contains(b, []byte(uuid)) {
			t.Errorf("the config drive lacks the node's uuid")
		}
		return
	}
	t.Fatalf("no config-2 partition: %+v", tab.Partitions)
}
