package extension

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"syscall"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/cmdapi"
	"github.com/ingot-dev/ingot/shared/api"
)

func versions() map[string]string {
	return map[string]string{hardwareManagerKey: HardwareManagerVersion}
}

func boolp(b bool) *bool { return &b }

// DeploySteps are the in-band deploy steps the agent offers (priority 0:
// run only when a conductor asks, as IPA's generic manager does).
func DeploySteps() []api.Step {
	return []api.Step{
		{Interface: "deploy", Step: "erase_devices_metadata", Priority: 0},
		{Interface: "deploy", Step: "write_image", Priority: 0},
	}
}

// CleanSteps are the automated clean steps, with IPA's priorities.
func CleanSteps() []api.Step {
	return []api.Step{
		{Interface: "deploy", Step: "erase_devices", Priority: 10, Abortable: boolp(true)},
		{Interface: "deploy", Step: "erase_devices_metadata", Priority: 99, Abortable: boolp(true)},
	}
}

func (x *Extensions) getDeploySteps(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	return api.StepsResult{DeploySteps: map[string][]api.Step{HardwareManager: DeploySteps()}, HardwareManagerVersion: versions()}, nil
}

func (x *Extensions) getCleanSteps(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	return api.StepsResult{CleanSteps: map[string][]api.Step{HardwareManager: CleanSteps()}, HardwareManagerVersion: versions()}, nil
}

