package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
)

// fakeIronic is the ramdisk half of Ironic's API with fault knobs: a node
// that is not enrolled for the first lookups, locked (409), failing (500),
// answering garbage, slow, or handing out a masked token.
type fakeIronic struct {
	t   *testing.T
	srv *httptest.Server

	mu sync.Mutex
	// knobs, consumed one per lookup in this order
	notFound, conflicts, errors500, garbage int
	retryAfter                              string // sent with 503s
	unavailable                             int    // 503s with retryAfter
	maxVersion                              string // "1.82" when empty
	token                                   string // the token lookup hands out
	masked                                  bool   // answer "******" instead
	heartbeatTimeout                        int
	hbStatus                                int // heartbeat answer; 202 when 0
	slow                                    int // lookups that hang until the client gives up

	// records
	lookups    []*http.Request
	discovery  int
	heartbeats []hbRecord
	hbCh       chan hbRecord
}

type hbRecord struct {
	at      time.Time
	path    string
	version string
	body    api.HeartbeatRequest
}

const testToken = "T0k3n-abcdefghijklmnopqrstuvwxyz0123456789"
const nodeUUID = "858d1aa4-ca64-48d6-a14f-5af77aa6de16"

func newFakeIronic(t *testing.T) *fakeIronic {
	f := &fakeIronic{t: t, token: testToken, heartbeatTimeout: 300, hbCh: make(chan hbRecord, 100)}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func ironicFault(w http.ResponseWriter, status int, msg string) {
	inner, _ := json.Marshal(map[string]any{"faultcode": "Client", "faultstring": msg, "debuginfo": nil})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error_message": string(inner)})
}

func (f *fakeIronic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if r.URL.Path == "/v1/lookup" && f.slow > 0 {
		f.slow--
		f.lookups = append(f.lookups, r)
		f.mu.Unlock()
		select { // a conductor too busy to answer
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		return
	}
	defer f.mu.Unlock()
	max := f.maxVersion
	if max == "" {
		max = "1.82"
	}
	switch {
	case r.URL.Path == "/" && r.Method == http.MethodGet:
		f.discovery++
		json.NewEncoder(w).Encode(map[string]any{"default_version": map[string]string{"id": "v1", "version": max, "min_version": "1.1"}})
	case r.URL.Path == "/v1/lookup":
		f.lookups = append(f.lookups, r)
		switch {
		case f.notFound > 0:
			f.notFound--
			ironicFault(w, 404, "Node with address could not be found.")
		case f.conflicts > 0:
			f.conflicts--
			ironicFault(w, 409, "Node "+nodeUUID+" is locked by host peer-conductor")
		case f.errors500 > 0:
			f.errors500--
			ironicFault(w, 500, "boom")
		case f.unavailable > 0:
			f.unavailable--
			w.Header().Set("Retry-After", f.retryAfter)
			ironicFault(w, 503, "no free conductor workers")
		case f.garbage > 0:
			f.garbage--
			io.WriteString(w, `{"node": {`)
		default:
			tok := f.token
			if f.masked {
				tok = api.MaskedToken
			}
			json.NewEncoder(w).Encode(map[string]any{
				"node": map[string]any{"uuid": nodeUUID, "properties": map[string]any{}, "instance_info": map[string]any{},
					"driver_internal_info": map[string]any{}},
				"config": map[string]any{"heartbeat_timeout": f.heartbeatTimeout, "agent_token": tok, "agent_token_required": true,
					"agent_md5_checksum_enable": false},
			})
		}
	case strings.HasPrefix(r.URL.Path, "/v1/heartbeat/") && r.Method == http.MethodPost:
		var hb api.HeartbeatRequest
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			ironicFault(w, 400, "bad body")
			return
		}
		rec := hbRecord{at: time.Now(), path: r.URL.Path, version: r.Header.Get(api.VersionHeader), body: hb}
		f.heartbeats = append(f.heartbeats, rec)
		select {
		case f.hbCh <- rec:
		default:
		}
		switch {
		case f.hbStatus != 0:
			ironicFault(w, f.hbStatus, "Invalid or missing agent token received.")
		case hb.AgentToken != f.token:
			ironicFault(w, 400, "Invalid or missing agent token received.")
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	default:
		ironicFault(w, 404, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	}
}

func (f *fakeIronic) set(fn func(f *fakeIronic)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeIronic) lookupCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.lookups)
}

// nextHeartbeat waits for the next heartbeat.
func (f *fakeIronic) nextHeartbeat(t *testing.T, within time.Duration) hbRecord {
	t.Helper()
	select {
	case hb := <-f.hbCh:
		return hb
	case <-time.After(within):
		t.Fatalf("no heartbeat within %v", within)
		return hbRecord{}
	}
}
