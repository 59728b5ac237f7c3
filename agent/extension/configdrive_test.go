package extension_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/shared/api"
)

// configISO is a stand-in config drive: an ISO 9660 volume descriptor
// labelled config-2 and a recognisable body.
func configISO(size int) []byte {
	b := bytes.Repeat([]byte("meta"), size/4)
	copy(b[32768:], append([]byte{1, 'C', 'D', '0', '0', '1', 1}, make([]byte, 33)...))
	copy(b[32768+40:], "config-2                        ")
	return b
}

func packed(b []byte) string {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func withConfigDrive(p map[string]any, cd any) map[string]any {
	p["step"].(map[string]any)["args"].(map[string]any)["configdrive"] = cd
	return p
}

func TestWriteImageConfigDrive(t *testing.T) {
	img := gptImage(t, 8*mib)
	iso := configISO(96 << 10)
	is := newImageServer(t, map[string][]byte{"/disk.raw": img, "/cd.gz.b64": []byte(packed(iso)), "/cd.iso": iso})
	for _, tc := range []struct{ name, cd string }{
		{"inline, as Ironic sends it", packed(iso)},
		{"URL to the packed drive", is.URL + "/cd.gz.b64"},
		{"URL to the raw ISO", is.URL + "/cd.iso"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 5<<30, nil)
			c := r.run(t, "deploy.execute_deploy_step", withConfigDrive(writeStep(imageInfo(is.URL+"/disk.raw", sha(img))), tc.cd))
			if c.CommandStatus != api.StatusSucceeded {
				t.Fatalf("write_image: %s %v", c.CommandResult, c.CommandError)
			}
			var res struct {
				DeployResult struct {
					ConfigDrive struct {
						Partition int   `json:"partition"`
						Offset    int64 `json:"offset"`
						Created   bool  `json:"created"`
					} `json:"config_drive"`
				} `json:"deploy_result"`
			}
			json.Unmarshal(c.CommandResult, &res)
			cd := res.DeployResult.ConfigDrive
			if bytes.Contains(c.CommandResult, []byte(packed(iso)[:40])) {
				t.Error("the command result echoes the config drive")
			}
			if cd.Partition != 3 || !cd.Created || cd.Offset < 5<<30-65*mib {
				t.Fatalf("config drive placement %s", c.CommandResult)
			}
			d, err := blockdev.Open(r.disk)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got := make([]byte, len(iso))
			d.ReadAt(got, cd.Offset)
			if !bytes.Equal(got, iso) {
				t.Error("the config drive is not on the disk")
			}
			tab, err := blockdev.ReadTable(d, d.Size())
			if err != nil || len(tab.Partitions) != 3 || tab.Partitions[2].Name != "config-2" || tab.Partitions[0].UUID != espUUID {
				t.Errorf("table after the config drive: %+v %v", tab, err)
			}
			// The image's partitions are untouched.
			if !bytes.Equal(diskPrefix(t, r.disk, 8*mib)[mib:7*mib], img[mib:7*mib]) {
				t.Error("the image's data changed")
			}
			u := r.run(t, "standby.get_partition_uuids", map[string]any{})
			var uuids map[string]map[string]string
			json.Unmarshal(u.CommandResult, &uuids)
			if uuids["partitions"]["3"] == "" {
				t.Errorf("get_partition_uuids lacks the config drive partition: %s", u.CommandResult)
			}
		})
	}

	huge := make([]byte, 65*mib)
	copy(huge, iso)
	for _, tc := range []struct {
		name, kind, detail string
		cd                 any
		disk               int64
		touches            bool
	}{
		{"garbage", "InvalidCommandParamsError", "neither an ISO 9660 nor a FAT image", "H4sI...", 5 << 30, false},
		{"object form reaching the agent", "InvalidCommandParamsError", "base64-encoded image", map[string]any{"meta_data": map[string]any{}}, 5 << 30, false},
		{"URL not found", "ImageDownloadError", "404", is.URL + "/missing", 5 << 30, false},
		{"over 64 MiB", "ConfigDriveTooLargeError", "64 MiB", packed(huge), 5 << 30, false},
		{"no room after the image", "ConfigDriveWriteError", "no space for the config drive", packed(configISO(2 * mib)), 8 * mib, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.disk, nil)
			hits := is.hits.Load()
			p := withConfigDrive(writeStep(imageInfo(is.URL+"/disk.raw", sha(img))), tc.cd)
			p["node"].(map[string]any)["properties"] = map[string]any{"root_device": map[string]any{"name": r.disk}}
			c := r.run(t, "deploy.execute_deploy_step", p)
			failed(t, c, tc.kind, tc.detail)
			if !tc.touches {
				if b := diskPrefix(t, r.disk, mib); !bytes.Equal(b, make([]byte, mib)) {
					t.Error("a bad config drive was refused after the disk was written")
				}
				if n := is.hits.Load() - hits; n > 1 {
					t.Errorf("the image was downloaded (%d requests) for a deploy that could not succeed", n)
				}
			}
		})
	}
}
