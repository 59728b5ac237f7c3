package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/shared/api"
)

// The iscsi deploy interface's scenarios without a target: what the
// engine does around the write. The writes themselves, onto the agent's
// real target, are tested end to end in internal/iscsie2e.

// iscsiAgent is a scripted agent with the iscsi extension's commands.
type iscsiAgent struct {
	*scriptedAgent
	mu        sync.Mutex
	startErr  *api.CommandError // start_iscsi_target fails with this
	startBusy int               // answer the next n starts with ErrAgentBusy
}

func (a *iscsiAgent) Execute(ctx context.Context, ep engine.AgentEndpoint, name string, params any, wait bool) (*api.CommandResult, error) {
	a.mu.Lock()
	busy := name == "iscsi.start_iscsi_target" && a.startBusy > 0
	if busy {
		a.startBusy--
		a.scriptedAgent.busy++
	}
	a.mu.Unlock()
	res, err := a.scriptedAgent.Execute(ctx, ep, name, params, wait)
	if err != nil {
		return res, err
	}
	a.scriptedAgent.mu.Lock()
	defer a.scriptedAgent.mu.Unlock()
	last := &a.scriptedAgent.cmds[len(a.scriptedAgent.cmds)-1]
	switch name {
	case "iscsi.start_iscsi_target":
		if a.startErr != nil {
			last.CommandStatus, last.CommandError = api.StatusFailed, a.startErr
		} else {
			last.CommandResult = json.RawMessage(`{"iscsi_target_iqn":"` + params.(map[string]any)["iqn"].(string) + `"}`)
		}
	case "iscsi.stop_iscsi_target":
		last.CommandResult = json.RawMessage(`{"iscsi_target_iqn":"x","running":false,"sessions":0,"panics":0}`)
	}
	r := *last
	return &r, nil
}

// fakeImages is an image cache that hands out one URL.
type fakeImages struct{ url string }

func (f fakeImages) Prepare(_ context.Context, _ string, want api.ImageInfo) (api.ImageInfo, error) {
	want.URLs = []string{f.url}
	return want, nil
}

const localAgentURL = "http://127.0.0.1:9999"

// closedPort is a loopback TCP port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type iscsiEnv struct {
	*directEnv
	agent *iscsiAgent
	logs  *logBuffer
}

