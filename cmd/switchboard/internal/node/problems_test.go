package node

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard/switchboard/hub"
)

// repoRoot is the module's root, from this package's directory.
const repoRoot = "../../../.."

// docProblem is one row of docs/problems.md's table.
type docProblem struct {
	status int // 0 when the row gives no single status (command-rejected)
	title  string
}

var problemRow = regexp.MustCompile("^\\| `([a-z0-9-]+)` \\| ([^|]+) \\| ([^|]+) \\|")

// documentedProblems reads the types docs/problems.md lists, by slug.
var documentedProblems = sync.OnceValues(func() (map[string]docProblem, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "problems.md"))
	if err != nil {
		return nil, err
	}
	out := map[string]docProblem{}
	for line := range strings.SplitSeq(string(b), "\n") {
		m := problemRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		st, _ := strconv.Atoi(strings.TrimSpace(m[2]))
		out[m[1]] = docProblem{status: st, title: strings.TrimSpace(m[3])}
	}
	return out, nil
})

// checkProblem asserts that an answer is the RFC 9457 problem of
// docs/problems.md: application/problem+json of status with a detail, a
// type the page lists with the title it lists (or, for a status with no
// type of its own, the generic type and title of the status), and the
// request ID as instance.
func checkProblem(t *testing.T, resp *http.Response, body string, status int) {
	t.Helper()
	var p struct {
		Type     string `json:"type"`
		Title    string `json:"title"`
		Status   int    `json:"status"`
		Detail   string `json:"detail"`
		Instance string `json:"instance"`
	}
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/problem+json" ||
		json.Unmarshal([]byte(body), &p) != nil || p.Status != status || p.Detail == "" {
		t.Fatalf("got %d %q %.300s, want a %d problem", resp.StatusCode, resp.Header.Get("Content-Type"), body, status)
	}
	if id := resp.Header.Get("X-Request-ID"); id == "" || p.Instance != id {
		t.Fatalf("problem instance %q, X-Request-ID %q: want the request ID in both", p.Instance, id)
	}
	docs, err := documentedProblems()
	if err != nil {
		t.Fatal(err)
	}
	slug, ok := strings.CutPrefix(p.Type, hub.ProblemBase)
	if !ok {
		t.Fatalf("problem type %q is not under %s", p.Type, hub.ProblemBase)
	}
	if d, ok := docs[slug]; ok {
		if p.Title != d.title || (d.status != 0 && d.status != status) {
			t.Fatalf("problem %s: title %q status %d; docs/problems.md says %q %d", slug, p.Title, status, d.title, d.status)
		}
		return
	}
	generic := strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "-"))
	if slug != generic || p.Title != http.StatusText(status) {
		t.Fatalf("problem type %q (title %q) is not in docs/problems.md", p.Type, p.Title)
	}
}

// TestProblemTypesDocumented: every problem type the code declares (a
// ProblemType literal anywhere in the module) is a row of
// docs/problems.md with the same title and status, and every row is a
// type the code declares: a type has one title, written down.
func TestProblemTypesDocumented(t *testing.T) {
	docs, err := documentedProblems()
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) < 10 {
		t.Fatalf("read %d rows from docs/problems.md: the table's form changed?", len(docs))
	}
	statusByName := map[string]int{}
	for code := 100; code < 600; code++ {
		if s := http.StatusText(code); s != "" {
			statusByName["Status"+strings.NewReplacer(" ", "", "-", "", "'", "").Replace(s)] = code
		}
	}
	declared := map[string]docProblem{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != repoRoot {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok || !isProblemType(lit.Type) || len(lit.Elts) != 3 {
				return true
			}
			var slug, title, status string
			for i, e := range lit.Elts {
				key := []string{"Slug", "Title", "Status"}[i]
				if kv, ok := e.(*ast.KeyValueExpr); ok {
					key, e = kv.Key.(*ast.Ident).Name, kv.Value
				}
				switch v := e.(type) {
				case *ast.BasicLit:
					s, _ := strconv.Unquote(v.Value)
					if key == "Slug" {
						slug = s
					} else {
						title = s
					}
				case *ast.SelectorExpr:
					status = v.Sel.Name
				}
			}
			if slug == "" {
				return true // built from a status (hub.Error's generic types)
			}
			if title == "" {
				t.Errorf("%s: a ProblemType this test cannot read", fset.Position(lit.Pos()))
				return true
			}
			code, ok := statusByName[status]
			if !ok {
				t.Errorf("%s: status %q", fset.Position(lit.Pos()), status)
			}
			if prev, ok := declared[slug]; ok && prev.title != title {
				t.Errorf("%s: type %s declared with title %q and %q", fset.Position(lit.Pos()), slug, prev.title, title)
			}
			declared[slug] = docProblem{status: code, title: title}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(declared) < 10 {
		t.Fatalf("found %d problem types in the code: the walk missed them?", len(declared))
	}
	for slug, c := range declared {
		d, ok := docs[slug]
		switch {
		case !ok:
			t.Errorf("type %s (%d %s) is not in docs/problems.md", slug, c.status, c.title)
		case d.title != c.title:
			t.Errorf("type %s: title %q in the code, %q in docs/problems.md", slug, c.title, d.title)
		case d.status != 0 && d.status != c.status:
			t.Errorf("type %s: status %d in the code, %d in docs/problems.md", slug, c.status, d.status)
		}
	}
	for slug := range docs {
		if _, ok := declared[slug]; !ok {
			t.Errorf("docs/problems.md lists %s, which no code declares", slug)
		}
	}
	t.Logf("%d problem types, each documented once with its title", len(declared))
}

func isProblemType(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name == "ProblemType"
	case *ast.SelectorExpr:
		return x.Sel.Name == "ProblemType"
	}
	return false
}
