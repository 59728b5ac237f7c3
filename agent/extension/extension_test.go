package extension_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/blockdev/blockdevtest"
	"github.com/ingot-dev/ingot/agent/cmdapi"
	"github.com/ingot-dev/ingot/agent/efiboot"
	"github.com/ingot-dev/ingot/agent/extension"
	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/imagestream"
)

const (
	mib      = 1 << 20
	token    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	espUUID  = "7a3f0d2c-51e4-4a3b-9c1e-2f6b8d0a4e11"
	rootPart = "b9a4c0de-0000-4000-8000-00000000beef"
	linuxFS  = "0fc63daf-8483-4772-8e79-3d69d8477de4"
	diskGUID = "5d2e8c1a-3b4f-4e6a-9d7c-1a2b3c4d5e6f"
)

// gptImage builds a whole-disk image: GPT with an ESP and a root
// partition, pseudo-random content between the metadata.
func gptImage(t *testing.T, size int64) []byte {
	t.Helper()
	p := blockdevtest.Disk(t, size)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, size-2*mib)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(data, mib); err != nil {
		t.Fatal(err)
	}
	blockdevtest.GPT(t, f, size, diskGUID, []blockdevtest.Part{
		{Start: mib, Size: 2 * mib, TypeGUID: blockdev.ESPTypeGUID, UUID: espUUID, Name: "EFI System"},
		{Start: 3 * mib, Size: size - 4*mib, TypeGUID: linuxFS, UUID: rootPart, Name: "root"},
	})
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// imageServer serves images by path, with Range support; /gate drips
// its image slowly and holds the last MiB until released.
type imageServer struct {
	*httptest.Server
	images map[string][]byte
	gate   chan struct{}
	hits   atomic.Int32
}

func newImageServer(t *testing.T, images map[string][]byte) *imageServer {
	s := &imageServer{images: images, gate: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		switch r.URL.Path {
		case "/forbidden":
			http.Error(w, "no", http.StatusForbidden)
			return
		case "/gate":
			b := s.images["/gate"]
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			// Drip all but the last MiB, then hold it until released.
			for off := 0; off < len(b)-mib; off += 256 << 10 {
				w.Write(b[off : off+256<<10])
				w.(http.Flusher).Flush()
				time.Sleep(10 * time.Millisecond)
			}
			select {
			case <-s.gate:
			case <-r.Context().Done():
				return
			}
			w.Write(b[len(b)-mib:])
			return
		}
		b, ok := s.images[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "img", time.Unix(0, 0), bytes.NewReader(b))
	}))
	t.Cleanup(s.Close)
	return s
}

type fakePower struct {
	mu            sync.Mutex
	offs, reboots int
	err           error
}

func (p *fakePower) PowerOff(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offs++
	return p.err
}

func (p *fakePower) Reboot(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reboots++
	return p.err
}

type rig struct {
	ext   *extension.Extensions
	srv   *httptest.Server
	disk  string
	efi   string
	power *fakePower
	syncs atomic.Int32
}

func newRig(t *testing.T, diskSize int64, mod func(*extension.Options)) *rig {
	t.Helper()
	r := &rig{disk: blockdevtest.Disk(t, diskSize), efi: t.TempDir(), power: &fakePower{}}
	opts := extension.Options{
		Disk:         r.disk,
		ImageOptions: imagestream.Options{RetryInterval: 10 * time.Millisecond, Retries: 2, StallTimeout: 5 * time.Second},
		Power:        r.power,
		PowerGrace:   -1,
		SyncFS:       func() { r.syncs.Add(1) },
		EFIVars:      r.efi,
		GOARCH:       "amd64",
		Log:          slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	if mod != nil {
		mod(&opts)
	}
	r.ext = extension.New(opts)
	api := cmdapi.New(r.ext.Registry(), cmdapi.Options{Token: func() string { return token }, Log: opts.Log})
	r.srv = httptest.NewServer(api)
	t.Cleanup(func() { r.srv.Close(); api.Close() })
	return r
}

// run posts a command with wait=true and returns its final result.
func (r *rig) run(t *testing.T, name string, params any) api.CommandResult {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "params": params})
	res, err := http.Post(r.srv.URL+"/v1/commands/?wait=true&agent_token="+token, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("POST %s: %d %s", name, res.StatusCode, b)
	}
	var c api.CommandResult
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func writeStep(info map[string]any) map[string]any {
	return map[string]any{
		"step":           map[string]any{"interface": "deploy", "step": "write_image", "args": map[string]any{"image_info": info, "configdrive": nil}},
		"node":           map[string]any{"uuid": "n1", "instance_info": map[string]any{}, "properties": map[string]any{}},
		"ports":          []any{},
		"deploy_version": map[string]string{"generic_hardware_manager": "1.2"},
	}
}