// newISCSI is newDirect with deploy_interface iscsi, an image cache, an
// agent on 127.0.0.1 and a portal port nothing listens on.
func newISCSI(t *testing.T, opts engine.Options) *iscsiEnv {
	t.Helper()
	d := newDirect(t, engine.Options{})
	a := &iscsiAgent{scriptedAgent: d.agent}
	logs := &logBuffer{}
	if opts.Images == nil {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "disk.raw", time.Unix(0, 0), bytes.NewReader(make([]byte, 1<<20)))
		}))
		t.Cleanup(srv.Close)
		opts.Images = fakeImages{url: srv.URL + "/disk.raw"}
	}
	if opts.ISCSI.PortalPort == 0 {
		opts.ISCSI.PortalPort = closedPort(t)
	}
	opts.ISCSI.LoginAttempts, opts.ISCSI.LoginRetryInterval = 3, time.Millisecond
	opts.Conductor, opts.Agent = "c-iscsi", a
	opts.PostDeployPowerOffRetries, opts.PostDeployPowerOffInterval = 1, time.Millisecond
	opts.CommandPollInterval, opts.CheckInterval, opts.PowerSyncInterval = time.Millisecond, -1, -1
	eng := engine.New(d.db, testDrivers{d.power}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), opts)
	d.eng = eng
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := d.eng.UpdateNode(t.Context(), d.node.UUID, func(n *node.Node) error {
		n.Interfaces.Deploy = "iscsi"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return &iscsiEnv{directEnv: d, agent: a, logs: logs}
}

func (d *iscsiEnv) heartbeat(t *testing.T) {
	t.Helper()
	if err := d.eng.Heartbeat(t.Context(), d.node.UUID, api.HeartbeatRequest{CallbackURL: localAgentURL, AgentToken: d.token, AgentVersion: "ingot-test"}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	d.eng.Wait()
}

// noSecret checks the CHAP secret the agent received is nowhere the
// operator or the logs can see.
func (d *iscsiEnv) noSecret(t *testing.T, n *node.Node) {
	t.Helper()
	p := d.agent.params["iscsi.start_iscsi_target"]
	secret, _ := p["chap_secret"].(string)
	if len(secret) < 12 || p["chap_username"] == "" {
		t.Fatalf("start_iscsi_target params %v: want CHAP credentials", p)
	}
	b, _ := json.Marshal(n)
	if strings.Contains(string(b), secret) {
		t.Errorf("the CHAP secret is stored on the node: %s", b)
	}
	if strings.Contains(d.logs.String(), secret) {
		t.Errorf("the CHAP secret is in the conductor's log")
	}
}

func TestISCSIDeployTargetUnreachable(t *testing.T) {
	d := newISCSI(t, engine.Options{})
	d.verb(t, "active")
	d.lookup(t)
	d.heartbeat(t)
	n := d.expect(t, node.StateDeployFailed, "deploy.get_deploy_steps wait=true", "GET commands", "GET commands",
		"iscsi.start_iscsi_target wait=true", "iscsi.stop_iscsi_target wait=true")
	if !strings.Contains(n.LastError, "Deploy step deploy.write_image failed") || !strings.Contains(n.LastError, "unreachable") ||
		!strings.Contains(n.LastError, "3 logins") {
		t.Errorf("last_error %q", n.LastError)
	}
	if n.PowerState != node.PowerOff {
		t.Errorf("power %q after a failed deployment", n.PowerState)
	}
	p := d.agent.params["iscsi.start_iscsi_target"]
	if p["iqn"] != "iqn.2008-10.org.openstack:"+d.node.UUID || p["wipe_disk_metadata"] != true ||
		p["portal_port"] == nil || p["node"].(map[string]any)["uuid"] != d.node.UUID {
		t.Errorf("start_iscsi_target params %v", p)
	}
	d.noSecret(t, n)
}

func TestISCSIDeployAgentFaults(t *testing.T) {
	t.Run("a busy agent is asked again on the next heartbeat", func(t *testing.T) {
		d := newISCSI(t, engine.Options{})
		d.agent.startBusy = 1
		d.verb(t, "active")
		d.lookup(t)
		d.heartbeat(t)
		n := d.expect(t, node.StateDeployWait, "deploy.get_deploy_steps wait=true", "GET commands", "GET commands",
			"iscsi.start_iscsi_target wait=true")
		if n.DeployStep["step"] != "write_image" || n.LastError != "" {
			t.Errorf("deploy_step %v last_error %q", n.DeployStep, n.LastError)
		}
		d.heartbeat(t)
		d.expect(t, node.StateDeployFailed, "GET commands", "GET commands", "iscsi.start_iscsi_target wait=true",
			"iscsi.stop_iscsi_target wait=true") // nothing listens on the portal: unreachable
	})
	t.Run("a target the agent cannot start fails the deployment with its error", func(t *testing.T) {
		d := newISCSI(t, engine.Options{})
		d.agent.startErr = &api.CommandError{Type: "ISCSIError", Code: 500, Message: "Error starting iSCSI target",
			Details: "listen: listen tcp 10.0.0.5:3260: bind: address already in use"}
		d.verb(t, "active")
		d.lookup(t)
		d.heartbeat(t)
		n := d.expect(t, node.StateDeployFailed, "deploy.get_deploy_steps wait=true", "GET commands", "GET commands",
			"iscsi.start_iscsi_target wait=true")
		if !strings.Contains(n.LastError, "could not export its disk over iSCSI") || !strings.Contains(n.LastError, "address already in use") {
			t.Errorf("last_error %q", n.LastError)
		}
	})
	t.Run("a target an earlier attempt left running is stopped first", func(t *testing.T) {
		d := newISCSI(t, engine.Options{})
		d.verb(t, "active")
		d.lookup(t)
		d.agent.cmds = append(d.agent.cmds, api.CommandResult{ID: "old", CommandName: "start_iscsi_target", CommandStatus: api.StatusSucceeded})
		d.heartbeat(t)
		d.expect(t, node.StateDeployFailed, "deploy.get_deploy_steps wait=true", "GET commands", "GET commands",
			"iscsi.stop_iscsi_target wait=true", "iscsi.start_iscsi_target wait=true", "iscsi.stop_iscsi_target wait=true")
	})
	t.Run("an image the cache cannot prepare fails before the agent exports anything", func(t *testing.T) {
		d := newISCSI(t, engine.Options{Images: failingImages{}})
		d.verb(t, "active")
		d.lookup(t)
		d.heartbeat(t)
		n := d.expect(t, node.StateDeployFailed, "deploy.get_deploy_steps wait=true", "GET commands")
		if !strings.Contains(n.LastError, "cache image http://images/disk.raw: checksum mismatch") {
			t.Errorf("last_error %q", n.LastError)
		}
	})
}

type failingImages struct{}

func (failingImages) Prepare(context.Context, string, api.ImageInfo) (api.ImageInfo, error) {
	return api.ImageInfo{}, errString("checksum mismatch: expected sha256 aaaa, got bbbb")
}

type errString string

func (e errString) Error() string { return string(e) }

func TestISCSIDeployValidation(t *testing.T) {
	for _, tc := range []struct {
		name       string
		driverInfo map[string]any
		noCache    bool
		want       string
	}{
		{name: "no image cache", noCache: true, want: "image cache"},
		{name: "an unknown read-back mode", driverInfo: map[string]any{"iscsi_verify": "twice"}, want: `iscsi_verify "twice"`},
		{name: "a portal port that is not one", driverInfo: map[string]any{"iscsi_portal_port": "99999"}, want: "not a TCP port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := engine.Options{}
			d := newISCSI(t, opts)
			if tc.noCache {
				d.eng = engine.New(d.db, testDrivers{d.power}, slog.New(slog.DiscardHandler), engine.Options{Conductor: "c-x", Agent: d.agent,
					CheckInterval: -1, PowerSyncInterval: -1})
			}
			if _, err := d.eng.UpdateNode(t.Context(), d.node.UUID, func(n *node.Node) error {
				if n.DriverInfo == nil {
					n.DriverInfo = map[string]any{}
				}
				for k, v := range tc.driverInfo {
					n.DriverInfo[k] = v
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			res, err := d.eng.Validate(t.Context(), d.node.UUID)
			if err != nil {
				t.Fatal(err)
			}
			if r := res[node.KindDeploy]; r.Result || r.Reason == nil || !strings.Contains(*r.Reason, tc.want) {
				t.Errorf("deploy validation %+v, want a failure naming %q", r, tc.want)
			}
			err = d.eng.Provision(t.Context(), d.node.UUID, engine.ProvisionRequest{Target: "active"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("deploy: %v, want a refusal naming %q", err, tc.want)
			}
			if n := d.get(t, d.node.UUID); n.ProvisionState != node.StateAvailable {
				t.Errorf("a refused deploy moved the node to %q", n.ProvisionState)
			}
		})
	}
	t.Run("driver_info overrides are accepted", func(t *testing.T) {
		d := newISCSI(t, engine.Options{})
		port := closedPort(t)
		d.eng.UpdateNode(t.Context(), d.node.UUID, func(n *node.Node) error {
			n.DriverInfo = map[string]any{}
			n.DriverInfo["iscsi_verify"], n.DriverInfo["iscsi_portal_port"] = "full", strconv.Itoa(port)
			return nil
		})
		d.verb(t, "active")
		d.lookup(t)
		d.heartbeat(t)
		if p := d.agent.params["iscsi.start_iscsi_target"]; p["portal_port"] != float64(port) {
			t.Errorf("portal_port %v, want %d from driver_info", p["portal_port"], port)
		}
	})
}

// TestISCSINodesCleanLikeDirect: cleaning is the direct interface's, on
// heartbeats, including the lock-free progress poll.
func TestISCSINodesCleanLikeDirect(t *testing.T) {
	d := newISCSI(t, engine.Options{})
	d.verb(t, "manage")
	if err := d.eng.Provision(t.Context(), d.node.UUID, engine.ProvisionRequest{Target: "clean",
		CleanSteps: []map[string]any{{"interface": "deploy", "step": "erase_devices", "args": map[string]any{}}}}); err != nil {
		t.Fatal(err)
	}
	d.eng.Wait()
	d.lookup(t)
	d.heartbeat(t)
	n := d.expect(t, node.StateCleanWait, "clean.get_clean_steps wait=true", "GET commands", "clean.execute_clean_step wait=false")
	if n.CleanStep["step"] != "erase_devices" {
		t.Errorf("clean_step %v", n.CleanStep)
	}
	d.heartbeat(t) // still running: answered by the poll
	d.expect(t, node.StateCleanWait, "GET commands")
	d.agent.finish("clean")
	d.heartbeat(t)
	d.expect(t, node.StateManageable, "GET commands")
}

// TestISCSIDeployConfigDriveNotFound: a config drive URL that does not
// answer fails the deployment before the agent exports its disk.
func TestISCSIDeployConfigDriveNotFound(t *testing.T) {
	d := newISCSI(t, engine.Options{})
	missing := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(missing.Close)
	if err := d.eng.Provision(t.Context(), d.node.UUID, engine.ProvisionRequest{Target: "active", ConfigDrive: missing.URL + "/cd.iso"}); err != nil {
		t.Fatal(err)
	}
	d.eng.Wait()
	d.lookup(t)
	d.heartbeat(t)
	n := d.expect(t, node.StateDeployFailed, "deploy.get_deploy_steps wait=true", "GET commands")
	if !strings.Contains(n.LastError, "download the config drive from "+missing.URL+"/cd.iso: HTTP 404") {
		t.Errorf("last_error %q", n.LastError)
	}
	if _, sent := d.agent.params["iscsi.start_iscsi_target"]; sent {
		t.Error("the disk was exported although the deployment could not succeed")
	}
}
