package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/shared/api"
)

var writeFixtures sync.Once

// root returns a testdata tree, rewriting the hand-built ones under
// -update.
func root(t *testing.T, name string) string {
	t.Helper()
	if *update {
		writeFixtures.Do(func() {
			for n, tr := range fixtures() {
				tr.write(t, filepath.Join("testdata", n))
			}
		})
	}
	return filepath.Join("testdata", name)
}

// golden compares v with testdata/<name>.json, rewriting it under -update.
func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	p := filepath.Join("testdata", name+".json")
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got; run with -update after checking):\n%s", p, diff)
	}
}

func s(v string) *string { return &v }

func disk(t *testing.T, disks []api.Disk, name string) api.Disk {
	t.Helper()
	for _, d := range disks {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no disk %s in %v", name, disks)
	return api.Disk{}
}

func TestInventoryVirtio(t *testing.T) {
	ins := New(Options{Root: root(t, "virtio"), BootIF: "52:54:00:12:34:56",
		Hostname:  func() (string, error) { return "node-1", nil },
		Addresses: func(string) (string, string) { return "192.0.2.50", "" }})
	inv, err := ins.Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "virtio.inventory", inv)
	vda := disk(t, inv.Disks, "/dev/vda")
	want := api.Disk{Name: "/dev/vda", Size: 20 << 30, Rotational: true, Serial: s("VIRTIO-ROOT"), Vendor: s("0x1af4"),
		ByPath: s("/dev/disk/by-path/pci-0000:00:04.0"), LogicalSectors: 512, PhysicalSectors: 4096}
	if diff := cmp.Diff(want, vda); diff != "" {
		t.Errorf("vda (-want +got):\n%s", diff)
	}
	if len(inv.Disks) != 2 {
		t.Errorf("CD-ROM or zram listed: %v", inv.Disks)
	}
	if len(inv.Interfaces) != 1 || inv.Interfaces[0].MACAddress != "52:54:00:12:34:56" || *inv.Interfaces[0].Driver != "virtio_net" ||
		*inv.Interfaces[0].PCIAddress != "0000:00:03.0" || !inv.Interfaces[0].HasCarrier || inv.Interfaces[0].SpeedMbps != nil {
		t.Errorf("interfaces %+v", inv.Interfaces)
	}
	if inv.Boot.CurrentBootMode != "uefi" || inv.CPU.Count != 2 || inv.CPU.SocketCount != 2 || inv.CPU.Frequency != "2100.000" ||
		inv.Memory.Total != 4028332*1024 || inv.Memory.PhysicalMB != 4096 || inv.SystemVendor.Manufacturer != "QEMU" ||
		inv.SystemVendor.Firmware.Version != "edk2-stable202302" || inv.Hostname != "node-1" || inv.BMCAddress != nil {
		t.Errorf("inventory %+v", inv)
	}
}