func imageInfo(url, digest string) map[string]any {
	return map[string]any{"id": "disk.raw", "urls": []string{url}, "disk_format": "raw", "container_format": nil,
		"stream_raw_images": true, "os_hash_algo": "sha256", "os_hash_value": digest}
}

func diskPrefix(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func diskTail(t *testing.T, path string, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, st.Size()-n); err != nil {
		t.Fatal(err)
	}
	return b
}

func failed(t *testing.T, c api.CommandResult, wantType, wantDetail string) {
	t.Helper()
	if c.CommandStatus != api.StatusFailed || c.CommandError == nil || c.CommandError.Type != wantType ||
		!strings.Contains(c.CommandError.Details, wantDetail) {
		b, _ := json.Marshal(c)
		t.Errorf("want FAILED %s containing %q, got %s", wantType, wantDetail, b)
	}
}

func TestWriteImageDeployStep(t *testing.T) {
	img := gptImage(t, 8*mib)
	is := newImageServer(t, map[string][]byte{"/disk.raw": img})
	r := newRig(t, 5<<30, nil) // a sparse 5 GiB disk: no hints pick it
	c := r.run(t, "deploy.execute_deploy_step", writeStep(imageInfo(is.URL+"/disk.raw", sha(img))))
	if c.CommandStatus != api.StatusSucceeded {
		t.Fatalf("write_image: %+v %v", c, c.CommandError)
	}
	var res struct {
		DeployResult map[string]any `json:"deploy_result"`
		DeployStep   map[string]any `json:"deploy_step"`
	}
	if err := json.Unmarshal(c.CommandResult, &res); err != nil {
		t.Fatal(err)
	}
	if res.DeployStep["step"] != "write_image" || res.DeployStep["args"] == nil || res.DeployResult["checksum"] != sha(img) {
		t.Errorf("result %s", c.CommandResult)
	}
	if got := sha(diskPrefix(t, r.disk, len(img))); got != sha(img) {
		t.Errorf("disk holds %s, want %s", got, sha(img))
	}

	u := r.run(t, "standby.get_partition_uuids", map[string]any{})
	var uuids map[string]any
	json.Unmarshal(u.CommandResult, &uuids)
	if uuids["root uuid"] != "0x12345678" || uuids["efi system partition uuid"] != espUUID {
		t.Errorf("partition uuids %s", u.CommandResult)
	}

	t.Run("UEFI bootloader: a boot entry for the ESP, first in BootOrder", func(t *testing.T) {
		c := r.run(t, "image.install_bootloader", map[string]any{"root_uuid": "0x12345678", "efi_system_part_uuid": nil,
			"prep_boot_part_uuid": nil, "target_boot_mode": "uefi"})
		if c.CommandStatus != api.StatusSucceeded || !strings.Contains(string(c.CommandResult), "Boot0000") {
			t.Fatalf("install_bootloader: %s %v", c.CommandResult, c.CommandError)
		}
		v := efiboot.Vars{Dir: r.efi}
		order, _ := v.BootOrder()
		ents, _ := v.Entries()
		_, desc, dp, err := efiboot.ParseLoadOption(ents[0])
		g, _ := blockdev.ParseGUID(espUUID)
		if err != nil || desc != "ingot" || len(order) != 1 || order[0] != 0 || !bytes.Contains(dp, g[:]) ||
			!bytes.Contains(dp, []byte{'B', 0, 'O', 0, 'O', 0, 'T', 0, 'X', 0, '6', 0, '4', 0}) {
			t.Errorf("entry %q %x, order %v, %v", desc, dp, order, err)
		}
	})
	t.Run("BIOS bootloader: nothing to install", func(t *testing.T) {
		c := r.run(t, "image.install_bootloader", map[string]any{"root_uuid": "0x12345678", "target_boot_mode": "bios"})
		if c.CommandStatus != api.StatusSucceeded || !strings.Contains(string(c.CommandResult), "nothing to install") {
			t.Errorf("%s %v", c.CommandResult, c.CommandError)
		}
	})
	t.Run("UEFI bootloader without efivarfs fails clearly", func(t *testing.T) {
		r2 := newRig(t, 5<<30, func(o *extension.Options) { o.EFIVars = filepath.Join(t.TempDir(), "none") })
		r2.run(t, "deploy.execute_deploy_step", writeStep(imageInfo(is.URL+"/disk.raw", sha(img))))
		c := r2.run(t, "image.install_bootloader", map[string]any{"root_uuid": "0x12345678", "target_boot_mode": "uefi"})
		failed(t, c, "DeviceNotFound", "efivarfs is not available")
		c = r2.run(t, "image.install_bootloader", map[string]any{"target_boot_mode": "uefi", "ignore_bootloader_failure": true})
		if c.CommandStatus != api.StatusSucceeded {
			t.Errorf("ignore_bootloader_failure: %v", c.CommandError)
		}
	})
	t.Run("metadata erase wipes the table and forgets the partition uuids", func(t *testing.T) {
		c := r.run(t, "clean.execute_clean_step", map[string]any{
			"step": map[string]any{"interface": "deploy", "step": "erase_devices_metadata", "priority": 99}, "node": map[string]any{},
			"ports": []any{}, "clean_version": map[string]string{"generic_hardware_manager": "1.2"}})
		if c.CommandStatus != api.StatusSucceeded || !strings.Contains(string(c.CommandResult), `"clean_step":{"interface":"deploy","priority":99,"step":"erase_devices_metadata"}`) {
			t.Fatalf("%s %v", c.CommandResult, c.CommandError)
		}
		d, _ := blockdev.Open(r.disk)
		defer d.Close()
		if tab, _ := blockdev.ReadTable(d, d.Size()); tab.Kind != "" {
			t.Errorf("table survived: %+v", tab)
		}
		mid := make([]byte, 4096)
		d.ReadAt(mid, 4*mib)
		if !bytes.Equal(mid, img[4*mib:4*mib+4096]) {
			t.Error("data beyond the metadata changed")
		}
		u := r.run(t, "standby.get_partition_uuids", map[string]any{})
		if string(u.CommandResult) != "{}" {
			t.Errorf("uuids after wipe: %s", u.CommandResult)
		}
		c = r.run(t, "image.install_bootloader", map[string]any{"target_boot_mode": "uefi"})
		failed(t, c, "DeviceNotFound", "no EFI system partition")
	})
}

