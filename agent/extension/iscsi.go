package extension

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/cmdapi"
	"github.com/ingot-dev/ingot/agent/iscsitarget"
	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/iscsi"
)

// The iscsi extension is the agent's half of the iSCSI fallback deploy
// (ironic-python-agent's removed iscsi extension, plus a stop command and
// CHAP):
//
//   - iscsi.start_iscsi_target (sync) picks the install disk with the
//     root device hints write_image uses, optionally wipes its metadata,
//     and exports it as LUN 1 of the given IQN on <ISCSIHost>:portal_port,
//     the address the conductor dials. It answers
//     {"iscsi_target_iqn": iqn}, as IPA did.
//   - The conductor writes the image over iSCSI.
//   - iscsi.stop_iscsi_target (sync) is the done notice: it closes every
//     session, syncs and closes the disk, then records the partition
//     UUIDs of what was written (get_partition_uuids and
//     install_bootloader work as after write_image). It reports the
//     target's health: sessions and contained panics.
//   - iscsi.get_target_status (sync) reports the same while the target
//     runs.
//
// The old bash ramdisk's done notice was different: the conductor
// connected to TCP port 10000 on the node after the copy and sent "done"
// (after the ramdisk had POSTed vendor_passthru pass_deploy_info to the
// API to say its target was up). Here both directions go through the
// token-authenticated command API: start_iscsi_target's answer replaces
// pass_deploy_info, stop_iscsi_target replaces the port-10000 notice, and
// the agent opens no port besides the command API and the target itself.

// ISCSIPort is the iSCSI portal port IPA used by default.
const ISCSIPort = 3260

// iscsiTarget is the running target and what it exports.
type iscsiTarget struct {
	t      *iscsitarget.Target
	iqn    string
	disk   string
	portal string
}

// targetStatus is what stop_iscsi_target and get_target_status report.
type targetStatus struct {
	IQN         string `json:"iscsi_target_iqn"`
	Running     bool   `json:"running"`
	Portal      string `json:"portal,omitempty"`
	Device      string `json:"device,omitempty"`
	Connections int    `json:"connections"`
	Sessions    int64  `json:"sessions"`
	Panics      int64  `json:"panics"`
	LastPanic   string `json:"last_panic,omitempty"`
}

func statusOf(it *iscsiTarget, running bool) targetStatus {
	st := it.t.Stats()
	return targetStatus{IQN: it.iqn, Running: running, Portal: it.portal, Device: it.disk, Connections: st.Connections,
		Sessions: st.Sessions, Panics: st.Panics, LastPanic: st.LastPanic}
}

// iscsiError is a failed iscsi command, reported as IPA's ISCSIError.
func iscsiError(message string, err error) error {
	return cmdErr("ISCSIError", message, err)
}

// Errors of the iscsi commands.
var (
	ErrTargetRunning    = errors.New("an iSCSI target is already running")
	ErrTargetNotRunning = errors.New("no iSCSI target is running")
)

// startParams are start_iscsi_target's parameters. The CHAP secret is
// never logged or echoed: the command API does not record parameters and
// errors name only the user.
type startParams struct {
	IQN              string
	PortalPort       int
	WipeDiskMetadata bool
	CHAP             iscsi.Credentials
	Node             map[string]any
	RootDevice       map[string]any
}

func readStartParams(p cmdapi.Params) (startParams, error) {
	sp := startParams{PortalPort: ISCSIPort}
	if err := decode(p, "iqn", &sp.IQN); err != nil {
		return sp, err
	}
	if !iscsitarget.ValidIQN(sp.IQN) {
		return sp, fmt.Errorf("iqn %q is not an iqn., eui. or naa. name", sp.IQN)
	}
	if err := optional(p, "portal_port", &sp.PortalPort); err != nil {
		return sp, err
	}
	if sp.PortalPort < 1 || sp.PortalPort > 65535 {
		return sp, fmt.Errorf("portal_port %d is not a TCP port", sp.PortalPort)
	}
	if err := optional(p, "wipe_disk_metadata", &sp.WipeDiskMetadata); err != nil {
		return sp, err
	}
	if err := optional(p, "chap_username", &sp.CHAP.User); err != nil {
		return sp, err
	}
	if err := optional(p, "chap_secret", &sp.CHAP.Secret); err != nil {
		return sp, errors.New("chap_secret: must be a string") // never quote the value
	}
	if !sp.CHAP.IsZero() {
		if err := sp.CHAP.Valid(); err != nil {
			return sp, fmt.Errorf("chap_username and chap_secret: %w", err)
		}
	}
	if err := optional(p, "node", &sp.Node); err != nil {
		return sp, err
	}
	if err := optional(p, "root_device", &sp.RootDevice); err != nil {
		return sp, err
	}
	return sp, nil
}

// validateStart refuses malformed parameters before anything runs (400
// "Invalid command parameters").
func validateStart(p cmdapi.Params) error {
	_, err := readStartParams(p)
	return err
}

