package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/httpapi"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power/ipmi"
	"github.com/ingot-dev/ingot/conductor/service"
	"github.com/ingot-dev/ingot/conductor/store"
)

type apiEnv struct {
	t   *testing.T
	srv *httptest.Server
	db  *store.DB
	eng *engine.Engine
}

func newAPI(t *testing.T) *apiEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	db, err := store.Open(ctx, store.SQLiteURL(filepath.Join(t.TempDir(), "state.db")), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng := engine.New(db, service.Drivers{Drivers: service.DriverTable(log, ipmi.Options{})}, log, engine.Options{
		Conductor: "test-conductor", LockRetryInterval: time.Millisecond,
	})
	if err := eng.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { eng.Run(ctx) })
	if err := db.RegisterConductor(ctx, node.Conductor{Hostname: "test-conductor", Drivers: []string{"fake-hardware", "ipmi", "manual-management"}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.New(eng, db, log, httpapi.Options{MaxLimit: 5}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		wg.Wait()
		db.Close()
	})
	return &apiEnv{t: t, srv: srv, db: db, eng: eng}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// fault decodes Ironic's error envelope and returns the faultstring (or
// the 406 description).
func (r resp) fault(t *testing.T) string {
	t.Helper()
	var env struct {
		ErrorMessage string `json:"error_message"`
	}
	if err := json.Unmarshal(r.body, &env); err != nil || env.ErrorMessage == "" {
		t.Fatalf("not an Ironic error envelope (%v): %s", err, r.body)
	}
	var inner map[string]any
	if err := json.Unmarshal([]byte(env.ErrorMessage), &inner); err != nil {
		t.Fatalf("error_message is not a JSON string: %v: %s", err, env.ErrorMessage)
	}
	if fs, ok := inner["faultstring"].(string); ok {
		if _, ok := inner["faultcode"]; !ok {
			t.Errorf("envelope lacks faultcode: %s", env.ErrorMessage)
		}
		return fs
	}
	d, _ := inner["description"].(string)
	return d
}

func (e *apiEnv) do(method, path string, body any, hdr ...string) resp {
	e.t.Helper()
	var rdr io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rdr = strings.NewReader(b)
	case []byte:
		rdr = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rdr = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rdr)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-OpenStack-Ironic-API-Version", "1.78")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{status: r.StatusCode, header: r.Header, body: b}
}

func (e *apiEnv) mustCreate(body map[string]any) map[string]any {
	e.t.Helper()
	r := e.do("POST", "/v1/nodes", body)
	if r.status != http.StatusCreated {
		e.t.Fatalf("create node: %d %s", r.status, r.body)
	}
	return r.json(e.t)
}

func (e *apiEnv) state(ident string) string {
	e.t.Helper()
	e.eng.Wait()
	r := e.do("GET", "/v1/nodes/"+ident+"/states", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("states: %d %s", r.status, r.body)
	}
	s, _ := r.json(e.t)["provision_state"].(string)
	return s
}

func (e *apiEnv) provision(ident, target string, wantStatus int) resp {
	e.t.Helper()
	r := e.do("PUT", "/v1/nodes/"+ident+"/states/provision", map[string]any{"target": target})
	if r.status != wantStatus {
		e.t.Fatalf("provision %s %s: %d, want %d: %s", ident, target, r.status, wantStatus, r.body)
	}
	e.eng.Wait()
	return r
}