func TestWriteImageFaults(t *testing.T) {
	img := gptImage(t, 4*mib)
	qcow := append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 4096)...)
	is := newImageServer(t, map[string][]byte{"/disk.raw": img, "/disk.qcow2": qcow})
	hinted := func(info map[string]any, hints map[string]any) map[string]any {
		p := writeStep(info)
		p["node"].(map[string]any)["properties"] = map[string]any{"root_device": hints}
		return p
	}
	for _, tc := range []struct {
		name       string
		diskSize   int64
		params     map[string]any
		wantType   string
		wantDetail string
	}{
		{name: "image 404 fails at once with the URL", diskSize: 5 << 30,
			params: writeStep(imageInfo(is.URL+"/missing.raw", sha(img))), wantType: "ImageDownloadError", wantDetail: "/missing.raw"},
		{name: "image 403", diskSize: 5 << 30,
			params: writeStep(imageInfo(is.URL+"/forbidden", sha(img))), wantType: "ImageDownloadError", wantDetail: "403"},
		{name: "checksum mismatch names both digests", diskSize: 5 << 30,
			params: writeStep(imageInfo(is.URL+"/disk.raw", strings.Repeat("ab", 32))), wantType: "ImageChecksumError", wantDetail: sha(img)},
		{name: "disk smaller than the image", diskSize: 2 * mib,
			params: hinted(imageInfo(is.URL+"/disk.raw", sha(img)), map[string]any{"size": "<= 1"}), wantType: "ImageWriteError", wantDetail: "larger"},
		{name: "no disk matches the hints", diskSize: 5 << 30,
			params: hinted(imageInfo(is.URL+"/disk.raw", sha(img)), map[string]any{"serial": "nope"}), wantType: "DeviceNotFound", wantDetail: "hints"},
		{name: "no disk of 4 GiB without hints", diskSize: 64 * mib,
			params: writeStep(imageInfo(is.URL+"/disk.raw", sha(img))), wantType: "DeviceNotFound", wantDetail: "smaller than"},
		{name: "invalid hints", diskSize: 5 << 30,
			params: hinted(imageInfo(is.URL+"/disk.raw", sha(img)), map[string]any{"colour": "red"}), wantType: "InvalidCommandParamsError", wantDetail: "colour"},
		{name: "qcow2 is never written raw", diskSize: 5 << 30,
			params: writeStep(imageInfo(is.URL+"/disk.qcow2", sha(qcow))), wantType: "InvalidImage", wantDetail: "qcow2"},
		{name: "partition images are refused", diskSize: 5 << 30,
			params:   writeStep(map[string]any{"id": "p", "urls": []string{is.URL + "/disk.raw"}, "image_type": "partition", "os_hash_algo": "sha256", "os_hash_value": sha(img)}),
			wantType: "InvalidCommandParamsError", wantDetail: "partition images"},
		{name: "no checksum", diskSize: 5 << 30,
			params: writeStep(map[string]any{"id": "p", "urls": []string{is.URL + "/disk.raw"}}), wantType: "InvalidCommandParamsError", wantDetail: "checksum"},
		{name: "no image_info", diskSize: 5 << 30,
			params:   map[string]any{"step": map[string]any{"step": "write_image", "interface": "deploy", "args": map[string]any{}}},
			wantType: "InvalidCommandParamsError", wantDetail: "image_info"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.diskSize, nil)
			failed(t, r.run(t, "deploy.execute_deploy_step", tc.params), tc.wantType, tc.wantDetail)
			// Nothing bootable is left: an image that failed its checksum
			// was written whole, then its partition tables were wiped.
			if b := diskPrefix(t, r.disk, blockdev.HeadTailBytes); !bytes.Equal(b, make([]byte, len(b))) {
				t.Error("the disk's head (MBR, GPT) holds data after a failed write")
			}
			if tc.diskSize >= 4*mib {
				if b := diskTail(t, r.disk, mib); !bytes.Equal(b, make([]byte, len(b))) {
					t.Error("the disk's backup GPT area holds data after a failed write")
				}
			}
			if u := r.run(t, "standby.get_partition_uuids", map[string]any{}); string(u.CommandResult) != "{}" {
				t.Errorf("a failed write left partition uuids: %s", u.CommandResult)
			}
		})
	}
	t.Run("a config drive is refused, not ignored", func(t *testing.T) {
		p := writeStep(imageInfo(is.URL+"/disk.raw", sha(img)))
		p["step"].(map[string]any)["args"].(map[string]any)["configdrive"] = "H4sI..."
		failed(t, newRig(t, 5<<30, nil).run(t, "deploy.execute_deploy_step", p), "InvalidCommandParamsError", "config drive")
	})
	t.Run("the machine's own disks are refused without a ramdisk", func(t *testing.T) {
		r := newRig(t, mib, func(o *extension.Options) { o.Disk = "" })
		failed(t, r.run(t, "deploy.execute_deploy_step", writeStep(imageInfo(is.URL+"/disk.raw", sha(img)))), "DeviceNotFound", "not running from its ramdisk")
	})
	t.Run("a version mismatch asks the conductor to refresh its steps", func(t *testing.T) {
		p := writeStep(imageInfo(is.URL+"/disk.raw", sha(img)))
		p["deploy_version"] = map[string]string{"generic_hardware_manager": "1.1"}
		c := newRig(t, 5<<30, nil).run(t, "deploy.execute_deploy_step", p)
		if c.CommandStatus != api.StatusCleanVersionMismach || is.hits.Load() > 100 {
			t.Errorf("status %s", c.CommandStatus)
		}
	})
	t.Run("an unknown step fails", func(t *testing.T) {
		c := newRig(t, 5<<30, nil).run(t, "deploy.execute_deploy_step", map[string]any{"step": map[string]any{"step": "inject_files", "interface": "deploy"}})
		failed(t, c, "HardwareManagerMethodNotFound", "inject_files")
	})
}

