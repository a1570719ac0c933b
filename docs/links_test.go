package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// mdLink is a Markdown link or image target: ](target) or ](target "title").
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// outside are the ways a page has pointed outside the repository: the
// contract kept beside it, and its section numbers.
var outside = []*regexp.Regexp{
	regexp.MustCompile(`\.\./shared`),
	regexp.MustCompile(`SPEC\.md`),
	regexp.MustCompile(`(?i)the contract's §`),
	regexp.MustCompile(`[,(]\s*§\d`),
	regexp.MustCompile(`(?m)^/work/|[\s(]/work/`),
}

// TestDocsStandAlone: the README and every page under docs/ point only
// into the repository. Each relative link names a file or directory that
// exists in the repository (the README's own links and the pages' alike),
// none climbs out of it, and no page names the contract kept outside it
// (its file, its folder, its section numbers): what a user needs of the
// contract is in docs/contract.md.
func TestDocsStandAlone(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, filepath.Join("..", "README.md"))
	if len(pages) < 10 {
		t.Fatalf("found %d pages", len(pages))
	}
	links := 0
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, re := range outside {
			if loc := re.FindStringIndex(text); loc != nil {
				t.Errorf("%s:%d points outside the repository: %q", page, 1+strings.Count(text[:loc[0]], "\n"), text[loc[0]:loc[1]])
			}
		}
		for _, m := range mdLink.FindAllStringSubmatchIndex(text, -1) {
			target := text[m[2]:m[3]]
			line := 1 + strings.Count(text[:m[0]], "\n")
			if strings.HasPrefix(target, "#") || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links++
			target, _, _ = strings.Cut(target, "#")
			if filepath.IsAbs(target) {
				t.Errorf("%s:%d: absolute link %q", page, line, target)
				continue
			}
			abs, err := filepath.Abs(filepath.Join(filepath.Dir(page), target))
			if err != nil {
				t.Fatal(err)
			}
			if rel, err := filepath.Rel(root, abs); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				t.Errorf("%s:%d: link %q leaves the repository", page, line, target)
				continue
			}
			if _, err := os.Stat(abs); err != nil {
				t.Errorf("%s:%d: link %q names nothing in the repository", page, line, target)
			}
		}
	}
	t.Logf("%d pages, %d links into the repository", len(pages), links)
}
