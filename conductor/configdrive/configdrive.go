// Package configdrive builds OpenStack config drives from the object form
// of a provision request's "configdrive" ({meta_data, network_data,
// user_data, vendor_data}), as Ironic does before a deploy: an ISO 9660
// image labelled config-2 with Rock Ridge names, holding
// openstack/latest/{meta_data.json, network_data.json, user_data,
// vendor_data2.json}, gzipped and base64-encoded for the agent.
//
// Ironic's genisoimage adds Joliet names too; go-diskfs v1.9.4 writes
// Joliet names that isoinfo reads as underscores, so they are left out:
// Linux reads the Rock Ridge names.
package configdrive

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	shared "github.com/ingot-dev/ingot/shared/configdrive"
)

// Node is what Build takes from the node: meta_data's default uuid and
// name, as Ironic fills them.
type Node struct {
	UUID string
	Name string
}

// Build returns the packed config drive (base64 of the gzipped ISO) for
// the object form cd. tmp is a directory for the build's scratch files
// ("" for the system's).
func Build(n Node, cd map[string]any, tmp string) (string, error) {
	iso, err := ISO(n, cd, tmp)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(iso); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// Files returns the files a config drive holds for cd, by path.
func Files(n Node, cd map[string]any) (map[string][]byte, error) {
	meta := map[string]any{}
	if m, ok := cd["meta_data"]; ok && m != nil {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("Invalid configdrive format: meta_data must be an object, not %T", m)
		}
		for k, v := range mm {
			meta[k] = v
		}
	}
	if _, ok := meta["uuid"]; !ok {
		meta["uuid"] = n.UUID
	}
	if _, ok := meta["name"]; !ok && n.Name != "" {
		meta["name"] = n.Name
	}
	files := map[string][]byte{}
	var err error
	if files["openstack/latest/meta_data.json"], err = json.Marshal(meta); err != nil {
		return nil, err
	}
	switch ud := cd["user_data"].(type) {
	case nil:
	case string:
		if ud != "" {
			files["openstack/latest/user_data"] = []byte(ud)
		}
	case map[string]any, []any:
		if files["openstack/latest/user_data"], err = json.Marshal(ud); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("Invalid configdrive format: user_data must be a string, an object or a list, not %T", ud)
	}
	for key, name := range map[string]string{"network_data": "network_data.json", "vendor_data": "vendor_data2.json"} {
		v, ok := cd[key]
		if !ok || v == nil {
			continue
		}
		if _, ok := v.(map[string]any); !ok {
			return nil, fmt.Errorf("Invalid configdrive format: %s must be an object, not %T", key, v)
		}
		if files["openstack/latest/"+name], err = json.Marshal(v); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// ISO returns the config drive image for cd.
func ISO(n Node, cd map[string]any, tmp string) ([]byte, error) {
	files, err := Files(n, cd)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tmp, "configdrive-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	work := filepath.Join(dir, "tree")
	if err := os.Mkdir(work, 0o700); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "config-2.iso"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	fsys, err := iso9660.Create(file.New(out, false), 0, 0, 2048, work)
	if err != nil {
		return nil, fmt.Errorf("creating the config drive: %w", err)
	}
	if err := fsys.Mkdir("openstack/latest"); err != nil {
		return nil, fmt.Errorf("creating the config drive: %w", err)
	}
	for name, data := range files {
		f, err := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return nil, fmt.Errorf("creating the config drive: %s: %w", name, err)
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("creating the config drive: %s: %w", name, err)
		}
	}
	if err := fsys.Finalize(iso9660.FinalizeOptions{RockRidge: true,
		VolumeIdentifier: shared.Label, PublisherIdentifier: "ingot"}); err != nil {
		return nil, fmt.Errorf("finalizing the config drive: %w", err)
	}
	iso, err := os.ReadFile(out.Name())
	if err != nil {
		return nil, err
	}
	if len(iso) > shared.MaxSize {
		return nil, fmt.Errorf("the config drive is %d bytes, more than the %d MiB an agent accepts", len(iso), shared.MaxSize>>20)
	}
	return iso, nil
}