func TestDisksSCSI(t *testing.T) {
	disks, err := New(Options{Root: root(t, "scsi")}).Disks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "scsi.disks", disks)
	for _, tc := range []struct {
		name string
		want api.Disk
	}{
		{"virtio-scsi disk with an NAA-5 WWN", api.Disk{Name: "/dev/sda", Model: "QEMU HARDDISK", Size: 100 << 30, Vendor: s("QEMU"),
			Serial: s("drive-scsi0"), WWN: s("0x5000c500a1b2c3d4"), WWNWithExtension: s("0x5000c500a1b2c3d4"), HCTL: s("0:0:1:0"),
			ByPath: s("/dev/disk/by-path/pci-0000:00:05.0-scsi-0:0:1:0"), LogicalSectors: 512, PhysicalSectors: 4096}},
		{"SAS RAID volume with an NAA-6 WWN and vendor extension", api.Disk{Name: "/dev/sdb", Model: "PERC H730 Mini", Size: 937703088 * 512,
			Rotational: true, Vendor: s("DELL"), Serial: s("00ab1234cd"), WWN: s("0x6d0946606c47d800"),
			WWNWithExtension: s("0x6d0946606c47d8002a1b7c0a1e5b2b4f"), WWNVendorExtension: s("0x2a1b7c0a1e5b2b4f"), HCTL: s("1:0:0:0"),
			ByPath: s("/dev/disk/by-path/pci-0000:18:00.0-scsi-1:0:0:0"), Tran: s("sas"), LogicalSectors: 512, PhysicalSectors: 4096}},
		{"SATA SSD without a WWN", api.Disk{Name: "/dev/sdc", Model: "Samsung SSD 860", Size: 1000215216 * 512, Vendor: s("ATA"),
			Serial: s("S3Z9NB0K123456A"), HCTL: s("2:0:0:0"), ByPath: s("/dev/disk/by-path/pci-0000:00:1f.2-ata-3"), Tran: s("sata"),
			LogicalSectors: 512, PhysicalSectors: 4096}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, disk(t, disks, tc.want.Name)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDisksNVMe(t *testing.T) {
	disks, err := New(Options{Root: root(t, "nvme")}).Disks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "nvme.disks", disks)
	want := []api.Disk{
		{Name: "/dev/nvme0n1", Model: "SAMSUNG MZ1LB960HAJQ-00007", Size: 1875385008 * 512, Serial: s("S435NA0M123456"),
			WWN: s("eui.0025388b91b3c2a1"), WWNWithExtension: s("eui.0025388b91b3c2a1"),
			ByPath: s("/dev/disk/by-path/pci-0000:01:00.0-nvme-1"), Tran: s("nvme"), LogicalSectors: 512, PhysicalSectors: 4096},
		{Name: "/dev/nvme1n1", Model: "INTEL SSDPE2KX010T8", Size: 1875385008 * 512, Serial: s("PHLJ9123"),
			WWN: s("nvme.8086-50484c4a39313233-494e54454c-00000001"), WWNWithExtension: s("nvme.8086-50484c4a39313233-494e54454c-00000001"),
			ByPath: s("/dev/disk/by-path/pci-0000:02:00.0-nvme-1"), Tran: s("nvme"), LogicalSectors: 512, PhysicalSectors: 4096},
	}
	if diff := cmp.Diff(want, disks); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestInterfacesBondAndLocallyAdministered(t *testing.T) {
	ifaces, err := New(Options{Root: root(t, "scsi")}).Interfaces(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "scsi.interfaces", ifaces)
	var macs []string
	for _, i := range ifaces {
		macs = append(macs, i.Name+"="+i.MACAddress)
	}
	if want := []string{"eno1=3c:fd:fe:00:00:01", "eno2=3c:fd:fe:00:00:02", "eno3=fa:fd:fe:00:00:03"}; !slices.Equal(macs, want) {
		t.Errorf("interfaces %v, want %v (the bond itself and the bond's MAC must not appear)", macs, want)
	}
	got := LookupMACs(ifaces, "3C-FD-FE-00-00-02")
	if want := []string{"3c:fd:fe:00:00:02", "3c:fd:fe:00:00:01"}; !slices.Equal(got, want) {
		t.Errorf("LookupMACs = %v, want %v", got, want)
	}
}

func TestBMCOnlyWithAnIPMIDevice(t *testing.T) {
	calls := 0
	bmc := func(context.Context) (BMC, error) {
		calls++
		return BMC{Address: "192.0.2.10", MAC: "d0:94:66:00:00:01"}, nil
	}
	inv, _ := New(Options{Root: root(t, "scsi"), BMC: bmc}).Inventory(t.Context())
	if calls != 1 || inv.BMCAddress == nil || *inv.BMCAddress != "192.0.2.10" || *inv.BMCMAC != "d0:94:66:00:00:01" {
		t.Errorf("calls %d, bmc %v", calls, inv.BMCAddress)
	}
	inv, _ = New(Options{Root: root(t, "virtio"), BMC: bmc}).Inventory(t.Context())
	if calls != 1 || inv.BMCAddress != nil {
		t.Errorf("BMC read without an IPMI device: calls %d", calls)
	}
	_, err := New(Options{Root: root(t, "scsi"), BMC: func(context.Context) (BMC, error) { return BMC{}, ErrNoBMCAddress }}).Inventory(t.Context())
	if !errors.Is(err, ErrNoBMCAddress) {
		t.Errorf("err = %v", err)
	}
}

func TestInventoryHostCapture(t *testing.T) {
	// This machine's own sysfs and procfs, captured with -capture.
	inv, err := New(Options{Root: root(t, "host"), Hostname: func() (string, error) { return "ci", nil }}).Inventory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "host.inventory", inv)
	if len(inv.Disks) != 1 || inv.Disks[0].Name != "/dev/vda" || *inv.Disks[0].Serial != "overlayblk" ||
		len(inv.Interfaces) != 1 || inv.Interfaces[0].MACAddress != "02:fc:00:00:00:01" || inv.CPU.ModelName != "AMD EPYC" ||
		inv.Boot.CurrentBootMode != "bios" {
		t.Errorf("inventory %+v", inv)
	}
}

func TestInventoryOfAnEmptyRootIsIncompleteNotFatal(t *testing.T) {
	inv, err := New(Options{Root: t.TempDir()}).Inventory(t.Context())
	if err == nil {
		t.Error("no error for an empty root")
	}
	if inv.Disks == nil || inv.Interfaces == nil || inv.Boot.CurrentBootMode != "bios" {
		t.Errorf("inventory %+v", inv)
	}
}

func TestRunningMachine(t *testing.T) {
	// The real root: whatever is there, collecting must not fail and
	// every disk listed must exist as a device node.
	inv, _ := New(Options{}).Inventory(t.Context())
	for _, d := range inv.Disks {
		if _, err := os.Stat(d.Name); err != nil {
			t.Errorf("listed %s: %v", d.Name, err)
		}
	}
}