func TestVersionNegotiation(t *testing.T) {
	e := newAPI(t)
	for _, tc := range []struct {
		name, header string
		wantStatus   int
		wantVersion  string
	}{
		{name: "no header means the minimum", header: "", wantStatus: 200, wantVersion: "1.1"},
		{name: "what the CLI sends", header: "1.78", wantStatus: 200, wantVersion: "1.78"},
		{name: "latest", header: "latest", wantStatus: 200, wantVersion: "1.82"},
		{name: "above the maximum", header: "1.99", wantStatus: 406},
		{name: "zero", header: "1.0", wantStatus: 406},
		{name: "wrong major", header: "2.1", wantStatus: 406},
		{name: "garbage", header: "banana", wantStatus: 406},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("GET", "/v1/nodes", nil, "X-OpenStack-Ironic-API-Version", tc.header)
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.status, tc.wantStatus, r.body)
			}
			if r.header.Get("X-OpenStack-Ironic-API-Minimum-Version") != "1.1" || r.header.Get("X-OpenStack-Ironic-API-Maximum-Version") != "1.82" {
				t.Errorf("missing min/max headers: %v", r.header)
			}
			if tc.wantVersion != "" && r.header.Get("X-OpenStack-Ironic-API-Version") != tc.wantVersion {
				t.Errorf("version header %q, want %q", r.header.Get("X-OpenStack-Ironic-API-Version"), tc.wantVersion)
			}
			if tc.wantStatus == 406 && !strings.Contains(r.fault(t), "1.82") && !strings.Contains(r.fault(t), "Invalid value") {
				t.Errorf("406 does not say the supported range: %s", r.fault(t))
			}
		})
	}
	t.Run("standard OpenStack-API-Version header", func(t *testing.T) {
		r := e.do("GET", "/v1", nil, "X-OpenStack-Ironic-API-Version", "", "OpenStack-API-Version", "baremetal 1.60")
		if r.header.Get("X-OpenStack-Ironic-API-Version") != "1.60" {
			t.Errorf("version %q", r.header.Get("X-OpenStack-Ironic-API-Version"))
		}
	})
	t.Run("v1 discovery without a header has min and max for the CLI's negotiation", func(t *testing.T) {
		r := e.do("GET", "/v1", nil, "X-OpenStack-Ironic-API-Version", "")
		if r.status != 200 || r.header.Get("X-OpenStack-Ironic-API-Maximum-Version") != "1.82" {
			t.Fatalf("%d %v", r.status, r.header)
		}
		root := e.do("GET", "/", nil).json(t)
		if root["default_version"].(map[string]any)["version"] != "1.82" {
			t.Errorf("root: %v", root)
		}
	})
	t.Run("version 1.1 behaviour: nodes start available, shown as null, no name field", func(t *testing.T) {
		r := e.do("POST", "/v1/nodes", map[string]any{"driver": "fake-hardware"}, "X-OpenStack-Ironic-API-Version", "")
		if r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		n := r.json(t)
		if _, has := n["name"]; has {
			t.Error("name is shown at 1.1")
		}
		if n["provision_state"] != nil {
			t.Errorf("provision_state at 1.1 = %v, want null (NOSTATE)", n["provision_state"])
		}
		uuid := n["uuid"].(string)
		if got := e.state(uuid); got != "available" {
			t.Errorf("at 1.78 the node is %q, want available", got)
		}
		r = e.do("POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "name": "x"}, "X-OpenStack-Ironic-API-Version", "1.4")
		if r.status != 406 {
			t.Errorf("name at 1.4: %d, want 406", r.status)
		}
	})
}

