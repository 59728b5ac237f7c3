package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/store"
)

var dbSeq atomic.Int64

// dialects opens a fresh database per dialect: SQLite always, PostgreSQL
// when INGOT_TEST_POSTGRES_URL names a server whose user may create
// databases. Under CI=true a missing PostgreSQL fails the test.
func dialects(t *testing.T) map[string]*store.DB {
	t.Helper()
	out := map[string]*store.DB{}
	sdb, err := store.Open(t.Context(), store.SQLiteURL(filepath.Join(t.TempDir(), "state.db")), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })
	out["sqlite"] = sdb

	admin := os.Getenv("INGOT_TEST_POSTGRES_URL")
	if admin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but INGOT_TEST_POSTGRES_URL is not set: .ci/run must start PostgreSQL")
		}
		t.Log("PostgreSQL not configured (INGOT_TEST_POSTGRES_URL); testing SQLite only")
		return out
	}
	name := fmt.Sprintf("ingot_test_%d_%d", os.Getpid(), dbSeq.Add(1))
	adb, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer adb.Close()
	if _, err := adb.ExecContext(t.Context(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		adb, err := sql.Open("pgx", admin)
		if err == nil {
			adb.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
			adb.Close()
		}
	})
	url := replaceDBName(admin, name)
	pdb, err := store.Open(t.Context(), url, store.Options{})
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	t.Cleanup(func() { pdb.Close() })
	out["postgres"] = pdb
	return out
}

func replaceDBName(url, name string) string {
	q := ""
	if i := strings.IndexByte(url, '?'); i >= 0 {
		url, q = url[:i], url[i:]
	}
	i := strings.LastIndexByte(url, '/')
	if i < len("postgres://") {
		return url + "/" + name + q
	}
	return url[:i+1] + name + q
}

func newNode(name string) *node.Node {
	return &node.Node{
		UUID:           uuid.NewString(),
		Name:           name,
		Driver:         "fake-hardware",
		Interfaces:     node.Interfaces{Boot: "fake", Deploy: "fake", Power: "fake", Management: "fake"},
		DriverInfo:     map[string]any{"ipmi_password": "secret", "nested": map[string]any{"a": 1.0}},
		Properties:     map[string]any{"memory_mb": 4096.0},
		ProvisionState: node.StateEnroll,
		Traits:         []string{"CUSTOM_A"},
	}
}

