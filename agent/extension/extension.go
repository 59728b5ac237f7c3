// Package extension implements the agent's commands, grouped in
// ironic-python-agent's extensions: standby (write an image, partition
// UUIDs, sync, power off, reboot), deploy and clean (steps: write_image,
// erase_devices_metadata, erase_devices), image (install_bootloader), log
// (collect_system_logs) and poll (get_hardware_info).
//
// It decides what a command does; the command API (cmdapi) decides how it
// is called. Disks, images, power, EFI variables and logs come through
// small interfaces and options, so tests run every command against
// file-backed disks and local HTTP servers. It refuses to touch the
// machine's own disks unless told it runs from a ramdisk (or given a disk
// explicitly).
package extension

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/cmdapi"
	"github.com/ingot-dev/ingot/agent/efiboot"
	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/imagestream"
)

// Disks lists the disks that may hold an image (agent/inspect satisfies
// it).
type Disks interface {
	Disks(ctx context.Context) ([]api.Disk, error)
}

// Power switches the machine off or restarts it.
type Power interface {
	PowerOff(ctx context.Context) error
	Reboot(ctx context.Context) error
}

// Device is an open disk (blockdev.Device satisfies it).
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
	Size() int64
	RereadPartitions() error
}

// ImageWriter streams an image onto a target; imagestream.Stream.
type ImageWriter func(ctx context.Context, info api.ImageInfo, dst imagestream.Target, opts imagestream.Options) (imagestream.Result, error)

// Options wire the extensions to the machine. Zero values are safe: no
// power control, no disks.
type Options struct {
	// Disks lists candidate disks. Ignored when Disk is set.
	Disks Disks
	// Disk, when set, is the only disk (ingot.disk): a block device, a
	// loop device or a plain file standing in for one.
	Disk string
	// HostDisks allows touching the disks Disks lists. Only the agent
	// running from its ramdisk sets it; otherwise every disk operation
	// fails unless Disk names one explicitly.
	HostDisks bool
	// Open opens a disk for writing; blockdev.Open when nil.
	Open func(path string) (Device, error)
	// WriteImage streams images; imagestream.Stream when nil.
	WriteImage ImageWriter
	// ImageOptions are the base streaming options (client, TLS, retries,
	// timeouts); Capacity, MD5Allowed, Progress and Log are set per write.
	ImageOptions imagestream.Options
	// MD5Allowed reports whether Ironic allows MD5 checksums (lookup
	// config agent_md5_checksum_enable).
	MD5Allowed func() bool
	// LookupNode returns the node from the lookup answer, for root device
	// hints when a command carries no node.
	LookupNode func() map[string]any
	// Power switches the machine off or reboots it; nil refuses.
	Power Power
	// SyncFS flushes every file system (sync(2)); nil does nothing.
	SyncFS func()
	// PowerGrace is how long power_off and run_image wait, after syncing,
	// before the machine goes down, so the command's answer reaches the
	// conductor first (1 s; negative: none). Without it the conductor
	// may wait for an answer that died with the machine.
	PowerGrace time.Duration
	// EFIVars is the efivarfs directory; efiboot.DefaultDir when empty.
	EFIVars string
	// GOARCH selects the default UEFI loader; runtime.GOARCH when empty.
	GOARCH string
	// Inventory reports the hardware (poll.get_hardware_info, logs).
	Inventory func(ctx context.Context) (api.Inventory, error)
	// Logs are the sources of log.collect_system_logs.
	Logs LogSources
	// ISCSIHost is the address iscsi.start_iscsi_target listens on: the
	// agent's advertised address, which the conductor dials. Empty
	// listens on every address, as IPA did.
	ISCSIHost string
	// Log receives the extensions' own events.
	Log *slog.Logger
}

// HardwareManager and HardwareManagerVersion are what the agent reports
// with its steps; conductors echo them back as deploy_version and
// clean_version. IPA's generic manager names are kept so conductors treat
// Ingot's agent as a generic IPA.
const (
	HardwareManager        = "GenericHardwareManager"
	hardwareManagerKey     = "generic_hardware_manager"
	HardwareManagerVersion = "1.2"
)

// Extensions holds the commands and the little state they share: what
// the last image write left on which disk.
type Extensions struct {
	opts Options

	mu       sync.Mutex
	written  string         // device of the last successful write
	uuids    map[string]any // get_partition_uuids answer
	lastNode map[string]any

	iscsiMu sync.Mutex
	target  *iscsiTarget // the running iSCSI target, if any
}