// TestBadInput: every rejected request answers Ironic's envelope with the
// right status and changes nothing.
func TestBadInput(t *testing.T) {
	e := newAPI(t)
	n := e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "victim", "driver_info": map[string]any{"k": "v"}})
	uuid := n["uuid"].(string)
	if r := e.do("POST", "/v1/ports", map[string]any{"address": "52:54:00:00:00:01", "node_uuid": uuid}); r.status != 201 {
		t.Fatalf("port: %d %s", r.status, r.body)
	}
	big := strings.Repeat("x", httpapi.DefaultBodyLimit+1)
	for _, tc := range []struct {
		name        string
		method      string
		path        string
		body        any
		wantStatus  int
		wantInFault string
	}{
		{"malformed JSON", "POST", "/v1/nodes", `{"driver": "fake-hardware",`, 400, "Malformed JSON"},
		{"body is an array", "POST", "/v1/nodes", `[1,2]`, 400, "Malformed JSON"},
		{"empty body", "POST", "/v1/nodes", ``, 400, "empty"},
		{"driver of wrong type", "POST", "/v1/nodes", map[string]any{"driver": 7}, 400, "Expected 'str', got 'int'"},
		{"driver_info not an object", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "driver_info": "x"}, 400, "Expected 'dict'"},
		{"unknown field", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "colour": "red"}, 400, "'colour' was unexpected"},
		{"read-only field on create", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "provision_state": "active"}, 400, "'provision_state' was unexpected"},
		{"missing driver", "POST", "/v1/nodes", map[string]any{"name": "n"}, 400, "driver"},
		{"unknown driver", "POST", "/v1/nodes", map[string]any{"driver": "nope"}, 400, "No valid host"},
		{"unsupported interface", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "power_interface": "ipmitool"}, 400, "not supported by hardware type fake-hardware"},
		{"duplicate name", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "name": "victim"}, 409, "already exists"},
		{"UUID-like name", "POST", "/v1/nodes", map[string]any{"driver": "fake-hardware", "name": "11111111-2222-3333-4444-555555555555"}, 400, "logical name"},
		{"body over the limit", "POST", "/v1/nodes", `{"driver":"fake-hardware","description":"` + big + `"}`, 413, "too large"},
		{"unknown node", "GET", "/v1/nodes/ghost", nil, 404, "could not be found"},
		{"unknown node by UUID", "PATCH", "/v1/nodes/11111111-2222-3333-4444-555555555555", []any{map[string]any{"op": "add", "path": "/extra/a", "value": 1}}, 404, "could not be found"},
		{"unknown route", "GET", "/v1/teapots", nil, 404, "could not be found"},
		{"patch read-only uuid", "PATCH", "/v1/nodes/victim", []any{map[string]any{"op": "replace", "path": "/uuid", "value": "x"}}, 400, "'/uuid' is an internal attribute"},
		{"patch read-only provision_state", "PATCH", "/v1/nodes/victim", []any{map[string]any{"op": "replace", "path": "/provision_state", "value": "active"}}, 400, "internal attribute"},
		{"patch unknown root", "PATCH", "/v1/nodes/victim", []any{map[string]any{"op": "add", "path": "/colour", "value": "red"}}, 400, "root of the resource"},
		{"patch remove a missing key", "PATCH", "/v1/nodes/victim", []any{map[string]any{"op": "remove", "path": "/driver_info/nope"}}, 400, "Couldn't apply patch"},
		{"patch with bad op", "PATCH", "/v1/nodes/victim", []any{map[string]any{"op": "move", "path": "/name", "from": "/x"}}, 400, "only add, replace and remove"},
		{"patch without value", "PATCH", "/v1/nodes/victim", []any{map[string]any{"op": "add", "path": "/name"}}, 400, "need a value"},
		{"patch not an array", "PATCH", "/v1/nodes/victim", map[string]any{"op": "add"}, 400, "Malformed JSON patch"},
		{"patch a field of a newer version", "PATCH", "/v1/nodes/victim", []any{map[string]any{"op": "add", "path": "/shard", "value": "a"}}, 406, "1.82"},
		{"patch automated_clean with nonsense", "PATCH", "/v1/nodes/victim", []any{map[string]any{"op": "add", "path": "/automated_clean", "value": "maybe"}}, 400, "Unrecognized value"},
		{"patch a nested path into a scalar", "PATCH", "/v1/nodes/victim", []any{map[string]any{"op": "add", "path": "/name/x", "value": "y"}}, 400, "not an object"},
		{"invalid transition", "PUT", "/v1/nodes/victim/states/provision", map[string]any{"target": "active"}, 400, `The requested action "active" can not be performed on node "` + uuid + `" while it is in state "enroll".`},
		{"unknown verb", "PUT", "/v1/nodes/victim/states/provision", map[string]any{"target": "explode"}, 400, "could not be understood"},
		{"target missing", "PUT", "/v1/nodes/victim/states/provision", map[string]any{}, 400, "target"},
		{"clean without steps", "PUT", "/v1/nodes/victim/states/provision", map[string]any{"target": "clean"}, 400, "clean_steps"},
		{"configdrive on manage", "PUT", "/v1/nodes/victim/states/provision", map[string]any{"target": "manage", "configdrive": "abc"}, 400, "config drive"},
		{"deploy verb needs 1.73", "PUT", "/v1/nodes/victim/states/provision", map[string]any{"target": "deploy"}, 200, ""},
		{"bad power target", "PUT", "/v1/nodes/victim/states/power", map[string]any{"target": "explode"}, 400, "Invalid power target"},
		{"negative power timeout", "PUT", "/v1/nodes/victim/states/power", map[string]any{"target": "power on", "timeout": -1}, 400, "positive integer"},
		{"bad boot device", "PUT", "/v1/nodes/victim/management/boot_device", map[string]any{"boot_device": "floppy-disk"}, 400, "Invalid boot device"},
		{"boot device persistent of wrong type", "PUT", "/v1/nodes/victim/management/boot_device", map[string]any{"boot_device": "pxe", "persistent": []int{1}}, 400, "Expected 'bool'"},
		{"maintenance reason of wrong type", "PUT", "/v1/nodes/victim/maintenance", map[string]any{"reason": 5}, 400, "Expected 'str'"},
		{"delete in a state Ironic refuses", "DELETE", "/v1/nodes/victim", nil, 0, ""},
		{"bad limit", "GET", "/v1/nodes?limit=-3", nil, 400, "Limit must be positive"},
		{"sort by a JSON field", "GET", "/v1/nodes?sort_key=driver_info", nil, 400, "invalid field for sorting"},
		{"bad marker", "GET", "/v1/nodes?marker=11111111-2222-3333-4444-555555555555", nil, 400, "Invalid marker"},
		{"unknown provision_state filter", "GET", "/v1/nodes?provision_state=sleeping", nil, 400, "not valid"},
		{"unknown field in fields=", "GET", "/v1/nodes?fields=uuid,colour", nil, 400, `"colour" are not valid`},
		{"detail and fields together", "GET", "/v1/nodes/detail?fields=uuid", nil, 400, "fields"},
		{"port with a bad MAC", "POST", "/v1/ports", map[string]any{"address": "zz:zz", "node_uuid": uuid}, 400, "Expected a MAC address"},
		{"port with a duplicate MAC", "POST", "/v1/ports", map[string]any{"address": "52:54:00:00:00:01", "node_uuid": uuid}, 409, "already exists"},
		{"port of a node given by name", "POST", "/v1/ports", map[string]any{"address": "52:54:00:00:00:02", "node_uuid": "victim"}, 400, "Expected a UUID"},
		{"port of an unknown node", "POST", "/v1/ports", map[string]any{"address": "52:54:00:00:00:02", "node_uuid": "11111111-2222-3333-4444-555555555555"}, 404, "could not be found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wantStatus == 200 || tc.wantStatus == 0 {
				return // covered by dedicated tests below
			}
			before := e.do("GET", "/v1/nodes/victim", nil).body
			beforePorts := e.do("GET", "/v1/ports/detail", nil).body
			r := e.do(tc.method, tc.path, tc.body)
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.status, tc.wantStatus, r.body)
			}
			if got := r.fault(t); !strings.Contains(got, tc.wantInFault) {
				t.Errorf("faultstring %q does not contain %q", got, tc.wantInFault)
			}
			e.eng.Wait()
			if after := e.do("GET", "/v1/nodes/victim", nil).body; !bytes.Equal(before, after) {
				t.Errorf("a rejected request changed the node:\nbefore %s\nafter  %s", before, after)
			}
			if after := e.do("GET", "/v1/ports/detail", nil).body; !bytes.Equal(beforePorts, after) {
				t.Errorf("a rejected request changed the ports")
			}
			if count, _ := e.db.CountNodes(t.Context()); count != 1 {
				t.Errorf("a rejected request created a node: %d nodes", count)
			}
		})
	}
}

