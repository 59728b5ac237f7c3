package service_test

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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ingot-dev/ingot/conductor/agentclient"
	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/httpapi"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power/ipmi"
	"github.com/ingot-dev/ingot/conductor/service"
	"github.com/ingot-dev/ingot/conductor/store"
	"github.com/ingot-dev/ingot/shared/api"
)

// busyAgents answers every node's command list with a write_image that is
// still running, its progress moving on each poll: the steady state of a
// fleet of agents writing images.
type busyAgents struct{ polls atomic.Int64 }

func (b *busyAgents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := b.polls.Add(1)
	res := []api.CommandResult{
		{ID: "1", CommandName: "get_deploy_steps", CommandStatus: api.StatusSucceeded, CommandResult: json.RawMessage(`{}`)},
		{ID: "2", CommandName: "execute_deploy_step", CommandStatus: api.StatusRunning, CommandResult: json.RawMessage(`null`),
			Progress: &api.Progress{Bytes: n << 20, Total: 1 << 40, Percent: float64(n%100) / 1}},
	}
	json.NewEncoder(w).Encode(api.CommandList{Commands: res})
}

// BenchmarkHeartbeats: one conductor (2 cores, SQLite) with `nodes` nodes
// in "wait call-back" whose agents are all writing images; a load
// generator sends heartbeats at `rate` per second (10 000 nodes beating
// every 5 s) for the benchmark's duration. Reported: sustained heartbeats
// per second, p50/p99 latency of the heartbeat request, how many of them
// the conductor processed (an agent poll each), and failures. Goal: 2 000
// heartbeats/s at p99 < 100 ms.
func BenchmarkHeartbeats(b *testing.B) {
	const nodes, rate = 10000, 2000
	duration := 10 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := store.Open(ctx, store.SQLiteURL(filepath.Join(b.TempDir(), "hb.db")), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	agents := &busyAgents{}
	agentSrv := httptest.NewServer(agents)
	defer agentSrv.Close()

	log := slog.New(slog.DiscardHandler)
	eng := engine.New(db, service.Drivers{Drivers: service.DriverTable(slog.New(slog.DiscardHandler), ipmi.Options{})}, log, engine.Options{
		Conductor: "bench", Agent: service.Agent{C: agentclient.New(agentclient.Options{})},
		CheckInterval: -1, PowerSyncInterval: -1, QueueSize: 8192, Workers: 128})
	tokens := make([]string, nodes)
	uuids := make([]string, nodes)
	plan := []any{
		map[string]any{"interface": "deploy", "step": "deploy", "priority": 100},
		map[string]any{"interface": "deploy", "step": "write_image", "priority": 80},
		map[string]any{"interface": "deploy", "step": "prepare_instance_boot", "priority": 60},
	}
	for i := range nodes {
		uuids[i] = uuid.NewString()
		tokens[i] = strings.Repeat(fmt.Sprintf("%05d", i), 9)[:43]
		n := &node.Node{UUID: uuids[i], Name: fmt.Sprintf("n%05d", i), Driver: "fake-hardware",
			Interfaces:     node.Interfaces{Deploy: "direct", Boot: "fake", Power: "fake", Management: "fake"},
			ProvisionState: node.StateDeployWait, TargetProvisionState: node.StateActive, ProvisionUpdatedAt: time.Now(),
			DeployStep: map[string]any{"interface": "deploy", "step": "write_image", "priority": 80.0},
			InstanceInfo: map[string]any{"image_source": "http://images/disk.raw", "image_os_hash_algo": "sha256",
				"image_os_hash_value": strings.Repeat("a", 64)},
			DriverInternalInfo: map[string]any{"agent_secret_token": tokens[i], "agent_url": agentSrv.URL,
				"deploy_steps": plan, "deploy_step_index": 1, "agent_cached_deploy_steps": map[string]any{},
				"hardware_manager_version": map[string]any{"generic_hardware_manager": "1.2"}}}
		if err := db.CreateNode(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
	if err := eng.Recover(ctx); err != nil {
		b.Fatal(err)
	}
	go eng.Run(ctx)
	apiSrv := httptest.NewServer(httpapi.New(eng, db, log, httpapi.Options{}))
	defer apiSrv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}

	for b.Loop() {
		agents.polls.Store(0)
		var (
			mu        sync.Mutex
			latencies []time.Duration
			failures  atomic.Int64
			wg        sync.WaitGroup
		)
		start := time.Now()
		interval := time.Second / rate
		sem := make(chan struct{}, 256)
		for i := 0; time.Since(start) < duration; i++ {
			due := start.Add(time.Duration(i) * interval)
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			k := i % nodes
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				body, _ := json.Marshal(api.HeartbeatRequest{CallbackURL: agentSrv.URL, AgentToken: tokens[k], AgentVersion: "bench"})
				req, _ := http.NewRequest("POST", apiSrv.URL+"/v1/heartbeat/"+uuids[k], bytes.NewReader(body))
				req.Header.Set("X-OpenStack-Ironic-API-Version", "1.68")
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				resp, err := client.Do(req)
				lat := time.Since(t0)
				if err != nil {
					if failures.Add(1) <= 3 {
						b.Logf("heartbeat: %v", err)
					}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					if failures.Add(1) <= 3 {
						b.Logf("heartbeat answered %d", resp.StatusCode)
					}
				}
				mu.Lock()
				latencies = append(latencies, lat)
				mu.Unlock()
			})
		}
		wg.Wait()
		sent := time.Since(start)
		eng.Wait()
		processed := agents.polls.Load()
		slices.Sort(latencies)
		pct := func(p float64) float64 {
			if len(latencies) == 0 {
				return 0
			}
			return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(float64(len(latencies))/sent.Seconds(), "heartbeats/s")
		b.ReportMetric(pct(0.50), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
		b.ReportMetric(float64(processed)/float64(max(len(latencies), 1)), "processed/heartbeat")
		b.ReportMetric(float64(failures.Load()), "failures")
	}
}
