package initramfs

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ModulesDirFor returns the module directory that belongs to a kernel
// image laid out as Debian installs it: <root>/boot/vmlinuz-<release> has
// its modules in <root>/lib/modules/<release>.
func ModulesDirFor(vmlinuz string) (string, error) {
	base := filepath.Base(vmlinuz)
	release, ok := strings.CutPrefix(base, "vmlinuz-")
	if !ok || release == "" {
		return "", fmt.Errorf("kernel %s: cannot tell its release: want a file named vmlinuz-<release> (or pass the module directory)", vmlinuz)
	}
	boot := filepath.Dir(filepath.Clean(vmlinuz))
	if filepath.Base(boot) != "boot" {
		return "", fmt.Errorf("kernel %s: not in a boot directory, so its modules cannot be found (pass the module directory)", vmlinuz)
	}
	return filepath.Join(filepath.Dir(boot), "lib", "modules", release), nil
}
