package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/store"
	"github.com/ingot-dev/ingot/shared/api"
	sharedcd "github.com/ingot-dev/ingot/shared/configdrive"
)

// scriptedAgent is an in-memory IPA command API: it records every call the
// conductor makes and lets the test finish, fail or stall commands.
type scriptedAgent struct {
	mu    sync.Mutex
	cmds  []api.CommandResult
	calls []string
	busy  int // answer the next n Executes with ErrAgentBusy
	// failStep makes execute_<kind>_step of this step fail at once.
	failStep string
	// syncDone makes asynchronous commands other than execute_*_step
	// succeed at once (IPA answers RUNNING and finishes soon after).
	params map[string]map[string]any // last params per command
	// hang makes Execute of this command wait until its context ends, as
	// a request whose answer died with the machine.
	hang string
}

func (a *scriptedAgent) Execute(ctx context.Context, ep engine.AgentEndpoint, name string, params any, wait bool) (*api.CommandResult, error) {
	a.mu.Lock()
	if name == a.hang {
		a.calls = append(a.calls, fmt.Sprintf("%s wait=%v (no answer)", name, wait))
		a.mu.Unlock()
		<-ctx.Done()
		return nil, fmt.Errorf("%w: %v", engine.ErrAgentUnreachable, ctx.Err())
	}
	defer a.mu.Unlock()
	a.calls = append(a.calls, fmt.Sprintf("%s wait=%v", name, wait))
	if a.params == nil {
		a.params = map[string]map[string]any{}
	}
	b, _ := json.Marshal(params)
	var p map[string]any
	json.Unmarshal(b, &p)
	a.params[name] = p
	if a.busy > 0 {
		a.busy--
		return nil, fmt.Errorf("%w: executing command x", engine.ErrAgentBusy)
	}
	_, short, _ := strings.Cut(name, ".")
	res := api.CommandResult{ID: fmt.Sprint(len(a.cmds)), CommandName: short, CommandStatus: api.StatusSucceeded}
	switch short {
	case "get_deploy_steps":
		res.CommandResult = json.RawMessage(`{"deploy_steps":{"GenericHardwareManager":[{"interface":"deploy","step":"write_image","priority":0,"reboot_requested":false},{"interface":"deploy","step":"erase_devices_metadata","priority":0,"reboot_requested":false}]},"hardware_manager_version":{"generic_hardware_manager":"1.2"}}`)
	case "get_clean_steps":
		res.CommandResult = json.RawMessage(`{"clean_steps":{"GenericHardwareManager":[{"interface":"deploy","step":"erase_devices","priority":10,"reboot_requested":false,"abortable":true},{"interface":"deploy","step":"erase_devices_metadata","priority":99,"reboot_requested":false,"abortable":true}]},"hardware_manager_version":{"generic_hardware_manager":"1.2"}}`)
	case "execute_deploy_step", "execute_clean_step":
		step := p["step"].(map[string]any)["step"].(string)
		res.CommandStatus = api.StatusRunning
		if step == a.failStep {
			res.CommandStatus = api.StatusFailed
			res.CommandError = &api.CommandError{Type: "ImageChecksumError", Code: 500, Message: "checksum mismatch",
				Details: "Image failed to verify against checksum. expected sha256 aaaa, got bbbb"}
		}
		res.Progress = &api.Progress{Bytes: 1 << 20, Total: 4 << 20, Percent: 25}
	case "get_partition_uuids":
		res.CommandResult = json.RawMessage(`{"root uuid":"0x2b1ac57f"}`)
	}
	a.cmds = append(a.cmds, res)
	return &res, nil
}

func (a *scriptedAgent) Commands(context.Context, engine.AgentEndpoint) ([]api.CommandResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, "GET commands")
	return append([]api.CommandResult(nil), a.cmds...), nil
}

// finish marks the running execute step succeeded, as IPA does when the
// step returns.
func (a *scriptedAgent) finish(kind string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(a.cmds) - 1; i >= 0; i-- {
		c := &a.cmds[i]
		if c.CommandName == "execute_"+kind+"_step" && c.CommandStatus == api.StatusRunning {
			step := a.params[kind+".execute_"+kind+"_step"]["step"]
			b, _ := json.Marshal(map[string]any{kind + "_result": nil, kind + "_step": step})
			c.CommandStatus, c.CommandResult, c.Progress = api.StatusSucceeded, b, nil
			return
		}
	}
	panic("no running " + kind + " step")
}