func TestNodeCRUD(t *testing.T) {
	for name, db := range dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			n := newNode("n1")
			if err := db.CreateNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			if n.ID == 0 || n.Version != 1 || n.CreatedAt.IsZero() || !n.UpdatedAt.IsZero() {
				t.Fatalf("create did not fill id/version/created_at: %+v", n)
			}
			for _, ident := range []string{n.UUID, strings.ToUpper(n.UUID), "n1"} {
				got, err := db.GetNode(ctx, ident)
				if err != nil {
					t.Fatalf("get %s: %v", ident, err)
				}
				if diff := cmp.Diff(n, got, cmpopts.EquateApproxTime(time.Microsecond)); diff != "" {
					t.Errorf("get %s mismatch (-want +got):\n%s", ident, diff)
				}
			}
			if _, err := db.GetNode(ctx, "nope"); !errors.Is(err, node.ErrNotFound) {
				t.Errorf("get unknown: %v, want ErrNotFound", err)
			}

			dup := newNode("n1")
			if err := db.CreateNode(ctx, dup); !errors.Is(err, node.ErrDuplicate) || !strings.Contains(err.Error(), "name n1") {
				t.Errorf("duplicate name: %v", err)
			}
			dup = newNode("other")
			dup.UUID = n.UUID
			if err := db.CreateNode(ctx, dup); !errors.Is(err, node.ErrDuplicate) {
				t.Errorf("duplicate uuid: %v", err)
			}

			stale := n.Clone()
			n.ProvisionState = node.StateVerifying
			n.ProvisionUpdatedAt = time.Now()
			n.DriverInfo["ipmi_address"] = "10.0.0.1"
			if err := db.UpdateNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			if n.Version != 2 || n.UpdatedAt.IsZero() {
				t.Errorf("update did not bump version/updated_at: %d %v", n.Version, n.UpdatedAt)
			}
			stale.Description = "lost update"
			if err := db.UpdateNode(ctx, stale); !errors.Is(err, node.ErrConflict) {
				t.Errorf("stale update: %v, want ErrConflict", err)
			}
			if stale.Version != 1 {
				t.Errorf("failed update changed the caller's version to %d", stale.Version)
			}
			got, _ := db.GetNode(ctx, n.UUID)
			if got.Description != "" || got.ProvisionState != node.StateVerifying || got.DriverInfo["ipmi_address"] != "10.0.0.1" {
				t.Errorf("stored node after conflict: %+v", got)
			}

			ghost := newNode("ghost")
			if err := db.UpdateNode(ctx, ghost); !errors.Is(err, node.ErrNotFound) {
				t.Errorf("update of missing node: %v", err)
			}
			if err := db.DeleteNode(ctx, n.UUID, 1); !errors.Is(err, node.ErrConflict) {
				t.Errorf("delete with stale version: %v", err)
			}
			if err := db.DeleteNode(ctx, n.UUID, n.Version); err != nil {
				t.Fatal(err)
			}
			if _, err := db.GetNode(ctx, n.UUID); !errors.Is(err, node.ErrNotFound) {
				t.Errorf("get after delete: %v", err)
			}
		})
	}
}

func TestListNodesFiltersAndPaging(t *testing.T) {
	for name, db := range dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			var all []*node.Node
			for i := range 25 {
				n := newNode(fmt.Sprintf("node-%02d", 24-i)) // names sort opposite to creation
				if i%3 == 0 {
					n.ProvisionState = node.StateAvailable
				}
				if i%5 == 0 {
					n.Maintenance = true
				}
				if i%4 == 0 {
					n.Name = "" // NULL names take part in sorting too
				}
				if err := db.CreateNode(ctx, n); err != nil {
					t.Fatal(err)
				}
				all = append(all, n)
			}
			avail, err := db.ListNodes(ctx, store.NodeQuery{ProvisionState: node.StateAvailable})
			if err != nil {
				t.Fatal(err)
			}
			if len(avail) != 9 {
				t.Errorf("provision_state filter: %d nodes, want 9", len(avail))
			}
			yes := true
			maint, _ := db.ListNodes(ctx, store.NodeQuery{Maintenance: &yes})
			if len(maint) != 5 {
				t.Errorf("maintenance filter: %d nodes, want 5", len(maint))
			}

			for _, tc := range []struct{ key, dir string }{{"", ""}, {"name", "asc"}, {"name", "desc"}, {"uuid", "desc"}, {"provision_state", "asc"}, {"maintenance", "desc"}} {
				full, err := db.ListNodes(ctx, store.NodeQuery{SortKey: tc.key, SortDir: tc.dir})
				if err != nil {
					t.Fatal(err)
				}
				var paged []*node.Node
				marker := ""
				for {
					page, err := db.ListNodes(ctx, store.NodeQuery{SortKey: tc.key, SortDir: tc.dir, Limit: 4, Marker: marker})
					if err != nil {
						t.Fatalf("sort %v marker %s: %v", tc, marker, err)
					}
					paged = append(paged, page...)
					if len(page) < 4 {
						break
					}
					marker = page[len(page)-1].UUID
				}
				if diff := cmp.Diff(ids(full), ids(paged)); diff != "" || len(full) != 25 {
					t.Errorf("sort %v: paging differs from one full list (%d nodes):\n%s", tc, len(full), diff)
				}
			}
			if _, err := db.ListNodes(ctx, store.NodeQuery{SortKey: "driver_info"}); !errors.Is(err, node.ErrInvalid) {
				t.Errorf("sort by a JSON field: %v, want ErrInvalid", err)
			}
			if _, err := db.ListNodes(ctx, store.NodeQuery{Marker: uuid.NewString()}); !errors.Is(err, node.ErrInvalid) {
				t.Errorf("unknown marker: %v, want ErrInvalid", err)
			}
		})
	}
}

