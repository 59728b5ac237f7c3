package service_test

import (
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/noauth"
	"github.com/gophercloud/gophercloud/v2/openstack/baremetal/v1/nodes"
)

// TestIPMIValidate checks that the conductor enables the ipmitool power
// and management interfaces and reports bad driver_info in Ironic's words.
func TestIPMIValidate(t *testing.T) {
	url := startConductor(t)
	c, err := noauth.NewBareMetalNoAuth(noauth.EndpointOpts{IronicEndpoint: url + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	c.Microversion = "1.78"
	ctx := t.Context()
	tests := []struct {
		name       string
		driverInfo map[string]any
		wantReason string
	}{
		{name: "no address", driverInfo: map[string]any{"ipmi_username": "admin"},
			wantReason: "Missing the following IPMI credentials in node's driver_info: ['ipmi_address']."},
		{name: "bad port", driverInfo: map[string]any{"ipmi_address": "192.0.2.1", "ipmi_port": "ipmi"},
			wantReason: `ipmi_port "ipmi" is not a valid integer.`},
		{name: "valid", driverInfo: map[string]any{"ipmi_address": "192.0.2.1", "ipmi_password": "pw", "ipmi_cipher_suite": 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := nodes.Create(ctx, c, nodes.CreateOpts{Driver: "ipmi", DriverInfo: tc.driverInfo}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			if n.PowerInterface != "ipmitool" || n.ManagementInterface != "ipmitool" {
				t.Fatalf("ipmi node interfaces: power %q management %q", n.PowerInterface, n.ManagementInterface)
			}
			v, err := nodes.Validate(ctx, c, n.UUID).Extract()
			if err != nil {
				t.Fatal(err)
			}
			for kind, got := range map[string]nodes.DriverValidation{"power": v.Power, "management": v.Management} {
				if got.Result != (tc.wantReason == "") || got.Reason != tc.wantReason {
					t.Errorf("validate %s = %+v, want reason %q", kind, got, tc.wantReason)
				}
			}
		})
	}
}