func TestDeleteOnlyInAllowedStates(t *testing.T) {
	e := newAPI(t)
	e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "n"})
	e.provision("n", "manage", 202)
	e.provision("n", "provide", 202)
	e.provision("n", "active", 202)
	if s := e.state("n"); s != "active" {
		t.Fatalf("state %s", s)
	}
	r := e.do("DELETE", "/v1/nodes/n", nil)
	if r.status != 409 || !strings.Contains(r.fault(t), `while it is in provision state "active"`) {
		t.Fatalf("delete active node: %d %s", r.status, r.body)
	}
	if e.state("n") != "active" {
		t.Error("rejected delete changed the node")
	}
	if r := e.do("PUT", "/v1/nodes/n/maintenance", map[string]any{"reason": "dead disk"}); r.status != 202 {
		t.Fatalf("maintenance: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/v1/nodes/n", nil); r.status != 204 {
		t.Fatalf("delete in maintenance: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/nodes/n", nil); r.status != 404 {
		t.Errorf("deleted node still there: %d", r.status)
	}
}

func TestLockedNodeAnswers409(t *testing.T) {
	e := newAPI(t)
	e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "busy"})
	n, err := e.db.GetNode(t.Context(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	n.Reservation = "other-conductor"
	if err := e.db.UpdateNode(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	before := e.do("GET", "/v1/nodes/busy", nil).body
	for _, tc := range []struct {
		name, method, path string
		body               any
	}{
		{"patch", "PATCH", "/v1/nodes/busy", []any{map[string]any{"op": "add", "path": "/extra/a", "value": 1}}},
		{"provision", "PUT", "/v1/nodes/busy/states/provision", map[string]any{"target": "manage"}},
		{"power", "PUT", "/v1/nodes/busy/states/power", map[string]any{"target": "power on"}},
		{"boot device", "PUT", "/v1/nodes/busy/management/boot_device", map[string]any{"boot_device": "pxe"}},
		{"maintenance", "PUT", "/v1/nodes/busy/maintenance", map[string]any{"reason": "x"}},
		{"delete", "DELETE", "/v1/nodes/busy", nil},
		{"port create", "POST", "/v1/ports", map[string]any{"address": "52:54:00:00:00:09", "node_uuid": n.UUID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, tc.body)
			if r.status != 409 {
				t.Fatalf("status %d, want 409: %s", r.status, r.body)
			}
			if f := r.fault(t); !strings.Contains(f, "is locked by host other-conductor") {
				t.Errorf("fault %q", f)
			}
		})
	}
	if after := e.do("GET", "/v1/nodes/busy", nil).body; !bytes.Equal(before, after) {
		t.Errorf("a locked node changed:\n%s\n%s", before, after)
	}
}

func TestFakeLifecycle(t *testing.T) {
	e := newAPI(t)
	n := e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "life"})
	for _, step := range []struct{ target, want string }{
		{"manage", "manageable"}, {"provide", "available"}, {"active", "active"},
		{"rebuild", "active"}, {"deleted", "available"}, {"manage", "manageable"},
		{"inspect", "manageable"}, {"adopt", "active"}, {"undeploy", "available"},
		{"deploy", "active"}, {"deleted", "available"},
	} {
		e.provision("life", step.target, 202)
		if got := e.state("life"); got != step.want {
			t.Fatalf("after %s: %s, want %s", step.target, got, step.want)
		}
	}
	e.provision("life", "manage", 202)
	r := e.do("PUT", "/v1/nodes/life/states/provision", map[string]any{"target": "clean",
		"clean_steps": []any{map[string]any{"interface": "deploy", "step": "erase_devices_metadata"}}})
	if r.status != 202 {
		t.Fatalf("manual clean: %d %s", r.status, r.body)
	}
	if got := e.state("life"); got != "manageable" {
		t.Errorf("after manual clean: %s, want manageable", got)
	}
	full := e.do("GET", "/v1/nodes/life", nil).json(t)
	if full["uuid"] != n["uuid"] || full["last_error"] != nil || full["target_provision_state"] != nil {
		t.Errorf("node after the lifecycle: %v", full)
	}
	if r := e.do("DELETE", "/v1/nodes/life", nil); r.status != 204 {
		t.Errorf("delete manageable node: %d %s", r.status, r.body)
	}
}

