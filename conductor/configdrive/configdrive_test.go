package configdrive

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"github.com/google/go-cmp/cmp"

	shared "github.com/ingot-dev/ingot/shared/configdrive"
)

var n = Node{UUID: "0f5e8a46-1c6b-4a86-9d1c-6a9a6e1c2b11", Name: "node-1"}

func TestFiles(t *testing.T) {
	cases := []struct {
		name string
		cd   map[string]any
		want map[string]string
		err  string
	}{
		{"empty object: uuid and name filled in", map[string]any{},
			map[string]string{"meta_data.json": `{"name":"node-1","uuid":"` + n.UUID + `"}`}, ""},
		{"given uuid and name win", map[string]any{"meta_data": map[string]any{"uuid": "u", "name": "x", "hostname": "h"}},
			map[string]string{"meta_data.json": `{"hostname":"h","name":"x","uuid":"u"}`}, ""},
		{"user_data string", map[string]any{"user_data": "#cloud-config\nhostname: h\n"},
			map[string]string{"meta_data.json": `{"name":"node-1","uuid":"` + n.UUID + `"}`, "user_data": "#cloud-config\nhostname: h\n"}, ""},
		{"user_data object is JSON", map[string]any{"user_data": map[string]any{"ignition": map[string]any{"version": "3.2.0"}}},
			map[string]string{"meta_data.json": `{"name":"node-1","uuid":"` + n.UUID + `"}`, "user_data": `{"ignition":{"version":"3.2.0"}}`}, ""},
		{"network and vendor data", map[string]any{"network_data": map[string]any{"links": []any{}}, "vendor_data": map[string]any{"k": "v"}},
			map[string]string{"meta_data.json": `{"name":"node-1","uuid":"` + n.UUID + `"}`, "network_data.json": `{"links":[]}`, "vendor_data2.json": `{"k":"v"}`}, ""},
		{"null members are absent", map[string]any{"meta_data": nil, "user_data": nil, "network_data": nil},
			map[string]string{"meta_data.json": `{"name":"node-1","uuid":"` + n.UUID + `"}`}, ""},
		{"meta_data not an object", map[string]any{"meta_data": []any{1}}, nil, "meta_data must be an object"},
		{"user_data a number", map[string]any{"user_data": 3.0}, nil, "user_data must be"},
		{"network_data a string", map[string]any{"network_data": "x"}, nil, "network_data must be an object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files, err := Files(n, c.cd)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for k, v := range files {
				got[strings.TrimPrefix(k, "openstack/latest/")] = string(v)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Error(diff)
			}
		})
	}
}

// TestBuildReadsBack builds a drive, decodes it as the agent does and
// reads its files back with go-diskfs's ISO reader.
func TestBuildReadsBack(t *testing.T) {
	cd := map[string]any{"meta_data": map[string]any{"hostname": "h1", "public_keys": map[string]any{"k": "ssh-ed25519 AAAA"}},
		"user_data": "#cloud-config\n", "network_data": map[string]any{"links": []any{}}}
	packed, err := Build(n, cd, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	iso, err := shared.Decode([]byte(packed))
	if err != nil {
		t.Fatal(err)
	}
	if label, _ := shared.FilesystemLabel(bytes.NewReader(iso), 0); label != shared.Label {
		t.Fatalf("label %q", label)
	}
	p := filepath.Join(t.TempDir(), "cd.iso")
	if err := os.WriteFile(p, iso, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := iso9660.Read(file.New(f, true), int64(len(iso)), 0, 2048)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Files(n, cd)
	for name, data := range want {
		r, err := fsys.OpenFile(name, os.O_RDONLY)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := io.ReadAll(r)
		if !bytes.Equal(got, data) {
			t.Errorf("%s: %q, want %q", name, got, data)
		}
	}
	var meta map[string]any
	json.Unmarshal(want["openstack/latest/meta_data.json"], &meta)
	if meta["uuid"] != n.UUID {
		t.Errorf("meta_data %v", meta)
	}
}

func TestBuildCleansUp(t *testing.T) {
	dir := t.TempDir()
	if _, err := Build(n, map[string]any{"user_data": "x"}, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(n, map[string]any{"user_data": 1.0}, dir); err == nil {
		t.Fatal("a bad drive built")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("scratch files left: %v", ents)
	}
}
