package ingot

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ingot-dev/ingot"

type goPackage struct {
	ImportPath string
	Dir        string
	Name       string
	Imports    []string
	Deps       []string
	GoFiles    []string
}

// packages lists every package of the module with its direct imports and
// full dependency set (go list, as tailscale's deptest does).
func packages(t *testing.T) []goPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func rel(p string) string { return strings.TrimPrefix(strings.TrimPrefix(p, module), "/") }

func hasPrefixAny(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if s == p || strings.HasPrefix(s, p+"/") {
			return true
		}
	}
	return false
}

// TestDependencyRules enforces the import rules of README.md's
// architecture section.
func TestDependencyRules(t *testing.T) {
	type rule struct {
		name    string
		applies func(pkg string) bool
		// forbidden import (direct or transitive, see direct)
		forbidden func(imp string) bool
		direct    bool
		except    func(pkg string) bool
	}
	rules := []rule{
		{name: "shared never imports agent or conductor",
			applies:   func(p string) bool { return hasPrefixAny(rel(p), "shared") },
			forbidden: func(i string) bool { return hasPrefixAny(rel(i), "agent", "conductor") && strings.HasPrefix(i, module) }},
		{name: "the agent never imports the conductor or a SQL package",
			applies: func(p string) bool { return hasPrefixAny(rel(p), "agent") },
			forbidden: func(i string) bool {
				return (strings.HasPrefix(i, module) && hasPrefixAny(rel(i), "conductor")) || i == "database/sql"
			}},
		{name: "the conductor never imports the agent",
			applies:   func(p string) bool { return hasPrefixAny(rel(p), "conductor") },
			forbidden: func(i string) bool { return strings.HasPrefix(i, module) && hasPrefixAny(rel(i), "agent") }},
		{name: "node imports nothing from the project",
			applies:   func(p string) bool { return rel(p) == "conductor/node" },
			forbidden: func(i string) bool { return strings.HasPrefix(i, module+"/") }},
		{name: "provision is pure: only node, no I/O, no clock",
			applies: func(p string) bool { return rel(p) == "conductor/provision" },
			forbidden: func(i string) bool {
				return (strings.HasPrefix(i, module+"/") && rel(i) != "conductor/node") ||
					slices.Contains([]string{"net", "os", "database/sql", "time", "net/http"}, i)
			}, direct: true},
		{name: "engine declares its interfaces: no echo, SQL, store or concrete drivers",
			applies: func(p string) bool { return rel(p) == "conductor/engine" },
			forbidden: func(i string) bool {
				return strings.Contains(i, "labstack/echo") || i == "database/sql" ||
					hasPrefixAny(rel(i), "conductor/store", "conductor/power", "conductor/httpapi")
			}},
		{name: "only the API packages import echo",
			applies:   func(p string) bool { return true },
			forbidden: func(i string) bool { return strings.HasPrefix(i, "github.com/labstack/echo") },
			direct:    true,
			except: func(p string) bool {
				return rel(p) == "conductor/httpapi" || hasPrefixAny(rel(p), "agent/cmdapi")
			}},
		{name: "only the store imports SQL drivers",
			applies:   func(p string) bool { return true },
			forbidden: func(i string) bool { return i == "modernc.org/sqlite" || strings.HasPrefix(i, "github.com/jackc/pgx") },
			direct:    true,
			except:    func(p string) bool { return rel(p) == "conductor/store" }},
		{name: "only mains and config parse flags",
			applies:   func(p string) bool { return true },
			forbidden: func(i string) bool { return i == "flag" || strings.HasPrefix(i, "github.com/peterbourgon/ff") },
			direct:    true,
			except: func(p string) bool {
				return strings.Contains(rel(p), "/cmd/") || rel(p) == "conductor/config"
			}},
	}
	for _, p := range packages(t) {
		for _, r := range rules {
			if !r.applies(p.ImportPath) || (r.except != nil && r.except(p.ImportPath)) {
				continue
			}
			imps := p.Deps
			if r.direct {
				imps = p.Imports
			}
			for _, i := range imps {
				if r.forbidden(i) {
					t.Errorf("%s: %s imports %s", r.name, rel(p.ImportPath), i)
				}
			}
		}
	}
}

// TestPackageDocs requires a package doc comment on every package (the
// first file that has one is enough) and on every command.
func TestPackageDocs(t *testing.T) {
	for _, p := range packages(t) {
		found := false
		for _, f := range p.GoFiles {
			af, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil && len(strings.TrimSpace(af.Doc.Text())) > 20 {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("package %s has no package documentation", rel(p.ImportPath))
		}
	}
}
