package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/shared/api"
)

// directDeploy is Ironic's "direct" deploy interface: the node network-boots
// an agent, the agent writes the image itself, and the conductor drives it
// step by step as its heartbeats arrive (ironic-ipa.md §4).
type directDeploy struct{ e *Engine }

// Conductor-side deploy steps, in Ironic's order and priorities. write_image
// runs on the agent; the others run here.
const (
	stepDeploy        = "deploy"
	stepWriteImage    = "write_image"
	stepPrepareBoot   = "prepare_instance_boot"
	stepTearDownAgent = "tear_down_agent"
	stepTenantNetwork = "switch_to_tenant_network"
	stepBootInstance  = "boot_instance"
	stepEraseMetadata = "erase_devices_metadata"
	stepEraseDevices  = "erase_devices"
	defaultBootMode   = "uefi"
)

var conductorSteps = map[string]int{stepDeploy: 100, stepWriteImage: 80, stepPrepareBoot: 60,
	stepTearDownAgent: 40, stepTenantNetwork: 30, stepBootInstance: 20}

func (d directDeploy) validate(n *node.Node) error {
	if d.e.opts.Agent == nil {
		return errors.New("the direct deploy interface needs an agent client, and this conductor has none")
	}
	if err := d.e.validateBoot(n); err != nil {
		return err
	}
	src, _ := n.InstanceInfo["image_source"].(string)
	if src == "" {
		return fmt.Errorf("Cannot validate image information for node %s because one or more parameters are missing from its instance_info: ['image_source']", n.UUID)
	}
	u, err := url.Parse(src)
	if err != nil {
		return fmt.Errorf("instance_info image_source %q is not a URL: %v", src, err)
	}
	switch u.Scheme {
	case "http", "https":
		if _, err := d.e.checksumOf(n); err != nil {
			return err
		}
	case "file":
		if d.e.opts.Images == nil {
			return fmt.Errorf("instance_info image_source %q is a local file, which needs the conductor's image cache (not configured)", src)
		}
	default:
		return fmt.Errorf("instance_info image_source %q: unsupported scheme %q (want http, https or file)", src, u.Scheme)
	}
	return nil
}

// checksumOf returns the image checksum fields Ironic requires for
// http(s) images.
func (e *Engine) checksumOf(n *node.Node) (api.ImageInfo, error) {
	ii := n.InstanceInfo
	var info api.ImageInfo
	info.OSHashAlgo, _ = ii["image_os_hash_algo"].(string)
	info.OSHashValue, _ = ii["image_os_hash_value"].(string)
	info.Checksum, _ = ii["image_checksum"].(string)
	if (info.OSHashAlgo == "") != (info.OSHashValue == "") || (info.OSHashAlgo == "" && info.Checksum == "") {
		return info, fmt.Errorf("image_source of node %s is an HTTP(S) URL, so instance_info needs image_os_hash_algo and image_os_hash_value (or image_checksum)", n.UUID)
	}
	if info.OSHashAlgo != "" && info.OSHashAlgo != "sha256" && info.OSHashAlgo != "sha512" && info.OSHashAlgo != "md5" {
		return info, fmt.Errorf("unsupported image_os_hash_algo %q (want sha256 or sha512)", info.OSHashAlgo)
	}
	return info, nil
}

// planDeploy builds a deployment's steps: the conductor's, plus in-band
// steps the operator asked for, by priority (highest first).
func (e *Engine) planDeploy(n *node.Node) []any {
	var steps []map[string]any
	for name, prio := range conductorSteps {
		steps = append(steps, map[string]any{"interface": "deploy", "step": name, "priority": prio, "args": map[string]any{}})
	}
	if user, ok := n.DriverInternalInfo[diUserDeploySteps].([]any); ok {
		for _, u := range user {
			s, _ := u.(map[string]any)
			if s == nil {
				continue
			}
			if _, builtin := conductorSteps[fmt.Sprint(s["step"])]; builtin {
				continue // a user step shadowing ours only changes its args
			}
			steps = append(steps, node.CloneMap(s))
		}
	}
	sort.SliceStable(steps, func(i, j int) bool { return num(steps[i]["priority"]) > num(steps[j]["priority"]) })
	out := make([]any, len(steps))
	for i, s := range steps {
		out[i] = s
	}
	return out
}

func num(v any) int {
	switch t := v.(type) {
	case int:
		return t
	case float64:
		return int(t)
	case json.Number:
		i, _ := t.Int64()
		return int(i)
	}
	return 0
}