func ids(ns []*node.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.UUID
	}
	return out
}

func TestPorts(t *testing.T) {
	for name, db := range dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			n := newNode("")
			if err := db.CreateNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			p := &node.Port{UUID: uuid.NewString(), Address: "52:54:00:aa:bb:01", NodeUUID: n.UUID, PXEEnabled: true,
				LocalLinkConnection: map[string]any{"switch_id": "x"}}
			if err := db.CreatePort(ctx, p); err != nil {
				t.Fatal(err)
			}
			dup := &node.Port{UUID: uuid.NewString(), Address: p.Address, NodeUUID: n.UUID}
			if err := db.CreatePort(ctx, dup); !errors.Is(err, node.ErrDuplicate) || !strings.Contains(err.Error(), "MAC address") {
				t.Errorf("duplicate MAC: %v", err)
			}
			orphan := &node.Port{UUID: uuid.NewString(), Address: "52:54:00:aa:bb:02", NodeUUID: uuid.NewString()}
			if err := db.CreatePort(ctx, orphan); !errors.Is(err, node.ErrNotFound) {
				t.Errorf("port of unknown node: %v", err)
			}
			got, err := db.GetPortByAddress(ctx, "52:54:00:AA:BB:01")
			if err != nil || got.UUID != p.UUID || got.LocalLinkConnection["switch_id"] != "x" {
				t.Fatalf("get by address: %+v %v", got, err)
			}
			got.PXEEnabled = false
			if err := db.UpdatePort(ctx, got); err != nil {
				t.Fatal(err)
			}
			if err := db.UpdatePort(ctx, p); !errors.Is(err, node.ErrConflict) {
				t.Errorf("stale port update: %v", err)
			}
			list, _ := db.ListPorts(ctx, store.PortQuery{NodeUUID: n.UUID})
			if len(list) != 1 || list[0].PXEEnabled {
				t.Errorf("list ports: %+v", list)
			}
			if err := db.DeleteNode(ctx, n.UUID, n.Version); err != nil {
				t.Fatal(err)
			}
			if _, err := db.GetPort(ctx, p.UUID); !errors.Is(err, node.ErrNotFound) {
				t.Errorf("port survived its node: %v", err)
			}
		})
	}
}

func TestConcurrentUpdatesExactlyOneWins(t *testing.T) {
	for name, db := range dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			n := newNode("race")
			if err := db.CreateNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			const writers = 8
			var wg sync.WaitGroup
			var wins, conflicts atomic.Int32
			for i := range writers {
				wg.Go(func() {
					c := n.Clone()
					c.Reservation = fmt.Sprintf("conductor-%d", i)
					err := db.UpdateNode(ctx, c)
					switch {
					case err == nil:
						wins.Add(1)
					case errors.Is(err, node.ErrConflict):
						conflicts.Add(1)
					default:
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if wins.Load() != 1 || conflicts.Load() != writers-1 {
				t.Errorf("wins=%d conflicts=%d, want exactly one winner", wins.Load(), conflicts.Load())
			}
			released, err := db.ReleaseReservations(ctx, "nobody")
			if err != nil || released != 0 {
				t.Errorf("release for a conductor holding nothing: %d %v", released, err)
			}
			got, _ := db.GetNode(ctx, n.UUID)
			released, err = db.ReleaseReservations(ctx, got.Reservation)
			if err != nil || released != 1 {
				t.Errorf("release: %d %v", released, err)
			}
			got, _ = db.GetNode(ctx, n.UUID)
			if got.Reservation != "" || got.Version != 3 {
				t.Errorf("after release: reservation %q version %d", got.Reservation, got.Version)
			}
		})
	}
}

func TestConductors(t *testing.T) {
	for name, db := range dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			c := node.Conductor{Hostname: "c1", Drivers: []string{"ipmi", "fake-hardware"}}
			if err := db.RegisterConductor(ctx, c); err != nil {
				t.Fatal(err)
			}
			c.ConductorGroup = "rack1"
			if err := db.RegisterConductor(ctx, c); err != nil {
				t.Fatal(err)
			}
			if err := db.TouchConductor(ctx, "c1"); err != nil {
				t.Fatal(err)
			}
			got, err := db.ListConductors(ctx)
			if err != nil || len(got) != 1 || got[0].ConductorGroup != "rack1" || len(got[0].Drivers) != 2 {
				t.Fatalf("conductors: %+v %v", got, err)
			}
			if err := db.UnregisterConductor(ctx, "c1"); err != nil {
				t.Fatal(err)
			}
			if got, _ := db.ListConductors(ctx); len(got) != 0 {
				t.Errorf("conductor not removed: %+v", got)
			}
		})
	}
}

