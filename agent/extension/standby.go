package extension

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/cmdapi"
	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/configdrive"
	"github.com/ingot-dev/ingot/shared/imagestream"
)

// written describes a finished image write.
type written struct {
	Device   string  `json:"device"`
	Bytes    int64   `json:"bytes"`
	Format   string  `json:"format"`
	Algo     string  `json:"checksum_algo"`
	Digest   string  `json:"checksum"`
	Resumes  int     `json:"resumes"`
	Seconds  float64 `json:"seconds"`
	RootUUID string  `json:"root_uuid"`
	// ConfigDrive is where the config drive went, when there was one.
	ConfigDrive *configdrive.Placement `json:"config_drive,omitempty"`
}

// maxChangedRestarts bounds how often a write restarts because the image
// changed on the server mid-download.
const maxChangedRestarts = 2

// writeImage streams a whole-disk image onto the disk the hints select
// and records its partition UUIDs.
func (x *Extensions) writeImage(ctx context.Context, info api.ImageInfo, cdArg any, node map[string]any, progress func(api.Progress)) (written, error) {
	var w written
	if info.ImageType == "partition" {
		return w, cmdErr("InvalidCommandParamsError", "Invalid command parameters",
			errors.New("partition images are not supported: use a whole-disk image"))
	}
	if err := info.Validate(x.opts.MD5Allowed()); err != nil {
		return w, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	drive, err := x.configDrive(ctx, cdArg, info)
	if err != nil {
		return w, err
	}
	disk, err := x.rootDisk(ctx, info.RootDevice, node)
	if err != nil {
		return w, err
	}
	dev, err := x.opts.Open(disk.Name)
	if err != nil {
		return w, cmdErr("ImageWriteError", "Error writing image to device", err)
	}
	defer dev.Close()
	log := x.opts.Log.With("image", info.ID, "disk", disk.Name)
	opts := x.opts.ImageOptions
	opts.Capacity = dev.Size()
	opts.MD5Allowed = x.opts.MD5Allowed()
	opts.Progress = progress
	opts.Log = log
	// The disk the image lands on is forgotten until the write succeeds.
	x.mu.Lock()
	x.written, x.uuids = "", map[string]any{}
	x.mu.Unlock()

	var res imagestream.Result
	for attempt := 0; ; attempt++ {
		res, err = x.opts.WriteImage(ctx, info, dev, opts)
		if err == nil || !errors.Is(err, imagestream.ErrChanged) || attempt >= maxChangedRestarts {
			break
		}
		log.Warn("image changed on the server; starting over", "err", err)
	}
	if err != nil {
		if res.Written > 0 {
			// Part of an image, or all of one that failed its checksum, is
			// on the disk: wipe its partition tables and boot code so the
			// machine cannot boot what was not verified.
			if _, werr := blockdev.WipeMetadata(context.WithoutCancel(ctx), dev, dev.Size()); werr != nil {
				log.Error("could not wipe the unverified image", "err", werr)
				err = fmt.Errorf("%w; wiping the partly written disk failed too: %v", err, werr)
			} else {
				log.Warn("wiped the disk's partition tables: the image written is not verified", "bytes", res.Written)
				err = fmt.Errorf("%w (the disk's partition tables were wiped, so it does not boot the unverified image)", err)
			}
		}
		return w, imageError(err)
	}
	if err := dev.RereadPartitions(); err != nil {
		log.Warn("could not re-read the partition table", "err", err)
	}
	table, err := blockdev.ReadTable(dev, dev.Size())
	if err != nil {
		return w, cmdErr("ImageWriteError", "Error reading the partition table after writing", err)
	}
	var placed *configdrive.Placement
	if drive != nil {
		// The disk's logical sector size as the kernel reports it; the
		// one the GPT was found at otherwise.
		ss := table.SectorSize
		if disk.LogicalSectors > 0 {
			ss = disk.LogicalSectors
		}
		p, err := configdrive.Install(dev, dev.Size(), ss, drive)
		if err != nil {
			return w, cmdErr("ConfigDriveWriteError", "Error writing config drive", fmt.Errorf("config drive on %s: %w", disk.Name, err))
		}
		placed = &p
		log.Info("config drive written", "partition", p.Partition, "table", p.Table, "created", p.Created, "filesystem", p.Filesystem,
			"offset", p.Offset, "size", p.Size, "bytes", len(drive))
		if err := dev.RereadPartitions(); err != nil {
			log.Warn("could not re-read the partition table", "err", err)
		}
		if table, err = blockdev.ReadTable(dev, dev.Size()); err != nil {
			return w, cmdErr("ConfigDriveWriteError", "Error writing config drive", fmt.Errorf("reading the partition table after adding the config drive: %w", err))
		}
	}
	uuids := partitionUUIDs(table)
	x.mu.Lock()
	x.written, x.uuids = disk.Name, uuids
	x.mu.Unlock()
	log.Info("image written", "bytes", res.Written, "format", res.Format, "checksum", res.Algo+":"+res.Digest,
		"resumes", res.Resumes, "duration", res.Duration, "root_uuid", table.DiskID)
	return written{Device: disk.Name, Bytes: res.Written, Format: res.Format, Algo: res.Algo, Digest: res.Digest,
		Resumes: res.Resumes, Seconds: res.Duration.Seconds(), RootUUID: table.DiskID, ConfigDrive: placed}, nil
}

// partitionUUIDs is get_partition_uuids' answer for a whole-disk image:
// the MBR disk identifier as "root uuid" (what IPA reports), the ESP's
// PARTUUID when there is one, and every GPT partition's PARTUUID.
func partitionUUIDs(t blockdev.Table) map[string]any {
	u := map[string]any{}
	if t.DiskID != "" {
		u["root uuid"] = t.DiskID
	}
	if esp, ok := t.ESP(); ok && esp.UUID != "" {
		u["efi system partition uuid"] = esp.UUID
	}
	if len(t.Partitions) > 0 {
		parts := map[string]string{}
		for _, p := range t.Partitions {
			parts[strconv.Itoa(p.Number)] = p.UUID
		}
		u["partitions"] = parts
	}
	return u
}

// imageError maps streaming errors to IPA's error types.
func imageError(err error) error {
	var se *imagestream.StatusError
	switch {
	case errors.Is(err, imagestream.ErrChecksum):
		return cmdErr("ImageChecksumError", "Error verifying image checksum", err)
	case errors.Is(err, imagestream.ErrTooLarge):
		return cmdErr("ImageWriteError", "Error writing image to device", err)
	case errors.Is(err, imagestream.ErrUnsupportedFormat):
		return cmdErr("InvalidImage", "Image is not supported", err)
	case errors.Is(err, imagestream.ErrNoChecksum):
		return cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	case errors.As(err, &se):
		return cmdErr("ImageDownloadError", "Error downloading image", err)
	case errors.Is(err, context.Canceled):
		return cmdErr("CommandExecutionError", "Command execution failed", err)
	}
	return cmdErr("ImageDownloadError", "Error downloading image", err)
}

// prepareImage is standby.prepare_image (and the legacy cache_image):
// write the image, answer IPA's sentence.
func (x *Extensions) prepareImage(ctx context.Context, p cmdapi.Params, progress func(api.Progress)) (any, error) {
	var info api.ImageInfo
	if err := decode(p, "image_info", &info); err != nil {
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	var configdrive any
	if err := optional(p, "configdrive", &configdrive); err != nil {
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	w, err := x.writeImage(ctx, info, configdrive, nil, progress)
	if err != nil {
		return nil, err
	}
	return fmt.Sprintf("image (%s) written to device %s root_uuid=%s", info.ID, w.Device, w.RootUUID), nil
}

func (x *Extensions) getPartitionUUIDs(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make(map[string]any, len(x.uuids))
	for k, v := range x.uuids {
		out[k] = v
	}
	return out, nil
}

func (x *Extensions) sync(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	x.opts.SyncFS()
	return nil, nil
}

// ErrNoPower means the agent has no way to switch the machine off.
var ErrNoPower = errors.New("power control is not available")

func (x *Extensions) powerOff(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	if x.opts.Power == nil {
		return nil, cmdErr("CommandExecutionError", "Command execution failed", ErrNoPower)
	}
	x.opts.SyncFS()
	x.opts.Log.Info("powering off", "in", max(x.opts.PowerGrace, 0))
	x.graceBeforePower(ctx)
	if err := x.opts.Power.PowerOff(ctx); err != nil {
		return nil, cmdErr("CommandExecutionError", "Command execution failed", fmt.Errorf("power off: %w", err))
	}
	return "powering off", nil
}

// graceBeforePower lets the answer of an asynchronous power command leave
// before the machine goes down.
func (x *Extensions) graceBeforePower(ctx context.Context) {
	if x.opts.PowerGrace <= 0 {
		return
	}
	t := time.NewTimer(x.opts.PowerGrace)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (x *Extensions) runImage(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	if x.opts.Power == nil {
		return nil, cmdErr("CommandExecutionError", "Command execution failed", ErrNoPower)
	}
	x.opts.SyncFS()
	x.opts.Log.Info("rebooting into the instance", "in", max(x.opts.PowerGrace, 0))
	x.graceBeforePower(ctx)
	if err := x.opts.Power.Reboot(ctx); err != nil {
		return nil, cmdErr("CommandExecutionError", "Command execution failed", fmt.Errorf("reboot: %w", err))
	}
	return "rebooting", nil
}