// stepsOf returns a node's planned steps of a kind and the index of the
// current one.
func stepsOf(n *node.Node, stepsKey, indexKey string) ([]map[string]any, int) {
	raw, _ := n.DriverInternalInfo[stepsKey].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, r := range raw {
		if m, ok := r.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out, num(n.DriverInternalInfo[indexKey])
}

func (d directDeploy) deploy(ctx context.Context, n *node.Node) (node.Event, error) {
	e := d.e
	plan := e.planDeploy(n)
	for _, k := range []string{diCachedDeploySteps, diDeployProgress, diRootUUID, "bootloader_warning"} {
		setInternal(n, k, nil)
	}
	setInternal(n, diDeploySteps, plan)
	setInternal(n, diDeployStepIndex, 1) // step 0, "deploy", is this one
	setInternal(n, diDeployBootMode, BootMode(n))
	setInternal(n, diWholeDisk, true)
	n.DeployStep = node.CloneMap(plan[0].(map[string]any))
	if src, _ := n.InstanceInfo["image_source"].(string); strings.HasPrefix(src, "http") {
		n.InstanceInfo["image_url"] = src
	}
	if err := e.save(ctx, n); err != nil {
		return "", err
	}
	if err := d.bootAgent(ctx, n); err != nil {
		return "", err
	}
	return node.EventWait, nil
}

// bootAgent makes the node network-boot the agent: boot configuration,
// boot device PXE for the next boot, and a reboot (which also forgets any
// previous agent).
func (d directDeploy) bootAgent(ctx context.Context, n *node.Node) error {
	e := d.e
	forgetAgent(n)
	if err := e.networkBoot(ctx, n, "prepare the deploy ramdisk", Booter.PrepareRamdisk); err != nil {
		return err
	}
	if err := e.setBootDevice(ctx, n, node.BootPXE, false); err != nil {
		return err
	}
	p, err := e.drivers.Power(n)
	if err != nil {
		return err
	}
	return e.setPower(ctx, n, p, node.PowerReboot, 0)
}

// networkBoot runs one of the boot interface's operations for a node that
// boots over the network; "fake" boot interfaces have nothing to do.
func (e *Engine) networkBoot(ctx context.Context, n *node.Node, what string, op func(Booter, context.Context, *node.Node, []*node.Port) error) error {
	if n.Interfaces.Boot == "fake" {
		return nil
	}
	if e.opts.Booter == nil {
		return fmt.Errorf("%s: boot interface %s needs the conductor's network boot services, which are not configured", what, n.Interfaces.Boot)
	}
	ports, err := e.store.PortsOfNode(ctx, n.UUID)
	if err != nil {
		return err
	}
	if err := op(e.opts.Booter, ctx, n, ports); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func (d directDeploy) tearDown(ctx context.Context, n *node.Node) error {
	e := d.e
	p, err := e.drivers.Power(n)
	if err != nil {
		return err
	}
	if err := e.setPower(ctx, n, p, node.PowerOff, 0); err != nil {
		return err
	}
	if err := e.cleanUpBoot(ctx, n); err != nil {
		return err
	}
	for _, k := range []string{diDeploySteps, diDeployStepIndex, diCachedDeploySteps, diDeployProgress} {
		setInternal(n, k, nil)
	}
	return nil
}

func (d directDeploy) clean(ctx context.Context, n *node.Node, manual bool) (node.Event, error) {
	for _, k := range []string{diCleanStepIndex, diCachedCleanSteps} {
		setInternal(n, k, nil)
	}
	if !manual {
		setInternal(n, diCleanSteps, nil)
	}
	n.CleanStep = nil
	if err := d.e.save(ctx, n); err != nil {
		return "", err
	}
	if err := d.bootAgent(ctx, n); err != nil {
		return "", err
	}
	return node.EventWait, nil
}

func (d directDeploy) abort(ctx context.Context, n *node.Node) error {
	return d.tearDownRamdisk(ctx, n)
}

// tearDownRamdisk powers the node off and removes its ramdisk boot
// configuration, after a failed, aborted or timed-out operation.
func (d directDeploy) tearDownRamdisk(ctx context.Context, n *node.Node) error {
	e := d.e
	forgetAgent(n)
	var errs []error
	if p, err := e.drivers.Power(n); err == nil {
		errs = append(errs, e.setPower(ctx, n, p, node.PowerOff, 0))
	} else {
		errs = append(errs, err)
	}
	errs = append(errs, e.cleanUpBoot(ctx, n))
	return errors.Join(errs...)
}

// --- deploy steps on heartbeats -----------------------------------------

// continueDeploy runs on a heartbeat in "wait call-back": it fetches the
// agent's steps once, reads the agent's command list, and moves the
// deployment as far as it can (the next agent step is started and awaited
// on later heartbeats). What to do is derived from the stored plan and the
// agent's report, so a repeated heartbeat repeats nothing.
func (e *Engine) continueDeploy(ctx context.Context, n *node.Node, cmds []api.CommandResult) {
	ep, ok := endpoint(n)
	if !ok || e.opts.Agent == nil || !agentDriven(n) {
		return
	}
	if _, cached := n.DriverInternalInfo[diCachedDeploySteps]; !cached {
		steps, err := e.fetchSteps(ctx, n, ep, "deploy")
		if errors.Is(err, ErrAgentBusy) || errors.Is(err, ErrAgentUnreachable) {
			e.log.Warn("get deploy steps: retrying on the next heartbeat", "node", n.UUID, "err", err)
			return
		}
		if err != nil {
			e.failDeploy(ctx, n, fmt.Sprintf("Deploy step deploy.deploy failed on node %s. Could not get deploy steps from the agent: %v", n.UUID, err))
			return
		}
		setInternal(n, diCachedDeploySteps, steps)
		if err := e.save(ctx, n); err != nil {
			e.log.Error("save cached deploy steps", "node", n.UUID, "err", err)
			return
		}
	}
	cmds, ok = e.commandsOf(ctx, n, ep, cmds)
	if !ok {
		return
	}
	e.runDeploySteps(ctx, n, ep, cmds)
}

// commandsOf returns cmds, or when nil the agent's command list; false
// when the agent could not be asked (the next heartbeat tries again).
func (e *Engine) commandsOf(ctx context.Context, n *node.Node, ep AgentEndpoint, cmds []api.CommandResult) ([]api.CommandResult, bool) {
	if cmds != nil {
		return cmds, true
	}
	cmds, err := e.opts.Agent.Commands(ctx, ep)
	if err != nil {
		e.log.Warn("list agent commands: retrying on the next heartbeat", "node", n.UUID, "err", err)
		return nil, false
	}
	return cmds, true
}

// fetchSteps asks the agent for its steps of a kind and returns them as
// the agent sent them (map of hardware manager to steps).
func (e *Engine) fetchSteps(ctx context.Context, n *node.Node, ep AgentEndpoint, kind string) (map[string]any, error) {
	ports, err := e.store.PortsOfNode(ctx, n.UUID)
	if err != nil {
		return nil, err
	}
	res, err := e.opts.Agent.Execute(ctx, ep, kind+".get_"+kind+"_steps", map[string]any{"node": agentNode(n), "ports": agentPorts(ports)}, true)
	if err != nil {
		return nil, err
	}
	if res.CommandStatus != api.StatusSucceeded {
		return nil, fmt.Errorf("get_%s_steps %s: %s", kind, res.CommandStatus, commandError(res))
	}
	var r map[string]any
	if err := json.Unmarshal(res.CommandResult, &r); err != nil {
		return nil, fmt.Errorf("malformed get_%s_steps result: %v", kind, err)
	}
	steps, ok := r[kind+"_steps"].(map[string]any)
	hw, ok2 := r["hardware_manager_version"].(map[string]any)
	if !ok || !ok2 {
		return nil, fmt.Errorf("get_%s_steps result lacks %s_steps or hardware_manager_version", kind, kind)
	}
	for mgr, list := range steps {
		l, _ := list.([]any)
		for _, s := range l {
			m, _ := s.(map[string]any)
			if m["interface"] == nil || m["step"] == nil || m["priority"] == nil {
				return nil, fmt.Errorf("agent %s step of %s lacks interface, step or priority: %v", kind, mgr, s)
			}
		}
	}
	setInternal(n, diHWManagerVersion, hw)
	return steps, nil
}

func (e *Engine) runDeploySteps(ctx context.Context, n *node.Node, ep AgentEndpoint, cmds []api.CommandResult) {
	steps, idx := stepsOf(n, diDeploySteps, diDeployStepIndex)
	for idx < len(steps) {
		st := steps[idx]
		name := fmt.Sprint(st["step"])
		if conductorRuns(n, name) {
			if !e.resumeIfWaiting(ctx, n) {
				return
			}
			n.DeployStep = node.CloneMap(st)
			if err := e.save(ctx, n); err != nil {
				e.log.Error("record deploy step", "node", n.UUID, "err", err)
				return
			}
			if err := e.runConductorStep(ctx, n, ep, name); errors.Is(err, errRetryLater) {
				e.log.Warn("deploy step: retrying on the next heartbeat", "node", n.UUID, "step", name, "err", err)
				e.advance(ctx, n, node.EventWait)
				return
			} else if err != nil {
				e.failDeploy(ctx, n, fmt.Sprintf("Deploy step deploy.%s failed on node %s. %v", name, n.UUID, err))
				return
			}
			idx++
			setInternal(n, diDeployStepIndex, idx)
			if err := e.save(ctx, n); err != nil {
				e.log.Error("record deploy progress", "node", n.UUID, "err", err)
				return
			}
			continue
		}
		status, cmd := agentStep(cmds, "deploy", name)
		switch status {
		case stepRunning:
			e.recordProgress(ctx, n, name, cmd)
			return
		case stepFailed:
			e.failDeploy(ctx, n, fmt.Sprintf("Deploy step deploy.%s failed on node %s. %s", name, n.UUID, commandError(cmd)))
			return
		case stepVersionMismatch:
			e.failDeploy(ctx, n, fmt.Sprintf("Deploy step deploy.%s on node %s: the agent reports a hardware manager version mismatch; redeploy.", name, n.UUID))
			return
		case stepSucceeded:
			idx++
			setInternal(n, diDeployStepIndex, idx)
			setInternal(n, diDeployProgress, nil)
			if name == stepWriteImage {
				if w := imageWriteOf(cmd); w != nil {
					setInternal(n, diImageWrite, w)
				}
			}
			continue
		}
		// Not started: start it, then wait for the agent to call back.
		if !e.resumeIfWaiting(ctx, n) {
			return
		}
		n.DeployStep = node.CloneMap(st)
		params, err := e.deployStepParams(ctx, n, st)
		if err != nil {
			e.failDeploy(ctx, n, fmt.Sprintf("Deploy step deploy.%s failed on node %s. %v", name, n.UUID, err))
			return
		}
		res, err := e.opts.Agent.Execute(ctx, ep, "deploy.execute_deploy_step", params, false)
		switch {
		case errors.Is(err, ErrAgentBusy), errors.Is(err, ErrAgentUnreachable):
			e.log.Warn("start deploy step: retrying on the next heartbeat", "node", n.UUID, "step", name, "err", err)
		case err != nil:
			e.failDeploy(ctx, n, fmt.Sprintf("Deploy step deploy.%s failed on node %s. %v", name, n.UUID, err))
			return
		case res.CommandStatus == api.StatusFailed:
			e.failDeploy(ctx, n, fmt.Sprintf("Deploy step deploy.%s failed on node %s. %s", name, n.UUID, commandError(res)))
			return
		default:
			e.log.Info("deploy step started on the agent", "node", n.UUID, "step", name)
		}
		e.advance(ctx, n, node.EventWait)
		return
	}
	// Every step ran.
	n.DeployStep = nil
	for _, k := range []string{diDeploySteps, diDeployStepIndex, diCachedDeploySteps, diDeployProgress, diUserDeploySteps} {
		setInternal(n, k, nil)
	}
	if !e.resumeIfWaiting(ctx, n) {
		return
	}
	e.advance(ctx, n, node.EventDone)
}

// resumeIfWaiting moves a node from its wait state back to work.
func (e *Engine) resumeIfWaiting(ctx context.Context, n *node.Node) bool {
	if n.ProvisionState != node.StateDeployWait && n.ProvisionState != node.StateCleanWait {
		return true
	}
	return e.advance(ctx, n, node.EventResume)
}

// deployStepParams builds execute_deploy_step's parameters; write_image
// gets the image_info.
func (e *Engine) deployStepParams(ctx context.Context, n *node.Node, st map[string]any) (map[string]any, error) {
	ports, err := e.store.PortsOfNode(ctx, n.UUID)
	if err != nil {
		return nil, err
	}
	step := node.CloneMap(st)
	if step["step"] == stepWriteImage {
		info, err := e.imageInfo(ctx, n)
		if err != nil {
			return nil, err
		}
		var cd any
		if v, ok := n.InstanceInfo["configdrive"]; ok {
			cd = v
		}
		step["args"] = map[string]any{"image_info": info, "configdrive": cd}
	}
	delete(step, "priority")
	return map[string]any{"step": step, "node": agentNode(n), "ports": agentPorts(ports),
		"deploy_version": n.DriverInternalInfo[diHWManagerVersion]}, nil
}

// imageInfo builds write_image's image_info from instance_info.
func (e *Engine) imageInfo(ctx context.Context, n *node.Node) (*api.ImageInfo, error) {
	src, _ := n.InstanceInfo["image_source"].(string)
	info, err := e.checksumOf(n)
	u, _ := url.Parse(src)
	local := u != nil && u.Scheme == "file"
	if err != nil && !local {
		return nil, err
	}
	info.ID = path.Base(u.Path)
	info.URLs = []string{src}
	source := e.opts.ImageDownloadSource
	for _, m := range []map[string]any{n.DriverInfo, n.InstanceInfo} {
		if s, ok := m["image_download_source"].(string); ok && s != "" {
			source = s
		}
	}
	viaCache := local || source == "local"
	if viaCache {
		if e.opts.Images == nil {
			return nil, fmt.Errorf("image %s must be served by the conductor's image cache, which is not configured", src)
		}
		cached, err := e.opts.Images.Prepare(ctx, src, info)
		if err != nil {
			return nil, fmt.Errorf("cache image %s: %w", src, err)
		}
		info = cached
		info.ID = path.Base(u.Path)
	}
	info.DiskFormat, _ = n.InstanceInfo["image_disk_format"].(string)
	if info.DiskFormat == "" {
		info.DiskFormat = "raw"
	}
	info.StreamRawImages = true
	info.ImageType = "whole-disk"
	info.NodeUUID = n.UUID
	if hints, ok := n.InstanceInfo["root_device"].(map[string]any); ok {
		info.RootDevice = hints
	} else if hints, ok := n.Properties["root_device"].(map[string]any); ok {
		info.RootDevice = hints
	}
	return &info, nil
}

// recordProgress copies a running step's progress onto the node, so the
// API shows it; it writes only when the progress moved.
func (e *Engine) recordProgress(ctx context.Context, n *node.Node, step string, cmd *api.CommandResult) {
	if cmd == nil || cmd.Progress == nil {
		return
	}
	if old, ok := n.DriverInternalInfo[diDeployProgress].(map[string]any); ok && num(old["bytes"]) == int(cmd.Progress.Bytes) {
		return
	}
	setInternal(n, diDeployProgress, progressOf(step, cmd.Progress))
	if err := e.save(ctx, n); err != nil {
		e.log.Warn("record deploy progress", "node", n.UUID, "err", err)
	}
}

// imageWriteOf reads what an Ingot agent reports of a finished write_image
// (bytes, seconds, format, resumes, checksum) for
// driver_internal_info.image_write; nil for an agent that reports nothing
// (IPA answers null).
func imageWriteOf(cmd *api.CommandResult) map[string]any {
	if cmd == nil || len(cmd.CommandResult) == 0 {
		return nil
	}
	var res struct {
		DeployResult *struct {
			Bytes    int64   `json:"bytes"`
			Seconds  float64 `json:"seconds"`
			Format   string  `json:"format"`
			Resumes  int     `json:"resumes"`
			Algo     string  `json:"checksum_algo"`
			Checksum string  `json:"checksum"`
		} `json:"deploy_result"`
	}
	if json.Unmarshal(cmd.CommandResult, &res) != nil || res.DeployResult == nil || res.DeployResult.Bytes <= 0 {
		return nil
	}
	r := res.DeployResult
	w := map[string]any{"bytes": r.Bytes, "seconds": r.Seconds, "format": r.Format, "resumes": r.Resumes}
	if r.Seconds > 0 {
		w["bytes_per_second"] = int64(float64(r.Bytes) / r.Seconds)
	}
	if r.Algo != "" && r.Checksum != "" {
		w["checksum"] = r.Algo + ":" + r.Checksum
	}
	return w
}

// progressOf renders an agent's progress for driver_internal_info.
func progressOf(step string, p *api.Progress) map[string]any {
	prog := map[string]any{"step": step, "bytes": p.Bytes, "percent": p.Percent}
	if p.Total > 0 {
		prog["total"] = p.Total
	}
	if p.BytesPerSecond > 0 {
		prog["bytes_per_second"] = int64(p.BytesPerSecond)
	}
	if p.Resumes > 0 {
		prog["resumes"] = p.Resumes
	}
	if p.Phase != "" {
		prog["phase"] = p.Phase
	}
	return prog
}

// runConductorStep runs one of the conductor's own deploy steps.
func (e *Engine) runConductorStep(ctx context.Context, n *node.Node, ep AgentEndpoint, name string) error {
	switch name {
	case stepPrepareBoot:
		return e.prepareInstanceBoot(ctx, n, ep)
	case stepTearDownAgent:
		return e.tearDownAgent(ctx, n, ep)
	case stepTenantNetwork:
		return nil // network interface "noop": nothing to switch
	case stepBootInstance:
		p, err := e.drivers.Power(n)
		if err != nil {
			return err
		}
		return e.setPower(ctx, n, p, node.PowerOn, 0)
	case stepDeploy:
		return nil // ran when the deployment started
	case stepWriteImage:
		return e.iscsiWriteImage(ctx, n, ep) // conductorRuns: only under the iscsi interface
	}
	return fmt.Errorf("unknown conductor step %q", name)
}

// prepareInstanceBoot: read the partition UUIDs, install the bootloader in
// UEFI mode, switch the boot configuration and device to the local disk.
func (e *Engine) prepareInstanceBoot(ctx context.Context, n *node.Node, ep AgentEndpoint) error {
	res, err := e.opts.Agent.Execute(ctx, ep, "standby.get_partition_uuids", map[string]any{}, true)
	if err != nil {
		return fmt.Errorf("get partition UUIDs: %w", err)
	}
	if res.CommandStatus != api.StatusSucceeded {
		return fmt.Errorf("get partition UUIDs: %s", commandError(res))
	}
	var parts api.PartitionUUIDs
	json.Unmarshal(res.CommandResult, &parts)
	if parts.RootUUID != "" {
		setInternal(n, diRootUUID, parts.RootUUID)
	}
	uefi := BootMode(n) == "uefi"
	if uefi {
		var efi any
		if parts.EFISystemUUID != "" {
			efi = parts.EFISystemUUID
		}
		params := map[string]any{"root_uuid": parts.RootUUID, "efi_system_part_uuid": efi,
			"prep_boot_part_uuid": nil, "target_boot_mode": "uefi"}
		res, err := e.opts.Agent.Execute(ctx, ep, "image.install_bootloader", params, false)
		if err == nil {
			err = e.awaitCommand(ctx, ep, "install_bootloader", res)
		}
		if err != nil {
			// A whole-disk image carries its own boot loader; firmware can
			// still boot it from the default path, so Ironic logs and goes
			// on rather than failing the deployment.
			e.log.Warn("installing the UEFI boot entry failed; the firmware's default boot path must boot the whole-disk image", "node", n.UUID, "err", err)
			setInternal(n, "bootloader_warning", fmt.Sprintf("Failed to install a bootloader when deploying node %s: %v", n.UUID, err))
		}
	}
	if err := e.networkBoot(ctx, n, "prepare local boot", Booter.PrepareInstance); err != nil {
		return err
	}
	if err := e.setBootDevice(ctx, n, node.BootDisk, true); err != nil {
		return fmt.Errorf("Failed to change the boot device to disk: %w", err)
	}
	return nil
}

// awaitCommand polls the agent until an asynchronous command finished.
func (e *Engine) awaitCommand(ctx context.Context, ep AgentEndpoint, name string, started *api.CommandResult) error {
	res := started
	deadline := time.Now().Add(e.opts.CommandWaitTimeout)
	for res.CommandStatus == api.StatusRunning {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still running after %s", name, e.opts.CommandWaitTimeout)
		}
		if err := sleep(ctx, e.opts.CommandPollInterval); err != nil {
			return err
		}
		cmds, err := e.opts.Agent.Commands(ctx, ep)
		if err != nil {
			continue // transient; the deadline bounds it
		}
		if c := lastCommand(cmds, name); c != nil {
			res = c
		}
	}
	if res.CommandStatus != api.StatusSucceeded {
		return errors.New(commandError(res))
	}
	return nil
}

// tearDownAgent asks the agent to power the node off, waits for the BMC to
// agree, and forces it off otherwise (Ironic's tear_down_agent).
// powerOffAnswerTimeout bounds the wait for the answer to standby.power_off.
const powerOffAnswerTimeout = 10 * time.Second

func (e *Engine) tearDownAgent(ctx context.Context, n *node.Node, ep AgentEndpoint) error {
	p, err := e.drivers.Power(n)
	if err != nil {
		return err
	}
	// The agent answers before it powers off, but an answer lost with the
	// machine must not hold the deploy for the client's whole timeout.
	actx, cancel := context.WithTimeout(ctx, powerOffAnswerTimeout)
	_, err = e.opts.Agent.Execute(actx, ep, "standby.power_off", map[string]any{}, false)
	cancel()
	if err != nil {
		e.log.Info("agent power off failed; powering off out of band", "node", n.UUID, "err", err)
	} else {
		for range e.opts.PostDeployPowerOffRetries {
			if err := sleep(ctx, e.opts.PostDeployPowerOffInterval); err != nil {
				return err
			}
			if st, err := p.PowerState(ctx); err == nil && st == node.PowerOff {
				n.PowerState = node.PowerOff
				forgetAgent(n)
				return nil
			}
		}
		e.log.Info("node still on after the agent's power off; forcing it off", "node", n.UUID)
	}
	return e.setPower(ctx, n, p, node.PowerOff, 0)
}

// failDeploy ends a deployment in "deploy failed": the node is powered
// off (Ironic's power_off_after_deploy_failure) and forgets its agent.
func (e *Engine) failDeploy(ctx context.Context, n *node.Node, msg string) {
	e.endDeploy(ctx, n, node.EventFail, msg)
}

// endDeploy fails a deployment along ev (fail, or timeout).
func (e *Engine) endDeploy(ctx context.Context, n *node.Node, ev node.Event, msg string) {
	if n.ProvisionState == node.StateDeployWait || n.ProvisionState == node.StateDeploying {
		d := directDeploy{e: e}
		if err := d.tearDownRamdisk(ctx, n); err != nil {
			msg += fmt.Sprintf(" (cleaning up afterwards also failed: %v)", err)
		}
	}
	e.fail(ctx, n, ev, msg)
}

// failClean ends cleaning in "clean failed": the node is powered off, put
// into maintenance with fault "clean failure" as Ironic does, and the
// operator must "manage" it again.
func (e *Engine) failClean(ctx context.Context, n *node.Node, msg string) {
	e.endClean(ctx, n, node.EventFail, msg)
}

// endClean fails cleaning along ev (fail, or timeout).
func (e *Engine) endClean(ctx context.Context, n *node.Node, ev node.Event, msg string) {
	d := directDeploy{e: e}
	if err := d.tearDownRamdisk(ctx, n); err != nil {
		msg += fmt.Sprintf(" (cleaning up afterwards also failed: %v)", err)
	}
	n.Maintenance = true
	n.Fault = "clean failure"
	n.MaintenanceReason = msg
	e.fail(ctx, n, ev, msg)
}

// --- clean steps on heartbeats --------------------------------------------

// continueClean runs on a heartbeat in "clean wait": it plans the cleaning
// from the agent's steps on the first heartbeat (automated: the agent's
// steps with a positive priority, after the conductor's overrides; manual:
// the operator's steps), then starts each step and waits for it.
func (e *Engine) continueClean(ctx context.Context, n *node.Node, cmds []api.CommandResult) {
	ep, ok := endpoint(n)
	if !ok || e.opts.Agent == nil || !agentDriven(n) {
		return
	}
	manual := n.TargetProvisionState == node.StateManageable
	if _, planned := n.DriverInternalInfo[diCleanStepIndex]; !planned {
		steps, err := e.fetchSteps(ctx, n, ep, "clean")
		if errors.Is(err, ErrAgentBusy) || errors.Is(err, ErrAgentUnreachable) {
			return
		}
		if err != nil {
			e.failClean(ctx, n, fmt.Sprintf("Failed to get clean steps from the agent of node %s: %v", n.UUID, err))
			return
		}
		plan, err := e.planClean(n, steps, manual)
		if err != nil {
			e.failClean(ctx, n, err.Error())
			return
		}
		setInternal(n, diCachedCleanSteps, steps)
		setInternal(n, diCleanSteps, plan)
		setInternal(n, diCleanStepIndex, 0)
		if err := e.save(ctx, n); err != nil {
			e.log.Error("save clean plan", "node", n.UUID, "err", err)
			return
		}
	}
	cmds, ok = e.commandsOf(ctx, n, ep, cmds)
	if !ok {
		return
	}
	steps, idx := stepsOf(n, diCleanSteps, diCleanStepIndex)
	for idx < len(steps) {
		st := steps[idx]
		name := fmt.Sprint(st["step"])
		status, cmd := agentStep(cmds, "clean", name)
		switch status {
		case stepRunning:
			return
		case stepFailed:
			e.failClean(ctx, n, fmt.Sprintf("Clean step deploy.%s failed on node %s: %s", name, n.UUID, commandError(cmd)))
			return
		case stepVersionMismatch:
			e.failClean(ctx, n, fmt.Sprintf("Clean step deploy.%s on node %s: the agent reports a hardware manager version mismatch.", name, n.UUID))
			return
		case stepSucceeded:
			idx++
			setInternal(n, diCleanStepIndex, idx)
			continue
		}
		if !e.resumeIfWaiting(ctx, n) {
			return
		}
		n.CleanStep = node.CloneMap(st)
		ports, err := e.store.PortsOfNode(ctx, n.UUID)
		if err != nil {
			e.log.Error("list ports", "node", n.UUID, "err", err)
			return
		}
		params := map[string]any{"step": st, "node": agentNode(n), "ports": agentPorts(ports),
			"clean_version": n.DriverInternalInfo[diHWManagerVersion]}
		res, err := e.opts.Agent.Execute(ctx, ep, "clean.execute_clean_step", params, false)
		switch {
		case errors.Is(err, ErrAgentBusy), errors.Is(err, ErrAgentUnreachable):
			e.log.Warn("start clean step: retrying on the next heartbeat", "node", n.UUID, "step", name, "err", err)
		case err != nil:
			e.failClean(ctx, n, fmt.Sprintf("Clean step deploy.%s failed on node %s: %v", name, n.UUID, err))
			return
		case res.CommandStatus == api.StatusFailed:
			e.failClean(ctx, n, fmt.Sprintf("Clean step deploy.%s failed on node %s: %s", name, n.UUID, commandError(res)))
			return
		}
		e.advance(ctx, n, node.EventWait)
		return
	}
	e.finishCleaning(ctx, n, manual)
}

// planClean chooses the clean steps to run.
func (e *Engine) planClean(n *node.Node, agentSteps map[string]any, manual bool) ([]any, error) {
	available := map[string]map[string]any{}
	for _, list := range agentSteps {
		l, _ := list.([]any)
		for _, s := range l {
			m, _ := s.(map[string]any)
			key := fmt.Sprint(m["interface"]) + "." + fmt.Sprint(m["step"])
			if old, ok := available[key]; !ok || num(m["priority"]) > num(old["priority"]) {
				available[key] = m
			}
		}
	}
	var plan []map[string]any
	if manual {
		requested, _ := n.DriverInternalInfo[diCleanSteps].([]any)
		for _, r := range requested {
			req, _ := r.(map[string]any)
			key := fmt.Sprint(req["interface"]) + "." + fmt.Sprint(req["step"])
			got, ok := available[key]
			if !ok {
				return nil, fmt.Errorf("Clean step %s requested for node %s is not supported by its agent", key, n.UUID)
			}
			s := node.CloneMap(got)
			if args, ok := req["args"].(map[string]any); ok {
				s["args"] = args
			}
			plan = append(plan, s)
		}
	} else {
		for key, s := range available {
			prio := num(s["priority"])
			if p, ok := e.opts.CleanStepPriorities[strings.TrimPrefix(key, "deploy.")]; ok {
				prio = p
			}
			if prio > 0 {
				s = node.CloneMap(s)
				s["priority"] = prio
				plan = append(plan, s)
			}
		}
		sort.SliceStable(plan, func(i, j int) bool { return num(plan[i]["priority"]) > num(plan[j]["priority"]) })
	}
	out := make([]any, len(plan))
	for i, s := range plan {
		out[i] = s
	}
	return out, nil
}

// finishCleaning tears the cleaning ramdisk down and makes the node
// available (automated) or manageable (manual).
func (e *Engine) finishCleaning(ctx context.Context, n *node.Node, manual bool) {
	if !e.resumeIfWaiting(ctx, n) {
		return
	}
	d := directDeploy{e: e}
	if err := d.tearDownRamdisk(ctx, n); err != nil {
		e.failClean(ctx, n, fmt.Sprintf("Failed to tear down cleaning of node %s: %v", n.UUID, err))
		return
	}
	n.CleanStep = nil
	for _, k := range []string{diCleanSteps, diCleanStepIndex, diCachedCleanSteps} {
		setInternal(n, k, nil)
	}
	ev := node.EventDone
	if manual {
		ev = node.EventManage
	}
	e.advance(ctx, n, ev)
}