func TestUndeployForgetsTheInstance(t *testing.T) {
	e := newAPI(t)
	e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "n", "instance_info": map[string]any{"image_source": "http://x/img"}})
	e.provision("n", "manage", 202)
	e.provision("n", "provide", 202)
	r := e.do("PUT", "/v1/nodes/n/states/provision", map[string]any{"target": "active", "configdrive": map[string]any{"meta_data": map[string]any{"hostname": "h1"}}})
	if r.status != 202 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	e.eng.Wait()
	shown := e.do("GET", "/v1/nodes/n", nil).json(t)["instance_info"].(map[string]any)
	if shown["configdrive"] != "******" {
		t.Errorf("configdrive not masked: %v", shown)
	}
	e.provision("n", "deleted", 202)
	if ii := e.do("GET", "/v1/nodes/n", nil).json(t)["instance_info"]; len(ii.(map[string]any)) != 0 {
		t.Errorf("instance_info survived undeploy: %v", ii)
	}
}

func TestPatchSemantics(t *testing.T) {
	e := newAPI(t)
	e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "p", "driver_info": map[string]any{"ipmi_password": "hunter2", "keep": "me"}})
	// Exactly what `baremetal node set` sends.
	r := e.do("PATCH", "/v1/nodes/p", []any{
		map[string]any{"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:8088/disk.img"},
		map[string]any{"op": "add", "path": "/instance_info/root_gb", "value": 1},
		map[string]any{"op": "add", "path": "/automated_clean", "value": "True"},
		map[string]any{"op": "add", "path": "/name", "value": "p2"},
		map[string]any{"op": "replace", "path": "/driver_info/keep", "value": "changed"},
		map[string]any{"op": "add", "path": "/properties/nested", "value": map[string]any{"a": []any{1, 2}}},
	})
	if r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	got := r.json(t)
	want := map[string]any{
		"name":            "p2",
		"automated_clean": true,
		"instance_info":   map[string]any{"image_source": "http://127.0.0.1:8088/disk.img", "root_gb": float64(1)},
		"driver_info":     map[string]any{"ipmi_password": "******", "keep": "changed"},
		"properties":      map[string]any{"nested": map[string]any{"a": []any{float64(1), float64(2)}}},
	}
	for k, w := range want {
		if diff := cmp.Diff(w, got[k]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", k, diff)
		}
	}
	stored, _ := e.db.GetNode(t.Context(), "p2")
	if stored.DriverInfo["ipmi_password"] != "hunter2" {
		t.Errorf("patching another key lost the real password: %v", stored.DriverInfo["ipmi_password"])
	}
	r = e.do("PATCH", "/v1/nodes/p2", []any{
		map[string]any{"op": "remove", "path": "/instance_info/image_source"},
		map[string]any{"op": "add", "path": "/automated_clean", "value": "False"},
		map[string]any{"op": "remove", "path": "/name"},
	})
	if r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	got = r.json(t)
	if got["name"] != nil || got["automated_clean"] != false || len(got["instance_info"].(map[string]any)) != 1 {
		t.Errorf("after remove: name=%v automated_clean=%v instance_info=%v", got["name"], got["automated_clean"], got["instance_info"])
	}
	uuid := got["uuid"].(string)
	t.Run("changing the driver in a state that forbids it", func(t *testing.T) {
		e.provision(uuid, "manage", 202)
		e.provision(uuid, "provide", 202)
		e.provision(uuid, "active", 202)
		r := e.do("PATCH", "/v1/nodes/"+uuid, []any{map[string]any{"op": "replace", "path": "/driver", "value": "manual-management"}})
		if r.status != 409 || !strings.Contains(r.fault(t), "can not have driver updated") {
			t.Errorf("%d %s", r.status, r.body)
		}
	})
}

