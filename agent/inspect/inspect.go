// Package inspect collects the hardware inventory the agent reports, in
// IPA's shape (api.Inventory): CPU, memory, disks, network interfaces,
// DMI system information, boot mode and, where an in-band IPMI device
// exists, the BMC address.
//
// It reads through ghw and fills what ghw cannot know in a ramdisk without
// udev (disk serial, model, WWN, by-path, HCTL, transport; permanent MACs
// of bonded NICs) from sysfs directly. Every reader works under a root
// directory: "/" on a machine, a captured or hand-built sysfs/procfs tree
// in tests. Parsers of file contents are pure functions. Collecting is
// best effort: a section that cannot be read is left empty and reported,
// never fatal.
package inspect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/jaypipes/ghw"

	"github.com/ingot-dev/ingot/shared/api"
)

// Options configure an Inspector. The zero value inspects the running
// machine.
type Options struct {
	// Root is the directory holding sys/, proc/ and dev/; "/" when empty.
	Root string
	// BootIF is the MAC of the NIC the machine booted from (BOOTIF).
	BootIF string
	// Hostname returns the host name; os.Hostname when nil and Root is "/".
	Hostname func() (string, error)
	// Addresses returns an interface's first IPv4 and IPv6 addresses ("" for
	// none); read from the kernel when nil and Root is "/".
	Addresses func(name string) (v4, v6 string)
	// BMC reads the BMC's LAN configuration. It is only called when an
	// in-band IPMI device exists under Root; nil skips BMC detection.
	BMC func(ctx context.Context) (BMC, error)
	// Log receives warnings about sections that could not be read.
	Log *slog.Logger
}

// BMC is what in-band IPMI says about the BMC's network.
type BMC struct {
	Address   string // IPv4, "" when unset
	V6Address string
	MAC       string
}

// Inspector reads the inventory.
type Inspector struct {
	opts Options
}

// New returns an Inspector.
func New(opts Options) *Inspector {
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Root == "/" {
		if opts.Hostname == nil {
			opts.Hostname = os.Hostname
		}
		if opts.Addresses == nil {
			opts.Addresses = kernelAddresses
		}
	}
	return &Inspector{opts: opts}
}

func (i *Inspector) path(p ...string) string {
	return filepath.Join(append([]string{i.opts.Root}, p...)...)
}

func (i *Inspector) ghwArgs() []any {
	return []any{ghw.WithChroot(i.opts.Root), ghw.WithDisableTools(), ghw.WithLogger(i.opts.Log.With("lib", "ghw"))}
}

// Inventory collects the whole inventory. Sections that cannot be read are
// left empty; their errors are joined into the returned error, which is
// informational.
func (i *Inspector) Inventory(ctx context.Context) (api.Inventory, error) {
	var errs []error
	inv := api.Inventory{Interfaces: []api.Interface{}, Disks: []api.Disk{}}
	var err error
	if inv.Interfaces, err = i.Interfaces(ctx); err != nil {
		errs = append(errs, err)
	}
	if inv.Disks, err = i.Disks(ctx); err != nil {
		errs = append(errs, err)
	}
	if inv.CPU, err = i.CPU(ctx); err != nil {
		errs = append(errs, err)
	}
	if inv.Memory, err = i.Memory(ctx); err != nil {
		errs = append(errs, err)
	}
	inv.SystemVendor = i.SystemVendor(ctx)
	inv.Boot = api.Boot{CurrentBootMode: i.BootMode()}
	if i.opts.BootIF != "" {
		mac := i.opts.BootIF
		inv.Boot.PXEInterface = &mac
	}
	if i.opts.Hostname != nil {
		if h, err := i.opts.Hostname(); err == nil {
			inv.Hostname = h
		}
	}
	if i.opts.BMC != nil && i.HasIPMIDevice() {
		b, err := i.opts.BMC(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("read BMC address: %w", err))
		} else {
			if b.Address != "" {
				inv.BMCAddress = &b.Address
			}
			if b.V6Address != "" {
				inv.BMCV6Address = &b.V6Address
			}
			if b.MAC != "" {
				inv.BMCMAC = &b.MAC
			}
		}
	}
	if inv.Interfaces == nil {
		inv.Interfaces = []api.Interface{}
	}
	if inv.Disks == nil {
		inv.Disks = []api.Disk{}
	}
	err = errors.Join(errs...)
	if err != nil {
		i.opts.Log.Warn("inventory is incomplete", "err", err)
	}
	return inv, err
}

