package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
)

func testInventory(context.Context) (api.Inventory, error) {
	return api.Inventory{
		Interfaces: []api.Interface{{Name: "eth0", MACAddress: "52:54:00:12:34:56"}},
		Disks:      []api.Disk{{Name: "/dev/vda", Size: 8 << 30}, {Name: "/dev/vdb", Size: 1 << 30}},
	}, nil
}

func TestPostInspection(t *testing.T) {
	pauses := []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}
	for _, tc := range []struct {
		name      string
		answers   []int
		body      string
		inventory func(context.Context) (api.Inventory, error)
		wantUUID  string
		wantPosts int
		wantErr   string
	}{
		{"Inspector shape", []int{202}, `{"uuid":"u-1"}`, testInventory, "u-1", 1, ""},
		{"lookup shape (API 1.84)", []int{202}, `{"node":{"uuid":"u-2"},"config":{}}`, testInventory, "u-2", 1, ""},
		{"empty answer", []int{202}, ``, testInventory, "", 1, ""},
		{"5xx and 409 are retried", []int{503, 409, 202}, `{"uuid":"u-3"}`, testInventory, "u-3", 3, ""},
		{"retries are bounded", []int{500, 500, 500, 500, 500}, ``, testInventory, "", 4, "HTTP 500"},
		{"a 404 ends at once", []int{404}, `{"error_message":"no node"}`, testInventory, "", 1, "404"},
		{"an inventory failure is posted as error", []int{202}, `{"uuid":"u-4"}`,
			func(context.Context) (api.Inventory, error) { return api.Inventory{}, errors.New("no sysfs") }, "u-4", 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var posts []InspectionData
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				var d InspectionData
				b, _ := io.ReadAll(r.Body)
				if err := json.Unmarshal(b, &d); err != nil || r.Method != http.MethodPost || r.URL.Path != "/v1/continue_inspection" {
					t.Errorf("bad post %s %s: %v", r.Method, r.URL.Path, err)
				}
				posts = append(posts, d)
				code := tc.answers[min(len(posts), len(tc.answers))-1]
				w.WriteHeader(code)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			uuid, err := postInspection(t.Context(), srv.URL+"/v1/continue_inspection", srv.Client(), tc.inventory,
				"52:54:00:12:34:56", pauses, slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if uuid != tc.wantUUID || len(posts) != tc.wantPosts {
				t.Fatalf("uuid %q after %d posts, want %q after %d", uuid, len(posts), tc.wantUUID, tc.wantPosts)
			}
			d := posts[0]
			if d.BootInterface != "01-52-54-00-12-34-56" || d.Configuration["collectors"] == nil {
				t.Errorf("posted %+v", d)
			}
			if tc.name == "an inventory failure is posted as error" {
				if d.Error == nil || !strings.Contains(*d.Error, "no sysfs") {
					t.Errorf("error field %v", d.Error)
				}
			} else if d.Error != nil || d.RootDisk == nil || d.RootDisk.Name != "/dev/vda" || len(d.Inventory.Interfaces) != 1 {
				t.Errorf("posted inventory %+v root %+v error %v", d.Inventory, d.RootDisk, d.Error)
			}
		})
	}
}
