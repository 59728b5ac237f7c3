//go:build interop

package ipmisim_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/conductor/power/ipmisim"
	"github.com/ingot-dev/ingot/internal/peertest"
)

func ipmitool(t *testing.T, sim *ipmisim.Sim, args ...string) string {
	t.Helper()
	out, err := sim.Ipmitool(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls ipmitool power status until it says want.
func eventually(t *testing.T, sim *ipmisim.Sim, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := ipmitool(t, sim, "power", "status")
		if strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("power status = %q after 5s, want %q", out, want)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestInteropStart(t *testing.T) {
	peertest.Binary(t, "ipmitool", "ipmitool")
	sim := ipmisim.Start(t, ipmisim.Options{On: true})
	if out := ipmitool(t, sim, "power", "status"); !strings.Contains(out, "Chassis Power is on") {
		t.Fatalf("a node started on reports %q", out)
	}
	ipmitool(t, sim, "power", "off")
	if sim.On() {
		t.Error("power off did not reach the node directory")
	}
	ipmitool(t, sim, "chassis", "bootdev", "pxe")
	if got := sim.HookCalls(); !slices.Contains(got, "set boot pxe") || !slices.Contains(got, "set power 0") {
		t.Errorf("hook calls = %v", got)
	}

	sim.IgnoreACPI(true)
	ipmitool(t, sim, "power", "on")
	ipmitool(t, sim, "power", "soft")
	if !sim.On() {
		t.Error("soft power off turned off a node that ignores ACPI")
	}
	sim.IgnoreACPI(false)
	ipmitool(t, sim, "power", "soft")
	if sim.On() {
		t.Error("soft power off left the node on")
	}

	// Two simulators side by side get their own ports and state.
	other := ipmisim.Start(t, ipmisim.Options{User: "root", Password: "calvin"})
	if other.Port == sim.Port || other.NodeDir == sim.NodeDir {
		t.Fatalf("two simulators share a port or node dir: %d/%s", other.Port, other.NodeDir)
	}
	ipmitool(t, other, "power", "status")

	// Stop really stops it: the port refuses.
	sim.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if out, err := sim.Ipmitool(ctx, "-R", "1", "-N", "1", "power", "status"); err == nil {
		t.Errorf("ipmitool still answered after Stop: %s", out)
	}
}

func TestInteropPauseResume(t *testing.T) {
	peertest.Binary(t, "ipmitool", "ipmitool")
	sim := ipmisim.Start(t, ipmisim.Options{})
	resume := sim.Pause()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if out, err := sim.Ipmitool(ctx, "-R", "1", "-N", "1", "power", "status"); err == nil {
		t.Errorf("a paused simulator answered: %s", out)
	}
	resume()
	ipmitool(t, sim, "power", "status")
}

// TestInteropVM drives a real QEMU through the hook (the end-to-end
// design): power on starts the VM with the boot order of the boot device,
// reset goes through the monitor without a new process, power off ends it
// and a dead (even unreaped) QEMU reads as off.
func TestInteropVM(t *testing.T) {
	peertest.Binary(t, "ipmitool", "ipmitool")
	qemu := peertest.Binary(t, "qemu-system-x86_64", "qemu-system-x86")
	peertest.Binary(t, "nc", "netcat-openbsd")
	node := t.TempDir()
	// -S: the CPU never starts, so the VM costs nothing while it "runs".
	vm := "#!/bin/sh\necho \"$INGOT_BOOT_ORDER\" >> " + filepath.Join(node, "boot-orders") + "\n" +
		"exec " + qemu + " -accel tcg -cpu max -m 64 -display none -nodefaults -S -no-user-config" +
		" -monitor unix:$INGOT_VM_MONITOR,server,nowait\n"
	if err := os.WriteFile(filepath.Join(node, "vm"), []byte(vm), 0o755); err != nil {
		t.Fatal(err)
	}
	sim := ipmisim.Start(t, ipmisim.Options{NodeDir: node})
	pid := func() int {
		b, _ := os.ReadFile(filepath.Join(node, "vm.pid"))
		p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return p
	}
	t.Cleanup(func() {
		if p := pid(); p > 0 {
			_ = exec.Command("kill", "-9", strconv.Itoa(p)).Run()
		}
	})

	ipmitool(t, sim, "chassis", "bootdev", "pxe")
	ipmitool(t, sim, "power", "on")
	eventually(t, sim, "Chassis Power is on")
	first := pid()
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(first) + "/comm")
	if err != nil || !strings.HasPrefix(string(comm), "qemu-system") {
		t.Fatalf("vm.pid %d is %q (%v), want the QEMU process", first, comm, err)
	}
	ipmitool(t, sim, "power", "on") // idempotent: no second VM
	if pid() != first {
		t.Errorf("a second power on started another VM (%d, then %d)", first, pid())
	}

	ipmitool(t, sim, "power", "reset")
	eventually(t, sim, "Chassis Power is on")
	if pid() != first {
		t.Errorf("reset replaced the QEMU process (%d, then %d), want a reset through the monitor", first, pid())
	}

	ipmitool(t, sim, "power", "off")
	eventually(t, sim, "Chassis Power is off")

	ipmitool(t, sim, "chassis", "bootdev", "disk")
	ipmitool(t, sim, "power", "on")
	eventually(t, sim, "Chassis Power is on")
	if pid() == first {
		t.Error("power on after off reused the old pid")
	}
	ipmitool(t, sim, "power", "off")
	eventually(t, sim, "Chassis Power is off")

	orders, _ := os.ReadFile(filepath.Join(node, "boot-orders"))
	if got := strings.Fields(string(orders)); !slices.Equal(got, []string{"n", "c"}) {
		t.Errorf("boot orders the VM was started with = %v, want [n c] (pxe, then disk)", got)
	}
}