// BootMode is "uefi" when the kernel was booted by UEFI firmware, else
// "bios".
func (i *Inspector) BootMode() string {
	if _, err := os.Stat(i.path("sys/firmware/efi")); err == nil {
		return "uefi"
	}
	return "bios"
}

// HasIPMIDevice reports whether an in-band IPMI device node exists.
func (i *Inspector) HasIPMIDevice() bool {
	for _, p := range []string{"dev/ipmi0", "dev/ipmi/0", "dev/ipmidev/0"} {
		if _, err := os.Stat(i.path(p)); err == nil {
			return true
		}
	}
	return false
}

// --- disks -----------------------------------------------------------------

// skipDisk reports kernel block devices that can never hold an image.
func skipDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "sr", "fd", "nbd", "dm-"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return strings.HasPrefix(name, "mmcblk") && (strings.Contains(name, "boot") || strings.Contains(name, "rpmb"))
}

// Disks lists the disks that can hold an image, in kernel order.
func (i *Inspector) Disks(ctx context.Context) ([]api.Disk, error) {
	blk, err := ghw.Block(i.ghwArgs()...)
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	disks := []api.Disk{}
	for _, d := range blk.Disks {
		if skipDisk(d.Name) || d.SizeBytes == 0 {
			continue
		}
		s := i.sysfsDisk(d.Name)
		disk := api.Disk{
			Name:            "/dev/" + d.Name,
			Size:            int64(d.SizeBytes),
			Rotational:      s.rotational,
			LogicalSectors:  int(d.LogicalBlockSizeBytes),
			PhysicalSectors: int(d.PhysicalBlockSizeBytes),
			Model:           known(d.Model, s.model),
		}
		disk.Serial = optional(known(d.SerialNumber, s.serial))
		disk.Vendor = optional(known(d.Vendor, s.vendor))
		w := s.wwn
		if v := known(d.WWNNoExtension); v != "" {
			w.wwn, w.withExt = v, known(d.WWN, v)
		}
		disk.WWN = optional(w.wwn)
		disk.WWNWithExtension = optional(w.withExt)
		disk.WWNVendorExtension = optional(w.vendorExt)
		disk.HCTL = optional(s.hctl)
		disk.ByPath = optional(known(i.udevByPath(d.Name), s.byPath))
		disk.Tran = optional(s.tran)
		disks = append(disks, disk)
	}
	return disks, nil
}

// known returns the first value that is set and not ghw's "unknown".
func known(vals ...string) string {
	for _, v := range vals {
		v = strings.TrimSpace(v)
		if v != "" && v != "unknown" {
			return v
		}
	}
	return ""
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// udevByPath returns the /dev/disk/by-path link udev made for a disk, if
// udev runs (it does not in the ramdisk).
func (i *Inspector) udevByPath(name string) string {
	dir := i.path("dev/disk/by-path")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var links []string
	for _, e := range ents {
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && filepath.Base(t) == name {
			links = append(links, "/dev/disk/by-path/"+e.Name())
		}
	}
	slices.Sort(links)
	if len(links) == 0 {
		return ""
	}
	return links[0]
}

// --- network ---------------------------------------------------------------

// Interfaces lists the physical network interfaces with their permanent
// MACs.
func (i *Inspector) Interfaces(ctx context.Context) ([]api.Interface, error) {
	nw, err := ghw.Network(i.ghwArgs()...)
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	ifaces := []api.Interface{}
	for _, n := range nw.NICs {
		if n.IsVirtual {
			continue
		}
		s := i.sysfsNIC(n.Name)
		mac := known(s.permMAC, n.MACAddress, s.address)
		if mac == "" {
			continue
		}
		if hw, err := net.ParseMAC(mac); err == nil {
			mac = hw.String()
		}
		iface := api.Interface{Name: n.Name, MACAddress: mac, HasCarrier: s.carrier, LLDP: nil,
			Vendor: optional(s.vendor), Product: optional(s.product), Driver: optional(s.driver),
			PCIAddress: optional(s.pciAddress)}
		if s.speed > 0 {
			sp := s.speed
			iface.SpeedMbps = &sp
		}
		if i.opts.Addresses != nil {
			v4, v6 := i.opts.Addresses(n.Name)
			iface.IPv4Address, iface.IPv6Address = optional(v4), optional(v6)
		}
		ifaces = append(ifaces, iface)
	}
	return ifaces, nil
}

// kernelAddresses reads an interface's first IPv4 and global-or-link IPv6
// address from the running kernel.
func kernelAddresses(name string) (v4, v6 string) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return "", ""
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return "", ""
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip4 := ipn.IP.To4(); ip4 != nil {
			if v4 == "" {
				v4 = ip4.String()
			}
		} else if v6 == "" {
			v6 = ipn.IP.String()
		}
	}
	return v4, v6
}