func TestSecretsAreMasked(t *testing.T) {
	e := newAPI(t)
	n := e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "m", "driver_info": map[string]any{
		"ipmi_password": "hunter2", "redfish_password": "pw", "nested": map[string]any{"api_token": "t0kenvalue"},
		"ipmi_username": "admin"}})
	for _, r := range []resp{
		{body: mustJSON(n)},
		e.do("GET", "/v1/nodes/m", nil),
		e.do("GET", "/v1/nodes/detail", nil),
		e.do("GET", "/v1/nodes/m?fields=driver_info", nil),
	} {
		if bytes.Contains(r.body, []byte("hunter2")) || bytes.Contains(r.body, []byte(`"pw"`)) || bytes.Contains(r.body, []byte("t0kenvalue")) {
			t.Errorf("secret leaked: %s", r.body)
		}
		if !bytes.Contains(r.body, []byte(`"admin"`)) {
			t.Errorf("non-secret masked too: %s", r.body)
		}
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func TestListPagingAndFields(t *testing.T) {
	e := newAPI(t)
	var want []string
	for i := range 12 {
		n := e.mustCreate(map[string]any{"driver": "fake-hardware", "name": fmt.Sprintf("n%02d", i)})
		want = append(want, n["uuid"].(string))
	}
	e.provision("n03", "manage", 202)
	var got []string
	path := "/v1/nodes"
	pages := 0
	for path != "" {
		r := e.do("GET", path, nil)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		m := r.json(t)
		for _, n := range m["nodes"].([]any) {
			nm := n.(map[string]any)
			got = append(got, nm["uuid"].(string))
			if _, ok := nm["driver_info"]; ok {
				t.Fatal("non-detail list shows driver_info")
			}
			if len(nm) != 7 {
				t.Errorf("list item has %d keys, want the 7 Ironic returns: %v", len(nm), nm)
			}
		}
		pages++
		next, _ := m["next"].(string)
		path = strings.TrimPrefix(next, e.srv.URL)
	}
	if diff := cmp.Diff(want, got); diff != "" || pages != 3 {
		t.Errorf("paging with max_limit 5 took %d pages (want 3); diff:\n%s", pages, diff)
	}
	r := e.do("GET", "/v1/nodes/?fields=uuid,name,provision_state&provision_state=manageable", nil).json(t)
	nodes := r["nodes"].([]any)
	if len(nodes) != 1 {
		t.Fatalf("filter: %v", r)
	}
	keys := []string{}
	for k := range nodes[0].(map[string]any) {
		keys = append(keys, k)
	}
	if diff := cmp.Diff([]string{"links", "name", "provision_state", "uuid"}, sortStrings(keys)); diff != "" {
		t.Errorf("fields=: %s", diff)
	}
	desc := e.do("GET", "/v1/nodes?sort_key=name&sort_dir=desc&limit=2", nil).json(t)["nodes"].([]any)
	if desc[0].(map[string]any)["name"] != "n11" || desc[1].(map[string]any)["name"] != "n10" {
		t.Errorf("sort desc: %v", desc)
	}
}

func sortStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestPortsAPI(t *testing.T) {
	e := newAPI(t)
	n := e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "pn"})
	r := e.do("POST", "/v1/ports", map[string]any{"address": "52:54:00:AA:BB:01", "node_uuid": n["uuid"]})
	if r.status != 201 || r.header.Get("Location") == "" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	p := r.json(t)
	if p["address"] != "52:54:00:aa:bb:01" || p["pxe_enabled"] != true {
		t.Errorf("port: %v", p)
	}
	list := e.do("GET", "/v1/ports/?node=pn", nil).json(t)["ports"].([]any)
	if len(list) != 1 || len(list[0].(map[string]any)) != 3 {
		t.Errorf("port list: %v", list)
	}
	byAddr := e.do("GET", "/v1/ports?address=52:54:00:aa:bb:01&fields=uuid,node_uuid", nil).json(t)["ports"].([]any)
	if len(byAddr) != 1 || byAddr[0].(map[string]any)["node_uuid"] != n["uuid"] {
		t.Errorf("by address: %v", byAddr)
	}
	uuid := p["uuid"].(string)
	r = e.do("PATCH", "/v1/ports/"+uuid, []any{map[string]any{"op": "replace", "path": "/pxe_enabled", "value": false},
		map[string]any{"op": "add", "path": "/extra/vif", "value": "x"}})
	if r.status != 200 || r.json(t)["pxe_enabled"] != false {
		t.Errorf("patch port: %d %s", r.status, r.body)
	}
	if r := e.do("PATCH", "/v1/ports/"+uuid, []any{map[string]any{"op": "replace", "path": "/internal_info", "value": map[string]any{}}}); r.status != 400 {
		t.Errorf("patch internal_info: %d", r.status)
	}
	if np := e.do("GET", "/v1/nodes/pn/ports/detail", nil).json(t)["ports"].([]any); len(np) != 1 {
		t.Errorf("node ports: %v", np)
	}
	if r := e.do("DELETE", "/v1/ports/"+uuid, nil); r.status != 204 {
		t.Errorf("delete port: %d", r.status)
	}
	if r := e.do("GET", "/v1/ports/"+uuid, nil); r.status != 404 {
		t.Errorf("deleted port: %d", r.status)
	}
}

