package service_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/noauth"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/v1/drivers"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/v1/nodes"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/v1/ports"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/ingot-dev/ingot/conductor/config"
	"github.com/ingot-dev/ingot/conductor/imagecache"
	"github.com/ingot-dev/ingot/conductor/service"
	"github.com/ingot-dev/ingot/shared/api"
)

// startConductor runs a whole conductor in-process on a free port with an
// SQLite database in a temp dir, and returns its API URL.
func startConductor(t *testing.T) string {
	t.Helper()
	cfg, err := config.Load([]string{"--api-listen", "127.0.0.1:0", "--state-dir", t.TempDir(),
		"--conductor-name", "test-conductor"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, cfg, log)
	if err != nil {
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
	return svc.APIURL()
}

func waitState(t *testing.T, c *gophercloud.ServiceClient, id string, want nodes.ProvisionState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := nodes.WaitForProvisionState(ctx, c, id, want); err != nil {
		n, _ := nodes.Get(t.Context(), c, id).Extract()
		t.Fatalf("waiting for %s: %v (node is %+v)", want, err, n)
	}
}

// TestGophercloud drives the conductor with gophercloud's baremetal client,
// as Metal3 and other Go tools do.
func TestGophercloud(t *testing.T) {
	url := startConductor(t)
	c, err := noauth.NewBareMetalNoAuth(noauth.EndpointOpts{IronicEndpoint: url + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	c.Microversion = "1.78"
	ctx := t.Context()

	n, err := nodes.Create(ctx, c, nodes.CreateOpts{
		Name: "gc-node", Driver: "fake-hardware",
		DriverInfo: map[string]any{"ipmi_password": "secret", "ipmi_address": "10.0.0.1"},
		Properties: map[string]any{"cpu_arch": "x86_64"},
	}).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if n.ProvisionState != string(nodes.Enroll) || n.DriverInfo["ipmi_password"] != "******" || n.BootInterface != "fake" {
		t.Errorf("created node: state %q driver_info %v boot %q", n.ProvisionState, n.DriverInfo, n.BootInterface)
	}
	p, err := ports.Create(ctx, c, ports.CreateOpts{NodeUUID: n.UUID, Address: "52:54:00:12:34:56"}).Extract()
	if err != nil {
		t.Fatalf("create port: %v", err)
	}
	if p.Address != "52:54:00:12:34:56" || p.NodeUUID != n.UUID {
		t.Errorf("port: %+v", p)
	}

	all, err := nodes.ListDetail(c, nodes.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, err := nodes.ExtractNodes(all)
	if err != nil || len(list) != 1 || list[0].Name != "gc-node" {
		t.Fatalf("list detail: %+v %v", list, err)
	}
	portPages, err := ports.List(c, ports.ListOpts{Node: n.UUID}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pl, _ := ports.ExtractPorts(portPages); len(pl) != 1 {
		t.Errorf("ports of node: %+v", pl)
	}

	updated, err := nodes.Update(ctx, c, n.UUID, nodes.UpdateOpts{
		nodes.UpdateOperation{Op: nodes.AddOp, Path: "/instance_info/image_source", Value: "http://images/disk.raw"},
		nodes.UpdateOperation{Op: nodes.ReplaceOp, Path: "/driver_info/ipmi_address", Value: "10.0.0.2"},
		nodes.UpdateOperation{Op: nodes.AddOp, Path: "/extra/rack", Value: "r1"},
	}).Extract()
	if err != nil {
		t.Fatalf("patch: %v", err)
	}
	if updated.InstanceInfo["image_source"] != "http://images/disk.raw" || updated.DriverInfo["ipmi_address"] != "10.0.0.2" || updated.Extra["rack"] != "r1" {
		t.Errorf("patched node: %+v", updated)
	}

	for _, step := range []struct {
		target nodes.TargetProvisionState
		want   nodes.ProvisionState
	}{
		{nodes.TargetManage, nodes.Manageable},
		{nodes.TargetProvide, nodes.Available},
		{nodes.TargetActive, nodes.Active},
	} {
		if err := nodes.ChangeProvisionState(ctx, c, n.UUID, nodes.ProvisionStateOpts{Target: step.target}).ExtractErr(); err != nil {
			t.Fatalf("%s: %v", step.target, err)
		}
		waitState(t, c, n.UUID, step.want)
	}

	for _, target := range []nodes.TargetPowerState{nodes.PowerOn, nodes.PowerOff, nodes.Rebooting} {
		if err := nodes.ChangePowerState(ctx, c, n.UUID, nodes.PowerStateOpts{Target: target}).ExtractErr(); err != nil {
			t.Fatalf("power %s: %v", target, err)
		}
		if err := gophercloud.WaitFor(ctx, func(ctx context.Context) (bool, error) {
			got, err := nodes.Get(ctx, c, n.UUID).Extract()
			return err == nil && got.TargetPowerState == "", err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := nodes.Get(ctx, c, n.UUID).Extract(); got.PowerState != string(nodes.PowerOn) {
		t.Errorf("after rebooting: %q", got.PowerState)
	}

	if err := nodes.SetBootDevice(ctx, c, n.UUID, nodes.BootDeviceOpts{BootDevice: "pxe", Persistent: true}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	bd, err := nodes.GetBootDevice(ctx, c, n.UUID).Extract()
	if err != nil || bd.BootDevice != "pxe" || !bd.Persistent {
		t.Errorf("boot device: %+v %v", bd, err)
	}
	if err := nodes.SetMaintenance(ctx, c, n.UUID, nodes.MaintenanceOpts{Reason: "gophercloud"}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := nodes.UnsetMaintenance(ctx, c, n.UUID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	v, err := nodes.Validate(ctx, c, n.UUID).Extract()
	if err != nil || !v.Power.Result || !v.Deploy.Result {
		t.Errorf("validate: %+v %v", v, err)
	}

	// Deploying an active node again is refused with Ironic's 400.
	err = nodes.ChangeProvisionState(ctx, c, n.UUID, nodes.ProvisionStateOpts{Target: nodes.TargetActive}).ExtractErr()
	if !gophercloud.ResponseCodeIs(err, 400) {
		t.Errorf("deploy of an active node: %v, want 400", err)
	}

	if err := nodes.ChangeProvisionState(ctx, c, n.UUID, nodes.ProvisionStateOpts{Target: nodes.TargetDeleted}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, n.UUID, nodes.Available)
	if err := nodes.ChangeProvisionState(ctx, c, n.UUID, nodes.ProvisionStateOpts{Target: nodes.TargetManage}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, n.UUID, nodes.Manageable)
	if err := ports.Delete(ctx, c, p.UUID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := nodes.Delete(ctx, c, n.UUID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	_, err = nodes.Get(ctx, c, n.UUID).Extract()
	if !gophercloud.ResponseCodeIs(err, 404) {
		t.Errorf("get deleted node: %v, want 404", err)
	}

	dl, err := drivers.ListDrivers(c, drivers.ListDriversOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ds, _ := drivers.ExtractDrivers(dl); len(ds) != 3 {
		t.Errorf("drivers: %+v", ds)
	}
}

// TestGophercloudPagination: gophercloud follows the "next" links the
// conductor emits.
func TestGophercloudPagination(t *testing.T) {
	url := startConductor(t)
	c, _ := noauth.NewBareMetalNoAuth(noauth.EndpointOpts{IronicEndpoint: url + "/v1"})
	c.Microversion = "1.78"
	for range 7 {
		if _, err := nodes.Create(t.Context(), c, nodes.CreateOpts{Driver: "fake-hardware"}).Extract(); err != nil {
			t.Fatal(err)
		}
	}
	pages := 0
	seen := 0
	err := nodes.List(c, nodes.ListOpts{Limit: 3}).EachPage(t.Context(), func(_ context.Context, p pagination.Page) (bool, error) {
		ns, err := nodes.ExtractNodes(p)
		pages++
		seen += len(ns)
		return true, err
	})
	if err != nil || pages != 3 || seen != 7 {
		t.Errorf("pages %d nodes %d err %v; want 3 pages of 7 nodes", pages, seen, err)
	}
}

func TestConfigErrorsBeforeBinding(t *testing.T) {
	cfg, err := config.Load([]string{"--api-listen", "127.0.0.1:99999", "--state-dir", filepath.Join(t.TempDir(), "s")}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, err = service.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !errors.Is(err, err) {
		t.Fatal("an invalid port was accepted")
	}
}

// TestImageCacheDownloadsThroughTheStreamer: an http(s) image goes through
// the shared streamer into the cache, verified, and is served back.
func TestImageCacheDownloadsThroughTheStreamer(t *testing.T) {
	img := bytes.Repeat([]byte("ingot image "), 100_000)
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "disk.raw", time.Time{}, bytes.NewReader(img))
	}))
	defer src.Close()
	sum := sha256.Sum256(img)
	digest := hex.EncodeToString(sum[:])
	cache, err := imagecache.New(imagecache.Options{Dir: t.TempDir(), MaxBytes: 1 << 30, BaseURL: "http://c",
		Download: service.Download(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cache.Prepare(t.Context(), src.URL+"/disk.raw", api.ImageInfo{ID: "disk.raw", OSHashAlgo: "sha256", OSHashValue: digest})
	if err != nil || info.OSHashValue != digest {
		t.Fatalf("%+v %v", info, err)
	}
	_, err = cache.Prepare(t.Context(), src.URL+"/disk.raw", api.ImageInfo{ID: "disk.raw", OSHashAlgo: "sha512", OSHashValue: strings.Repeat("0", 128)})
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("a wrong sha512 was accepted: %v", err)
	}
}
