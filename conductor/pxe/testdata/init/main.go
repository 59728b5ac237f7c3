// Command init is the whole userland of the tiny initramfs the QEMU PXE
// boot test builds: it proves the kernel and initramfs Ingot served were
// booted with the command line Ingot rendered, then powers the VM off.
package main

import (
	"fmt"
	"os"
	"syscall"
)

func main() {
	if err := syscall.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		fmt.Println("INGOT-INIT mount /proc:", err)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		fmt.Println("INGOT-INIT read /proc/cmdline:", err)
	}
	fmt.Printf("\nINGOT-INIT-UP cmdline=%s\n", cmdline)
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("INGOT-INIT power off:", err)
	}
	select {}
}