func TestPowerBootDeviceMaintenanceValidate(t *testing.T) {
	e := newAPI(t)
	e.mustCreate(map[string]any{"driver": "fake-hardware", "name": "pw"})
	for _, target := range []string{"power on", "rebooting", "power off", "soft power off", "soft rebooting"} {
		if r := e.do("PUT", "/v1/nodes/pw/states/power", map[string]any{"target": target, "timeout": 30}); r.status != 202 {
			t.Fatalf("%s: %d %s", target, r.status, r.body)
		}
		e.eng.Wait()
	}
	st := e.do("GET", "/v1/nodes/pw/states", nil).json(t)
	if st["power_state"] != "power on" || st["target_power_state"] != nil {
		t.Errorf("after soft rebooting: %v", st)
	}
	if r := e.do("PUT", "/v1/nodes/pw/states/power", map[string]any{"target": "soft power off"}, "X-OpenStack-Ironic-API-Version", "1.20"); r.status != 406 {
		t.Errorf("soft power off at 1.20: %d", r.status)
	}
	if r := e.do("PUT", "/v1/nodes/pw/management/boot_device", map[string]any{"boot_device": "pxe", "persistent": true}); r.status != 204 {
		t.Fatalf("boot device: %d %s", r.status, r.body)
	}
	bd := e.do("GET", "/v1/nodes/pw/management/boot_device", nil).json(t)
	if bd["boot_device"] != "pxe" || bd["persistent"] != true {
		t.Errorf("boot device: %v", bd)
	}
	if sup := e.do("GET", "/v1/nodes/pw/management/boot_device/supported", nil).json(t); len(sup["supported_boot_devices"].([]any)) == 0 {
		t.Errorf("supported: %v", sup)
	}
	e.do("PUT", "/v1/nodes/pw/maintenance", map[string]any{"reason": "probe"})
	n := e.do("GET", "/v1/nodes/pw", nil).json(t)
	if n["maintenance"] != true || n["maintenance_reason"] != "probe" {
		t.Errorf("maintenance on: %v %v", n["maintenance"], n["maintenance_reason"])
	}
	if r := e.do("PUT", "/v1/nodes/pw/states/provision", map[string]any{"target": "manage"}); r.status != 202 {
		t.Errorf("manage in maintenance: %d", r.status)
	}
	e.eng.Wait()
	e.provision("pw", "provide", 400)
	e.do("DELETE", "/v1/nodes/pw/maintenance", nil)
	n = e.do("GET", "/v1/nodes/pw", nil).json(t)
	if n["maintenance"] != false || n["maintenance_reason"] != nil {
		t.Errorf("maintenance off: %v %v", n["maintenance"], n["maintenance_reason"])
	}
	v := e.do("GET", "/v1/nodes/pw/validate", nil).json(t)
	if len(v) != 11 {
		t.Errorf("validate has %d interfaces, want 11: %v", len(v), v)
	}
	if v["power"].(map[string]any)["result"] != true {
		t.Errorf("validate power: %v", v["power"])
	}
}

