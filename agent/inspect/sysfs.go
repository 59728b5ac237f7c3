package inspect

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// diskAttrs is what sysfs says about a disk where udev would normally
// answer.
type diskAttrs struct {
	model, serial, vendor string
	wwn                   wwnParts
	hctl, byPath, tran    string
	rotational            bool
}

func (i *Inspector) read(p ...string) string {
	b, err := os.ReadFile(i.path(p...))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.TrimRight(string(b), "\x00"))
}

// devicePath resolves /sys/block/<name> to its device directory under
// /sys/devices, relative to the root (e.g.
// "sys/devices/pci0000:00/0000:00:05.0/virtio2/host0/target0:0:0/0:0:0:0/block/sda").
func (i *Inspector) devicePath(link string) string {
	t, err := os.Readlink(i.path(link))
	if err != nil {
		return ""
	}
	if filepath.IsAbs(t) {
		return strings.TrimPrefix(filepath.Clean(t), "/")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(link), t))
}

func (i *Inspector) sysfsDisk(name string) diskAttrs {
	var a diskAttrs
	base := "sys/block/" + name
	a.rotational = i.read(base, "queue/rotational") == "1"
	dev := i.devicePath(base)
	switch {
	case strings.HasPrefix(name, "nvme"):
		a.model = i.read(base, "device/model")
		a.serial = i.read(base, "device/serial")
		a.wwn = ParseWWID(i.read(base, "wwid"))
		a.tran = "nvme"
		nsid := i.read(base, "nsid")
		if nsid == "" {
			if _, n, ok := strings.Cut(name, "n"); ok {
				if j := strings.IndexByte(n, 'n'); j >= 0 {
					nsid = n[j+1:]
				}
			}
		}
		if pci := lastPCI(dev); pci != "" && nsid != "" {
			a.byPath = "/dev/disk/by-path/pci-" + pci + "-nvme-" + nsid
		}
	case strings.HasPrefix(name, "vd"):
		a.serial = i.read(base, "serial")
		a.vendor = i.read(base, "device/vendor")
		if pci := lastPCI(dev); pci != "" {
			a.byPath = "/dev/disk/by-path/pci-" + pci
		}
	case strings.HasPrefix(name, "sd"):
		a.model = i.read(base, "device/model")
		a.vendor = i.read(base, "device/vendor")
		a.wwn = ParseWWID(i.read(base, "device/wwid"))
		if b, err := os.ReadFile(i.path(base, "device/vpd_pg80")); err == nil {
			a.serial = ParseVPD80(b)
		}
		a.hctl = hctlOf(dev)
		a.tran = transport(dev)
		if pci := lastPCI(dev); pci != "" && a.hctl != "" {
			a.byPath = "/dev/disk/by-path/pci-" + pci + "-scsi-" + a.hctl
			if port := ataPort(dev); port != "" {
				a.byPath = "/dev/disk/by-path/pci-" + pci + "-ata-" + port
			}
		}
	default:
		a.model = i.read(base, "device/model")
		a.serial = i.read(base, "device/serial")
	}
	return a
}

var (
	pciRe  = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)
	hctlRe = regexp.MustCompile(`^\d+:\d+:\d+:\d+$`)
	ataRe  = regexp.MustCompile(`^ata(\d+)$`)
)

// lastPCI returns the PCI address of the device closest to the disk in a
// sysfs device path.
func lastPCI(devPath string) string {
	parts := strings.Split(devPath, "/")
	for j := len(parts) - 1; j >= 0; j-- {
		if pciRe.MatchString(parts[j]) {
			return parts[j]
		}
	}
	return ""
}

// hctlOf returns the SCSI host:channel:target:lun of a disk's device path.
func hctlOf(devPath string) string {
	parts := strings.Split(devPath, "/")
	for j := len(parts) - 1; j >= 0; j-- {
		if hctlRe.MatchString(parts[j]) {
			return parts[j]
		}
	}
	return ""
}

func ataPort(devPath string) string {
	for _, p := range strings.Split(devPath, "/") {
		if m := ataRe.FindStringSubmatch(p); m != nil {
			return m[1]
		}
	}
	return ""
}

// transport guesses lsblk's TRAN from where a SCSI disk hangs in sysfs.
func transport(devPath string) string {
	switch {
	case strings.Contains(devPath, "/usb"):
		return "usb"
	case ataPort(devPath) != "":
		return "sata"
	case strings.Contains(devPath, "/end_device-") || strings.Contains(devPath, "/port-"):
		return "sas"
	case strings.Contains(devPath, "/session"):
		return "iscsi"
	case strings.Contains(devPath, "/rport-"):
		return "fc"
	}
	return ""
}

// wwnParts are a disk's World Wide Name as udev splits it.
type wwnParts struct {
	wwn, withExt, vendorExt string
}

// ParseWWID turns a kernel wwid ("naa.<hex>", "eui.<hex>", "t10.<text>",
// "nvme.<...>", "uuid.<...>") into udev's ID_WWN, ID_WWN_WITH_EXTENSION
// and ID_WWN_VENDOR_EXTENSION. NAA type 6 names carry a 64-bit vendor
// extension after the 64-bit WWN; T10 vendor ids are not WWNs.
func ParseWWID(wwid string) wwnParts {
	typ, v, ok := strings.Cut(strings.TrimSpace(wwid), ".")
	if !ok || v == "" {
		return wwnParts{}
	}
	switch typ {
	case "naa":
		h := strings.ToLower(v)
		if !isHex(h) {
			return wwnParts{}
		}
		if len(h) == 32 {
			return wwnParts{wwn: "0x" + h[:16], withExt: "0x" + h, vendorExt: "0x" + h[16:]}
		}
		return wwnParts{wwn: "0x" + h, withExt: "0x" + h}
	case "eui", "nvme", "uuid":
		return wwnParts{wwn: wwid, withExt: wwid}
	}
	return wwnParts{}
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ParseVPD80 reads the unit serial number from a SCSI VPD page 0x80
// (sysfs vpd_pg80): a 4-byte header whose last byte is the length, then
// the serial, space padded.
func ParseVPD80(b []byte) string {
	if len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[3])
	if 4+n > len(b) {
		n = len(b) - 4
	}
	s := strings.TrimSpace(strings.TrimRight(string(b[4:4+n]), "\x00"))
	for _, c := range s {
		if c < 0x20 || c > 0x7e {
			return ""
		}
	}
	return s
}

// nicAttrs is what sysfs says about a network interface.
type nicAttrs struct {
	address, permMAC        string
	carrier                 bool
	speed                   int
	vendor, product, driver string
	pciAddress              string
}

func (i *Inspector) sysfsNIC(name string) nicAttrs {
	base := "sys/class/net/" + name
	a := nicAttrs{
		address: i.read(base, "address"),
		// A bond rewrites its slaves' addresses; the slave's own is here.
		permMAC: i.read(base, "bonding_slave/perm_hwaddr"),
		carrier: i.read(base, "carrier") == "1",
		vendor:  i.read(base, "device/vendor"),
		product: i.read(base, "device/device"),
	}
	if n, err := strconv.Atoi(i.read(base, "speed")); err == nil && n > 0 {
		a.speed = n
	}
	if t, err := os.Readlink(i.path(base, "device/driver")); err == nil {
		a.driver = filepath.Base(t)
	}
	a.pciAddress = lastPCI(i.devicePath(base))
	return a
}
