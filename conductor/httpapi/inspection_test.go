package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/conductor/httpapi"
)

// TestContinueInspection drives in-band inspection through the API: the
// agent's post (no version header, as IPA and Inspector-era agents send
// it) answers 202 with the node's UUID, the node returns to manageable
// with its properties filled, and the inventory is served from 1.81.
func TestContinueInspection(t *testing.T) {
	e := newAPI(t)
	n := e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "insp", "inspect_interface": "agent"})
	uuid := n["uuid"].(string)
	if r := e.do("POST", "/v1/ports", map[string]any{"address": "52:54:00:00:00:01", "node_uuid": uuid}); r.status != 201 {
		t.Fatalf("port: %d %s", r.status, r.body)
	}
	waitState := func(want string) map[string]any {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var got map[string]any
			json.Unmarshal(e.do("GET", "/v1/nodes/insp", nil).body, &got)
			if got["provision_state"] == want && (want == "inspect wait" || got["target_provision_state"] == nil) {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("state %v, want %s (last_error %v)", got["provision_state"], want, got["last_error"])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	e.do("PUT", "/v1/nodes/insp/states/provision", map[string]any{"target": "manage"})
	waitState("manageable")
	if r := e.do("PUT", "/v1/nodes/insp/states/provision", map[string]any{"target": "inspect"}); r.status != 202 {
		t.Fatalf("inspect: %d %s", r.status, r.body)
	}
	waitState("inspect wait")

	noVersion := []string{"X-OpenStack-Ironic-API-Version", ""}
	inventory := map[string]any{"interfaces": []any{map[string]any{"name": "eth0", "mac_address": "52:54:00:00:00:01"}},
		"cpu": map[string]any{"count": 2, "architecture": "x86_64"}, "memory": map[string]any{"physical_mb": 2048},
		"disks": []any{map[string]any{"name": "/dev/vda", "size": 8 << 30}}, "bmc_address": nil}
	for _, tc := range []struct {
		name   string
		body   any
		hdr    []string
		status int
		msg    string
	}{
		{"with a version header", map[string]any{"inventory": inventory}, []string{"X-OpenStack-Ironic-API-Version", "1.78"}, 404, "could not be found"},
		{"malformed JSON", `{"inventory": `, noVersion, 400, "Malformed JSON"},
		{"no inventory", map[string]any{"logs": "x"}, noVersion, 400, "'inventory' is a required property"},
		{"no interfaces", map[string]any{"inventory": map[string]any{"interfaces": []any{}}}, noVersion, 400, "at least one interface"},
		{"interface without MAC", map[string]any{"inventory": map[string]any{"interfaces": []any{map[string]any{"name": "x"}}}}, noVersion, 400, "mac_address"},
		{"BMC address not a string", map[string]any{"inventory": map[string]any{"bmc_address": 7,
			"interfaces": []any{map[string]any{"mac_address": "52:54:00:00:00:01"}}}}, noVersion, 400, "bmc_address"},
		{"unknown node", map[string]any{"inventory": map[string]any{"interfaces": []any{map[string]any{"mac_address": "aa:bb:cc:dd:ee:ff"}}}}, noVersion, 404, "inspect wait"},
		{"too large", `{"inventory": {"interfaces": [], "x": "` + strings.Repeat("y", httpapi.InspectionBodyLimit) + `"}}`, noVersion, 413, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/v1/continue_inspection", tc.body, tc.hdr...)
			if r.status != tc.status || !strings.Contains(string(r.body), tc.msg) {
				t.Errorf("%d %s, want %d containing %q", r.status, r.body, tc.status, tc.msg)
			}
		})
	}
	if r := e.do("GET", "/v1/nodes/insp/inventory", nil, "X-OpenStack-Ironic-API-Version", "1.81"); r.status != 404 {
		t.Errorf("inventory before inspection: %d %s", r.status, r.body)
	}

	r := e.do("POST", "/v1/continue_inspection", map[string]any{"inventory": inventory, "error": nil}, noVersion...)
	if r.status != 202 || !strings.Contains(string(r.body), `"uuid":"`+uuid+`"`) {
		t.Fatalf("continue_inspection: %d %s", r.status, r.body)
	}
	got := waitState("manageable")
	props := got["properties"].(map[string]any)
	if props["cpu_arch"] != "x86_64" || props["memory_mb"] != 2048.0 || props["local_gb"] != 7.0 || props["cpus"] != 2.0 {
		t.Errorf("properties %v", props)
	}
	if got["inspection_finished_at"] == nil {
		t.Error("no inspection_finished_at")
	}
	if r := e.do("GET", "/v1/nodes/insp/inventory", nil); r.status != 404 {
		t.Errorf("inventory at 1.78: %d", r.status)
	}
	r = e.do("GET", "/v1/nodes/insp/inventory", nil, "X-OpenStack-Ironic-API-Version", "1.81")
	var inv struct {
		Inventory  map[string]any `json:"inventory"`
		PluginData map[string]any `json:"plugin_data"`
	}
	if err := json.Unmarshal(r.body, &inv); r.status != 200 || err != nil || inv.Inventory["cpu"] == nil || inv.PluginData == nil {
		t.Errorf("inventory: %d %s", r.status, r.body)
	}
}
