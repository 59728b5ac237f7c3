//go:build linux

// Command imageinit is the init of the test image's initramfs: it prints
// the marker it was built with on the console and powers the machine off,
// proving the machine booted the disk Ingot wrote.
//
// The marker comes from the kernel command line (ingot.marker=...), which
// the image's boot loader entry sets.
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	marker := "INGOT-IMAGE-BOOTED"
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		for _, w := range strings.Fields(string(b)) {
			if v, ok := strings.CutPrefix(w, "ingot.marker="); ok {
				marker = strings.ReplaceAll(v, "_", " ")
			}
		}
	} else {
		os.MkdirAll("/proc", 0o555)
		unix.Mount("proc", "/proc", "proc", 0, "")
		if b, err := os.ReadFile("/proc/cmdline"); err == nil {
			for _, w := range strings.Fields(string(b)) {
				if v, ok := strings.CutPrefix(w, "ingot.marker="); ok {
					marker = strings.ReplaceAll(v, "_", " ")
				}
			}
		}
	}
	fmt.Printf("\r\n%s\r\n", marker)
	unix.Sync()
	time.Sleep(100 * time.Millisecond)
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
