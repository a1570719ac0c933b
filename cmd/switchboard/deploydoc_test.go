package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// deploymentDoc is the deployment guide, relative to this package.
const deploymentDoc = "../../docs/deployment.md"

// fencedBlock returns the first ``` block of doc fenced with lang whose
// text holds marker.
func fencedBlock(t *testing.T, doc, lang, marker string) string {
	t.Helper()
	for _, part := range strings.Split(doc, "```"+lang+"\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if ok && strings.Contains(block, marker) {
			return block
		}
	}
	t.Fatalf("%s has no ```%s block holding %q", deploymentDoc, lang, marker)
	return ""
}

// TestDeploymentRecipes: the systemd unit and the Dockerfile of
// docs/deployment.md are ones that work as written. systemd reads a "#"
// after a value as part of the value (it takes comments on lines of their
// own only), so no line of the unit has one; the unit starts the binary
// with --config and reloads with SIGHUP (the HTTP certificate). The
// Dockerfile builds ./cmd/switchboard static (CGO_ENABLED=0) with the Go
// of go.mod, onto a base without a libc.
func TestDeploymentRecipes(t *testing.T) {
	b, err := os.ReadFile(deploymentDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)

	unit := fencedBlock(t, doc, "ini", "[Service]")
	for i, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		if _, value, ok := strings.Cut(line, "="); !ok || strings.Contains(value, "#") {
			t.Errorf("unit line %d %q: not key=value, or a comment after the value", i+1, line)
		}
	}
	for _, want := range []string{"ExecStart=/usr/local/bin/switchboard --config ", "ExecReload=/bin/kill -HUP $MAINPID", "EnvironmentFile="} {
		if !strings.Contains(unit, "\n"+want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	if cmd := newRootCmd(); cmd.Flags().Lookup("config") == nil {
		t.Error("the unit passes --config, which the binary does not take")
	}

	docker := fencedBlock(t, doc, "dockerfile", "go build")
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	for _, want := range []string{
		"FROM golang:" + string(goVersion[1]) + " AS build",
		"RUN CGO_ENABLED=0 go build ",
		" ./cmd/switchboard\n",
		"FROM gcr.io/distroless/static",
		`ENTRYPOINT ["/switchboard"]`,
	} {
		if !strings.Contains(docker, want) {
			t.Errorf("the Dockerfile lacks %q:\n%s", want, docker)
		}
	}
}
