package extension

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/cmdapi"
	"github.com/ingot-dev/ingot/agent/efiboot"
	"github.com/ingot-dev/ingot/shared/api"
)

// BootEntryDescription labels the UEFI boot entries the agent creates.
const BootEntryDescription = "ingot"

// installBootloader is image.install_bootloader for whole-disk images.
// BIOS: nothing to install (the image carries its boot code), as IPA
// answers. UEFI: find the image's EFI system partition (the one named by
// efi_system_part_uuid, else the first on the disk) and make a boot entry
// for the removable-media loader path on it (\EFI\BOOT\BOOTX64.EFI on
// x86_64) the first in BootOrder, through efivarfs. The ESP's file system
// is not read: the loader path is the UEFI default every bootable ESP
// carries.
func (x *Extensions) installBootloader(ctx context.Context, p cmdapi.Params, _ func(api.Progress)) (any, error) {
	var req api.InstallBootloaderParams
	fields := map[string]any{"root_uuid": &req.RootUUID, "efi_system_part_uuid": &req.EFISystemPartUUID,
		"prep_boot_part_uuid": &req.PrepBootPartUUID, "target_boot_mode": &req.TargetBootMode,
		"ignore_bootloader_failure": &req.IgnoreBootloaderFailure}
	for k, v := range fields {
		if err := optional(p, k, v); err != nil {
			return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", err)
		}
	}
	mode := strings.ToLower(req.TargetBootMode)
	if mode == "" {
		// As IPA: the boot mode the ramdisk itself booted in.
		mode = "bios"
		if fi, err := os.Stat(x.opts.EFIVars); err == nil && fi.IsDir() {
			mode = "uefi"
		}
	}
	if mode == "bios" {
		x.opts.Log.Info("BIOS boot of a whole-disk image: nothing to install")
		return "whole-disk image in BIOS mode: nothing to install", nil
	}
	if mode != "uefi" {
		return nil, cmdErr("InvalidCommandParamsError", "Invalid command parameters", fmt.Errorf("target_boot_mode %q is not bios or uefi", req.TargetBootMode))
	}
	msg, err := x.uefiEntry(ctx, req)
	if err != nil {
		if req.IgnoreBootloaderFailure != nil && *req.IgnoreBootloaderFailure {
			x.opts.Log.Warn("bootloader installation failed; ignored as asked", "err", err)
			return "bootloader installation failed and was ignored: " + err.Error(), nil
		}
		return nil, err
	}
	return msg, nil
}

func (x *Extensions) uefiEntry(ctx context.Context, req api.InstallBootloaderParams) (string, error) {
	x.mu.Lock()
	device := x.written
	x.mu.Unlock()
	if device == "" {
		d, err := x.rootDisk(ctx, nil, nil)
		if err != nil {
			return "", err
		}
		device = d.Name
	}
	dev, err := x.opts.Open(device)
	if err != nil {
		return "", cmdErr("DeviceNotFound", "Error finding the disk to install the bootloader on", err)
	}
	defer dev.Close()
	table, err := blockdev.ReadTable(dev, dev.Size())
	if err != nil {
		return "", cmdErr("CommandExecutionError", "Command execution failed", err)
	}
	var esp blockdev.Partition
	found := false
	if req.EFISystemPartUUID != nil && *req.EFISystemPartUUID != "" {
		want := strings.ToLower(*req.EFISystemPartUUID)
		for _, part := range table.Partitions {
			if part.UUID == want {
				esp, found = part, true
			}
		}
	} else {
		esp, found = table.ESP()
	}
	if !found {
		return "", cmdErr("DeviceNotFound", "No EFI system partition",
			fmt.Errorf("no EFI system partition on %s (%s table): a UEFI whole-disk image must carry one", device, orNone(table.Kind)))
	}
	ss := uint64(table.SectorSize)
	part := efiboot.Partition{Number: uint32(esp.Number), StartLBA: uint64(esp.Start) / ss, SizeLBA: uint64(esp.Size) / ss}
	if table.Kind == "gpt" {
		g, err := blockdev.ParseGUID(esp.UUID)
		if err != nil {
			return "", cmdErr("CommandExecutionError", "Command execution failed", err)
		}
		part.GUID = g
	} else {
		var sig [4]byte
		if _, err := dev.ReadAt(sig[:], 440); err != nil {
			return "", cmdErr("CommandExecutionError", "Command execution failed", err)
		}
		part.MBR, part.MBRSignature = true, binary.LittleEndian.Uint32(sig[:])
	}
	loader := efiboot.DefaultLoader(x.opts.GOARCH)
	n, err := efiboot.Vars{Dir: x.opts.EFIVars}.Ensure(efiboot.Entry{Description: BootEntryDescription, Partition: part, Path: loader})
	if err != nil {
		typ := "CommandExecutionError"
		if errors.Is(err, efiboot.ErrNoEFIVars) {
			typ = "DeviceNotFound"
		}
		return "", cmdErr(typ, "Error registering the UEFI boot entry", err)
	}
	msg := fmt.Sprintf("boot entry Boot%04X for %s on partition %d of %s (partuuid %s) is first in BootOrder", n, loader, esp.Number, device, esp.UUID)
	x.opts.Log.Info("UEFI boot entry registered", "entry", fmt.Sprintf("Boot%04X", n), "loader", loader, "disk", device, "partition", esp.Number)
	return msg, nil
}

func orNone(s string) string {
	if s == "" {
		return "no"
	}
	return s
}
