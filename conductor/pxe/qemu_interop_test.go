//go:build interop

package pxe_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/pxe"
	"github.com/ingot-dev/ingot/internal/netnstest"
	"github.com/ingot-dev/ingot/internal/peertest"
	"github.com/ingot-dev/ingot/internal/vmtest"
)

const (
	vmMAC    = "52:54:00:12:34:56"
	serverIP = "10.99.0.1"
	bootURL  = "http://10.99.0.1:8080"
	apiURL   = "http://10.99.0.1:6385"
)

// TestInteropQEMUPXEBoot PXE-boots a QEMU VM from the real conductor
// binary, running in a network namespace with a bridge and a tap device:
// the VM's firmware gets its address and boot file by DHCP, iPXE fetches
// its script, then a kernel (Debian's cloud kernel) and an initramfs over
// HTTP, and the initramfs prints the kernel command line Ingot rendered
// on the serial console before it powers the VM off.
func TestInteropQEMUPXEBoot(t *testing.T) {
	peertest.Root(t, "network namespaces and tap devices")
	qemu := peertest.Binary(t, "qemu-system-x86_64", "qemu-system-x86")
	peertest.Binary(t, "curl", "curl")
	if _, err := os.Stat("/usr/lib/ipxe/qemu/pxe-virtio.rom"); err != nil {
		peertest.Missing(t, "QEMU's iPXE ROMs", "apt-get install ipxe-qemu")
	}
	kernel := fetchKernel(t)
	work := t.TempDir()
	initrd := buildInitramfs(t, work)
	conductor := buildConductor(t, work)

	for _, tc := range []struct {
		name      string
		mode      string
		chainload bool
		uefi      bool
		noROM     bool // firmware's own network boot instead of QEMU's iPXE ROM
	}{
		// The QEMU ROM is iPXE already; --dhcp-chainload-ipxe makes the
		// first DHCP answer undionly.kpxe by TFTP anyway, so the path a
		// plain PXE ROM takes is exercised: TFTP, then the chain-loaded
		// iPXE (user class iPXE) gets its script URL.
		{name: "full mode BIOS chainloading iPXE by TFTP", mode: "full", chainload: true},
		{name: "proxy mode BIOS next to udhcpd", mode: "proxy"},
		{name: "full mode UEFI", mode: "full", uefi: true},
		{name: "full mode UEFI chainloading snponly.efi by TFTP", mode: "full", chainload: true, uefi: true},
		// OVMF's own UEFI PXE (no iPXE ROM on the NIC) is the plain
		// firmware every real UEFI server has: snponly.efi by TFTP, then
		// the script.
		{name: "proxy mode UEFI firmware PXE", mode: "proxy", uefi: true, noROM: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.uefi {
				if _, err := os.Stat("/usr/share/OVMF/OVMF_CODE_4M.fd"); err != nil {
					peertest.Missing(t, "OVMF", "apt-get install ovmf")
				}
			}
			start := time.Now()
			r := newBootRig(t, tc.mode)
			state := t.TempDir()
			args := []string{
				"--api-listen", serverIP + ":6385", "--state-dir", state, "--log-level", "debug",
				"--boot-http-listen", serverIP + ":8080", "--tftp-listen", serverIP + ":69",
				"--dhcp-mode", tc.mode, "--dhcp-interface", "br0",
				"--deploy-kernel", kernel, "--deploy-ramdisk", initrd,
				"--kernel-append-params", "console=ttyS0 panic=-1",
			}
			if tc.mode == "full" {
				args = append(args, "--dhcp-range", "10.99.0.100-10.99.0.150")
			}
			if tc.chainload {
				args = append(args, "--dhcp-chainload-ipxe")
			}
			logFile := r.startConductor(t, conductor, args)
			if dir := os.Getenv("INGOT_CAPTURE_DHCP"); dir != "" {
				r.captureDHCP(t, filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")))
			}

			// Register the node and its port through the API, then write
			// its agent boot the way the deploy flow does.
			uuid := r.createNode(t)
			b, err := pxe.New(slog.New(slog.NewTextHandler(t.Output(), nil)), nil, pxe.Options{
				Root: filepath.Join(state, "boot"), HTTPURL: bootURL, APIURL: apiURL,
				DeployKernel: kernel, DeployRamdisk: initrd, KernelAppend: "console=ttyS0 panic=-1",
			})
			if err != nil {
				t.Fatal(err)
			}
			n := &node.Node{UUID: uuid, ProvisionState: node.StateDeploying}
			if tc.uefi {
				n.BootMode = "uefi"
			}
			if err := b.PrepareRamdisk(t.Context(), n, []*node.Port{{UUID: "p", Address: vmMAC, PXEEnabled: true}}); err != nil {
				t.Fatal(err)
			}

			serial := r.runVM(t, qemu, vm{uefi: tc.uefi, noROM: tc.noROM})
			logs, _ := os.ReadFile(logFile)
			t.Logf("%s: VM booted and powered off %.1f s after the rig started", tc.name, time.Since(start).Seconds())
			check := func(what string, ok bool) {
				t.Helper()
				if !ok {
					t.Errorf("%s\n--- serial (tail) ---\n%s\n--- conductor log (tail) ---\n%s", what, tail(serial, 3000), tail(string(logs), 6000))
				}
			}
			m := regexp.MustCompile(`INGOT-INIT-UP cmdline=(.*)`).FindStringSubmatch(serial)
			check("the initramfs never ran", m != nil)
			if m == nil {
				return
			}
			cmdline := m[1]
			for _, want := range []string{"BOOTIF=01-52-54-00-12-34-56", "ipa-api-url=" + apiURL, "initrd=deploy_ramdisk", "console=ttyS0"} {
				check("kernel command line lacks "+want+": "+cmdline, strings.Contains(cmdline, want))
			}
			log := string(logs)
			has := func(msg string, attrs ...string) bool {
				for _, line := range strings.Split(log, "\n") {
					ok := strings.Contains(line, `msg="`+msg+`"`)
					for _, a := range attrs {
						ok = ok && regexp.MustCompile(`(^| )`+a+`( |$)`).MatchString(line)
					}
					if ok {
						return true
					}
				}
				return false
			}
			check("no boot script was served", has("boot script served", "mac="+vmMAC, "node="+uuid))
			check("the kernel was not fetched over HTTP", has("boot http", "path=/nodes/"+uuid+"/deploy_kernel", "status=200", `bytes=\d{7,}`))
			check("the initramfs was not fetched over HTTP", has("boot http", "path=/nodes/"+uuid+"/deploy_ramdisk", "status=200"))
			switch tc.mode {
			case "full":
				check("no lease in full mode", has("dhcp lease", "mac="+vmMAC))
			case "proxy":
				check("no ProxyDHCP answer with the script", has("dhcp boot answer", "mac="+vmMAC, "file="+bootURL+"/ipxe/52-54-00-12-34-56"))
				check("the conductor handed out an address in proxy mode", !has("dhcp lease"))
				udhcpd, _ := os.ReadFile(r.udhcpdLog)
				check("udhcpd gave no lease:\n"+string(udhcpd), strings.Contains(string(udhcpd), "sending ACK to 10.99.0.2"))
			}
			var path []string
			for _, line := range strings.Split(log, "\n") {
				for _, msg := range []string{"dhcp boot answer", "dhcp lease", "tftp sent", "boot http"} {
					if strings.Contains(line, `msg="`+msg+`"`) {
						path = append(path, line)
					}
				}
			}
			t.Logf("boot path seen by the conductor:\n%s", strings.Join(path, "\n"))
			if tc.chainload || tc.noROM {
				binary := "undionly.kpxe"
				if tc.uefi {
					binary = "snponly.efi"
				}
				check(binary+" was not sent by TFTP", has("tftp sent", "file="+binary))
				check("the chain-loaded iPXE did not get its script URL", has("dhcp boot answer", "mac="+vmMAC, "ipxe=true", "file="+bootURL+"/ipxe/52-54-00-12-34-56"))
			}
		})
	}
}