// LookupMACs returns the MACs to send with a lookup: BOOTIF first, then
// every interface's own MAC, lower case and without duplicates. As IPA
// does, MACs whose first octet is 0xfa are skipped: some NICs expose such
// locally administered duplicates of their real address.
func LookupMACs(ifaces []api.Interface, bootIF string) []string {
	var out []string
	add := func(m string) {
		hw, err := net.ParseMAC(strings.TrimSpace(m))
		if err != nil || len(hw) != 6 || hw[0] == 0xfa || slices.Equal(hw, make(net.HardwareAddr, 6)) {
			return
		}
		s := hw.String()
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if bootIF != "" {
		add(bootIF)
	}
	for _, i := range ifaces {
		add(i.MACAddress)
	}
	return out
}

// --- CPU, memory, DMI ------------------------------------------------------

// CPU describes the processors.
func (i *Inspector) CPU(ctx context.Context) (api.CPU, error) {
	c := api.CPU{Architecture: arch(runtime.GOARCH), Flags: []string{}}
	b, err := os.ReadFile(i.path("proc/cpuinfo"))
	if err != nil {
		return c, fmt.Errorf("read cpuinfo: %w", err)
	}
	ci := ParseCPUInfo(string(b))
	c.ModelName, c.Frequency, c.Count, c.SocketCount = ci.Model, ci.MHz, ci.Count, ci.Sockets
	if len(ci.Flags) > 0 {
		c.Flags = ci.Flags
	}
	if info, err := ghw.CPU(i.ghwArgs()...); err == nil && info.TotalHardwareThreads > 0 {
		c.Count = int(info.TotalHardwareThreads)
		if len(info.Processors) > 0 {
			c.SocketCount = len(info.Processors)
			if c.ModelName == "" {
				c.ModelName = info.Processors[0].Model
			}
		}
	}
	return c, nil
}

func arch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i686"
	}
	return goarch
}

// CPUInfo is what /proc/cpuinfo says.
type CPUInfo struct {
	Model   string
	MHz     string
	Count   int
	Sockets int
	Flags   []string
}

// ParseCPUInfo reads /proc/cpuinfo (x86 and arm64 layouts).
func ParseCPUInfo(text string) CPUInfo {
	var ci CPUInfo
	sockets := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			ci.Count++
		case "model name", "Model name":
			if ci.Model == "" {
				ci.Model = v
			}
		case "cpu MHz":
			if ci.MHz == "" {
				ci.MHz = v
			}
		case "physical id":
			sockets[v] = true
		case "flags", "Features":
			if ci.Flags == nil {
				ci.Flags = strings.Fields(v)
			}
		}
	}
	ci.Sockets = len(sockets)
	if ci.Sockets == 0 && ci.Count > 0 {
		ci.Sockets = 1
	}
	return ci
}

// Memory reports kernel-visible and installed memory.
func (i *Inspector) Memory(ctx context.Context) (api.Memory, error) {
	var m api.Memory
	b, err := os.ReadFile(i.path("proc/meminfo"))
	if err != nil {
		return m, fmt.Errorf("read meminfo: %w", err)
	}
	m.Total = ParseMemTotal(string(b))
	if info, err := ghw.Memory(i.ghwArgs()...); err == nil && info.TotalPhysicalBytes > 0 {
		m.PhysicalMB = info.TotalPhysicalBytes >> 20
	}
	if m.PhysicalMB == 0 {
		m.PhysicalMB = (m.Total + 1<<20 - 1) >> 20
	}
	return m, nil
}

// ParseMemTotal returns MemTotal from /proc/meminfo in bytes.
func ParseMemTotal(text string) int64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil || n < 0 || n > 1<<52 {
				return 0
			}
			if len(f) > 1 && strings.EqualFold(f[1], "kb") {
				n *= 1024
			}
			return n
		}
	}
	return 0
}

// SystemVendor reads DMI; fields the firmware does not fill are empty.
func (i *Inspector) SystemVendor(ctx context.Context) api.SystemVendor {
	var sv api.SystemVendor
	if p, err := ghw.Product(i.ghwArgs()...); err == nil {
		sv.ProductName, sv.SerialNumber, sv.Manufacturer = known(p.Name), known(p.SerialNumber), known(p.Vendor)
	}
	if b, err := ghw.BIOS(i.ghwArgs()...); err == nil {
		sv.Firmware = api.Firmware{Vendor: known(b.Vendor), Version: known(b.Version), BuildDate: known(b.Date)}
	}
	return sv
}
