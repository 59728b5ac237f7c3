package httpapi_test

import (
	"strings"
	"testing"

	"github.com/ingot-dev/ingot/conductor/node"
)

// waitingNode puts a node with a port into "wait call-back" directly in the
// store, as a deployment in progress would.
func waitingNode(t *testing.T, e *apiEnv) string {
	t.Helper()
	n := e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "w",
		"instance_info": map[string]any{"image_source": "http://i/x", "configdrive": "secret-user-data"}})
	uuid := n["uuid"].(string)
	if r := e.do("POST", "/v1/ports", map[string]any{"address": "52:54:00:12:34:58", "node_uuid": uuid}); r.status != 201 {
		t.Fatal(r.status)
	}
	stored, _ := e.db.GetNode(t.Context(), uuid)
	stored.ProvisionState = node.StateDeployWait
	if err := e.db.UpdateNode(t.Context(), stored); err != nil {
		t.Fatal(err)
	}
	return uuid
}

func TestLookupAndHeartbeat(t *testing.T) {
	e := newAPI(t)
	uuid := waitingNode(t, e)
	v := "X-OpenStack-Ironic-API-Version"

	if r := e.do("GET", "/v1/lookup?addresses=52:54:00:12:34:58", nil, v, ""); r.status != 404 {
		t.Errorf("lookup without a version header (1.1): %d, want 404 as Ironic", r.status)
	}
	if r := e.do("GET", "/v1/lookup?addresses=zz", nil, v, "1.62"); r.status != 400 || !strings.Contains(r.fault(t), "at least one valid MAC") {
		t.Errorf("lookup without a valid MAC: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/lookup?addresses=52:54:00:ff:ff:ff", nil, v, "1.62"); r.status != 404 || !strings.Contains(r.fault(t), "port with one of the addresses") {
		t.Errorf("lookup of an unknown MAC: %d %s", r.status, r.body)
	}
	r := e.do("GET", "/v1/lookup?addresses=52:54:00:12:34:58,bogus", nil, v, "1.62")
	if r.status != 200 {
		t.Fatalf("lookup: %d %s", r.status, r.body)
	}
	m := r.json(t)
	cfg := m["config"].(map[string]any)
	tok, _ := cfg["agent_token"].(string)
	if len(tok) != 43 || cfg["heartbeat_timeout"] != 300.0 || cfg["agent_token_required"] != true {
		t.Errorf("lookup config: %v", cfg)
	}
	nd := m["node"].(map[string]any)
	if nd["uuid"] != uuid || nd["instance_info"].(map[string]any)["configdrive"] != "******" {
		t.Errorf("lookup node: %v", nd)
	}
	if _, has := nd["driver_info"]; has {
		t.Error("lookup exposes driver_info")
	}
	again := e.do("GET", "/v1/lookup?node_uuid="+uuid, nil, v, "1.62").json(t)
	if again["config"].(map[string]any)["agent_token"] != "******" {
		t.Errorf("second lookup revealed the token: %v", again["config"])
	}
	if old := e.do("GET", "/v1/lookup?node_uuid="+uuid, nil, v, "1.61").json(t); old["config"].(map[string]any)["agent_token"] != nil {
		t.Errorf("lookup at 1.61 carries a token: %v", old["config"])
	}
	shown := e.do("GET", "/v1/nodes/"+uuid, nil).json(t)["driver_internal_info"].(map[string]any)
	if shown["agent_secret_token"] != "******" {
		t.Errorf("node show reveals the agent token: %v", shown)
	}

	hb := func(body map[string]any, version string) resp {
		return e.do("POST", "/v1/heartbeat/"+uuid, body, v, version)
	}
	for _, tc := range []struct {
		name    string
		body    map[string]any
		version string
		status  int
		fault   string
	}{
		{"below 1.22", map[string]any{"callback_url": "http://192.0.2.5:9999"}, "", 404, "could not be found"},
		{"no token", map[string]any{"callback_url": "http://192.0.2.5:9999", "agent_version": "1"}, "1.68", 400, "Agent token is required"},
		{"wrong token", map[string]any{"callback_url": "http://192.0.2.5:9999", "agent_token": strings.Repeat("x", 43), "agent_version": "1"}, "1.68", 400, "Invalid or missing agent token received."},
		{"agent_version below 1.36", map[string]any{"callback_url": "http://192.0.2.5:9999", "agent_token": tok, "agent_version": "1"}, "1.35", 400, `Field "agent_version" not recognised`},
		{"agent_verify_ca below 1.68", map[string]any{"callback_url": "http://192.0.2.5:9999", "agent_token": tok, "agent_version": "1", "agent_verify_ca": "x"}, "1.62", 400, `Field "agent_verify_ca" not recognised`},
		{"unknown field", map[string]any{"callback_url": "http://192.0.2.5:9999", "agent_token": tok, "colour": "red"}, "1.68", 400, "not recognised"},
		{"no callback_url", map[string]any{"agent_token": tok, "agent_version": "1"}, "1.68", 400, "callback_url"},
		{"malformed callback_url", map[string]any{"callback_url": "not a url", "agent_token": tok, "agent_version": "1"}, "1.68", 400, "Invalid callback_url"},
		{"unknown node", nil, "1.68", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.body == nil {
				r := e.do("POST", "/v1/heartbeat/ghost", map[string]any{"callback_url": "http://x:1", "agent_token": tok, "agent_version": "1"}, v, "1.68")
				if r.status != 404 {
					t.Errorf("%d", r.status)
				}
				return
			}
			r := hb(tc.body, tc.version)
			if r.status != tc.status || !strings.Contains(r.fault(t), tc.fault) {
				t.Errorf("%d %s, want %d %q", r.status, r.fault(t), tc.status, tc.fault)
			}
		})
	}
	ok := hb(map[string]any{"callback_url": "http://192.0.2.5:9999", "agent_token": tok, "agent_version": "ingot-1"}, "1.68")
	if ok.status != 202 || len(ok.body) != 0 {
		t.Fatalf("heartbeat: %d %s", ok.status, ok.body)
	}
	e.eng.Wait()
	dii := e.do("GET", "/v1/nodes/"+uuid, nil).json(t)["driver_internal_info"].(map[string]any)
	if dii["agent_url"] != "http://192.0.2.5:9999" || dii["agent_version"] != "ingot-1" || dii["agent_last_heartbeat"] == nil {
		t.Errorf("heartbeat not recorded: %v", dii)
	}
	moved := hb(map[string]any{"callback_url": "http://192.0.2.6:9999", "agent_token": tok, "agent_version": "ingot-1"}, "1.68")
	if moved.status != 400 || !strings.Contains(moved.fault(t), "Detected change in ramdisk provided callback_url") {
		t.Errorf("moved agent: %d %s", moved.status, moved.body)
	}
}