func TestProgressWhileRunning(t *testing.T) {
	img := gptImage(t, 6*mib)
	is := newImageServer(t, map[string][]byte{"/gate": img})
	r := newRig(t, 5<<30, func(o *extension.Options) { o.ImageOptions.ProgressInterval = time.Millisecond })
	body, _ := json.Marshal(map[string]any{"name": "deploy.execute_deploy_step", "params": writeStep(imageInfo(is.URL+"/gate", sha(img)))})
	res, err := http.Post(r.srv.URL+"/v1/commands/?wait=false&agent_token="+token, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	var last api.CommandResult
	for time.Now().Before(deadline) {
		res, err := http.Get(r.srv.URL + "/v1/commands/")
		if err != nil {
			t.Fatal(err)
		}
		var l api.CommandList
		json.NewDecoder(res.Body).Decode(&l)
		res.Body.Close()
		last = l.Commands[0]
		if last.Progress != nil && last.Progress.Bytes >= 2*mib {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if last.CommandStatus != api.StatusRunning || last.Progress == nil || last.Progress.Bytes < 2*mib || last.Progress.Total != 6*mib {
		t.Fatalf("while gated: %+v %+v", last, last.Progress)
	}
	close(is.gate)
	res, err = http.Get(r.srv.URL + "/v1/commands/" + last.ID + "?wait=true")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var final api.CommandResult
	json.NewDecoder(res.Body).Decode(&final)
	if final.CommandStatus != api.StatusSucceeded {
		t.Errorf("final %+v", final)
	}
}

func TestPrepareImage(t *testing.T) {
	img := gptImage(t, 4*mib)
	is := newImageServer(t, map[string][]byte{"/disk.raw": img})
	r := newRig(t, 5<<30, nil)
	c := r.run(t, "standby.prepare_image", map[string]any{"image_info": imageInfo(is.URL+"/disk.raw", sha(img)), "configdrive": nil})
	want := fmt.Sprintf(`{"result":"prepare_image: image (disk.raw) written to device %s root_uuid=0x12345678"}`, r.disk)
	if c.CommandStatus != api.StatusSucceeded || string(c.CommandResult) != want {
		t.Errorf("%s %v", c.CommandResult, c.CommandError)
	}
}

func TestSteps(t *testing.T) {
	r := newRig(t, mib, nil)
	c := r.run(t, "deploy.get_deploy_steps", map[string]any{"node": map[string]any{}, "ports": []any{}})
	if string(c.CommandResult) != `{"deploy_steps":{"GenericHardwareManager":[{"interface":"deploy","step":"erase_devices_metadata","priority":0,"reboot_requested":false},{"interface":"deploy","step":"write_image","priority":0,"reboot_requested":false}]},"hardware_manager_version":{"generic_hardware_manager":"1.2"}}` {
		t.Errorf("deploy steps %s", c.CommandResult)
	}
	c = r.run(t, "clean.get_clean_steps", map[string]any{"node": map[string]any{}, "ports": []any{}})
	if string(c.CommandResult) != `{"clean_steps":{"GenericHardwareManager":[{"interface":"deploy","step":"erase_devices","priority":10,"reboot_requested":false,"abortable":true},{"interface":"deploy","step":"erase_devices_metadata","priority":99,"reboot_requested":false,"abortable":true}]},"hardware_manager_version":{"generic_hardware_manager":"1.2"}}` {
		t.Errorf("clean steps %s", c.CommandResult)
	}
}

func TestEraseDevices(t *testing.T) {
	eraseStep := func(dii map[string]any) map[string]any {
		return map[string]any{"step": map[string]any{"interface": "deploy", "step": "erase_devices", "priority": 10},
			"node": map[string]any{"driver_internal_info": dii}, "clean_version": map[string]string{"generic_hardware_manager": "1.2"}}
	}
	fill := func(t *testing.T, path string) {
		if err := os.WriteFile(path, bytes.Repeat([]byte{0xee}, 3*mib), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("random passes then zeros, as driver_internal_info says", func(t *testing.T) {
		r := newRig(t, 3*mib, nil)
		fill(t, r.disk)
		c := r.run(t, "clean.execute_clean_step", eraseStep(map[string]any{"agent_erase_devices_iterations": 2, "agent_erase_devices_zeroize": true}))
		if c.CommandStatus != api.StatusSucceeded {
			t.Fatal(c.CommandError)
		}
		if b, _ := os.ReadFile(r.disk); !bytes.Equal(b, make([]byte, 3*mib)) {
			t.Error("disk not zeroed")
		}
	})
	t.Run("random only", func(t *testing.T) {
		r := newRig(t, 3*mib, nil)
		fill(t, r.disk)
		c := r.run(t, "clean.execute_clean_step", eraseStep(map[string]any{"agent_erase_devices_iterations": 1, "agent_erase_devices_zeroize": false}))
		b, _ := os.ReadFile(r.disk)
		if c.CommandStatus != api.StatusSucceeded || bytes.Contains(b, bytes.Repeat([]byte{0xee}, 16)) || bytes.Contains(b, make([]byte, 64)) {
			t.Errorf("status %s; old or zero bytes remain", c.CommandStatus)
		}
	})
	t.Run("nothing to do is refused", func(t *testing.T) {
		r := newRig(t, 3*mib, nil)
		failed(t, r.run(t, "clean.execute_clean_step", eraseStep(map[string]any{"agent_erase_devices_iterations": 0, "agent_erase_devices_zeroize": false})),
			"InvalidCommandParamsError", "nothing to do")
	})
	t.Run("bad option values are refused", func(t *testing.T) {
		r := newRig(t, 3*mib, nil)
		for _, bad := range []any{"many", "2x", -1, 1.5, true} {
			failed(t, r.run(t, "clean.execute_clean_step", eraseStep(map[string]any{"agent_erase_devices_iterations": bad})),
				"InvalidCommandParamsError", "agent_erase_devices_iterations")
		}
		failed(t, r.run(t, "clean.execute_clean_step", eraseStep(map[string]any{"agent_erase_devices_zeroize": "perhaps"})),
			"InvalidCommandParamsError", "agent_erase_devices_zeroize")
		c := r.run(t, "clean.execute_clean_step", eraseStep(map[string]any{"agent_erase_devices_iterations": "1", "agent_erase_devices_zeroize": "False"}))
		if c.CommandStatus != api.StatusSucceeded {
			t.Errorf("string-typed options (as Ironic may store them): %v", c.CommandError)
		}
	})
	t.Run("read-only disks fail unless skipping is allowed", func(t *testing.T) {
		ro := func(o *extension.Options) {
			o.Open = func(string) (extension.Device, error) {
				return nil, &os.PathError{Op: "open", Path: "/dev/sr0", Err: syscall.EROFS}
			}
		}
		r := newRig(t, 3*mib, ro)
		failed(t, r.run(t, "clean.execute_clean_step", eraseStep(map[string]any{})), "BlockDeviceEraseError", "read-only")
		r = newRig(t, 3*mib, func(o *extension.Options) {
			ro(o)
			o.Disk = ""
			o.HostDisks = true
			o.Disks = fixedDisks{{Name: "/dev/sr0", Size: 1}}
		})
		c := r.run(t, "clean.execute_clean_step", eraseStep(map[string]any{"agent_erase_skip_read_only": true}))
		if c.CommandStatus != api.StatusSucceeded {
			t.Errorf("skip read-only: %v", c.CommandError)
		}
	})
	t.Run("an unknown clean step fails", func(t *testing.T) {
		r := newRig(t, 3*mib, nil)
		failed(t, r.run(t, "clean.execute_clean_step", map[string]any{"step": map[string]any{"step": "burnin_cpu"}}), "HardwareManagerMethodNotFound", "burnin_cpu")
	})
}

type fixedDisks []api.Disk

func (f fixedDisks) Disks(context.Context) ([]api.Disk, error) { return f, nil }

func TestPower(t *testing.T) {
	r := newRig(t, mib, nil)
	if c := r.run(t, "standby.power_off", map[string]any{}); c.CommandStatus != api.StatusSucceeded {
		t.Error(c.CommandError)
	}
	if c := r.run(t, "standby.run_image", map[string]any{}); c.CommandStatus != api.StatusSucceeded {
		t.Error(c.CommandError)
	}
	if c := r.run(t, "standby.sync", map[string]any{}); c.CommandStatus != api.StatusSucceeded || string(c.CommandResult) != "null" {
		t.Error(c.CommandError)
	}
	if r.power.offs != 1 || r.power.reboots != 1 || r.syncs.Load() != 3 {
		t.Errorf("offs %d reboots %d syncs %d", r.power.offs, r.power.reboots, r.syncs.Load())
	}
	r.power.err = errors.New("reboot(2): operation not permitted")
	failed(t, r.run(t, "standby.power_off", map[string]any{}), "CommandExecutionError", "operation not permitted")
	noPower := newRig(t, mib, func(o *extension.Options) { o.Power = nil })
	failed(t, noPower.run(t, "standby.run_image", map[string]any{}), "CommandExecutionError", "power control is not available")
}

// TestPowerOffAnswersFirst: an asynchronous power_off is answered (RUNNING)
// before the machine goes down, by the grace period.
func TestPowerOffAnswersFirst(t *testing.T) {
	const grace = 300 * time.Millisecond
	r := newRig(t, mib, func(o *extension.Options) { o.PowerGrace = grace })
	body, _ := json.Marshal(map[string]any{"name": "standby.power_off", "params": map[string]any{}})
	start := time.Now()
	res, err := http.Post(r.srv.URL+"/v1/commands/?wait=false&agent_token="+token, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	answered := time.Since(start)
	r.power.mu.Lock()
	offs := r.power.offs
	r.power.mu.Unlock()
	if offs != 0 || answered >= grace {
		t.Fatalf("answered after %s with %d power offs done: the machine went down before its answer", answered, offs)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.power.mu.Lock()
		offs = r.power.offs
		r.power.mu.Unlock()
		if offs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the machine never powered off")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(start); took < grace {
		t.Errorf("powered off %s after the request, before the %s grace", took, grace)
	}
}

func TestCollectSystemLogs(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "proc"), 0o755)
	os.WriteFile(filepath.Join(root, "proc/cmdline"), []byte("BOOTIF=01-aa ipa-agent-token=SECRET ipa-api-url=http://x\n"), 0o644)
	os.WriteFile(filepath.Join(root, "proc/meminfo"), []byte("MemTotal: 1 kB\n"), 0o644)
	r := newRig(t, mib, func(o *extension.Options) {
		o.Logs = extension.LogSources{Root: root, AgentLog: func() []byte { return []byte("agent says hi\n") },
			Dmesg: func() ([]byte, error) { return []byte("[0.0] Linux\n"), nil }}
		o.Inventory = func(context.Context) (api.Inventory, error) { return api.Inventory{Hostname: "node-1"}, nil }
	})
	c := r.run(t, "log.collect_system_logs", map[string]any{})
	var res map[string]string
	json.Unmarshal(c.CommandResult, &res)
	raw, err := base64.StdEncoding.DecodeString(res["system_logs"])
	if err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	if files["agent.log"] != "agent says hi\n" || files["dmesg"] != "[0.0] Linux\n" || !strings.Contains(files["inventory.json"], "node-1") ||
		files["proc/cmdline"] != "BOOTIF=01-aa ipa-agent-token=*** ipa-api-url=http://x\n" || files["proc/meminfo"] == "" {
		t.Errorf("archive %v", files)
	}
	if strings.Contains(string(raw), "SECRET") {
		t.Error("token leaked")
	}
}

func TestRedactCmdline(t *testing.T) {
	for in, want := range map[string]string{
		`ipa-agent-token=abc x=1`:                     `ipa-agent-token=*** x=1`,
		`"ipa-agent-token=a b" y`:                     `"ipa-agent-token=*** b" y`,
		`ipa-agent-token="a b" y`:                     `ipa-agent-token=*** y`,
		`ipa-image-server-password=pw BOOTIF=01-aa`:   `ipa-image-server-password=*** BOOTIF=01-aa`,
		`nothing secret here ipa-api-url=http://x:1/`: `nothing secret here ipa-api-url=http://x:1/`,
	} {
		if got := string(extension.RedactCmdline([]byte(in))); got != want {
			t.Errorf("RedactCmdline(%q) = %q, want %q", in, got, want)
		}
	}
}