func TestDriversAndConductors(t *testing.T) {
	e := newAPI(t)
	d := e.do("GET", "/v1/drivers", nil).json(t)["drivers"].([]any)
	if len(d) != 3 {
		t.Fatalf("drivers: %v", d)
	}
	for _, x := range d {
		m := x.(map[string]any)
		if m["hosts"].([]any)[0] != "test-conductor" || m["type"] != "dynamic" {
			t.Errorf("driver: %v", m)
		}
	}
	ipmi := e.do("GET", "/v1/drivers/ipmi", nil).json(t)
	if ipmi["default_power_interface"] != "ipmitool" || ipmi["default_deploy_interface"] != "direct" {
		t.Errorf("ipmi driver: %v", ipmi)
	}
	if props := e.do("GET", "/v1/drivers/ipmi/properties", nil).json(t); props["ipmi_address"] == nil {
		t.Errorf("properties: %v", props)
	}
	c := e.do("GET", "/v1/conductors", nil).json(t)["conductors"].([]any)
	if len(c) != 1 || c[0].(map[string]any)["alive"] != true || c[0].(map[string]any)["hostname"] != "test-conductor" {
		t.Errorf("conductors: %v", c)
	}
	if r := e.do("GET", "/v1/conductors", nil, "X-OpenStack-Ironic-API-Version", "1.48"); r.status != 404 {
		t.Errorf("conductors at 1.48: %d", r.status)
	}
}

func TestRequestIDAndContentType(t *testing.T) {
	e := newAPI(t)
	r := e.do("GET", "/v1/nodes/nope", nil)
	if !strings.HasPrefix(r.header.Get("Openstack-Request-Id"), "req-") {
		t.Errorf("request id: %v", r.header)
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Errorf("error content type: %q", r.header.Get("Content-Type"))
	}
}