// TestInteropQEMUNodeScripts boots the two other scripts a node can get:
// after deploy, a node left PXE-first boots its local disk (an MBR that
// prints IMAGE-BOOTED and powers off); and a node whose agent kernel
// cannot be downloaded retries, then powers itself off.
func TestInteropQEMUNodeScripts(t *testing.T) {
	peertest.Root(t, "network namespaces and tap devices")
	qemu := peertest.Binary(t, "qemu-system-x86_64", "qemu-system-x86")
	peertest.Binary(t, "curl", "curl")
	work := t.TempDir()
	conductor := buildConductor(t, work)
	initrd := buildInitramfs(t, work)
	for _, tc := range []struct {
		name    string
		prepare func(b *pxe.Booter, n *node.Node, ports []*node.Port) error
		disk    bool
		until   string
		want    []string // on the serial console
		log     []string // in the conductor log
	}{
		{name: "deployed node boots its disk", disk: true,
			prepare: func(b *pxe.Booter, n *node.Node, ports []*node.Port) error {
				n.Properties = map[string]any{"capabilities": "boot_mode:bios"}
				return b.PrepareInstance(context.Background(), n, ports)
			},
			want: []string{"is deployed, booting from the local disk", "Booting from SAN device", "IMAGE-BOOTED"}},
		{name: "agent download failure retries then powers off",
			prepare: func(b *pxe.Booter, n *node.Node, ports []*node.Port) error {
				n.DriverInfo = map[string]any{"deploy_kernel": bootURL + "/nodes/" + n.UUID + "/missing_kernel"}
				return b.PrepareRamdisk(context.Background(), n, ports)
			},
			want: []string{"loading failed, retrying in 1 s (attempt 1 of 2)", "retrying in 2 s (attempt 2 of 2)",
				"could not load the deploy agent after 2 attempts, powering off in 1 s", "this iPXE cannot power off, halted"},
			until: "cannot power off, halted",
			log:   []string{"/missing_kernel status=404"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newBootRig(t, "full")
			state := t.TempDir()
			logFile := r.startConductor(t, conductor, []string{
				"--api-listen", serverIP + ":6385", "--state-dir", state, "--log-level", "debug",
				"--boot-http-listen", serverIP + ":8080", "--tftp-listen", serverIP + ":69",
				"--dhcp-mode", "full", "--dhcp-interface", "br0", "--dhcp-range", "10.99.0.100-10.99.0.150",
			})
			uuid := r.createNode(t)
			b, err := pxe.New(slog.New(slog.NewTextHandler(t.Output(), nil)), nil, pxe.Options{
				Root: filepath.Join(state, "boot"), HTTPURL: bootURL, APIURL: apiURL,
				DeployKernel: initrd, DeployRamdisk: initrd, AgentRetries: 2, AgentPowerOffDelay: 1,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.prepare(b, &node.Node{UUID: uuid, ProvisionState: node.StateDeploying},
				[]*node.Port{{UUID: "p", Address: vmMAC, PXEEnabled: true}}); err != nil {
				t.Fatal(err)
			}
			v := vm{limit: 60 * time.Second, until: tc.until}
			if tc.disk {
				v.disk = filepath.Join(t.TempDir(), "disk.raw")
				if err := os.WriteFile(v.disk, mbrDisk(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			serial := r.runVM(t, qemu, v)
			logs, _ := os.ReadFile(logFile)
			flat := strings.ReplaceAll(serial, "\r\n", "") // iPXE wraps its output at 80 columns
			for _, want := range tc.want {
				if !strings.Contains(flat, want) {
					t.Errorf("serial console lacks %q\n--- serial (tail) ---\n%q", want, tail(serial, 3000))
				}
			}
			for _, want := range tc.log {
				if !strings.Contains(string(logs), want) {
					t.Errorf("conductor log lacks %q\n%s", want, tail(string(logs), 4000))
				}
			}
		})
	}
}

// mbrDisk is a 1 MiB disk whose MBR prints IMAGE-BOOTED on COM1 (waiting
// for the transmitter before each byte) and powers the VM off through the
// ACPI PM1a control port SeaBIOS sets up (0x604).
func mbrDisk() []byte {
	disk := make([]byte, 1<<20)
	code := []byte{
		0xfa,       // cli
		0x31, 0xc0, // xor ax, ax
		0x8e, 0xd8, // mov ds, ax
		0xbe, 0x29, 0x7c, // mov si, 0x7c29 (the message)
		0xac,       // next: lodsb
		0x84, 0xc0, // test al, al
		0x74, 0x12, // jz done
		0x88, 0xc4, // mov ah, al
		0xba, 0xfd, 0x03, // mov dx, 0x3fd (line status)
		0xec,       // wait: in al, dx
		0xa8, 0x20, // test al, 0x20 (transmitter empty)
		0x74, 0xfb, // jz wait
		0x88, 0xe0, // mov al, ah
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xee,       // out dx, al
		0xeb, 0xe9, // jmp next
		0xba, 0x04, 0x06, // done: mov dx, 0x604
		0xb8, 0x00, 0x20, // mov ax, 0x2000 (SLP_EN, S5)
		0xef,       // out dx, ax
		0xf4,       // hlt
		0xeb, 0xfd, // jmp hlt
	}
	n := copy(disk, code)
	copy(disk[n:], "IMAGE-BOOTED\r\n\x00")
	disk[510], disk[511] = 0x55, 0xaa
	return disk
}

// bootRig is a namespace with br0 (10.99.0.1/24) and tap0 for the VM,
// and in proxy mode a second namespace running udhcpd on the bridge.
type bootRig struct {
	ns        *netnstest.NS
	udhcpdLog string
}

func newBootRig(t *testing.T, mode string) *bootRig {
	t.Helper()
	r := &bootRig{ns: netnstest.New(t, "ingot-pxe")}
	r.ns.Sysctl("net.ipv6.conf.default.accept_dad", "0")
	r.ns.IP("link", "add", "br0", "type", "bridge")
	r.ns.IP("addr", "add", serverIP+"/24", "dev", "br0")
	r.ns.IP("link", "set", "br0", "up")
	r.ns.IP("tuntap", "add", "dev", "tap0", "mode", "tap")
	r.ns.IP("link", "set", "tap0", "master", "br0")
	r.ns.IP("link", "set", "tap0", "up")
	if mode == "proxy" {
		busybox := peertest.Binary(t, "busybox", "busybox")
		dhcp := netnstest.New(t, "ingot-pxe-dhcp")
		r.ns.Veth("vb", dhcp, "vd")
		r.ns.IP("link", "set", "vb", "master", "br0")
		r.ns.IP("link", "set", "vb", "up")
		dhcp.IP("addr", "add", "10.99.0.2/24", "dev", "vd")
		dhcp.IP("link", "set", "vd", "up")
		dir := t.TempDir()
		conf := filepath.Join(dir, "udhcpd.conf")
		err := os.WriteFile(conf, []byte(fmt.Sprintf("start 10.99.0.200\nend 10.99.0.220\ninterface vd\n"+
			"lease_file %s/leases\npidfile %s/pid\nopt subnet 255.255.255.0\nopt router 10.99.0.2\nopt lease 600\n", dir, dir)), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		cmd := dhcp.Command(context.Background(), busybox, "udhcpd", "-f", conf)
		r.udhcpdLog = filepath.Join(dir, "udhcpd.log")
		out, err := os.Create(r.udhcpdLog)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			log, _ := os.ReadFile(out.Name())
			t.Logf("udhcpd log:\n%s", tail(string(log), 2000))
		})
	}
	return r
}

// startConductor runs the conductor binary in the namespace and waits
// until its servers listen. It returns the log file.
func (r *bootRig) startConductor(t *testing.T, bin string, args []string) string {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "conductor.log")
	out, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := r.ns.Command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("conductor exit: %v", err)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Error("conductor did not stop on SIGTERM")
		}
		out.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		log, _ := os.ReadFile(logFile)
		if strings.Contains(string(log), "boot HTTP listening") && strings.Contains(string(log), "tftp listening") &&
			strings.Contains(string(log), "API listening") {
			return logFile
		}
		select {
		case err := <-exited:
			t.Fatalf("conductor exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("conductor did not start:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createNode registers the VM as a node with an ipxe boot interface and a
// pxe-enabled port, through the conductor's API.
func (r *bootRig) createNode(t *testing.T) string {
	t.Helper()
	post := func(path, body string) map[string]any {
		out, err := r.ns.Command(t.Context(), "curl", "-sS", "-f", "-X", "POST", "-H", "Content-Type: application/json",
			"-H", "X-OpenStack-Ironic-API-Version: 1.78", "-d", body, apiURL+path).CombinedOutput()
		if err != nil {
			t.Fatalf("POST %s: %v\n%s", path, err, out)
		}
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("POST %s: %v\n%s", path, err, out)
		}
		return v
	}
	n := post("/v1/nodes", `{"name":"pxe-vm","driver":"fake-hardware","boot_interface":"ipxe"}`)
	uuid, _ := n["uuid"].(string)
	post("/v1/ports", fmt.Sprintf(`{"node_uuid":%q,"address":%q,"pxe_enabled":true}`, uuid, vmMAC))
	return uuid
}

// vm describes the VM runVM starts.
type vm struct {
	uefi  bool
	noROM bool   // firmware's own network boot instead of QEMU's iPXE ROM
	disk  string // raw disk image, after the network in the boot order
	until string // stop the VM once its console shows this, rather than wait for power-off
	limit time.Duration
}

func (v vm) timeout() time.Duration {
	if v.limit == 0 {
		return 150 * time.Second
	}
	return v.limit
}

// runVM boots the VM from the network and returns its serial console
// output once it powered itself off.
func (r *bootRig) runVM(t *testing.T, qemu string, v vm) string {
	t.Helper()
	serial := filepath.Join(t.TempDir(), "serial.log")
	nic := "virtio-net-pci,netdev=n0,mac=" + vmMAC + ",bootindex=1"
	if v.noROM {
		nic += ",romfile="
	}
	args := []string{"-accel", "tcg", "-cpu", "max", "-m", "512", "-nographic", "-no-reboot",
		"-serial", "file:" + serial, "-monitor", "none",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no", "-device", nic}
	if v.disk != "" {
		args = append(args, "-drive", "file="+v.disk+",format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0,bootindex=2")
	}
	if v.uefi {
		vars := filepath.Join(t.TempDir(), "OVMF_VARS.fd")
		data, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vars, data, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,file="+vars)
	}
	ctx, cancel := context.WithTimeout(t.Context(), v.timeout())
	defer cancel()
	cmd := r.ns.Command(ctx, qemu, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		select {
		case err := <-exited:
			data, _ := os.ReadFile(serial)
			if ctx.Err() != nil {
				t.Errorf("the VM did not power off within %s", v.timeout())
			} else if err != nil {
				t.Errorf("qemu: %v\n%s", err, out.String())
			}
			return string(data)
		case <-time.After(200 * time.Millisecond):
			if v.until == "" {
				continue
			}
			if data, _ := os.ReadFile(serial); bytes.Contains(data, []byte(v.until)) {
				cmd.Process.Kill()
				<-exited
				return string(data)
			}
		}
	}
}

// fetchKernel returns Debian's cloud kernel (scripts/fetch-kernel.sh,
// cached in build/kernel).
func fetchKernel(t *testing.T) string {
	t.Helper()
	return vmtest.Kernel(t, "cloud-amd64")
}

// buildConductor builds the conductor binary that ships.
func buildConductor(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "conductor")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/ingot-dev/ingot/conductor/cmd/conductor")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build conductor: %v\n%s", err, out)
	}
	return bin
}

// buildInitramfs builds testdata/init as a static binary and packs it
// as /init into a gzipped newc cpio, with /dev/console and /proc.
func buildInitramfs(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "init")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build init: %v\n%s", err, out)
	}
	init, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "initramfs.cpio.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	err = writeCpio(zw, []cpioEntry{
		{name: "dev", mode: syscall.S_IFDIR | 0o755},
		{name: "dev/console", mode: syscall.S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1},
		{name: "proc", mode: syscall.S_IFDIR | 0o755},
		{name: "init", mode: syscall.S_IFREG | 0o755, data: init},
	})
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

