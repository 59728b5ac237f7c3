package inspect

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// go test ./agent/inspect -run TestCapture -capture=testdata/host copies
// the part of this machine's sysfs and procfs the inventory reads into a
// testdata tree (symlinks kept, relative, as in sysfs).
var captureDir = flag.String("capture", "", "capture this machine's sysfs/procfs subset into this directory")

func TestCapture(t *testing.T) {
	if *captureDir == "" {
		t.Skip("no -capture directory")
	}
	dest, err := filepath.Abs(*captureDir)
	if err != nil {
		t.Fatal(err)
	}
	var specs []string
	for _, g := range []string{
		"/proc/cpuinfo", "/proc/meminfo",
		"/sys/devices/system/cpu/online", "/sys/devices/system/cpu/possible", "/sys/devices/system/cpu/present",
		"/sys/devices/system/cpu/cpu*/topology/*",
		"/sys/devices/system/memory/block_size_bytes", "/sys/devices/system/memory/memory*/online",
		"/sys/devices/system/memory/memory*/state",
		"/sys/devices/system/node/online", "/sys/devices/system/node/possible", "/sys/devices/system/node/has_*",
		"/sys/devices/system/node/node*/cpu*/online", "/sys/devices/system/node/node*/distance",
		"/sys/devices/system/node/node*/meminfo",
		"/sys/class/dmi/id/*", "/sys/firmware/efi/fw_platform_size",
	} {
		m, _ := filepath.Glob(g)
		specs = append(specs, m...)
	}
	disks, _ := filepath.Glob("/sys/block/*")
	for _, d := range disks {
		for _, f := range []string{"size", "removable", "ro", "dev", "serial", "wwid", "nsid",
			"queue/rotational", "queue/logical_block_size", "queue/physical_block_size",
			"device/vendor", "device/model", "device/wwid", "device/vpd_pg80", "device/serial", "device/driver"} {
			specs = append(specs, filepath.Join(d, f))
		}
		parts, _ := filepath.Glob(filepath.Join(d, filepath.Base(d)+"*"))
		for _, p := range parts {
			specs = append(specs, filepath.Join(p, "size"), filepath.Join(p, "dev"), filepath.Join(p, "partition"))
		}
	}
	nics, _ := filepath.Glob("/sys/class/net/*")
	for _, n := range nics {
		for _, f := range []string{"address", "addr_assign_type", "carrier", "speed", "duplex", "operstate", "mtu", "type",
			"bonding_slave/perm_hwaddr", "device/vendor", "device/device", "device/driver", "device/subsystem"} {
			specs = append(specs, filepath.Join(n, f))
		}
	}
	for _, s := range specs {
		if err := copyInto(dest, s); err != nil {
			t.Logf("skip %s: %v", s, err)
		}
	}
}

// copyInto copies host path p into dest, recreating every symlink met on
// the way (so relative sysfs links keep working under dest).
func copyInto(dest, p string) error {
	cur := "/"
	for _, c := range strings.Split(strings.Trim(p, "/"), "/") {
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(next)
			if err != nil {
				return err
			}
			link := filepath.Join(dest, next)
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				return err
			}
			if _, err := os.Lstat(link); err != nil {
				if err := os.Symlink(target, link); err != nil {
					return err
				}
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			// Make sure the link's target exists in dest.
			if err := copyInto(dest, target); err != nil && strings.HasPrefix(target, "/sys/bus") {
				if err := os.MkdirAll(filepath.Join(dest, target), 0o755); err != nil {
					return err
				}
			}
			cur = filepath.Clean(target)
			continue
		}
		cur = next
	}
	fi, err := os.Stat(cur)
	if err != nil {
		return err
	}
	out := filepath.Join(dest, cur)
	if fi.IsDir() {
		return os.MkdirAll(out, 0o755)
	}
	b, err := os.ReadFile(cur)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, b, 0o644)
}
