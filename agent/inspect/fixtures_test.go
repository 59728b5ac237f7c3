package inspect

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// -update rewrites the hand-built sysfs trees under testdata and the
// golden inventories. Reviewers read the diff.
var update = flag.Bool("update", false, "rewrite hand-built testdata trees and golden files")

// tree is a hand-built root: files (path -> content) and symlinks
// (path -> "->target").
type tree map[string]string

func (tr tree) write(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for p, c := range tr {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// disk adds a block device living under the device devDir (under
// sys/devices, in its block/ subdirectory as SCSI and virtio disks do, or
// directly for NVMe namespaces), with size in 512-byte sectors.
func (tr tree) disk(name, devDir string, sectors string, rotational string, extra map[string]string) {
	blockDir := devDir + "/block/" + name
	if strings.HasPrefix(name, "nvme") {
		blockDir = devDir + "/" + name
	}
	d := "sys/devices/" + blockDir
	tr["sys/block/"+name] = "->../devices/" + blockDir
	tr[d+"/size"] = sectors + "\n"
	tr[d+"/removable"] = "0\n"
	tr[d+"/ro"] = "0\n"
	tr[d+"/dev"] = "8:0\n"
	tr[d+"/queue/rotational"] = rotational + "\n"
	tr[d+"/queue/logical_block_size"] = "512\n"
	tr[d+"/queue/physical_block_size"] = "4096\n"
	for k, v := range extra {
		tr[d+"/"+k] = v
	}
}

func (tr tree) nic(name, devDir, mac string, extra map[string]string) {
	n := "sys/devices/" + devDir + "/net/" + name
	tr["sys/class/net/"+name] = "->../../devices/" + devDir + "/net/" + name
	tr[n+"/address"] = mac + "\n"
	tr[n+"/addr_assign_type"] = "0\n"
	tr[n+"/carrier"] = "1\n"
	tr[n+"/operstate"] = "up\n"
	for k, v := range extra {
		tr[n+"/"+k] = v
	}
}

func vpd80(serial string) string {
	return string([]byte{0x00, 0x80, 0x00, byte(len(serial))}) + serial
}

const fixtureCPUInfo = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
cpu MHz		: 2100.000
physical id	: 0
flags		: fpu vme de pse tsc msr pae mce vmx
processor	: 1
model name	: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
cpu MHz		: 2100.000
physical id	: 1
flags		: fpu vme de pse tsc msr pae mce vmx
`

func fixtures() map[string]tree {
	virtio := tree{
		"proc/cpuinfo":                               fixtureCPUInfo,
		"proc/meminfo":                               "MemTotal:        4028332 kB\nMemFree:          123456 kB\n",
		"sys/firmware/efi/fw_platform_size":          "64\n", // a file: git keeps no empty directory
		"sys/class/dmi/id/sys_vendor":                "QEMU\n",
		"sys/class/dmi/id/product_name":              "Standard PC (Q35 + ICH9, 2009)\n",
		"sys/class/dmi/id/product_serial":            "SN-4711\n",
		"sys/class/dmi/id/bios_vendor":               "EDK II\n",
		"sys/class/dmi/id/bios_version":              "edk2-stable202302\n",
		"sys/class/dmi/id/bios_date":                 "02/06/2023\n",
		"sys/devices/system/memory/block_size_bytes": "8000000\n",
	}
	for i := range 32 {
		virtio[filepathJoin("sys/devices/system/memory", "memory"+itoa(i), "online")] = "1\n"
		virtio[filepathJoin("sys/devices/system/memory", "memory"+itoa(i), "state")] = "online\n"
	}
	virtio.disk("vda", "pci0000:00/0000:00:04.0/virtio1", "41943040", "1", map[string]string{
		"serial": "VIRTIO-ROOT\n", "device": "->../../../virtio1"})
	virtio["sys/devices/pci0000:00/0000:00:04.0/virtio1/vendor"] = "0x1af4\n"
	virtio.disk("vdb", "pci0000:00/0000:00:06.0/virtio4", "4194304", "1", map[string]string{
		"serial": "VIRTIO-SMALL\n", "device": "->../../../virtio4"})
	virtio["sys/devices/pci0000:00/0000:00:06.0/virtio4/vendor"] = "0x1af4\n"
	virtio.disk("sr0", "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0", "2097152", "1", nil)
	virtio.disk("zram0", "virtual", "2097152", "0", nil)
	virtio.nic("eth0", "pci0000:00/0000:00:03.0/virtio2", "52:54:00:12:34:56", map[string]string{
		"speed": "-1\n", "device": "->../../../virtio2"})
	virtio["sys/devices/pci0000:00/0000:00:03.0/virtio2/vendor"] = "0x1af4\n"
	virtio["sys/devices/pci0000:00/0000:00:03.0/virtio2/device"] = "0x0001\n"
	virtio["sys/devices/pci0000:00/0000:00:03.0/virtio2/driver"] = "->../../../../bus/virtio/drivers/virtio_net"
	virtio["sys/bus/virtio/drivers/virtio_net/"] = ""
	virtio["sys/class/net/lo"] = "->../../devices/virtual/net/lo"
	virtio["sys/devices/virtual/net/lo/address"] = "00:00:00:00:00:00\n"

	scsi := tree{}
	vs := "pci0000:00/0000:00:05.0/virtio3/host0/target0:0:1:0/0:0:1:0"
	scsi.disk("sda", vs, "209715200", "0", map[string]string{"device": "->../../../0:0:1:0"})
	scsi["sys/devices/"+vs+"/model"] = "QEMU HARDDISK   \n"
	scsi["sys/devices/"+vs+"/vendor"] = "QEMU    \n"
	scsi["sys/devices/"+vs+"/wwid"] = "naa.5000c500a1b2c3d4\n"
	scsi["sys/devices/"+vs+"/vpd_pg80"] = vpd80("drive-scsi0 ")
	sas := "pci0000:17/0000:17:00.0/0000:18:00.0/host1/port-1:0/end_device-1:0/target1:0:0/1:0:0:0"
	scsi.disk("sdb", sas, "937703088", "1", map[string]string{"device": "->../../../1:0:0:0"})
	scsi["sys/devices/"+sas+"/model"] = "PERC H730 Mini  \n"
	scsi["sys/devices/"+sas+"/vendor"] = "DELL    \n"
	scsi["sys/devices/"+sas+"/wwid"] = "naa.6d0946606c47d8002a1b7c0a1e5b2b4f\n"
	scsi["sys/devices/"+sas+"/vpd_pg80"] = vpd80("00ab1234cd")
	ata := "pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0"
	scsi.disk("sdc", ata, "1000215216", "0", map[string]string{"device": "->../../../2:0:0:0"})
	scsi["sys/devices/"+ata+"/model"] = "Samsung SSD 860 \n"
	scsi["sys/devices/"+ata+"/vendor"] = "ATA     \n"
	scsi["sys/devices/"+ata+"/wwid"] = "t10.ATA     Samsung SSD 860 EVO 500GB               S3Z9NB0K123456A     \n"
	scsi["sys/devices/"+ata+"/vpd_pg80"] = vpd80("S3Z9NB0K123456A")
	// Two NICs enslaved to a bond: their "address" is the bond's; their
	// own is perm_hwaddr. A third NIC carries an 0xfa locally
	// administered duplicate.
	scsi.nic("eno1", "pci0000:00/0000:00:19.0", "3c:fd:fe:00:00:aa", map[string]string{
		"bonding_slave/perm_hwaddr": "3c:fd:fe:00:00:01\n", "speed": "10000\n", "device": "->../../../0000:00:19.0"})
	scsi.nic("eno2", "pci0000:00/0000:00:19.1", "3c:fd:fe:00:00:aa", map[string]string{
		"bonding_slave/perm_hwaddr": "3c:fd:fe:00:00:02\n", "speed": "10000\n", "carrier": "0\n", "device": "->../../../0000:00:19.1"})
	scsi.nic("eno3", "pci0000:00/0000:00:19.2", "fa:fd:fe:00:00:03", map[string]string{"device": "->../../../0000:00:19.2"})
	for _, f := range []string{"0000:00:19.0", "0000:00:19.1", "0000:00:19.2"} {
		scsi["sys/devices/pci0000:00/"+f+"/vendor"] = "0x8086\n"
		scsi["sys/devices/pci0000:00/"+f+"/device"] = "0x1572\n"
		scsi["sys/devices/pci0000:00/"+f+"/driver"] = "->../../../bus/pci/drivers/i40e"
	}
	scsi["sys/bus/pci/drivers/i40e/"] = ""
	scsi["sys/class/net/bond0"] = "->../../devices/virtual/net/bond0"
	scsi["sys/devices/virtual/net/bond0/address"] = "3c:fd:fe:00:00:aa\n"
	scsi["sys/devices/virtual/net/bond0/addr_assign_type"] = "0\n"
	scsi["dev/ipmi0"] = ""

	nvme := tree{}
	for _, n := range []struct{ ctrl, pci, model, serial, wwid string }{
		{"nvme0", "pci0000:00/0000:00:01.0/0000:01:00.0", "SAMSUNG MZ1LB960HAJQ-00007", "S435NA0M123456", "eui.0025388b91b3c2a1"},
		{"nvme1", "pci0000:00/0000:00:01.1/0000:02:00.0", "INTEL SSDPE2KX010T8", "PHLJ9123", "nvme.8086-50484c4a39313233-494e54454c-00000001"},
	} {
		dir := n.pci + "/nvme/" + n.ctrl
		nvme.disk(n.ctrl+"n1", dir, "1875385008", "0", map[string]string{"wwid": n.wwid + "\n", "nsid": "1\n", "device": "->../../" + n.ctrl})
		nvme["sys/devices/"+dir+"/model"] = n.model + "                 \n"
		nvme["sys/devices/"+dir+"/serial"] = n.serial + "      \n"
	}
	// udev ran on this machine for nvme1: its by-path link wins.
	nvme["dev/disk/by-path/pci-0000:02:00.0-nvme-1"] = "->../../nvme1n1"
	nvme["dev/disk/by-path/pci-0000:02:00.0-nvme-1-part1"] = "->../../nvme1n1p1"
	return map[string]tree{"virtio": virtio, "scsi": scsi, "nvme": nvme}
}

func filepathJoin(p ...string) string { return filepath.Join(p...) }

func itoa(i int) string { return strconv.Itoa(i) }
