package ipxe

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/shared/bootparam"
)

var update = flag.Bool("update", false, "rewrite the golden scripts under testdata/")

const nodeUUID = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"

func agent(fw Firmware, purpose string) Agent {
	return Agent{
		Node: nodeUUID, Purpose: purpose, Firmware: fw,
		KernelURL:  "http://10.99.0.1:8080/nodes/" + nodeUUID + "/deploy_kernel",
		RamdiskURL: "http://10.99.0.1:8080/nodes/" + nodeUUID + "/deploy_ramdisk",
		Append:     "nofb nomodeset vga=normal console=ttyS0,115200n8",
		Params: bootparam.Params{
			APIURLs: []string{"http://10.99.0.1:6385"}, TLS: "auto",
			BootIF: "52:54:00:00:00:01", // ignored: the script passes ${netX/mac}
		},
	}
}

// TestGolden compares every rendered script with its golden file, one per
// (firmware, node state). Run with -update to rewrite them, and read the
// diff.
func TestGolden(t *testing.T) {
	insecure := agent(UEFI, "clean")
	insecure.Params.APIURLs = []string{"https://conductor.example:6385"}
	insecure.Params.Insecure = true
	insecure.Params.TLS = "off"
	insecure.RamdiskURL = "https://images.example/ipa/ipa-centos9.initramfs?version=3"
	insecure.KernelURL = "https://images.example/ipa/ipa-centos9.kernel"
	insecure.Retries = 3
	insecure.PowerOffDelay = 5
	for _, tc := range []struct {
		name   string
		render func() ([]byte, error)
	}{
		{"agent-deploy-bios", func() ([]byte, error) { return RenderAgent(agent(BIOS, "deploy")) }},
		{"agent-deploy-uefi", func() ([]byte, error) { return RenderAgent(agent(UEFI, "deploy")) }},
		{"agent-clean-bios", func() ([]byte, error) { return RenderAgent(agent(BIOS, "clean")) }},
		{"agent-clean-uefi-insecure-external-images", func() ([]byte, error) { return RenderAgent(insecure) }},
		{"local-bios", func() ([]byte, error) { return RenderLocal(Local{Node: nodeUUID, Firmware: BIOS}) }},
		{"local-uefi", func() ([]byte, error) { return RenderLocal(Local{Node: nodeUUID, Firmware: UEFI}) }},
		{"unknown-exit", func() ([]byte, error) { return RenderUnknown(Unknown{}) }},
		{"unknown-retry", func() ([]byte, error) {
			return RenderUnknown(Unknown{Retry: true, RetryDelay: 20, ScriptURL: "http://10.99.0.1:8080/ipxe/" + MACVar})
		}},
		{"chain", func() ([]byte, error) { return RenderChain(Chain{ScriptURL: "http://10.99.0.1:8080/ipxe/" + MACVar}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.render()
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join("testdata", tc.name+".ipxe")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s differs from the golden file (-want +got):\n%s", tc.name, diff)
			}
			if !strings.HasPrefix(string(got), "#!ipxe\n") {
				t.Errorf("script does not start with #!ipxe")
			}
		})
	}
}

func TestAgentScriptContract(t *testing.T) {
	got, err := RenderAgent(agent(UEFI, "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	for _, want := range []string{
		"initrd=deploy_ramdisk ",            // the 2019 iPXE EFI build needs the initrd name on the kernel line
		"ipa-api-url=http://10.99.0.1:6385", // the agent finds the conductor
		"BOOTIF=01-${netX/mac:hexhyp}",      // the agent knows which NIC booted
		"ingot.tls=auto",                    // the agent's TLS setting
		"console=ttyS0,115200n8",            // the operator's kernel parameters
		"poweroff",                          // a node that cannot boot the agent powers off
		"sleep ${i}",                        // growing back-off between attempts
		"set attempts:int32 10",             // default retries
		"initrd http://10.99.0.1:8080/nodes/" + nodeUUID + "/deploy_ramdisk || goto retry",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("agent script lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "52-54-00-00-00-01") {
		t.Errorf("agent script carries the BootIF of Params instead of the booted MAC:\n%s", s)
	}
	// The kernel command line parses back into what the agent was given.
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "kernel ") {
			p, err := bootparam.Parse(strings.ReplaceAll(line, MACVar, "52-54-00-00-00-01"))
			if err != nil {
				t.Fatal(err)
			}
			if p.BootIF != "52:54:00:00:00:01" || len(p.APIURLs) != 1 || p.TLS != "auto" {
				t.Errorf("kernel line parses to %+v", p)
			}
		}
	}
}

