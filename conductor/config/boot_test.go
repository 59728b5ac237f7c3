package config

import (
	"io"
	"strings"
	"testing"
)

func load(t *testing.T, args ...string) *Config {
	t.Helper()
	c, err := Load(append([]string{"--state-dir", t.TempDir()}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBootDefaultsOff(t *testing.T) {
	c := load(t)
	if c.Boot.Enabled() {
		t.Error("network boot is on by default")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("default configuration: %v", err)
	}
}

func TestBootValidate(t *testing.T) {
	boot := []string{"--api-listen", "0.0.0.0:6385", "--boot-http-listen", "10.99.0.1:8080"}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // empty: valid
	}{
		{name: "HTTP boot only", args: boot},
		{name: "full mode", args: append(boot, "--tftp-listen", ":69", "--dhcp-mode", "full", "--dhcp-interface", "br0",
			"--dhcp-range", "10.99.0.100-10.99.0.200", "--dhcp-router", "10.99.0.254", "--dhcp-dns", "10.99.0.53, 10.99.0.54")},
		{name: "proxy mode", args: append(boot, "--tftp-listen", "10.99.0.1:69", "--dhcp-mode", "proxy", "--dhcp-interface", "br0")},
		{name: "boot URL given for a wildcard listener", args: []string{"--boot-http-listen", ":8080", "--boot-http-url", "http://boot.example:8080", "--ipa-api-url", "https://api.example:6385"}},
		{name: "TFTP without network boot", args: []string{"--tftp-listen", ":69"}, wantErr: "set --boot-http-listen"},
		{name: "DHCP without network boot", args: []string{"--dhcp-mode", "proxy"}, wantErr: "set --boot-http-listen"},
		{name: "unknown DHCP mode", args: append(boot, "--dhcp-mode", "relay"), wantErr: `dhcp-mode "relay"`},
		{name: "proxy without an interface", args: append(boot, "--dhcp-mode", "proxy"), wantErr: "needs --dhcp-interface"},
		{name: "full without a range", args: append(boot, "--dhcp-mode", "full", "--dhcp-interface", "br0"), wantErr: "dhcp-range"},
		{name: "reversed range", args: append(boot, "--dhcp-mode", "full", "--dhcp-interface", "br0", "--dhcp-range", "10.0.0.9-10.0.0.1"), wantErr: "dhcp-range"},
		{name: "IPv6 range", args: append(boot, "--dhcp-mode", "full", "--dhcp-interface", "br0", "--dhcp-range", "fd00::1-fd00::9"), wantErr: "dhcp-range"},
		{name: "bad router", args: append(boot, "--dhcp-mode", "full", "--dhcp-interface", "br0", "--dhcp-range", "10.0.0.1-10.0.0.9", "--dhcp-router", "gw"), wantErr: "dhcp-router"},
		{name: "bad DNS", args: append(boot, "--dhcp-mode", "full", "--dhcp-interface", "br0", "--dhcp-range", "10.0.0.1-10.0.0.9", "--dhcp-dns", "10.0.0.1,x"), wantErr: "dhcp-dns"},
		{name: "cannot derive the boot URL", args: []string{"--api-listen", "0.0.0.0:6385", "--boot-http-listen", ":8080"}, wantErr: "set --boot-http-url"},
		{name: "agents cannot reach a loopback API", args: []string{"--boot-http-listen", "10.99.0.1:8080"}, wantErr: "set --ipa-api-url or --public-url"},
		{name: "bad boot URL", args: append(boot, "--boot-http-url", "ftp://x"), wantErr: "boot-http-url"},
		{name: "API and boot HTTP on one port", args: []string{"--api-listen", "0.0.0.0:8080", "--boot-http-listen", "10.99.0.1:8080"}, wantErr: "two servers on one TCP port"},
		{name: "TFTP on the DHCP port", args: append(boot, "--tftp-listen", ":67", "--dhcp-mode", "full", "--dhcp-interface", "br0", "--dhcp-range", "10.0.0.1-10.0.0.9"), wantErr: "two servers on one UDP port"},
		{name: "TFTP on the PXE port", args: append(boot, "--tftp-listen", "10.99.0.1:4011", "--dhcp-mode", "proxy", "--dhcp-interface", "br0"), wantErr: "two servers on one UDP port"},
		{name: "relative boot root", args: append(boot, "--boot-root", "boot"), wantErr: "boot-root"},
		{name: "relative deploy kernel", args: append(boot, "--deploy-kernel", "build/vmlinuz"), wantErr: `deploy-kernel "build/vmlinuz"`},
		{name: "relative deploy ramdisk", args: append(boot, "--deploy-ramdisk", "initramfs.cpio.gz"), wantErr: "deploy-ramdisk"},
		{name: "deploy images by URL and path", args: append(boot, "--deploy-kernel", "https://images.example/vmlinuz", "--deploy-ramdisk", "/srv/initramfs.cpio.gz")},
		{name: "relative allowed path", args: append(boot, "--boot-file-allowed-paths", "/srv/images,images"), wantErr: "boot-file-allowed-paths"},
		{name: "unknown-MAC behaviour", args: append(boot, "--unknown-mac", "reboot"), wantErr: "unknown-mac"},
		{name: "retry delay", args: append(boot, "--unknown-mac", "retry", "--unknown-mac-retry-delay", "10ms"), wantErr: "unknown-mac-retry-delay"},
		{name: "agent TLS", args: append(boot, "--agent-tls", "yes"), wantErr: "agent-tls"},
		{name: "bad TFTP address", args: append(boot, "--tftp-listen", "tftp.example:69"), wantErr: "tftp-listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := load(t, tc.args...).Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate = %v, want an error about %q", err, tc.wantErr)
			}
		})
	}
}

func TestBootDerivedURLs(t *testing.T) {
	c := load(t, "--api-listen", "0.0.0.0:6385", "--boot-http-listen", "10.99.0.1:8080")
	if u, err := c.BootHTTPURL(); err != nil || u != "http://10.99.0.1:8080" {
		t.Errorf("BootHTTPURL = %q, %v", u, err)
	}
	if u, err := c.AgentAPIURL(); err != nil || u != "http://10.99.0.1:6385" {
		t.Errorf("AgentAPIURL = %q, %v", u, err)
	}
	c = load(t, "--public-url", "https://ingot.example:6385/", "--boot-http-listen", "10.99.0.1:8080")
	if u, err := c.AgentAPIURL(); err != nil || u != "https://ingot.example:6385" {
		t.Errorf("AgentAPIURL from the public URL = %q, %v", u, err)
	}
	c = load(t, "--public-url", "https://ingot.example:6385", "--ipa-api-url", "http://10.99.0.1:6385", "--boot-http-listen", "10.99.0.1:8080")
	if u, _ := c.AgentAPIURL(); u != "http://10.99.0.1:6385" {
		t.Errorf("--ipa-api-url does not win: %q", u)
	}
	if c.BootRoot() != c.StateDir+"/boot" {
		t.Errorf("BootRoot = %q", c.BootRoot())
	}
}

func TestBootInLogValue(t *testing.T) {
	c := load(t, "--api-listen", "0.0.0.0:6385", "--boot-http-listen", "10.99.0.1:8080", "--dhcp-mode", "proxy", "--dhcp-interface", "br0")
	s := c.LogValue().String()
	if !strings.Contains(s, "dhcp_mode=proxy") || !strings.Contains(s, "10.99.0.1:8080") {
		t.Errorf("LogValue = %s", s)
	}
}
