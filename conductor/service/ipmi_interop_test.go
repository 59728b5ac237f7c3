//go:build interop

package service_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/noauth"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/v1/nodes"

	"github.com/ingot-dev/ingot/conductor/power/ipmisim"
)

// waitPower polls the node until its power_state is want and no power
// change is in flight, or its last_error is set.
func waitPower(t *testing.T, c *gophercloud.ServiceClient, id, want string) *nodes.Node {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := nodes.Get(t.Context(), c, id).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if n.TargetPowerState == "" && (n.PowerState == want || n.LastError != "") {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("power_state %q target %q after 20s, want %q", n.PowerState, n.TargetPowerState, want)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestInteropIPMIThroughTheAPI drives an ipmi_sim BMC through the
// conductor's Ironic API with gophercloud: power on, off and reboot, boot
// device set and read back, and a wrong password surfacing as last_error.
func TestInteropIPMIThroughTheAPI(t *testing.T) {
	sim := ipmisim.Start(t, ipmisim.Options{})
	url := startConductor(t)
	c, err := noauth.NewBareMetalNoAuth(noauth.EndpointOpts{IronicEndpoint: url + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	c.Microversion = "1.78"
	ctx := t.Context()

	n, err := nodes.Create(ctx, c, nodes.CreateOpts{Name: "sim-node", Driver: "ipmi", DriverInfo: sim.DriverInfo()}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		target nodes.TargetPowerState
		want   string
		on     bool
	}{
		{nodes.PowerOn, "power on", true},
		{nodes.PowerOff, "power off", false},
		{nodes.Rebooting, "power on", true},
		{nodes.SoftPowerOff, "power off", false},
	} {
		if err := nodes.ChangePowerState(ctx, c, n.UUID, nodes.PowerStateOpts{Target: tc.target}).ExtractErr(); err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		got := waitPower(t, c, n.UUID, tc.want)
		if got.PowerState != tc.want || got.LastError != "" {
			t.Fatalf("after %s: power_state %q last_error %q", tc.target, got.PowerState, got.LastError)
		}
		if sim.On() != tc.on {
			t.Errorf("after %s the simulated machine is on=%v", tc.target, sim.On())
		}
	}

	if err := nodes.SetBootDevice(ctx, c, n.UUID, nodes.BootDeviceOpts{BootDevice: "pxe", Persistent: true}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	bd, err := nodes.GetBootDevice(ctx, c, n.UUID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if bd.BootDevice != "pxe" {
		t.Errorf("boot device read back = %+v, want pxe", bd)
	}
	if calls := sim.HookCalls(); !slices.Contains(calls, "set boot pxe") {
		t.Errorf("the BMC never got the boot device; hook calls %v", calls)
	}

	info := sim.DriverInfo()
	info["ipmi_password"] = "wrong-password"
	bad, err := nodes.Create(ctx, c, nodes.CreateOpts{Name: "bad-creds", Driver: "ipmi", DriverInfo: info}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if err := nodes.ChangePowerState(ctx, c, bad.UUID, nodes.PowerStateOpts{Target: nodes.PowerOn}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	got := waitPower(t, c, bad.UUID, "power on")
	for _, want := range []string{sim.Addr, "rejected the credentials"} {
		if !strings.Contains(got.LastError, want) {
			t.Errorf("last_error %q does not contain %q", got.LastError, want)
		}
	}
	if strings.Contains(got.LastError, "wrong-password") {
		t.Errorf("last_error shows the password: %s", got.LastError)
	}
}