func TestLocalBoot(t *testing.T) {
	bios, _ := RenderLocal(Local{Node: nodeUUID, Firmware: BIOS})
	uefi, _ := RenderLocal(Local{Node: nodeUUID, Firmware: UEFI})
	if !strings.Contains(string(bios), "sanboot --no-describe --drive 0x80 || goto exit") {
		t.Errorf("BIOS local boot does not hand the first disk to the BIOS:\n%s", bios)
	}
	if strings.Contains(string(uefi), "sanboot") || !strings.Contains(string(uefi), "\nexit\n") {
		t.Errorf("UEFI local boot must exit to the boot manager:\n%s", uefi)
	}
}

// TestBadInput checks that no value can inject iPXE commands or produce a
// script that cannot boot.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(a *Agent)
	}{
		{"newline in kernel parameters", func(a *Agent) { a.Append = "console=ttyS0\nshell" }},
		{"carriage return in kernel parameters", func(a *Agent) { a.Append = "quiet\rshell" }},
		{"space in kernel URL", func(a *Agent) { a.KernelURL = "http://x/k shell" }},
		{"newline in ramdisk URL", func(a *Agent) { a.RamdiskURL = "http://x/r\nshell" }},
		{"non-http kernel URL", func(a *Agent) { a.KernelURL = "file:///etc/shadow" }},
		{"relative kernel URL", func(a *Agent) { a.KernelURL = "deploy_kernel" }},
		{"ramdisk URL without a file name", func(a *Agent) { a.RamdiskURL = "http://x/" }},
		{"unknown firmware", func(a *Agent) { a.Firmware = "coreboot" }},
		{"empty node", func(a *Agent) { a.Node = "" }},
		{"node with a space", func(a *Agent) { a.Node = "a b" }},
		{"newline in an agent parameter", func(a *Agent) { a.Params.GlobalRequestID = "req\nshell" }},
		{"negative retries", func(a *Agent) { a.Retries = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := agent(BIOS, "deploy")
			tc.mutate(&a)
			out, err := RenderAgent(a)
			if !errors.Is(err, ErrUnsafe) {
				t.Errorf("RenderAgent = %v, %q; want ErrUnsafe", err, out)
			}
		})
	}
	if _, err := RenderLocal(Local{Node: nodeUUID}); !errors.Is(err, ErrUnsafe) {
		t.Errorf("RenderLocal without firmware = %v, want ErrUnsafe", err)
	}
	if _, err := RenderUnknown(Unknown{Retry: true, ScriptURL: "not a url"}); !errors.Is(err, ErrUnsafe) {
		t.Errorf("RenderUnknown with a bad URL = %v, want ErrUnsafe", err)
	}
	if _, err := RenderChain(Chain{ScriptURL: "http://x/\nshell"}); !errors.Is(err, ErrUnsafe) {
		t.Errorf("RenderChain with a newline = %v, want ErrUnsafe", err)
	}
}

// FuzzRenderAgent: whatever the operator puts in kernel parameters or
// URLs, a rendered script has exactly the template's lines.
func FuzzRenderAgent(f *testing.F) {
	f.Add("console=ttyS0", "http://h/k", "http://h/r")
	f.Add("a\nb", "http://h/k\n", "http://h/r r")
	f.Add("ipa-debug=1 \"x y\"", "https://h:1/k?a=b", "http://h/${netX/mac:hexhyp}/r")
	want := strings.Count(mustAgent(f), "\n")
	f.Fuzz(func(t *testing.T, appendParams, kernel, ramdisk string) {
		a := agent(BIOS, "deploy")
		a.Append, a.KernelURL, a.RamdiskURL = appendParams, kernel, ramdisk
		out, err := RenderAgent(a)
		if err != nil {
			return
		}
		if got := strings.Count(string(out), "\n"); got != want {
			t.Fatalf("script has %d lines, template has %d:\n%s", got, want, out)
		}
		if strings.ContainsAny(string(out), "\r\x00") {
			t.Fatalf("script contains control characters:\n%q", out)
		}
	})
}

func mustAgent(f *testing.F) string {
	out, err := RenderAgent(agent(BIOS, "deploy"))
	if err != nil {
		f.Fatal(err)
	}
	return string(out)
}
