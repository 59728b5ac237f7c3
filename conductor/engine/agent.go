package engine

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/shared/api"
)

// AgentEndpoint says where a node's agent listens and how to reach it.
type AgentEndpoint struct {
	URL      string
	Token    string
	VerifyCA string
}

// Agent runs commands on a deploy agent (IPA's command API).
type Agent interface {
	// Execute runs "<extension>.<command>"; wait asks the agent to answer
	// only once the command finished.
	Execute(ctx context.Context, ep AgentEndpoint, name string, params any, wait bool) (*api.CommandResult, error)
	// Commands lists every command the agent ran, oldest first.
	Commands(ctx context.Context, ep AgentEndpoint) ([]api.CommandResult, error)
}

// Errors an Agent implementation returns, classified with errors.Is.
var (
	// ErrAgentBusy: the agent runs another command; retry on a later
	// heartbeat.
	ErrAgentBusy = errors.New("agent is busy")
	// ErrAgentUnreachable: the agent did not answer.
	ErrAgentUnreachable = errors.New("agent is unreachable")
)

// ImageCache serves images the agent cannot fetch itself (local files, or
// image_download_source=local) from the conductor.
type ImageCache interface {
	// Prepare makes the image at source available, verified against
	// want's checksum, and returns image_info pointing at the cached copy.
	Prepare(ctx context.Context, source string, want api.ImageInfo) (api.ImageInfo, error)
}

// driver_internal_info keys the engine keeps about agents and steps. Names
// follow Ironic's where Ironic has one.
const (
	diAgentURL          = "agent_url"
	diAgentToken        = "agent_secret_token"
	diAgentVersion      = "agent_version"
	diAgentLastHB       = "agent_last_heartbeat"
	diAgentVerifyCA     = "agent_verify_ca"
	diDeploySteps       = "deploy_steps"
	diDeployStepIndex   = "deploy_step_index"
	diCleanSteps        = "clean_steps"
	diCleanStepIndex    = "clean_step_index"
	diCachedDeploySteps = "agent_cached_deploy_steps"
	diCachedCleanSteps  = "agent_cached_clean_steps"
	diHWManagerVersion  = "hardware_manager_version"
	diDeployProgress    = "deploy_progress"
	diImageWrite        = "image_write" // what the agent reported of the last image write
	diRootUUID          = "root_uuid_or_disk_id"
	diWholeDisk         = "is_whole_disk_image"
	diDeployBootMode    = "deploy_boot_mode"
	diUserDeploySteps   = "user_deploy_steps"
)

// endpoint reads the agent's endpoint from a node.
func endpoint(n *node.Node) (AgentEndpoint, bool) {
	url, _ := n.DriverInternalInfo[diAgentURL].(string)
	tok, _ := n.DriverInternalInfo[diAgentToken].(string)
	ca, _ := n.DriverInternalInfo[diAgentVerifyCA].(string)
	return AgentEndpoint{URL: url, Token: tok, VerifyCA: ca}, url != "" && tok != ""
}

// newToken returns a 43-character URL-safe token, as Ironic's
// secrets.token_urlsafe() does.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// stepStatus is what the agent's command list says about one step.
type stepStatus int

const (
	stepNotStarted stepStatus = iota
	stepRunning
	stepSucceeded
	stepFailed
	stepVersionMismatch
)

// agentStep reads the state of step kind ("deploy" or "clean") named name
// from the agent's command list: only the last execute_<kind>_step command
// counts, as in Ironic's process_next_step.
func agentStep(cmds []api.CommandResult, kind, name string) (stepStatus, *api.CommandResult) {
	var last *api.CommandResult
	for i := range cmds {
		if cmds[i].CommandName == "execute_"+kind+"_step" {
			last = &cmds[i]
		}
	}
	if last == nil {
		return stepNotStarted, nil
	}
	switch last.CommandStatus {
	case api.StatusRunning:
		return stepRunning, last
	case api.StatusVersionMismatch, api.StatusCleanVersionMismach:
		return stepVersionMismatch, last
	case api.StatusFailed:
		if s := resultStep(last, kind); s == "" || s == name {
			return stepFailed, last
		}
		return stepNotStarted, nil
	case api.StatusSucceeded:
		if resultStep(last, kind) == name {
			return stepSucceeded, last
		}
	}
	return stepNotStarted, nil
}

// resultStep returns the step name a finished execute_<kind>_step reports.
func resultStep(c *api.CommandResult, kind string) string {
	var r map[string]json.RawMessage
	if json.Unmarshal(c.CommandResult, &r) != nil {
		return ""
	}
	var s struct {
		Step string `json:"step"`
	}
	json.Unmarshal(r[kind+"_step"], &s)
	return s.Step
}

// commandError renders a failed command's error as Ironic quotes it.
func commandError(c *api.CommandResult) string {
	if c == nil || c.CommandError == nil {
		return "unknown error"
	}
	return c.CommandError.Error()
}

// lastCommand returns the most recent command named name, or nil.
func lastCommand(cmds []api.CommandResult, name string) *api.CommandResult {
	for i := len(cmds) - 1; i >= 0; i-- {
		if cmds[i].CommandName == name {
			return &cmds[i]
		}
	}
	return nil
}

// agentNode is the node as agents receive it in step parameters (Ironic
// sends Node.as_dict): enough for root device hints and erase options,
// with secrets masked.
func agentNode(n *node.Node) map[string]any {
	dii := node.CloneMap(n.DriverInternalInfo)
	if _, ok := dii[diAgentToken]; ok {
		dii[diAgentToken] = api.MaskedToken
	}
	di := map[string]any{}
	for k, v := range n.DriverInfo {
		l := strings.ToLower(k)
		if strings.Contains(l, "password") || strings.Contains(l, "secret") || strings.Contains(l, "token") {
			v = api.MaskedToken
		}
		di[k] = v
	}
	str := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	return map[string]any{
		"uuid": n.UUID, "name": str(n.Name), "driver": n.Driver,
		"provision_state": string(n.ProvisionState), "target_provision_state": str(string(n.TargetProvisionState)),
		"power_state": str(string(n.PowerState)), "properties": orEmpty(n.Properties),
		"instance_info": orEmpty(n.InstanceInfo), "driver_internal_info": dii, "driver_info": di,
		"deploy_step": orEmpty(n.DeployStep), "clean_step": orEmpty(n.CleanStep),
		"boot_interface": n.Interfaces.Boot, "deploy_interface": n.Interfaces.Deploy,
		"boot_mode": str(n.BootMode), "maintenance": n.Maintenance,
	}
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// agentPorts renders ports as agents receive them.
func agentPorts(ports []*node.Port) []map[string]any {
	out := make([]map[string]any, 0, len(ports))
	for _, p := range ports {
		out = append(out, map[string]any{"uuid": p.UUID, "address": p.Address, "node_uuid": p.NodeUUID,
			"pxe_enabled": p.PXEEnabled, "local_link_connection": orEmpty(p.LocalLinkConnection),
			"physical_network": p.PhysicalNetwork, "extra": orEmpty(p.Extra)})
	}
	return out
}