// New builds the extensions.
func New(opts Options) *Extensions {
	if opts.Open == nil {
		opts.Open = func(p string) (Device, error) { return blockdev.Open(p) }
	}
	if opts.WriteImage == nil {
		opts.WriteImage = imagestream.Stream
	}
	if opts.MD5Allowed == nil {
		opts.MD5Allowed = func() bool { return false }
	}
	if opts.LookupNode == nil {
		opts.LookupNode = func() map[string]any { return nil }
	}
	if opts.SyncFS == nil {
		opts.SyncFS = func() {}
	}
	if opts.PowerGrace == 0 {
		opts.PowerGrace = time.Second
	}
	if opts.EFIVars == "" {
		opts.EFIVars = efiboot.DefaultDir
	}
	if opts.GOARCH == "" {
		opts.GOARCH = runtime.GOARCH
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Extensions{opts: opts, uuids: map[string]any{}}
}

// Registry returns every command, by extension and name.
func (x *Extensions) Registry() cmdapi.Registry {
	imageParams := func(p cmdapi.Params) error {
		var info api.ImageInfo
		if err := decode(p, "image_info", &info); err != nil {
			return err
		}
		return info.Validate(x.opts.MD5Allowed())
	}
	stepParams := func(p cmdapi.Params) error {
		var step api.Step
		if err := decode(p, "step", &step); err != nil {
			return err
		}
		if step.Step == "" {
			return errors.New("step.step is missing")
		}
		return nil
	}
	return cmdapi.Registry{
		"standby": {
			"prepare_image":       {Async: true, Validate: imageParams, Run: x.prepareImage},
			"cache_image":         {Async: true, Validate: imageParams, Run: x.prepareImage},
			"get_partition_uuids": {Run: x.getPartitionUUIDs},
			"sync":                {Run: x.sync},
			"power_off":           {Async: true, Run: x.powerOff},
			"run_image":           {Async: true, Run: x.runImage},
		},
		"deploy": {
			"get_deploy_steps":    {Run: x.getDeploySteps},
			"execute_deploy_step": {Async: true, Validate: stepParams, Run: x.executeDeployStep},
		},
		"clean": {
			"get_clean_steps":    {Run: x.getCleanSteps},
			"execute_clean_step": {Async: true, Validate: stepParams, Run: x.executeCleanStep},
		},
		"image": {
			"install_bootloader": {Async: true, Run: x.installBootloader},
		},
		"log": {
			"collect_system_logs": {Sensitive: true, Run: x.collectSystemLogs},
		},
		"poll": {
			"get_hardware_info": {Run: x.getHardwareInfo},
		},
		"iscsi": {
			"start_iscsi_target": {Validate: validateStart, Run: x.startISCSITarget},
			"stop_iscsi_target":  {Run: x.stopISCSITarget},
			"get_target_status":  {Run: x.getTargetStatus},
		},
	}
}

// decode reads one parameter; a missing one is an error.
func decode(p cmdapi.Params, key string, v any) error {
	raw, ok := p[key]
	if !ok || string(raw) == "null" {
		return fmt.Errorf("%s is required", key)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %v", key, err)
	}
	return nil
}

// optional reads a parameter that may be absent or null.
func optional(p cmdapi.Params, key string, v any) error {
	raw, ok := p[key]
	if !ok || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %v", key, err)
	}
	return nil
}

// cmdErr wraps err as a command failure of an IPA error type.
func cmdErr(typ, message string, err error) error {
	return &cmdapi.Error{Type: typ, Message: message, Details: err.Error(), Err: err}
}

// --- disks -----------------------------------------------------------------

// ErrHostDisks refuses disk operations outside the ramdisk.
var ErrHostDisks = errors.New("refusing to touch this machine's disks: the agent is not running from its ramdisk (give ingot.disk / --disk, or --host-disks)")

// disks lists the candidate disks.
func (x *Extensions) disks(ctx context.Context) ([]api.Disk, error) {
	if x.opts.Disk != "" {
		d, err := x.opts.Open(x.opts.Disk)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", x.opts.Disk, err)
		}
		size := d.Size()
		d.Close()
		return []api.Disk{{Name: x.opts.Disk, Size: size}}, nil
	}
	if !x.opts.HostDisks {
		return nil, ErrHostDisks
	}
	if x.opts.Disks == nil {
		return nil, errors.New("no disk inventory")
	}
	return x.opts.Disks.Disks(ctx)
}

// rootDisk selects the install disk from hints.
func (x *Extensions) rootDisk(ctx context.Context, imageHints, node map[string]any) (api.Disk, error) {
	if node == nil {
		node = x.opts.LookupNode()
	}
	hints, skip, err := blockdev.HintsFrom(imageHints, node)
	if err != nil {
		return api.Disk{}, cmdErr("InvalidCommandParamsError", "Invalid root device hints", err)
	}
	disks, err := x.disks(ctx)
	if err != nil {
		return api.Disk{}, cmdErr("DeviceNotFound", "Error finding the disk or partition device to deploy the image onto", err)
	}
	d, err := blockdev.Select(disks, hints, skip)
	if err != nil {
		return api.Disk{}, cmdErr("DeviceNotFound", "Error finding the disk or partition device to deploy the image onto", err)
	}
	x.opts.Log.Info("install disk selected", "disk", d.Name, "bytes", d.Size, "hints", hints.String())
	return d, nil
}

// nodeInfo reads a key of the node's driver_internal_info.
func nodeInfo(node map[string]any, key string) (any, bool) {
	dii, _ := node["driver_internal_info"].(map[string]any)
	v, ok := dii[key]
	return v, ok && v != nil
}

func nodeInt(node map[string]any, key string, def int) (int, error) {
	v, ok := nodeInfo(node, key)
	if !ok {
		return def, nil
	}
	switch n := v.(type) {
	case float64:
		if n != float64(int(n)) || n < 0 {
			return 0, fmt.Errorf("driver_internal_info.%s: %v is not a non-negative integer", key, v)
		}
		return int(n), nil
	case string:
		i, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || i < 0 {
			return 0, fmt.Errorf("driver_internal_info.%s: %q is not a non-negative integer", key, n)
		}
		return i, nil
	}
	return 0, fmt.Errorf("driver_internal_info.%s: %v is not an integer", key, v)
}

func nodeBool(node map[string]any, key string, def bool) (bool, error) {
	v, ok := nodeInfo(node, key)
	if !ok {
		return def, nil
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		switch strings.ToLower(b) {
		case "true", "1", "yes", "on":
			return true, nil
		case "false", "0", "no", "off":
			return false, nil
		}
	}
	return false, fmt.Errorf("driver_internal_info.%s: %v is not a boolean", key, v)
}
