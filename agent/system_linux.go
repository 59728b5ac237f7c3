package agent

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// SystemPower switches the real machine off or restarts it: sync, then
// reboot(2); if the kernel refuses, the magic SysRq trigger, as IPA falls
// back to.
type SystemPower struct{}

// PowerOff powers the machine off.
func (SystemPower) PowerOff(ctx context.Context) error {
	return reboot(unix.LINUX_REBOOT_CMD_POWER_OFF, "o")
}

// Reboot restarts the machine.
func (SystemPower) Reboot(ctx context.Context) error {
	return reboot(unix.LINUX_REBOOT_CMD_RESTART, "b")
}

func reboot(cmd int, sysrq string) error {
	unix.Sync()
	err := unix.Reboot(cmd)
	if err == nil {
		return nil
	}
	if werr := os.WriteFile("/proc/sysrq-trigger", []byte(sysrq), 0o200); werr != nil {
		return fmt.Errorf("reboot(2): %w; sysrq: %v", err, werr)
	}
	return nil
}

// SyncFS flushes every file system.
func SyncFS() { unix.Sync() }

// Dmesg reads the kernel log buffer.
func Dmesg() ([]byte, error) {
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil {
		return nil, fmt.Errorf("kernel log size: %w", err)
	}
	buf := make([]byte, n)
	m, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return nil, fmt.Errorf("read kernel log: %w", err)
	}
	return buf[:m], nil
}

// InRamdisk reports whether "/" is an initramfs (rootfs, ramfs or tmpfs):
// only there may the agent touch the machine's disks on its own.
func InRamdisk() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return false
	}
	return st.Type == unix.RAMFS_MAGIC || st.Type == unix.TMPFS_MAGIC
}

// efivarfsMagic is EFIVARFS_MAGIC from linux/magic.h.
const efivarfsMagic = 0xde5e81e4

// MountEFIVars mounts efivarfs on dir when the machine booted by UEFI and
// nothing is mounted there yet. In the ramdisk efivarfs is a module that
// u-root's init loads only after it mounted the pseudo file systems, so
// its own attempt failed. It returns whether efivarfs is available.
func MountEFIVars(dir string) (bool, error) {
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		return false, nil // BIOS boot: no variables to write
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && uint32(st.Type) == efivarfsMagic {
		return true, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	if err := unix.Mount("efivarfs", dir, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return false, fmt.Errorf("mount efivarfs on %s: %w", dir, err)
	}
	return true, nil
}
