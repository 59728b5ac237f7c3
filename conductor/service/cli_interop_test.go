//go:build interop

package service_test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/internal/peertest"
)

// baremetal runs the real OpenStack baremetal CLI (Debian's
// python3-ironicclient) against url and returns its standard output.
func baremetal(t *testing.T, bin, url string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, append([]string{"--os-auth-type", "none", "--os-endpoint", url}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no cached version negotiation between runs
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("baremetal %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return strings.TrimSpace(string(out))
}

func baremetalFails(t *testing.T, bin, url string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, append([]string{"--os-auth-type", "none", "--os-endpoint", url}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("baremetal %s succeeded, want a failure:\n%s", strings.Join(args, " "), out)
	}
	return string(out)
}

func showJSON(t *testing.T, bin, url, ident string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(baremetal(t, bin, url, "node", "show", ident, "-f", "json")), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestInteropBaremetalCLI runs the node lifecycle with the real baremetal
// CLI, as an operator would.
func TestInteropBaremetalCLI(t *testing.T) {
	bin := peertest.Binary(t, "baremetal", "python3-ironicclient")
	url := startConductor(t)

	uuid := baremetal(t, bin, url, "node", "create", "--driver", "fake-hardware", "--name", "cli-node",
		"--driver-info", "ipmi_password=hunter2", "--driver-info", "ipmi_username=admin",
		"--property", "memory_mb=4096", "--resource-class", "baremetal", "-f", "value", "-c", "uuid")
	port := baremetal(t, bin, url, "port", "create", "52:54:00:aa:bb:01", "--node", uuid, "-f", "value", "-c", "uuid")
	if got := baremetal(t, bin, url, "port", "list", "--node", "cli-node", "-f", "value", "-c", "Address"); got != "52:54:00:aa:bb:01" {
		t.Errorf("port list: %q", got)
	}

	baremetal(t, bin, url, "node", "set", "cli-node", "--instance-info", "image_source=http://127.0.0.1:8088/disk.img",
		"--instance-info", "image_os_hash_algo=sha256", "--instance-info", "root_gb=1",
		"--driver-info", "deploy_kernel=http://127.0.0.1:8088/k", "--property", "cpu_arch=x86_64",
		"--automated-clean", "--description", "made by the CLI")
	baremetal(t, bin, url, "node", "unset", "cli-node", "--instance-info", "image_os_hash_algo")
	baremetal(t, bin, url, "node", "manage", "cli-node", "--wait", "30")
	baremetal(t, bin, url, "node", "provide", "cli-node", "--wait", "30")
	baremetal(t, bin, url, "node", "deploy", "cli-node", "--wait", "30")
	baremetal(t, bin, url, "node", "power", "on", "cli-node")
	baremetal(t, bin, url, "node", "power", "off", "cli-node", "--power-timeout", "30")
	baremetal(t, bin, url, "node", "boot", "device", "set", "cli-node", "pxe", "--persistent")
	if got := baremetal(t, bin, url, "node", "boot", "device", "show", "cli-node", "-f", "json"); !strings.Contains(got, `"pxe"`) || !strings.Contains(got, "true") {
		t.Errorf("boot device show: %s", got)
	}
	baremetal(t, bin, url, "node", "maintenance", "set", "cli-node", "--reason", "probe")
	if m := showJSON(t, bin, url, "cli-node"); m["maintenance"] != true || m["maintenance_reason"] != "probe" {
		t.Errorf("maintenance set: %v %v", m["maintenance"], m["maintenance_reason"])
	}
	baremetal(t, bin, url, "node", "maintenance", "unset", "cli-node")

	// node show -f json, field by field against what the API serves.
	shown := showJSON(t, bin, url, "cli-node")
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url+"/v1/nodes/"+uuid, nil)
	req.Header.Set("X-OpenStack-Ironic-API-Version", "1.78")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var api map[string]any
	json.NewDecoder(resp.Body).Decode(&api)
	resp.Body.Close()
	for k, v := range api {
		if k == "links" || k == "ports" || k == "states" || k == "portgroups" || k == "volume" {
			continue // the CLI drops or reformats link lists
		}
		if diff := cmp.Diff(v, shown[k]); diff != "" {
			t.Errorf("field %s: API vs CLI (-api +cli):\n%s", k, diff)
		}
	}
	want := map[string]any{
		"name": "cli-node", "uuid": uuid, "driver": "fake-hardware", "provision_state": "active",
		"power_state": "power off", "target_provision_state": nil, "maintenance": false, "automated_clean": true,
		"description": "made by the CLI", "resource_class": "baremetal", "last_error": nil,
		"driver_info":   map[string]any{"ipmi_password": "******", "ipmi_username": "admin", "deploy_kernel": "http://127.0.0.1:8088/k"},
		"properties":    map[string]any{"memory_mb": float64(4096), "cpu_arch": "x86_64"},
		"instance_info": map[string]any{"image_source": "http://127.0.0.1:8088/disk.img", "root_gb": float64(1)}, // the CLI sends numbers as JSON numbers
	}
	for k, w := range want {
		if diff := cmp.Diff(w, shown[k]); diff != "" {
			t.Errorf("node show %s (-want +got):\n%s", k, diff)
		}
	}

	out := baremetalFails(t, bin, url, "node", "delete", "cli-node")
	if !strings.Contains(out, "while it is in provision state") {
		t.Errorf("delete of an active node: %s", out)
	}
	baremetal(t, bin, url, "node", "undeploy", "cli-node", "--wait", "30")
	if m := showJSON(t, bin, url, "cli-node"); m["provision_state"] != "available" || len(m["instance_info"].(map[string]any)) != 0 {
		t.Errorf("after undeploy: %v %v", m["provision_state"], m["instance_info"])
	}
	baremetal(t, bin, url, "node", "manage", "cli-node", "--wait", "30")
	baremetal(t, bin, url, "port", "delete", port)
	baremetal(t, bin, url, "node", "delete", "cli-node")
	if out := baremetalFails(t, bin, url, "node", "show", "cli-node"); !strings.Contains(out, "could not be found") {
		t.Errorf("show deleted node: %s", out)
	}
	if got := baremetal(t, bin, url, "driver", "list", "-f", "value", "-c", "Supported driver(s)"); !strings.Contains(got, "ipmi") {
		t.Errorf("driver list: %q", got)
	}
	if got := baremetal(t, bin, url, "conductor", "list", "-f", "value", "-c", "Hostname"); got != "test-conductor" {
		t.Errorf("conductor list: %q", got)
	}
}

// TestInteropBaremetalCLIConfigDrive: the CLI's two config drive forms
// reach active and stay masked: JSON (the conductor builds the ISO) and a
// directory (the CLI builds the ISO itself with genisoimage and sends it
// gzipped and base64-encoded). A malformed JSON drive is refused with
// the conductor's message and the node stays available.
func TestInteropBaremetalCLIConfigDrive(t *testing.T) {
	bin := peertest.Binary(t, "baremetal", "python3-ironicclient")
	peertest.Binary(t, "genisoimage", "genisoimage")
	url := startConductor(t)
	baremetal(t, bin, url, "node", "create", "--driver", "fake-hardware", "--name", "cd-node", "-f", "value", "-c", "uuid")
	baremetal(t, bin, url, "node", "set", "cd-node", "--instance-info", "image_source=http://127.0.0.1:8088/disk.img")
	baremetal(t, bin, url, "node", "manage", "cd-node", "--wait", "30")
	baremetal(t, bin, url, "node", "provide", "cd-node", "--wait", "30")

	out := baremetalFails(t, bin, url, "node", "deploy", "cd-node", "--config-drive", `{"meta_data": ["not", "an", "object"]}`)
	if !strings.Contains(out, "meta_data must be an object") {
		t.Errorf("malformed config drive: %s", out)
	}
	if m := showJSON(t, bin, url, "cd-node"); m["provision_state"] != "available" || m["instance_info"].(map[string]any)["configdrive"] != nil {
		t.Errorf("after a refused deploy: %v %v", m["provision_state"], m["instance_info"])
	}

	dir := filepath.Join(t.TempDir(), "drive", "openstack", "latest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "meta_data.json"), []byte(`{"hostname": "cli-dir"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{`{"meta_data": {"hostname": "cli-json"}, "user_data": "#cloud-config\n"}`, filepath.Dir(filepath.Dir(dir))} {
		baremetal(t, bin, url, "node", "deploy", "cd-node", "--config-drive", form, "--wait", "30")
		m := showJSON(t, bin, url, "cd-node")
		if m["provision_state"] != "active" || m["instance_info"].(map[string]any)["configdrive"] != "******" {
			t.Errorf("deploy with config drive %q: %v %v", form, m["provision_state"], m["instance_info"])
		}
		baremetal(t, bin, url, "node", "undeploy", "cd-node", "--wait", "30")
	}
}