// startISCSITarget is iscsi.start_iscsi_target.
func (x *Extensions) startISCSITarget(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	sp, err := readStartParams(p)
	if err != nil {
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
	}
	x.iscsiMu.Lock()
	defer x.iscsiMu.Unlock()
	if it := x.target; it != nil {
		return nil, iscsiError("Error starting iSCSI target",
			fmt.Errorf("%w: %s exports %s on %s; stop it first", ErrTargetRunning, it.iqn, it.disk, it.portal))
	}
	disk, err := x.rootDisk(ctx, sp.RootDevice, sp.Node)
	if err != nil {
		return nil, err
	}
	dev, err := x.opts.Open(disk.Name)
	if err != nil {
		return nil, iscsiError("Error starting iSCSI target", fmt.Errorf("open %s: %w", disk.Name, err))
	}
	log := x.opts.Log.With("disk", disk.Name, "iqn", sp.IQN)
	portal := net.JoinHostPort(x.opts.ISCSIHost, strconv.Itoa(sp.PortalPort))
	cfg := iscsitarget.Config{Listen: portal, IQN: sp.IQN, Device: disk.Name, CHAPUser: sp.CHAP.User,
		CHAPSecret: sp.CHAP.Secret, Logger: log}
	// The target outlives this request: its context is not the request's.
	// Nobody can log in before this command answers (the conductor waits
	// for it, and CHAP keeps others out), so the wipe below races nothing.
	t, err := iscsitarget.StartDevice(context.WithoutCancel(ctx), cfg, dev, dev.Size())
	if err != nil {
		dev.Close()
		if errors.Is(err, iscsitarget.ErrConfig) {
			return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
		}
		return nil, iscsiError("Error starting iSCSI target", err)
	}
	if sp.WipeDiskMetadata {
		wiped, err := blockdev.WipeMetadata(ctx, dev, dev.Size())
		if err != nil {
			t.Stop() // closes dev
			return nil, cmdErr("BlockDeviceEraseError", "Error erasing block device", err)
		}
		if err := dev.RereadPartitions(); err != nil {
			log.Warn("could not re-read the partition table", "err", err)
		}
		log.Info("disk metadata erased before export", "signatures", len(wiped))
	}
	// The disk is about to change under the conductor's hands: forget
	// the last write until the target stops.
	x.forgetWrite()
	x.target = &iscsiTarget{t: t, iqn: sp.IQN, disk: disk.Name, portal: t.Addr().String()}
	log.Info("iscsi target exported", "portal", x.target.portal, "bytes", dev.Size(), "chap", !sp.CHAP.IsZero())
	return map[string]string{"iscsi_target_iqn": sp.IQN}, nil
}

// stopISCSITarget is iscsi.stop_iscsi_target: the conductor's notice that
// the write finished.
func (x *Extensions) stopISCSITarget(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	x.iscsiMu.Lock()
	defer x.iscsiMu.Unlock()
	it := x.target
	if it == nil {
		return nil, iscsiError("Error stopping iSCSI target", ErrTargetNotRunning)
	}
	x.target = nil
	err := it.t.Stop()
	st := statusOf(it, false)
	log := x.opts.Log.With("disk", it.disk, "iqn", it.iqn)
	if st.Panics > 0 {
		log.Warn("the iscsi target contained panics while it ran", "panics", st.Panics, "last_panic", st.LastPanic)
	}
	if err != nil {
		return nil, iscsiError("Error stopping iSCSI target", err)
	}
	log.Info("iscsi target stopped", "sessions", st.Sessions, "panics", st.Panics)
	if err := x.recordWritten(it.disk); err != nil {
		return nil, err
	}
	return st, nil
}

// recordWritten reads the partition table the conductor wrote, so
// get_partition_uuids and install_bootloader work as after write_image.
func (x *Extensions) recordWritten(disk string) error {
	dev, err := x.opts.Open(disk)
	if err != nil {
		return cmdErr("ImageWriteError", "Error reading the partition table after writing", err)
	}
	defer dev.Close()
	if err := dev.RereadPartitions(); err != nil {
		x.opts.Log.Warn("could not re-read the partition table", "disk", disk, "err", err)
	}
	table, err := blockdev.ReadTable(dev, dev.Size())
	if err != nil {
		return cmdErr("ImageWriteError", "Error reading the partition table after writing", err)
	}
	x.mu.Lock()
	x.written, x.uuids = disk, partitionUUIDs(table)
	x.mu.Unlock()
	return nil
}

// getTargetStatus is iscsi.get_target_status.
func (x *Extensions) getTargetStatus(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	x.iscsiMu.Lock()
	defer x.iscsiMu.Unlock()
	if x.target == nil {
		return targetStatus{}, nil
	}
	return statusOf(x.target, true), nil
}

// Close stops a running iSCSI target (the agent is shutting down or
// starting over).
func (x *Extensions) Close() error {
	x.iscsiMu.Lock()
	defer x.iscsiMu.Unlock()
	if x.target == nil {
		return nil
	}
	err := x.target.t.Stop()
	x.target = nil
	return err
}