// finishWith marks the running deploy step succeeded with a deploy_result.
func (a *scriptedAgent) finishWith(result string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(a.cmds) - 1; i >= 0; i-- {
		c := &a.cmds[i]
		if c.CommandName == "execute_deploy_step" && c.CommandStatus == api.StatusRunning {
			c.CommandStatus, c.Progress = api.StatusSucceeded, nil
			c.CommandResult = json.RawMessage(`{"deploy_result":` + result + `,"deploy_step":{"step":"write_image","interface":"deploy"}}`)
			return
		}
	}
	panic("no running deploy step")
}

// progress sets the running step's progress.
func (a *scriptedAgent) progress(bytes int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.cmds {
		if a.cmds[i].CommandStatus == api.StatusRunning {
			a.cmds[i].Progress = &api.Progress{Bytes: bytes, Total: 4 << 20, Percent: float64(bytes) * 100 / (4 << 20)}
		}
	}
}

// reboot forgets every command, as a freshly booted agent does.
func (a *scriptedAgent) reboot() { a.mu.Lock(); a.cmds = nil; a.mu.Unlock() }

func (a *scriptedAgent) takeCalls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.calls
	a.calls = nil
	return c
}

type directEnv struct {
	*env
	agent *scriptedAgent
	node  *node.Node
	token string
}

const agentURL = "http://192.0.2.50:9999"

// newDirect sets up a node with the direct deploy interface, fake boot and
// power, a port, and image instance_info; the engine runs its workers but
// not its periodic loops.
func newDirect(t *testing.T, opts engine.Options) *directEnv {
	t.Helper()
	a := &scriptedAgent{}
	opts.Agent = a
	opts.PostDeployPowerOffRetries = 1
	opts.PostDeployPowerOffInterval = time.Millisecond
	opts.CommandPollInterval = time.Millisecond
	opts.CheckInterval, opts.PowerSyncInterval = -1, -1
	e := newEnv(t, true, opts)
	n, err := e.eng.CreateNode(t.Context(), &node.Node{Name: "d", Driver: "fake-hardware",
		Interfaces: node.Interfaces{Deploy: "direct"},
		InstanceInfo: map[string]any{"image_source": "http://images/disk.raw", "image_os_hash_algo": "sha256",
			"image_os_hash_value": strings.Repeat("a", 64), "image_disk_format": "raw"}}, engine.CreateOptions{InitialState: node.StateAvailable})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.CreatePort(t.Context(), &node.Port{Address: "52:54:00:12:34:58", NodeUUID: n.UUID, PXEEnabled: true}); err != nil {
		t.Fatal(err)
	}
	return &directEnv{env: e, agent: a, node: n}
}

func (d *directEnv) verb(t *testing.T, target string) {
	t.Helper()
	if err := d.eng.Provision(t.Context(), d.node.UUID, engine.ProvisionRequest{Target: target}); err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	d.eng.Wait()
}

func (d *directEnv) lookup(t *testing.T) {
	t.Helper()
	res, err := d.eng.Lookup(t.Context(), []string{"52:54:00:12:34:58"}, "", true)
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if len(res.Token) != 43 {
		t.Fatalf("token %q: want 43 URL-safe characters", res.Token)
	}
	d.token = res.Token
}