func TestParseDSN(t *testing.T) {
	for _, tc := range []struct {
		name, url   string
		wantDialect store.Dialect
		wantErr     bool
	}{
		{name: "absolute sqlite", url: "sqlite:///var/lib/ingot/state.db", wantDialect: store.SQLite},
		{name: "postgres", url: "postgres://u:p@h/db", wantDialect: store.Postgres},
		{name: "postgresql scheme", url: "postgresql://h/db", wantDialect: store.Postgres},
		{name: "empty sqlite path", url: "sqlite://", wantErr: true},
		{name: "unknown scheme", url: "mysql://h/db", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, err := store.ParseDSN(tc.url)
			if (err != nil) != tc.wantErr || d != tc.wantDialect {
				t.Errorf("ParseDSN(%q) = %q, %v", tc.url, d, err)
			}
		})
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := store.Open(t.Context(), store.SQLiteURL(path), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := newNode("keep")
	if err := db.CreateNode(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = store.Open(t.Context(), store.SQLiteURL(path), store.Options{})
	if err != nil {
		t.Fatalf("reopen (migrations must be idempotent): %v", err)
	}
	defer db.Close()
	if _, err := db.GetNode(t.Context(), "keep"); err != nil {
		t.Fatal(err)
	}
}

func TestInventory(t *testing.T) {
	for name, db := range dialects(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			n := newNode("")
			if err := db.CreateNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			if _, _, err := db.Inventory(ctx, n.UUID); !errors.Is(err, node.ErrNotFound) {
				t.Fatalf("no inventory yet: %v", err)
			}
			for _, inv := range []string{`{"cpu":{"count":1}}`, `{"cpu":{"count":2}}`} {
				if err := db.PutInventory(ctx, n.UUID, []byte(inv), []byte(`{"root_disk":null}`), time.Now()); err != nil {
					t.Fatal(err)
				}
				got, pd, err := db.Inventory(ctx, n.UUID)
				if err != nil || string(got) != inv || string(pd) != `{"root_disk":null}` {
					t.Fatalf("inventory %s %s %v", got, pd, err)
				}
			}
			if err := db.PutInventory(ctx, uuid.NewString(), []byte(`{}`), []byte(`{}`), time.Now()); err == nil && name == "postgres" {
				t.Error("an inventory for no node was stored")
			}
			cur, _ := db.GetNode(ctx, n.UUID)
			if err := db.DeleteNode(ctx, n.UUID, cur.Version); err != nil {
				t.Fatal(err)
			}
			if _, _, err := db.Inventory(ctx, n.UUID); !errors.Is(err, node.ErrNotFound) {
				t.Errorf("inventory survived its node: %v", err)
			}
		})
	}
}
