package extension_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/blockdev/blockdevtest"
	"github.com/ingot-dev/ingot/agent/extension"
	"github.com/ingot-dev/ingot/shared/api"
)

const (
	testIQN    = "iqn.2008-10.org.openstack:1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
	chapSecret = "a-per-deploy-chap-secret-0123456789"
)

// freePort returns a loopback TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects a logger's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// iscsiRig is a rig whose agent exports on 127.0.0.1 and logs into logs.
func iscsiRig(t *testing.T, diskSize int64, mod func(*extension.Options)) (*rig, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	r := newRig(t, diskSize, func(o *extension.Options) {
		o.ISCSIHost = "127.0.0.1"
		o.Log = slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
		if mod != nil {
			mod(o)
		}
	})
	t.Cleanup(func() { r.ext.Close() })
	return r, logs
}

func startParams(port int) map[string]any {
	return map[string]any{"iqn": testIQN, "portal_port": port, "wipe_disk_metadata": true,
		"chap_username": "ingot", "chap_secret": chapSecret,
		"node": map[string]any{"uuid": "n1", "properties": map[string]any{}, "instance_info": map[string]any{}}}
}

// post sends a command and returns the HTTP status and body, whatever
// they are.
func (r *rig) post(t *testing.T, name string, params any) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "params": params})
	res, err := http.Post(r.srv.URL+"/v1/commands/?wait=true&agent_token="+token, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func (r *rig) history(t *testing.T) string {
	t.Helper()
	res, err := http.Get(r.srv.URL + "/v1/commands/?agent_token=" + token)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

type targetStatus struct {
	IQN         string `json:"iscsi_target_iqn"`
	Running     bool   `json:"running"`
	Portal      string `json:"portal"`
	Device      string `json:"device"`
	Connections int    `json:"connections"`
	Sessions    int64  `json:"sessions"`
	Panics      int64  `json:"panics"`
	LastPanic   string `json:"last_panic"`
}

func status(t *testing.T, c api.CommandResult) targetStatus {
	t.Helper()
	if c.CommandStatus != api.StatusSucceeded {
		t.Fatalf("%s: %v", c.CommandName, c.CommandError)
	}
	var st targetStatus
	if err := json.Unmarshal(c.CommandResult, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestISCSITargetLifecycle(t *testing.T) {
	r, logs := iscsiRig(t, 5<<30, nil)
	// An old GPT the export must wipe.
	f, _ := os.OpenFile(r.disk, os.O_RDWR, 0)
	blockdevtest.GPT(t, f, 5<<30, diskGUID, []blockdevtest.Part{{Start: mib, Size: 8 * mib, TypeGUID: linuxFS, UUID: rootPart, Name: "old"}})
	f.Close()
	port := freePort(t)
	portal := "127.0.0.1:" + strconv.Itoa(port)

	c := r.run(t, "iscsi.start_iscsi_target", startParams(port))
	if c.CommandStatus != api.StatusSucceeded || string(c.CommandResult) != `{"iscsi_target_iqn":"`+testIQN+`"}` {
		t.Fatalf("start: %s %s %v", c.CommandStatus, c.CommandResult, c.CommandError)
	}
	if !dialable(portal) {
		t.Fatalf("nothing listens on %s", portal)
	}
	d, _ := blockdev.Open(r.disk)
	if tab, _ := blockdev.ReadTable(d, d.Size()); tab.Kind != "" {
		t.Errorf("wipe_disk_metadata left a %s table", tab.Kind)
	}
	d.Close()
	st := status(t, r.run(t, "iscsi.get_target_status", map[string]any{}))
	if !st.Running || st.IQN != testIQN || st.Portal != portal || st.Device != r.disk || st.Panics != 0 {
		t.Errorf("status while running: %+v", st)
	}

	t.Run("a second start is refused and leaves the first target alone", func(t *testing.T) {
		failed(t, r.run(t, "iscsi.start_iscsi_target", startParams(freePort(t))), "ISCSIError", "already running")
		if !dialable(portal) {
			t.Error("the first target stopped")
		}
	})

	// "The conductor" writes a whole-disk image; stop is its done notice.
	img := gptImage(t, 8*mib)
	f, _ = os.OpenFile(r.disk, os.O_RDWR, 0)
	f.WriteAt(img, 0)
	f.Close()
	st = status(t, r.run(t, "iscsi.stop_iscsi_target", map[string]any{}))
	if st.Running || st.IQN != testIQN || st.Panics != 0 || st.LastPanic != "" {
		t.Errorf("stop result %+v", st)
	}
	if dialable(portal) {
		t.Error("the portal still listens after stop")
	}
	u := r.run(t, "standby.get_partition_uuids", map[string]any{})
	var uuids map[string]any
	json.Unmarshal(u.CommandResult, &uuids)
	if uuids["root uuid"] != "0x12345678" || uuids["efi system partition uuid"] != espUUID {
		t.Errorf("partition uuids after stop: %s", u.CommandResult)
	}
	if st := status(t, r.run(t, "iscsi.get_target_status", map[string]any{})); st.Running {
		t.Errorf("status after stop: %+v", st)
	}

	t.Run("stopping when nothing runs is an error", func(t *testing.T) {
		failed(t, r.run(t, "iscsi.stop_iscsi_target", map[string]any{}), "ISCSIError", "no iSCSI target is running")
	})
	t.Run("the CHAP secret is never logged or shown", func(t *testing.T) {
		if h := r.history(t); strings.Contains(h, chapSecret) || !strings.Contains(h, "start_iscsi_target") {
			t.Errorf("command history: %s", h)
		}
		if strings.Contains(logs.String(), chapSecret) {
			t.Errorf("the secret is in the agent's log:\n%s", logs.String())
		}
	})
	t.Run("a new export forgets the partition uuids of the last write", func(t *testing.T) {
		r.run(t, "iscsi.start_iscsi_target", startParams(freePort(t)))
		if u := r.run(t, "standby.get_partition_uuids", map[string]any{}); string(u.CommandResult) != "{}" {
			t.Errorf("uuids while exported: %s", u.CommandResult)
		}
		if err := r.ext.Close(); err != nil {
			t.Fatal(err)
		}
		if st := status(t, r.run(t, "iscsi.get_target_status", map[string]any{})); st.Running {
			t.Error("Close left the target running")
		}
	})
}

func TestStartISCSITargetRefusesBadParams(t *testing.T) {
	r, logs := iscsiRig(t, 5<<30, nil)
	f, _ := os.OpenFile(r.disk, os.O_RDWR, 0)
	blockdevtest.GPT(t, f, 5<<30, diskGUID, []blockdevtest.Part{{Start: mib, Size: 8 * mib, TypeGUID: linuxFS, UUID: rootPart, Name: "keep"}})
	f.Close()
	with := func(k string, v any) map[string]any {
		p := startParams(freePort(t))
		if v == nil {
			delete(p, k)
		} else {
			p[k] = v
		}
		return p
	}
	for _, tc := range []struct {
		name   string
		params map[string]any
		want   string
	}{
		{"no iqn", with("iqn", nil), "iqn is required"},
		{"an iqn that is not one", with("iqn", "target 1"), "not an iqn."},
		{"port zero", with("portal_port", 0), "not a TCP port"},
		{"port beyond 65535", with("portal_port", 70000), "not a TCP port"},
		{"a port that is not a number", with("portal_port", "3260"), "portal_port"},
		{"a short secret", with("chap_secret", "short"), "12 to 255 bytes"},
		{"a secret of 256 bytes", with("chap_secret", strings.Repeat("s", 256)), "12 to 255 bytes"},
		{"a secret without a user", with("chap_username", nil), "CHAP user is empty"},
		{"a user without a secret", with("chap_secret", nil), "12 to 255 bytes"},
		{"a secret that is not a string", with("chap_secret", 1234567890123), "chap_secret: must be a string"},
		{"wipe_disk_metadata not a boolean", with("wipe_disk_metadata", "yes please"), "wipe_disk_metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := r.post(t, "iscsi.start_iscsi_target", tc.params)
			if code != http.StatusBadRequest || !strings.Contains(body, "Invalid command parameters") || !strings.Contains(body, tc.want) {
				t.Errorf("%d %s, want 400 with %q", code, body, tc.want)
			}
			if strings.Contains(body, chapSecret) {
				t.Errorf("the answer quotes the secret: %s", body)
			}
		})
	}
	if st := status(t, r.run(t, "iscsi.get_target_status", map[string]any{})); st.Running {
		t.Error("a refused start left a target running")
	}
	d, _ := blockdev.Open(r.disk)
	defer d.Close()
	if tab, _ := blockdev.ReadTable(d, d.Size()); tab.Kind != "gpt" {
		t.Error("a refused start wiped the disk")
	}
	if strings.Contains(logs.String(), chapSecret) {
		t.Error("the secret is in the agent's log")
	}
}

func TestStartISCSITargetFaults(t *testing.T) {
	t.Run("a port in use fails clearly and wipes nothing", func(t *testing.T) {
		r, _ := iscsiRig(t, 5<<30, nil)
		f, _ := os.OpenFile(r.disk, os.O_RDWR, 0)
		blockdevtest.GPT(t, f, 5<<30, diskGUID, []blockdevtest.Part{{Start: mib, Size: 8 * mib, TypeGUID: linuxFS, UUID: rootPart, Name: "keep"}})
		f.Close()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		failed(t, r.run(t, "iscsi.start_iscsi_target", startParams(ln.Addr().(*net.TCPAddr).Port)), "ISCSIError", "address already in use")
		if st := status(t, r.run(t, "iscsi.get_target_status", map[string]any{})); st.Running {
			t.Error("a failed start left a target running")
		}
		d, _ := blockdev.Open(r.disk)
		defer d.Close()
		if tab, _ := blockdev.ReadTable(d, d.Size()); tab.Kind != "gpt" {
			t.Error("a failed start wiped the disk")
		}
	})
	t.Run("a disk that cannot be wiped is not left exported", func(t *testing.T) {
		port := freePort(t)
		r, _ := iscsiRig(t, 5<<30, func(o *extension.Options) {
			o.Open = func(p string) (extension.Device, error) {
				d, err := blockdev.Open(p)
				if err != nil {
					return nil, err
				}
				return failingWrites{d}, nil
			}
		})
		failed(t, r.run(t, "iscsi.start_iscsi_target", startParams(port)), "BlockDeviceEraseError", "input/output error")
		if dialable("127.0.0.1:" + strconv.Itoa(port)) {
			t.Error("the target still listens after the failed wipe")
		}
		if st := status(t, r.run(t, "iscsi.get_target_status", map[string]any{})); st.Running {
			t.Error("a failed start left a target running")
		}
	})
	t.Run("root device hints choose the exported disk", func(t *testing.T) {
		small, big := blockdevtest.Disk(t, 5<<30), blockdevtest.Disk(t, 6<<30)
		r, _ := iscsiRig(t, mib, func(o *extension.Options) {
			o.Disk, o.HostDisks = "", true
			o.Disks = fixedDisks{{Name: small, Size: 5 << 30}, {Name: big, Size: 6 << 30}}
		})
		p := startParams(freePort(t))
		p["node"].(map[string]any)["properties"] = map[string]any{"root_device": map[string]any{"size": ">= 6"}}
		r.run(t, "iscsi.start_iscsi_target", p)
		if st := status(t, r.run(t, "iscsi.get_target_status", map[string]any{})); st.Device != big {
			t.Errorf("exported %q, want %q (the hinted disk)", st.Device, big)
		}
		r.run(t, "iscsi.stop_iscsi_target", map[string]any{})
		p = startParams(freePort(t))
		p["node"].(map[string]any)["properties"] = map[string]any{"root_device": map[string]any{"serial": "none-such"}}
		failed(t, r.run(t, "iscsi.start_iscsi_target", p), "DeviceNotFound", "hints")
		// Without hints, the smallest disk of 4 GiB or more, as write_image.
		r.run(t, "iscsi.start_iscsi_target", startParams(freePort(t)))
		if st := status(t, r.run(t, "iscsi.get_target_status", map[string]any{})); st.Device != small {
			t.Errorf("exported %q, want %q", st.Device, small)
		}
	})
	t.Run("without CHAP the target still starts (IPA's unauthenticated export)", func(t *testing.T) {
		r, _ := iscsiRig(t, 5<<30, nil)
		p := startParams(freePort(t))
		delete(p, "chap_username")
		delete(p, "chap_secret")
		if c := r.run(t, "iscsi.start_iscsi_target", p); c.CommandStatus != api.StatusSucceeded {
			t.Errorf("start without CHAP: %v", c.CommandError)
		}
	})
}

// failingWrites is a disk whose every write fails with EIO.
type failingWrites struct{ *blockdev.Device }

func (failingWrites) WriteAt([]byte, int64) (int, error) {
	return 0, &os.PathError{Op: "write", Path: "disk", Err: syscall.EIO}
}

// FuzzStartISCSITargetParams: start_iscsi_target's parameter check takes
// anything without panicking, and its error never quotes the CHAP secret.
func FuzzStartISCSITargetParams(f *testing.F) {
	f.Add([]byte(`{"iqn":"iqn.2008-10.org.openstack:n1","portal_port":3260,"wipe_disk_metadata":true,"chap_username":"ingot"}`), "a-good-long-secret")
	f.Add([]byte(`{"iqn":"iqn.x","portal_port":"3260","chap_username":""}`), "short")
	f.Add([]byte(`{"iqn":null,"node":{"properties":{"root_device":{"size":">= 4"}}},"root_device":[]}`), "")
	f.Add([]byte(`{"iqn":"eui.0123","portal_port":-1,"wipe_disk_metadata":"yes"}`), "x")
	validate := extension.New(extension.Options{}).Registry()["iscsi"]["start_iscsi_target"].Validate
	f.Fuzz(func(t *testing.T, raw []byte, secret string) {
		if bytes.Contains(raw, []byte("SECRET-")) {
			return
		}
		var p map[string]json.RawMessage
		if json.Unmarshal(raw, &p) != nil || p == nil {
			return
		}
		s, _ := json.Marshal("SECRET-" + secret)
		p["chap_secret"] = s
		err := validate(p)
		if err != nil && strings.Contains(err.Error(), "SECRET-") {
			t.Fatalf("the error quotes the secret: %v", err)
		}
	})
}