// checkVersion compares the conductor's view of the hardware managers
// with the agent's; a difference ends the command in
// CLEAN_VERSION_MISMATCH so the conductor refreshes its steps.
func checkVersion(p cmdapi.Params, key string) error {
	var given map[string]string
	if err := optional(p, key, &given); err != nil {
		return cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	if len(given) == 0 || maps.Equal(given, versions()) {
		return nil
	}
	err := fmt.Errorf("%w: conductor has %v, agent has %v", cmdapi.ErrVersionMismatch, given, versions())
	return &cmdapi.Error{Type: "VersionMismatch", Message: "Hardware managers version mismatch", Details: err.Error(), Err: err}
}

// stepParams are what execute_deploy_step / execute_clean_step carry.
type stepParams struct {
	step api.Step
	raw  map[string]any // the step exactly as sent, echoed in the result
	node map[string]any
}

func readStep(p cmdapi.Params) (stepParams, error) {
	var sp stepParams
	if err := decode(p, "step", &sp.step); err != nil {
		return sp, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	if err := decode(p, "step", &sp.raw); err != nil {
		return sp, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	if err := optional(p, "node", &sp.node); err != nil {
		return sp, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	return sp, nil
}

func unknownStep(kind, step string) error {
	return cmdErr("HardwareManagerMethodNotFound", "No HardwareManager found to handle method",
		fmt.Errorf("%s step %q is not supported by this agent", kind, step))
}

func (x *Extensions) executeDeployStep(ctx context.Context, p cmdapi.Params, progress func(api.Progress)) (any, error) {
	if err := checkVersion(p, "deploy_version"); err != nil {
		return nil, err
	}
	sp, err := readStep(p)
	if err != nil {
		return nil, err
	}
	var result any
	switch sp.step.Step {
	case "write_image":
		var args struct {
			ImageInfo   *api.ImageInfo `json:"image_info"`
			Configdrive any            `json:"configdrive"`
		}
		if err := remarshal(sp.step.Args, &args); err != nil || args.ImageInfo == nil {
			if err == nil {
				err = errors.New("step args.image_info is required")
			}
			return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
		}
		w, err := x.writeImage(ctx, *args.ImageInfo, args.Configdrive, sp.node, progress)
		if err != nil {
			return nil, err
		}
		result = w
	case "erase_devices_metadata":
		if result, err = x.eraseMetadata(ctx, sp.node, progress); err != nil {
			return nil, err
		}
	default:
		return nil, unknownStep("deploy", sp.step.Step)
	}
	return map[string]any{"deploy_result": result, "deploy_step": maskedStep(sp.raw)}, nil
}

// maskedStep is a step to echo in a result: a config drive's user data
// stays out of the command history and the conductor's records.
func maskedStep(raw map[string]any) map[string]any {
	args, ok := raw["args"].(map[string]any)
	if !ok || args["configdrive"] == nil || args["configdrive"] == "" {
		return raw
	}
	out := maps.Clone(raw)
	out["args"] = maps.Clone(args)
	out["args"].(map[string]any)["configdrive"] = "******"
	return out
}

func (x *Extensions) executeCleanStep(ctx context.Context, p cmdapi.Params, progress func(api.Progress)) (any, error) {
	if err := checkVersion(p, "clean_version"); err != nil {
		return nil, err
	}
	sp, err := readStep(p)
	if err != nil {
		return nil, err
	}
	var result any
	switch sp.step.Step {
	case "erase_devices_metadata":
		result, err = x.eraseMetadata(ctx, sp.node, progress)
	case "erase_devices":
		result, err = x.eraseDevices(ctx, sp.node, progress)
	default:
		return nil, unknownStep("clean", sp.step.Step)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"clean_result": result, "clean_step": sp.raw}, nil
}

// readOnly reports errors from opening a write-protected disk.
func readOnly(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission)
}

// eachDisk opens every disk in turn (up to concurrency at once) and calls
// fn; read-only disks are skipped when skipRO, else they fail the step.
func (x *Extensions) eachDisk(ctx context.Context, node map[string]any, concurrency int, fn func(ctx context.Context, name string, d Device) (any, error)) (map[string]any, error) {
	skipRO, err := nodeBool(node, "agent_erase_skip_read_only", false)
	if err != nil {
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	disks, err := x.disks(ctx)
	if err != nil {
		return nil, cmdErr("BlockDeviceEraseError", "Error erasing block device", err)
	}
	if concurrency < 1 {
		concurrency = 1
	}
	var (
		mu      sync.Mutex
		results = map[string]any{}
		errs    []error
		wg      sync.WaitGroup
		sem     = make(chan struct{}, concurrency)
	)
	for _, disk := range disks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := x.opts.Open(disk.Name)
			if err == nil {
				var r any
				r, err = fn(ctx, disk.Name, d)
				if cerr := d.Close(); err == nil {
					err = cerr
				}
				if err == nil {
					mu.Lock()
					results[disk.Name] = r
					mu.Unlock()
					return
				}
			} else if readOnly(err) && skipRO {
				x.opts.Log.Warn("skipping read-only disk", "disk", disk.Name, "err", err)
				return
			}
			mu.Lock()
			errs = append(errs, fmt.Errorf("%s: %w", disk.Name, err))
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return results, cmdErr("BlockDeviceEraseError", "Error erasing block device", errors.Join(errs...))
	}
	return results, nil
}

// eraseMetadata wipes partition tables and signatures of every disk.
func (x *Extensions) eraseMetadata(ctx context.Context, node map[string]any, progress func(api.Progress)) (any, error) {
	res, err := x.eachDisk(ctx, node, 1, func(ctx context.Context, name string, d Device) (any, error) {
		wiped, err := blockdev.WipeMetadata(ctx, d, d.Size())
		if err != nil {
			return nil, err
		}
		if err := d.RereadPartitions(); err != nil {
			x.opts.Log.Warn("could not re-read the partition table", "disk", name, "err", err)
		}
		names := make([]string, 0, len(wiped))
		for _, w := range wiped {
			names = append(names, fmt.Sprintf("%s@%d", w.Name, w.Offset))
		}
		x.opts.Log.Info("disk metadata erased", "disk", name, "signatures", names)
		return names, nil
	})
	if err != nil {
		return nil, err
	}
	x.forgetWrite()
	return res, nil
}

// eraseDevices overwrites every disk, honouring
// agent_erase_devices_iterations (default 1), agent_erase_devices_zeroize
// (default true) and disk_erasure_concurrency (default 1).
func (x *Extensions) eraseDevices(ctx context.Context, node map[string]any, progress func(api.Progress)) (any, error) {
	iter, err := nodeInt(node, "agent_erase_devices_iterations", 1)
	if err != nil {
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	zero, err := nodeBool(node, "agent_erase_devices_zeroize", true)
	if err != nil {
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	conc, err := nodeInt(node, "disk_erasure_concurrency", 1)
	if err != nil {
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	if iter == 0 && !zero {
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", blockdev.ErrNothingToErase)
	}
	var mu sync.Mutex
	done := map[string]int64{}
	total := map[string]int64{}
	report := func(name string, d, t int64) {
		mu.Lock()
		done[name], total[name] = d, t
		var sd, st int64
		for k := range total {
			sd += done[k]
			st += total[k]
		}
		mu.Unlock()
		pr := api.Progress{Phase: "erase", Bytes: sd, Total: st}
		if st > 0 {
			pr.Percent = float64(sd) * 100 / float64(st)
		}
		progress(pr)
	}
	_, err = x.eachDisk(ctx, node, conc, func(ctx context.Context, name string, d Device) (any, error) {
		x.opts.Log.Info("erasing disk", "disk", name, "bytes", d.Size(), "iterations", iter, "zeroize", zero)
		err := blockdev.Erase(ctx, d, d.Size(), blockdev.EraseOptions{Iterations: iter, Zeroize: zero,
			Progress: func(dn, t int64) { report(name, dn, t) }})
		return nil, err
	})
	if err != nil {
		return nil, err
	}
	x.forgetWrite()
	return nil, nil
}

// forgetWrite drops the record of the last image once disks are wiped.
func (x *Extensions) forgetWrite() {
	x.mu.Lock()
	x.written, x.uuids = "", map[string]any{}
	x.mu.Unlock()
}

// remarshal converts a decoded JSON value into a typed one.
func remarshal(from, to any) error {
	b, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, to)
}
