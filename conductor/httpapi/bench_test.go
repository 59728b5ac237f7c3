package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/httpapi"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power/ipmi"
	"github.com/ingot-dev/ingot/conductor/service"
	"github.com/ingot-dev/ingot/conductor/store"
)

// benchEnv is a conductor API over a file-backed SQLite store holding n
// realistic nodes (driver_info with credentials, properties, instance_info).
func benchEnv(b *testing.B, n, maxLimit int) (*store.DB, *httptest.Server) {
	b.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.SQLiteURL(filepath.Join(b.TempDir(), "bench.db")), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	log := slog.New(slog.DiscardHandler)
	eng := engine.New(db, service.Drivers{Drivers: service.DriverTable(slog.New(slog.DiscardHandler), ipmi.Options{})}, log, engine.Options{Conductor: "bench"})
	for i := range n {
		nd := &node.Node{
			UUID: uuid.NewString(), Name: fmt.Sprintf("node-%05d", i), Driver: "ipmi",
			Interfaces:     node.Interfaces{Boot: "ipxe", Deploy: "direct", Power: "ipmitool", Management: "ipmitool", Network: "noop"},
			ProvisionState: node.StateAvailable, PowerState: node.PowerOff,
			DriverInfo: map[string]any{"ipmi_address": fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255),
				"ipmi_username": "admin", "ipmi_password": "secret", "deploy_kernel": "http://boot/k", "deploy_ramdisk": "http://boot/r"},
			Properties:   map[string]any{"cpu_arch": "x86_64", "memory_mb": 262144.0, "local_gb": 893.0, "cpus": 64.0, "capabilities": "boot_mode:uefi"},
			InstanceInfo: map[string]any{"image_source": "http://images/ubuntu.raw", "root_gb": 100.0},
			Extra:        map[string]any{"rack": fmt.Sprintf("r%d", i%40)},
		}
		if err := db.CreateNode(ctx, nd); err != nil {
			b.Fatal(err)
		}
	}
	srv := httptest.NewServer(httpapi.New(eng, db, log, httpapi.Options{MaxLimit: maxLimit}))
	b.Cleanup(srv.Close)
	return db, srv
}

func get(b *testing.B, url string) []byte {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-OpenStack-Ironic-API-Version", "1.78")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		b.Fatalf("%s: %d %s", url, resp.StatusCode, body)
	}
	return body
}

// BenchmarkListNodesDetail10k: GET /v1/nodes/detail over 10 000 nodes, as
// one 10 000-node page and as Ironic's default 1 000-node pages followed
// through "next", against the baseline of reading the same rows from the
// store alone. Reported: milliseconds per full listing and the API/store
// ratio (the cost of rendering, masking and HTTP).
func BenchmarkListNodesDetail10k(b *testing.B) {
	const total = 10000
	db, srv := benchEnv(b, total, total)
	ctx := context.Background()
	var storeDur, oneDur, pagedDur time.Duration
	var bytesOne int
	// The paged server needs the same data: point a second API at db.
	pagedSrv := httptest.NewServer(httpapi.New(engine.New(db, service.Drivers{Drivers: service.DriverTable(slog.New(slog.DiscardHandler), ipmi.Options{})}, slog.New(slog.DiscardHandler), engine.Options{}),
		db, slog.New(slog.DiscardHandler), httpapi.Options{MaxLimit: 1000}))
	defer pagedSrv.Close()
	for b.Loop() {
		t0 := time.Now()
		nodes, err := db.ListNodes(ctx, store.NodeQuery{Limit: total})
		if err != nil || len(nodes) != total {
			b.Fatalf("store: %d %v", len(nodes), err)
		}
		t1 := time.Now()
		body := get(b, srv.URL+"/v1/nodes/detail?limit=10000")
		t2 := time.Now()
		bytesOne = len(body)
		count := 0
		next := pagedSrv.URL + "/v1/nodes/detail"
		for next != "" {
			var page struct {
				Nodes []json.RawMessage `json:"nodes"`
				Next  string            `json:"next"`
			}
			if err := json.Unmarshal(get(b, next), &page); err != nil {
				b.Fatal(err)
			}
			count += len(page.Nodes)
			next = page.Next
		}
		t3 := time.Now()
		if count != total {
			b.Fatalf("paged listing saw %d nodes", count)
		}
		storeDur += t1.Sub(t0)
		oneDur += t2.Sub(t1)
		pagedDur += t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(float64(storeDur.Milliseconds())/n, "store-ms")
	b.ReportMetric(float64(oneDur.Milliseconds())/n, "api-ms")
	b.ReportMetric(float64(pagedDur.Milliseconds())/n, "api-paged-ms")
	b.ReportMetric(oneDur.Seconds()/storeDur.Seconds(), "api/store")
	b.ReportMetric(total*n/oneDur.Seconds(), "nodes/s")
	b.ReportMetric(float64(bytesOne)/total, "bytes/node")
}

// BenchmarkNodePatch: PATCH /v1/nodes/{id} throughput (sequential and with
// 8 concurrent clients) against the baseline of the same read-modify-write
// done on the store directly. Reported: patches per second and the
// store/API throughput ratio.
func BenchmarkNodePatch(b *testing.B) {
	db, srv := benchEnv(b, 1000, 1000)
	ctx := context.Background()
	nodes, _ := db.ListNodes(ctx, store.NodeQuery{})
	patch := func(id string, i int) {
		body := fmt.Sprintf(`[{"op":"add","path":"/extra/counter","value":%d},{"op":"replace","path":"/driver_info/ipmi_address","value":"10.9.9.%d"}]`, i, i%250)
		req, _ := http.NewRequest("PATCH", srv.URL+"/v1/nodes/"+id, bytes.NewBufferString(body))
		req.Header.Set("X-OpenStack-Ironic-API-Version", "1.78")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("patch: %d", resp.StatusCode)
		}
	}
	storeUpdate := func(id string, i int) {
		n, err := db.GetNode(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		n.Extra["counter"] = float64(i)
		n.DriverInfo["ipmi_address"] = fmt.Sprintf("10.9.9.%d", i%250)
		if err := db.UpdateNode(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
	const perRound = 400
	var storeDur, apiDur, apiParDur time.Duration
	for b.Loop() {
		t0 := time.Now()
		for i := range perRound {
			storeUpdate(nodes[i%len(nodes)].UUID, i)
		}
		t1 := time.Now()
		for i := range perRound {
			patch(nodes[i%len(nodes)].UUID, i)
		}
		t2 := time.Now()
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 8 {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= perRound {
						return
					}
					patch(nodes[i%len(nodes)].UUID, i) // distinct nodes per request: no lock contention
				}
			})
		}
		wg.Wait()
		t3 := time.Now()
		storeDur += t1.Sub(t0)
		apiDur += t2.Sub(t1)
		apiParDur += t3.Sub(t2)
	}
	n := float64(b.N) * perRound
	b.ReportMetric(n/storeDur.Seconds(), "store-updates/s")
	b.ReportMetric(n/apiDur.Seconds(), "api-patches/s")
	b.ReportMetric(n/apiParDur.Seconds(), "api-patches/s-8clients")
	b.ReportMetric(apiDur.Seconds()/storeDur.Seconds(), "api/store")
}
