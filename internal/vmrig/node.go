package vmrig

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/ingot-dev/ingot/internal/bmcsim"
)

// OVMF's firmware and its variable store template (Debian's ovmf).
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// NodeOptions describe a virtual node.
type NodeOptions struct {
	Name string
	// Firmware is "bios" (SeaBIOS, default) or "uefi" (OVMF).
	Firmware string
	// DiskSize of the sparse virtio disk file (8 GiB default: IPA-compatible
	// agents skip disks under 4 GiB when no root device hint names one).
	DiskSize int64
	// MemoryMiB of the VM (1024 default).
	MemoryMiB int
}

// Node is a virtual machine with its BMC.
type Node struct {
	Name     string
	Firmware string
	MAC      string
	Dir      string
	Disk     string
	Serial   string // the serial console, appended across power cycles
	Tap      string
	BMC      *bmcsim.Sim
	// DiskSerial is the disk's serial number, for root device hints.
	DiskSerial string
}

// vmScript is the program chassis-control.sh starts on power on. It
// execs QEMU, so the pid the hook records is QEMU's. The boot device the
// BMC was told picks which of NIC and disk the firmware tries first.
var vmScript = template.Must(template.New("vm").Parse(`#!/bin/sh
# Started by the BMC's chassis hook on power on (see internal/vmrig).
case "${INGOT_BOOT_ORDER:-c}" in
n) nic=1 disk=2 ;;
*) nic=2 disk=1 ;;
esac
exec qemu-system-x86_64 -name {{.Name}} -accel {{.Accel}} -cpu {{.CPU}} -m {{.Memory}} -smp 1 \
  -display none -vga none -no-user-config -nodefaults \
  -chardev file,id=ser0,path={{.Serial}},append=on -serial chardev:ser0 \
  -monitor unix:${INGOT_VM_MONITOR:?},server,nowait \
  -netdev tap,id=n0,ifname={{.Tap}},script=no,downscript=no \
  -device virtio-net-pci,netdev=n0,mac={{.MAC}},bootindex=$nic \
  -drive file={{.Disk}},format=raw,if=none,id=d0,cache=unsafe \
  -device virtio-blk-pci,drive=d0,serial={{.DiskSerial}},bootindex=$disk \
{{- if .UEFI}}
  -drive if=pflash,format=raw,readonly=on,file={{.OVMFCode}} \
  -drive if=pflash,format=raw,file={{.Vars}} \
{{- end}}
  -device virtio-rng-pci
`))

// AddNode creates a node: its tap device on the bridge, disk file, UEFI
// variable store, VM program and BMC (ipmi_sim on the namespace's
// loopback, port 6230 + index). The VM is off until the BMC powers it on.
func (r *Rig) AddNode(ctx context.Context, o NodeOptions) (*Node, error) {
	if o.Firmware == "" {
		o.Firmware = "bios"
	}
	if o.Firmware != "bios" && o.Firmware != "uefi" {
		return nil, fmt.Errorf("vmrig: firmware %q: want bios or uefi", o.Firmware)
	}
	if o.DiskSize == 0 {
		o.DiskSize = 8 << 30
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 1024
	}
	r.mu.Lock()
	idx := len(r.nodes)
	r.mu.Unlock()
	if o.Name == "" {
		o.Name = fmt.Sprintf("vm%d", idx)
	}
	n := &Node{Name: o.Name, Firmware: o.Firmware, MAC: fmt.Sprintf("52:54:00:12:34:%02x", 0x10+idx),
		Dir: filepath.Join(r.Dir, "nodes", o.Name), Tap: fmt.Sprintf("tap%d", idx),
		DiskSerial: fmt.Sprintf("INGOT-%s", strings.ToUpper(o.Name))}
	n.Disk = filepath.Join(n.Dir, "disk.raw")
	n.Serial = filepath.Join(n.Dir, "serial.log")
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(n.Disk)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(o.DiskSize); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	for _, s := range [][]string{
		{"tuntap", "add", "dev", n.Tap, "mode", "tap"},
		{"link", "set", n.Tap, "master", r.Bridge},
		{"link", "set", n.Tap, "up"},
	} {
		if err := r.run(ctx, "ip", append([]string{"-n", r.NS}, s...)...); err != nil {
			return nil, err
		}
	}
	vars := filepath.Join(n.Dir, "OVMF_VARS.fd")
	if o.Firmware == "uefi" {
		b, err := os.ReadFile(OVMFVars)
		if err != nil {
			return nil, fmt.Errorf("vmrig: UEFI node needs OVMF (Debian package ovmf): %w", err)
		}
		if err := os.WriteFile(vars, b, 0o644); err != nil {
			return nil, err
		}
	}
	cpu := "max"
	if r.accel == "kvm" {
		cpu = "host"
	}
	var script bytes.Buffer
	err = vmScript.Execute(&script, map[string]any{"Name": n.Name, "Accel": r.accel, "CPU": cpu, "Memory": o.MemoryMiB,
		"Serial": n.Serial, "Tap": n.Tap, "MAC": n.MAC, "Disk": n.Disk, "DiskSerial": n.DiskSerial,
		"UEFI": o.Firmware == "uefi", "OVMFCode": OVMFCode, "Vars": vars})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "vm"), script.Bytes(), 0o755); err != nil {
		return nil, err
	}
	n.BMC, err = bmcsim.Start(ctx, bmcsim.Options{Addr: "127.0.0.1", Port: 6230 + idx,
		NodeDir: n.Dir, StateDir: filepath.Join(n.Dir, "bmc"), Wrap: r.Wrap(), Dial: r.DialContext})
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.nodes = append(r.nodes, n)
	r.mu.Unlock()
	r.log.Info("virtual node ready", "node", n.Name, "firmware", n.Firmware, "mac", n.MAC,
		"bmc", fmt.Sprintf("%s:%d", n.BMC.Addr, n.BMC.Port))
	return n, nil
}

func (n *Node) stop() {
	if n.BMC != nil {
		n.BMC.Stop()
	}
}

// SerialLog returns the node's serial console output so far.
func (n *Node) SerialLog() string {
	b, _ := os.ReadFile(n.Serial)
	return string(b)
}

// SerialSize is how much console output there is, to wait for output
// after this point.
func (n *Node) SerialSize() int64 {
	st, err := os.Stat(n.Serial)
	if err != nil {
		return 0
	}
	return st.Size()
}

// WaitSerial waits until the console shows marker after offset.
func (n *Node) WaitSerial(ctx context.Context, offset int64, marker string) error {
	for {
		b, _ := os.ReadFile(n.Serial)
		if int64(len(b)) > offset && bytes.Contains(b[offset:], []byte(marker)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: %q not on the console: %w", n.Name, marker, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Running reports whether the VM process runs.
func (n *Node) Running() bool {
	b, err := os.ReadFile(filepath.Join(n.Dir, "vm.pid"))
	if err != nil {
		return false
	}
	st, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(st), ") ")
	return rest != "" && rest[0] != 'Z' && rest[0] != 'X'
}

// DriverInfo is the node's driver_info for the ipmi hardware type.
func (n *Node) DriverInfo() map[string]any { return n.BMC.DriverInfo() }
