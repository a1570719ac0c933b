package config

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestUnknownEnv: a SWITCHBOARD_* variable that is no key's stops Load,
// naming the variable and, when one is close, the key it was likely meant
// for; the harness's own variables and empty section variables do not.
func TestUnknownEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		yaml string
		want []string // substrings of the error, in order; none: no error
	}{
		{
			name: "typo",
			env:  map[string]string{"SWITCHBOARD_HUB_HISTORY_SISE": "5"},
			want: []string{"config: unknown environment variable SWITCHBOARD_HUB_HISTORY_SISE; did you mean SWITCHBOARD_HUB_HISTORY_SIZE (key hub.history.size)?"},
		},
		{
			name: "empty value",
			env:  map[string]string{"SWITCHBOARD_HUB_HISTORY_SISE": ""},
			want: []string{"SWITCHBOARD_HUB_HISTORY_SISE; did you mean SWITCHBOARD_HUB_HISTORY_SIZE"},
		},
		{
			name: "lower case",
			env:  map[string]string{"switchboard_http_addr": ":9000"},
			want: []string{"unknown environment variable switchboard_http_addr; did you mean SWITCHBOARD_HTTP_ADDR (key http.addr)?"},
		},
		{
			name: "section left out",
			env:  map[string]string{"SWITCHBOARD_HISTORY_TTL": "1m"},
			want: []string{"SWITCHBOARD_HISTORY_TTL; did you mean SWITCHBOARD_HUB_HISTORY_TTL (key hub.history.ttl)?"},
		},
		{
			name: "nothing close",
			env:  map[string]string{"SWITCHBOARD_FROBNICATE": "yes"},
			want: []string{"config: unknown environment variable SWITCHBOARD_FROBNICATE\n"},
		},
		{
			name: "the config file is a flag, not a variable",
			env:  map[string]string{"SWITCHBOARD_CONFIG": "/etc/switchboard.yaml"},
			want: []string{"unknown environment variable SWITCHBOARD_CONFIG"},
		},
		{
			name: "several, with a bad key in the file",
			env:  map[string]string{"SWITCHBOARD_B_UNKNOWN": "1", "SWITCHBOARD_A_UNKNOWN": "1"},
			yaml: "hub:\n  histroy:\n    size: 5\n",
			want: []string{"SWITCHBOARD_A_UNKNOWN", "SWITCHBOARD_B_UNKNOWN", `unknown key "hub.histroy"`},
		},
		{
			name: "harness variables",
			env: map[string]string{
				"SWITCHBOARD_CI": "1", "SWITCHBOARD_BENCH_CPUPROFILE": "/tmp/p", "SWITCHBOARD_LOADCLIENT": "{}",
				"SWITCHBOARD_LOADCLIENT_CPUPROFILE": "/tmp/c", "SWITCHBOARD_CHILD_NODE": "{}", "SWITCHBOARD_HOLDCLIENT": "{}",
				"SWITCHBOARD_ARTIFACTS": "/tmp/a", "SWITCHBOARD_UPDATE_SCREENSHOT": "1", "SWITCHBOARD_TEST_HELPER_BROKER": "b:1",
			},
		},
		{
			name: "an empty section variable",
			env:  map[string]string{"SWITCHBOARD_HUB_HISTORY": ""},
		},
		{
			name: "key variables",
			env:  map[string]string{"SWITCHBOARD_HUB_HISTORY_SIZE": "5", "SWITCHBOARD_HTTP_ADDR": ":9000"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := ""
			if tt.yaml != "" {
				path = writeFile(t, tt.yaml)
			}
			_, err := Load(path, nil)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrUnknownEnv) {
				t.Fatalf("Load: %v, want ErrUnknownEnv", err)
			}
			var ee *EnvError
			if !errors.As(err, &ee) || !strings.HasPrefix(strings.ToUpper(ee.Name), EnvPrefix+"_") {
				t.Fatalf("Load: %v, want an EnvError naming the variable", err)
			}
			msg := err.Error() + "\n"
			at := 0
			for _, w := range tt.want {
				i := strings.Index(msg[at:], w)
				if i < 0 {
					t.Fatalf("error\n%s\nlacks (in order) %q", msg, w)
				}
				at += i + len(w)
			}
		})
	}
}

// harnessEnvRe finds the SWITCHBOARD_* variables that the tests, benchmarks
// and CI scripts read or set for themselves.
var harnessEnvRe = regexp.MustCompile(`(?:Getenv|LookupEnv)\("(SWITCHBOARD_[A-Z0-9_]+)"|Env\s*=\s*"(SWITCHBOARD_[A-Z0-9_]+)"|"(SWITCHBOARD_[A-Z0-9_]+)=|export (SWITCHBOARD_[A-Z0-9_]+)`)

// TestHarnessEnvComplete: every SWITCHBOARD_* variable the repository's
// tests and scripts read or set is a key's variable or one of HarnessEnv,
// so no test run is refused at start because of its own harness.
func TestHarnessEnvComplete(t *testing.T) {
	keyVars := map[string]bool{}
	for _, k := range Keys() {
		keyVars[envName(k)] = true
	}
	found := map[string]string{}
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && d.Name() != ".ci" && path != ".." || d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") && !strings.HasPrefix(path, filepath.Join("..", ".ci")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range harnessEnvRe.FindAllStringSubmatch(string(b), -1) {
			for _, name := range m[1:] {
				if name != "" {
					found[name] = path
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := found["SWITCHBOARD_CI"]; !ok {
		t.Fatalf("found no SWITCHBOARD_CI in the repository (found %v): the scan is broken", found)
	}
	for name, path := range found {
		if !keyVars[name] && !harnessVar(name) && !strings.HasPrefix(path, filepath.Join("..", "config")) {
			t.Errorf("%s reads or sets %s, which is neither a key's variable nor in config.HarnessEnv: Load would refuse it", path, name)
		}
	}
	t.Logf("harness variables found: %v", slices.Sorted(func(yield func(string) bool) {
		for n := range found {
			if !keyVars[n] && !yield(n) {
				return
			}
		}
	}))
}