type cpioEntry struct {
	name                 string
	mode                 uint32
	data                 []byte
	rdevMajor, rdevMinor uint32
}

// writeCpio writes entries in the kernel's initramfs format (newc cpio).
func writeCpio(w io.Writer, entries []cpioEntry) error {
	pad := func(n int) []byte { return make([]byte, (4-n%4)%4) }
	write := func(ino int, e cpioEntry) error {
		nlink := 1
		if e.mode&syscall.S_IFMT == syscall.S_IFDIR {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.rdevMajor, e.rdevMinor, len(e.name)+1, 0)
		var b bytes.Buffer
		b.WriteString(hdr)
		b.WriteString(e.name)
		b.WriteByte(0)
		b.Write(pad(len(hdr) + len(e.name) + 1))
		b.Write(e.data)
		b.Write(pad(len(e.data)))
		_, err := w.Write(b.Bytes())
		return err
	}
	for i, e := range entries {
		if err := write(i+1, e); err != nil {
			return err
		}
	}
	return write(0, cpioEntry{name: "TRAILER!!!"})
}

// captureDHCP saves the payload of every DHCP request crossing br0
// (UDP to port 67 or 4011) into dir, one file per packet: the captures
// under conductor/dhcpd/testdata/packets were made this way
// (INGOT_CAPTURE_DHCP=dir).
func (r *bootRig) captureDHCP(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var fd int
	if err := r.ns.Do(func() error {
		ifi, err := net.InterfaceByName("br0")
		if err != nil {
			return err
		}
		fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(syscall.ETH_P_IP)))
		if err != nil {
			return err
		}
		return syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IP), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatalf("capture: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	go func() {
		buf := make([]byte, 65536)
		for i := 0; ; {
			n, _, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				return
			}
			p := buf[:n]
			if n < 28 || p[9] != syscall.IPPROTO_UDP {
				continue
			}
			udp := p[int(p[0]&0x0f)*4:]
			if port := int(udp[2])<<8 | int(udp[3]); port != 67 && port != 4011 {
				continue
			}
			i++
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d-port%d.bin", i, int(udp[2])<<8|int(udp[3]))), udp[8:], 0o644)
		}
	}()
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
