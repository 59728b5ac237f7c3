package service_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/noauth"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/v1/nodes"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/v1/ports"
)

// TestGophercloudInspectionAndConfigDrive: what Metal3 does with
// gophercloud after this session's features — inspect with the agent
// interface (the agent's post is sent as IPA sends it), read the stored
// inventory with GetInventory (API 1.81), then deploy with the object
// form of a config drive.
func TestGophercloudInspectionAndConfigDrive(t *testing.T) {
	url := startConductor(t)
	c, err := noauth.NewBareMetalNoAuth(noauth.EndpointOpts{IronicEndpoint: url + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	c.Microversion = "1.81"
	ctx := t.Context()
	n, err := nodes.Create(ctx, c, nodes.CreateOpts{Name: "gc-inspect", Driver: "fake-hardware", InspectInterface: "agent"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ports.Create(ctx, c, ports.CreateOpts{NodeUUID: n.UUID, Address: "52:54:00:12:34:77"}).Extract(); err != nil {
		t.Fatal(err)
	}
	if err := nodes.ChangeProvisionState(ctx, c, n.UUID, nodes.ProvisionStateOpts{Target: nodes.TargetManage}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, n.UUID, nodes.Manageable)
	if err := nodes.ChangeProvisionState(ctx, c, n.UUID, nodes.ProvisionStateOpts{Target: nodes.TargetInspect}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, n.UUID, nodes.InspectWait)

	body, _ := json.Marshal(map[string]any{
		"inventory": map[string]any{
			"interfaces":    []any{map[string]any{"name": "eno1", "mac_address": "52:54:00:12:34:77", "has_carrier": true}},
			"cpu":           map[string]any{"model_name": "QEMU", "count": 8, "architecture": "x86_64"},
			"memory":        map[string]any{"total": 17179869184, "physical_mb": 16384},
			"disks":         []any{map[string]any{"name": "/dev/sda", "size": 480103981056, "serial": "SER-1", "rotational": false}},
			"system_vendor": map[string]any{"manufacturer": "Ingot", "product_name": "VM", "serial_number": "42"},
			"boot":          map[string]any{"current_boot_mode": "uefi", "pxe_interface": "52:54:00:12:34:77"},
			"bmc_address":   "192.0.2.9"},
		"configuration": map[string]any{"collectors": []any{"default"}}, "error": nil})
	resp, err := http.Post(url+"/v1/continue_inspection", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("continue_inspection: %s", resp.Status)
	}
	waitState(t, c, n.UUID, nodes.Manageable)

	inv, err := nodes.GetInventory(ctx, c, n.UUID).Extract()
	if err != nil {
		t.Fatalf("GetInventory: %v", err)
	}
	if inv.Inventory.CPU.Count != 8 || len(inv.Inventory.Disks) != 1 || inv.Inventory.Disks[0].Serial != "SER-1" ||
		inv.Inventory.SystemVendor.Manufacturer != "Ingot" || inv.Inventory.Memory.PhysicalMb != 16384 {
		t.Errorf("inventory as gophercloud reads it: %+v", inv.Inventory)
	}
	got, err := nodes.Get(ctx, c, n.UUID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if got.Properties["cpu_arch"] != "x86_64" || got.Properties["local_gb"] != 446.0 || got.InspectionFinishedAt == nil {
		t.Errorf("after inspection: properties %v finished %v", got.Properties, got.InspectionFinishedAt)
	}

	if err := nodes.ChangeProvisionState(ctx, c, n.UUID, nodes.ProvisionStateOpts{Target: nodes.TargetProvide}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, n.UUID, nodes.Available)
	if _, err := nodes.Update(ctx, c, n.UUID, nodes.UpdateOpts{nodes.UpdateOperation{Op: nodes.AddOp,
		Path: "/instance_info/image_source", Value: "http://images/disk.raw"}}).Extract(); err != nil {
		t.Fatal(err)
	}
	cd := nodes.ConfigDrive{MetaData: map[string]any{"hostname": "gc-host"}, UserData: "#cloud-config\n"}
	if err := nodes.ChangeProvisionState(ctx, c, n.UUID, nodes.ProvisionStateOpts{Target: nodes.TargetActive, ConfigDrive: cd}).ExtractErr(); err != nil {
		t.Fatalf("deploy with a config drive: %v", err)
	}
	waitState(t, c, n.UUID, nodes.Active)
	if got, _ := nodes.Get(ctx, c, n.UUID).Extract(); got.InstanceInfo["configdrive"] != "******" {
		t.Errorf("instance_info %v", got.InstanceInfo)
	}
}