func (d *directEnv) heartbeat(t *testing.T) {
	t.Helper()
	if err := d.eng.Heartbeat(t.Context(), d.node.UUID, api.HeartbeatRequest{CallbackURL: agentURL, AgentToken: d.token, AgentVersion: "ingot-test"}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	d.eng.Wait()
}

func (d *directEnv) expect(t *testing.T, state node.State, calls ...string) *node.Node {
	t.Helper()
	n := d.get(t, d.node.UUID)
	if n.ProvisionState != state {
		t.Fatalf("state %q, want %q (last_error %q)", n.ProvisionState, state, n.LastError)
	}
	if diff := cmp.Diff(calls, d.agent.takeCalls(), cmpEmpty); diff != "" {
		t.Errorf("agent calls (-want +got):\n%s", diff)
	}
	return n
}

var cmpEmpty = cmp.Transformer("nilEmpty", func(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
})

// TestDirectDeployMatchesIronicsSequence walks a UEFI whole-disk deploy and
// an undeploy with automated cleaning, and checks the conductor sends the
// agent exactly the commands real Ironic 21.4 sends (see the agent capture
// in the project's reference material).
func TestDirectDeployMatchesIronicsSequence(t *testing.T) {
	d := newDirect(t, engine.Options{})
	d.verb(t, "active")
	n := d.expect(t, node.StateDeployWait)
	if n.PowerState != node.PowerOn || n.DeployStep["step"] != "deploy" {
		t.Errorf("after deploy started: power %q deploy_step %v", n.PowerState, n.DeployStep)
	}
	if bd := n.DriverInternalInfo["boot_device"].(map[string]any); bd["boot_device"] != "pxe" || bd["persistent"] != false {
		t.Errorf("boot device %v, want pxe for one boot", bd)
	}

	d.lookup(t)
	d.heartbeat(t)
	n = d.expect(t, node.StateDeployWait,
		"deploy.get_deploy_steps wait=true", "GET commands", "deploy.execute_deploy_step wait=false")
	if n.DeployStep["step"] != "write_image" {
		t.Errorf("deploy_step %v", n.DeployStep)
	}
	args := d.agent.params["deploy.execute_deploy_step"]["step"].(map[string]any)["args"].(map[string]any)
	info := args["image_info"].(map[string]any)
	for k, want := range map[string]any{"id": "disk.raw", "disk_format": "raw", "os_hash_algo": "sha256",
		"stream_raw_images": true, "node_uuid": d.node.UUID, "container_format": nil} {
		if diff := cmp.Diff(want, info[k]); diff != "" {
			t.Errorf("image_info[%s]: %s", k, diff)
		}
	}
	if urls := info["urls"].([]any); len(urls) != 1 || urls[0] != "http://images/disk.raw" {
		t.Errorf("image_info urls %v", urls)
	}
	if _, has := args["configdrive"]; !has {
		t.Error("write_image args lack configdrive (Ironic always sends it, null when absent)")
	}

	// The agent is still writing: nothing new is sent, progress shows.
	d.heartbeat(t)
	n = d.expect(t, node.StateDeployWait, "GET commands")
	if p := n.DriverInternalInfo["deploy_progress"].(map[string]any); p["percent"] != 25.0 || p["step"] != "write_image" {
		t.Errorf("deploy_progress %v", p)
	}

	d.agent.finish("deploy")
	d.heartbeat(t)
	n = d.expect(t, node.StateActive, "GET commands", "standby.get_partition_uuids wait=true",
		"image.install_bootloader wait=false", "standby.power_off wait=false")
	if n.DriverInternalInfo["root_uuid_or_disk_id"] != "0x2b1ac57f" {
		t.Errorf("root uuid %v", n.DriverInternalInfo["root_uuid_or_disk_id"])
	}
	if bd := n.DriverInternalInfo["boot_device"].(map[string]any); bd["boot_device"] != "disk" || bd["persistent"] != true {
		t.Errorf("boot device %v, want disk persistently", bd)
	}
	if n.PowerState != node.PowerOn || n.DeployStep != nil || n.LastError != "" {
		t.Errorf("active node: power %q deploy_step %v last_error %q", n.PowerState, n.DeployStep, n.LastError)
	}
	for _, k := range []string{"agent_secret_token", "agent_url", "deploy_steps", "deploy_progress"} {
		if _, ok := n.DriverInternalInfo[k]; ok {
			t.Errorf("%s survived the deployment", k)
		}
	}
	bl := d.agent.params["image.install_bootloader"]
	if bl["root_uuid"] != "0x2b1ac57f" || bl["target_boot_mode"] != "uefi" || bl["efi_system_part_uuid"] != nil {
		t.Errorf("install_bootloader params %v", bl)
	}
	// A heartbeat from the dead agent is refused: its token died with it.
	err := d.eng.Heartbeat(t.Context(), d.node.UUID, api.HeartbeatRequest{CallbackURL: agentURL, AgentToken: d.token, AgentVersion: "x"})
	if !errors.Is(err, node.ErrInvalid) {
		t.Errorf("heartbeat after active: %v, want 400 Invalid or missing agent token", err)
	}

	// Undeploy: automated cleaning boots the agent again.
	d.agent.reboot()
	d.verb(t, "deleted")
	d.expect(t, node.StateCleanWait)
	d.lookup(t)
	d.heartbeat(t)
	n = d.expect(t, node.StateCleanWait, "clean.get_clean_steps wait=true", "GET commands", "clean.execute_clean_step wait=false")
	if n.CleanStep["step"] != "erase_devices_metadata" {
		t.Errorf("clean_step %v: want only erase_devices_metadata (erase_devices disabled by default)", n.CleanStep)
	}
	cv := d.agent.params["clean.execute_clean_step"]["clean_version"].(map[string]any)
	if cv["generic_hardware_manager"] != "1.2" {
		t.Errorf("clean_version %v", cv)
	}
	d.agent.finish("clean")
	d.heartbeat(t)
	n = d.expect(t, node.StateAvailable, "GET commands")
	if n.PowerState != node.PowerOff || n.CleanStep != nil || len(n.InstanceInfo) != 0 {
		t.Errorf("after cleaning: power %q clean_step %v instance_info %v", n.PowerState, n.CleanStep, n.InstanceInfo)
	}
}

func TestBIOSDeploySkipsTheBootloader(t *testing.T) {
	d := newDirect(t, engine.Options{})
	if _, err := d.eng.UpdateNode(t.Context(), d.node.UUID, func(n *node.Node) error {
		n.InstanceInfo["capabilities"] = map[string]any{"boot_mode": "bios"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d.verb(t, "active")
	d.lookup(t)
	d.heartbeat(t)
	d.agent.takeCalls()
	d.agent.finish("deploy")
	d.heartbeat(t)
	d.expect(t, node.StateActive, "GET commands", "standby.get_partition_uuids wait=true", "standby.power_off wait=false")
}

func TestAgentReportsFailure(t *testing.T) {
	d := newDirect(t, engine.Options{})
	d.agent.failStep = "write_image"
	d.verb(t, "active")
	d.lookup(t)
	d.heartbeat(t)
	n := d.expect(t, node.StateDeployFailed, "deploy.get_deploy_steps wait=true", "GET commands", "deploy.execute_deploy_step wait=false")
	if !strings.Contains(n.LastError, "Deploy step deploy.write_image failed") || !strings.Contains(n.LastError, "expected sha256 aaaa, got bbbb") {
		t.Errorf("last_error %q: want the step and the agent's message", n.LastError)
	}
	if n.PowerState != node.PowerOff {
		t.Errorf("a failed deployment leaves the node %q, want powered off", n.PowerState)
	}
	if _, ok := n.DriverInternalInfo["agent_secret_token"]; ok {
		t.Error("the agent token survived a failed deployment")
	}
}

func TestBusyAgentIsRetriedOnTheNextHeartbeat(t *testing.T) {
	d := newDirect(t, engine.Options{})
	d.verb(t, "active")
	d.lookup(t)
	d.agent.busy = 1
	d.heartbeat(t)
	d.expect(t, node.StateDeployWait, "deploy.get_deploy_steps wait=true")
	d.heartbeat(t)
	d.expect(t, node.StateDeployWait, "deploy.get_deploy_steps wait=true", "GET commands", "deploy.execute_deploy_step wait=false")
	// Replaying the heartbeat repeats nothing.
	d.heartbeat(t)
	d.heartbeat(t)
	d.expect(t, node.StateDeployWait, "GET commands", "GET commands")
}

// TestProgressIsPolledBetweenHeartbeats: while the agent writes the image,
// PollProgress records its progress without waiting for a heartbeat; it
// leaves nodes someone holds alone and ignores a silent agent.
func TestProgressIsPolledBetweenHeartbeats(t *testing.T) {
	d := newDirect(t, engine.Options{})
	d.verb(t, "active")
	d.lookup(t)
	d.heartbeat(t)
	d.agent.takeCalls()

	d.agent.progress(3 << 20)
	d.eng.PollProgress(t.Context())
	n := d.expect(t, node.StateDeployWait, "GET commands")
	if p, _ := n.DriverInternalInfo["deploy_progress"].(map[string]any); p == nil || p["bytes"] != float64(3<<20) || p["percent"] != 75.0 {
		t.Errorf("deploy_progress %v, want 3 MiB, 75%%", n.DriverInternalInfo["deploy_progress"])
	}
	version := n.Version

	// Unchanged progress writes nothing.
	d.eng.PollProgress(t.Context())
	if n = d.expect(t, node.StateDeployWait, "GET commands"); n.Version != version {
		t.Errorf("an unchanged sample was written (version %d -> %d)", version, n.Version)
	}

	// Once the step finished, polling neither records nor moves anything:
	// that is the heartbeat's job.
	d.agent.finish("deploy")
	d.eng.PollProgress(t.Context())
	if n = d.expect(t, node.StateDeployWait, "GET commands"); n.Version != version {
		t.Errorf("a finished step's poll wrote the node (version %d -> %d)", version, n.Version)
	}
}

// TestImageWriteIsRecorded keeps what an Ingot agent reports of the
// finished write (IPA reports null: nothing is recorded).
func TestImageWriteIsRecorded(t *testing.T) {
	for _, tc := range []struct {
		name, result string
		want         map[string]any
	}{
		{name: "ingot agent", result: `{"device":"/dev/vda","bytes":67108864,"format":"zstd","checksum_algo":"sha256","checksum":"ab12","resumes":1,"seconds":2}`,
			want: map[string]any{"bytes": 67108864.0, "seconds": 2.0, "format": "zstd", "resumes": 1.0,
				"bytes_per_second": 33554432.0, "checksum": "sha256:ab12"}},
		{name: "ipa", result: `null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDirect(t, engine.Options{})
			d.verb(t, "active")
			d.lookup(t)
			d.heartbeat(t)
			d.agent.finishWith(tc.result)
			d.heartbeat(t)
			n := d.get(t, d.node.UUID)
			if n.ProvisionState != node.StateActive {
				t.Fatalf("state %s (%s)", n.ProvisionState, n.LastError)
			}
			got, _ := n.DriverInternalInfo["image_write"].(map[string]any)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("image_write (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHeartbeatChecks(t *testing.T) {
	d := newDirect(t, engine.Options{})
	d.verb(t, "active")
	d.lookup(t)
	before := d.get(t, d.node.UUID)
	for _, tc := range []struct {
		name string
		hb   api.HeartbeatRequest
		want string
	}{
		{"no token", api.HeartbeatRequest{CallbackURL: agentURL, AgentVersion: "1"}, "Agent token is required"},
		{"wrong token", api.HeartbeatRequest{CallbackURL: agentURL, AgentToken: strings.Repeat("x", 43), AgentVersion: "1"}, "Invalid or missing agent token"},
		{"no version", api.HeartbeatRequest{CallbackURL: agentURL, AgentToken: d.token}, "did not transmit a version"},
		{"bad callback", api.HeartbeatRequest{CallbackURL: "ftp://x", AgentToken: d.token, AgentVersion: "1"}, "Invalid callback_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := d.eng.Heartbeat(t.Context(), d.node.UUID, tc.hb)
			if !errors.Is(err, node.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want %q", err, tc.want)
			}
		})
	}
	if after := d.get(t, d.node.UUID); after.Version != before.Version {
		t.Error("a refused heartbeat changed the node")
	}
	d.heartbeat(t)
	err := d.eng.Heartbeat(t.Context(), d.node.UUID, api.HeartbeatRequest{CallbackURL: "http://192.0.2.99:9999", AgentToken: d.token, AgentVersion: "1"})
	if err == nil || !strings.Contains(err.Error(), "Detected change in ramdisk provided callback_url") {
		t.Errorf("changed callback URL: %v", err)
	}
	// The token is handed out once; a restarted agent's second lookup
	// interrupts the deployment at once, cleanly.
	res, err := d.eng.Lookup(t.Context(), []string{"52:54:00:12:34:58"}, "", true)
	if err != nil || res.Token != api.MaskedToken {
		t.Fatalf("second lookup: %+v %v", res, err)
	}
	n := d.get(t, d.node.UUID)
	if n.ProvisionState != node.StateDeployFailed || !strings.Contains(n.LastError, "looked up again") {
		t.Errorf("after the agent restarted: %q %q", n.ProvisionState, n.LastError)
	}
}

func TestLookupIsRestricted(t *testing.T) {
	d := newDirect(t, engine.Options{})
	if _, err := d.eng.Lookup(t.Context(), []string{"52:54:00:12:34:58"}, "", true); !errors.Is(err, node.ErrNotFound) {
		t.Errorf("lookup of an available node: %v, want not found", err)
	}
	d.verb(t, "active")
	if _, err := d.eng.Lookup(t.Context(), []string{"52:54:00:ff:ff:ff"}, "", true); !errors.Is(err, node.ErrNotFound) {
		t.Errorf("lookup of an unknown MAC: %v", err)
	}
	res, err := d.eng.Lookup(t.Context(), nil, d.node.UUID, false)
	if err != nil || res.Token != "" {
		t.Errorf("lookup below 1.62 mints nothing: %+v %v", res, err)
	}
	if _, ok := d.get(t, d.node.UUID).DriverInternalInfo["agent_secret_token"]; ok {
		t.Error("a token was minted below 1.62")
	}
}

// TestSilentAgentTimesOut: an agent that never calls back fails the
// deployment at the deadline, on fake time.
// TestPowerOffWithoutAnswer: the machine powers off before its agent's
// answer to standby.power_off leaves. The deploy still ends promptly:
// the conductor waits a bounded time for the answer, then powers the
// node off out of band and goes on.
func TestPowerOffWithoutAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDirect(t, engine.Options{})
		d.agent.hang = "standby.power_off"
		d.verb(t, "active")
		d.lookup(t)
		d.heartbeat(t)
		d.agent.takeCalls()
		d.agent.finish("deploy")
		start := time.Now()
		d.heartbeat(t)
		if took := time.Since(start); took > 15*time.Second {
			t.Errorf("the deploy waited %s for an answer that never came", took)
		}
		d.expect(t, node.StateActive, "GET commands", "standby.get_partition_uuids wait=true",
			"image.install_bootloader wait=false", "standby.power_off wait=false (no answer)")
	})
}

func TestSilentAgentTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db, err := store.Open(t.Context(), store.SQLiteURL(filepath.Join(t.TempDir(), "state.db")), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		eng := engine.New(db, testDrivers{&flakyPower{state: node.PowerOff}}, slog.New(slog.DiscardHandler), engine.Options{
			Conductor: "c1", Agent: &scriptedAgent{}, DeployCallbackTimeout: 30 * time.Minute,
			CheckInterval: time.Minute, PowerSyncInterval: -1, LockRetryInterval: time.Millisecond})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { eng.Run(ctx); close(done) }()
		n, err := eng.CreateNode(t.Context(), &node.Node{Name: "silent", Driver: "fake-hardware", Interfaces: node.Interfaces{Deploy: "direct"},
			InstanceInfo: map[string]any{"image_source": "http://i/x.raw", "image_checksum": strings.Repeat("b", 64)}}, engine.CreateOptions{InitialState: node.StateAvailable})
		if err != nil {
			t.Fatal(err)
		}
		if err := eng.Provision(t.Context(), n.UUID, engine.ProvisionRequest{Target: "active"}); err != nil {
			t.Fatal(err)
		}
		eng.Wait()
		time.Sleep(29 * time.Minute)
		synctest.Wait()
		if got, _ := db.GetNode(t.Context(), n.UUID); got.ProvisionState != node.StateDeployWait {
			t.Fatalf("before the deadline: %q", got.ProvisionState)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		eng.Wait()
		got, _ := db.GetNode(t.Context(), n.UUID)
		if got.ProvisionState != node.StateDeployFailed || !strings.Contains(got.LastError, "Timeout reached while waiting for callback") {
			t.Errorf("after the deadline: %q %q", got.ProvisionState, got.LastError)
		}
		if got.PowerState != node.PowerOff || got.Reservation != "" {
			t.Errorf("timed out node: power %q reservation %q", got.PowerState, got.Reservation)
		}
		cancel()
		<-done
	})
}

func TestRestartMidDeployStillEnds(t *testing.T) {
	d := newDirect(t, engine.Options{})
	d.verb(t, "active")
	d.lookup(t)
	d.heartbeat(t)
	d.agent.takeCalls()
	// A new conductor process (same name) takes over: the waiting node
	// keeps waiting and the next heartbeats finish it.
	eng2 := engine.New(d.db, testDrivers{d.power}, slog.New(slog.DiscardHandler), engine.Options{
		Conductor: "c1", Agent: d.agent, PostDeployPowerOffRetries: 1, PostDeployPowerOffInterval: time.Millisecond,
		CheckInterval: -1, PowerSyncInterval: -1})
	if err := eng2.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng2.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	d.agent.finish("deploy")
	if err := eng2.Heartbeat(t.Context(), d.node.UUID, api.HeartbeatRequest{CallbackURL: agentURL, AgentToken: d.token, AgentVersion: "1"}); err != nil {
		t.Fatal(err)
	}
	eng2.Wait()
	if got := d.get(t, d.node.UUID); got.ProvisionState != node.StateActive {
		t.Errorf("after takeover: %q %q", got.ProvisionState, got.LastError)
	}
}

func TestAbortAWaitingDeploy(t *testing.T) {
	d := newDirect(t, engine.Options{})
	d.verb(t, "active")
	d.verb(t, "abort")
	n := d.get(t, d.node.UUID)
	if n.ProvisionState != node.StateDeployFailed || !strings.Contains(n.LastError, "Aborted by operator") || n.PowerState != node.PowerOff {
		t.Errorf("after abort: %q %q power %q", n.ProvisionState, n.LastError, n.PowerState)
	}
}

func TestManualCleanRunsTheRequestedSteps(t *testing.T) {
	d := newDirect(t, engine.Options{})
	d.verb(t, "manage")
	err := d.eng.Provision(t.Context(), d.node.UUID, engine.ProvisionRequest{Target: "clean",
		CleanSteps: []map[string]any{{"interface": "deploy", "step": "erase_devices", "args": map[string]any{}}}})
	if err != nil {
		t.Fatal(err)
	}
	d.eng.Wait()
	d.lookup(t)
	d.heartbeat(t)
	n := d.expect(t, node.StateCleanWait, "clean.get_clean_steps wait=true", "GET commands", "clean.execute_clean_step wait=false")
	if n.CleanStep["step"] != "erase_devices" {
		t.Errorf("clean_step %v", n.CleanStep)
	}
	d.agent.finish("clean")
	d.heartbeat(t)
	d.expect(t, node.StateManageable, "GET commands")
}

func TestCleanStepUnknownToTheAgentFails(t *testing.T) {
	d := newDirect(t, engine.Options{})
	d.verb(t, "manage")
	if err := d.eng.Provision(t.Context(), d.node.UUID, engine.ProvisionRequest{Target: "clean",
		CleanSteps: []map[string]any{{"interface": "deploy", "step": "polish_disks"}}}); err != nil {
		t.Fatal(err)
	}
	d.eng.Wait()
	d.lookup(t)
	d.heartbeat(t)
	n := d.get(t, d.node.UUID)
	if n.ProvisionState != node.StateCleanFailed || !strings.Contains(n.LastError, "deploy.polish_disks") || !n.Maintenance || n.Fault != "clean failure" {
		t.Errorf("state %q last_error %q maintenance %v fault %q", n.ProvisionState, n.LastError, n.Maintenance, n.Fault)
	}
}

// bootloaderFails answers install_bootloader with FAILED, as the agent
// does for an image without an EFI system partition.
type bootloaderFails struct{ *scriptedAgent }

func (b bootloaderFails) Execute(ctx context.Context, ep engine.AgentEndpoint, name string, params any, wait bool) (*api.CommandResult, error) {
	res, err := b.scriptedAgent.Execute(ctx, ep, name, params, wait)
	if name == "image.install_bootloader" {
		res.CommandStatus = api.StatusFailed
		res.CommandError = &api.CommandError{Message: "no EFI system partition on /dev/vda"}
	}
	return res, err
}

// TestBootloaderFailureOfAWholeDiskImageIsAWarning: as Ironic, a whole-disk
// image whose UEFI boot entry cannot be installed still deploys.
func TestBootloaderFailureOfAWholeDiskImageIsAWarning(t *testing.T) {
	sa := &scriptedAgent{}
	d := newDirect(t, engine.Options{})
	d.eng = engine.New(d.db, testDrivers{d.power}, slog.New(slog.DiscardHandler), engine.Options{Conductor: "c2",
		Agent: bootloaderFails{sa}, PostDeployPowerOffRetries: 1, PostDeployPowerOffInterval: time.Millisecond,
		CommandPollInterval: time.Millisecond, CheckInterval: -1, PowerSyncInterval: -1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.eng.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	d.agent = sa
	d.verb(t, "active")
	d.lookup(t)
	d.heartbeat(t)
	d.agent.finish("deploy")
	d.heartbeat(t)
	n := d.get(t, d.node.UUID)
	if n.ProvisionState != node.StateActive || !strings.Contains(fmt.Sprint(n.DriverInternalInfo["bootloader_warning"]), "no EFI system partition") {
		t.Errorf("state %q last_error %q warning %v", n.ProvisionState, n.LastError, n.DriverInternalInfo["bootloader_warning"])
	}
}

// countingAgent reports a running write_image on every endpoint and
// counts the command-list requests per endpoint.
type countingAgent struct {
	scriptedAgent
	mu   sync.Mutex
	seen map[string]int
}

func (c *countingAgent) Commands(_ context.Context, ep engine.AgentEndpoint) ([]api.CommandResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]int{}
	}
	c.seen[ep.URL]++
	return []api.CommandResult{{ID: "1", CommandName: "execute_deploy_step", CommandStatus: api.StatusRunning,
		Progress: &api.Progress{Bytes: int64(c.seen[ep.URL]) << 20}}}, nil
}

// TestProgressPollingIsBatched: with more nodes writing than a round's
// batch, a round asks at most the batch, and successive rounds reach every
// node.
func TestProgressPollingIsBatched(t *testing.T) {
	a := &countingAgent{}
	e := newEnv(t, false, engine.Options{Agent: a})
	const nodes = 150
	db := e.db
	for i := range nodes {
		n := &node.Node{UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Name: fmt.Sprintf("n%d", i),
			Driver: "fake-hardware", Interfaces: node.Interfaces{Deploy: "direct"},
			ProvisionState: node.StateDeployWait, DeployStep: map[string]any{"step": "write_image", "interface": "deploy"},
			DriverInternalInfo: map[string]any{"agent_url": fmt.Sprintf("http://10.0.%d.%d:9999", i/250, i%250),
				"agent_secret_token": "t"}}
		if err := db.CreateNode(t.Context(), n); err != nil {
			t.Fatal(err)
		}
	}
	total := func() (calls, endpoints int) {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, c := range a.seen {
			calls += c
		}
		return calls, len(a.seen)
	}
	e.eng.PollProgress(t.Context())
	if calls, _ := total(); calls != 100 {
		t.Errorf("first round asked %d agents, want the batch of 100", calls)
	}
	e.eng.PollProgress(t.Context())
	if calls, eps := total(); calls != 200 || eps != nodes {
		t.Errorf("two rounds asked %d agents, %d distinct; want 200 and all %d", calls, eps, nodes)
	}
	n, err := db.GetNode(t.Context(), "n7")
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := n.DriverInternalInfo["deploy_progress"].(map[string]any); p == nil || p["step"] != "write_image" {
		t.Errorf("n7's progress was not recorded: %v", n.DriverInternalInfo)
	}
}

// TestDirectDeployConfigDrive: the object form of a config drive reaches
// the agent as Ironic sends it, base64 of a gzipped ISO labelled config-2
// with the node's uuid and name filled in; a malformed one is refused
// before anything changes.
func TestDirectDeployConfigDrive(t *testing.T) {
	d := newDirect(t, engine.Options{})
	bad := engine.ProvisionRequest{Target: "active", ConfigDrive: map[string]any{"meta_data": "not an object"}}
	if err := d.eng.Provision(t.Context(), d.node.UUID, bad); err == nil || !strings.Contains(err.Error(), "meta_data must be an object") {
		t.Fatalf("malformed config drive: %v", err)
	}
	if n := d.expect(t, node.StateAvailable); n.InstanceInfo["configdrive"] != nil {
		t.Fatalf("a refused deploy stored its config drive: %v", n.InstanceInfo)
	}
	for _, str := range []string{"H4sIAAAA", "#cloud-config\n"} {
		err := d.eng.Provision(t.Context(), d.node.UUID, engine.ProvisionRequest{Target: "active", ConfigDrive: str})
		if err == nil || !strings.Contains(err.Error(), "Invalid configdrive") {
			t.Fatalf("config drive %q: %v", str, err)
		}
	}
	d.expect(t, node.StateAvailable)
	cd := map[string]any{"meta_data": map[string]any{"hostname": "h1"}, "user_data": "#cloud-config\n"}
	if err := d.eng.Provision(t.Context(), d.node.UUID, engine.ProvisionRequest{Target: "active", ConfigDrive: cd}); err != nil {
		t.Fatal(err)
	}
	d.eng.Wait()
	d.expect(t, node.StateDeployWait)
	d.lookup(t)
	d.heartbeat(t)
	d.expect(t, node.StateDeployWait, "deploy.get_deploy_steps wait=true", "GET commands", "deploy.execute_deploy_step wait=false")
	args := d.agent.params["deploy.execute_deploy_step"]["step"].(map[string]any)["args"].(map[string]any)
	packed, _ := args["configdrive"].(string)
	iso, err := sharedcd.Decode([]byte(packed))
	if err != nil {
		t.Fatalf("the agent got a config drive it cannot decode: %v", err)
	}
	if label, _ := sharedcd.FilesystemLabel(bytes.NewReader(iso), 0); label != "config-2" {
		t.Errorf("label %q", label)
	}
	for _, want := range []string{`"hostname":"h1"`, `"uuid":"` + d.node.UUID + `"`, `"name":"d"`, "#cloud-config"} {
		if !bytes.Contains(iso, []byte(want)) {
			t.Errorf("the ISO lacks %s", want)
		}
	}
}
