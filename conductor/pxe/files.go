package pxe

import (
	"bytes"
	"io"
	"os"
	"path/filepath"

	"github.com/ingot-dev/ingot/conductor/dhcpd"
)

// writeAtomic writes a file through a temporary file and a rename, so a
// reader sees the old content or the new, never a partial one.
func writeAtomic(name string, perm os.FileMode, fill func(w io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = fill(f)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func writeFile(name string, data []byte) error {
	return writeAtomic(name, 0o644, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	})
}

// dnsmasqHost adds or removes a MAC's dhcp-hostsdir entry, when an
// external dnsmasq is in use.
func (b *Booter) dnsmasqHost(mac string, add bool) error {
	if !b.opts.DnsmasqHosts {
		return nil
	}
	name := filepath.Join(b.DnsmasqHostsDir(), macName(mac))
	if !add {
		err := os.Remove(name)
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	entry, err := dhcpd.DnsmasqHost(mac)
	if err != nil {
		return err
	}
	return writeFile(name, entry)
}
