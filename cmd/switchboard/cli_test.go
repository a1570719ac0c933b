package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/config"
)

// cleanEnv unsets every SWITCHBOARD_* variable but the harness's, so the
// developer's environment cannot leak into a command.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(strings.ToUpper(name), config.EnvPrefix+"_") || slices.Contains(config.HarnessEnv, name) {
			continue
		}
		t.Setenv(name, "") // restored on cleanup
		os.Unsetenv(name)
	}
}

// runCLI executes the root command with args and returns its exit status,
// stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := execute(t.Context(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

var versionRe = regexp.MustCompile(`^version:  (\S+)\nrevision: (\S+)\nmodified: (true|false|unknown)\ngo:       (\S+)\n$`)

// TestVersion: `version` and `--version` print the same four lines; in a
// test binary, which carries no VCS information, the revision and the
// modified flag are "unknown".
func TestVersion(t *testing.T) {
	code, out, errOut := runCLI(t, "version")
	if code != 0 || errOut != "" {
		t.Fatalf("version: exit %d, stderr %q", code, errOut)
	}
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("version printed\n%s", out)
	}
	if m[4] != runtime.Version() {
		t.Errorf("go %s, want %s", m[4], runtime.Version())
	}
	bi, _ := debug.ReadBuildInfo()
	if !slices.ContainsFunc(bi.Settings, func(s debug.BuildSetting) bool { return s.Key == "vcs.revision" }) && (m[2] != "unknown" || m[3] != "unknown") {
		t.Errorf("no VCS information in this build, yet revision %q modified %q", m[2], m[3])
	}
	code, out2, _ := runCLI(t, "--version")
	if code != 0 || out2 != out {
		t.Errorf("--version: exit %d\n%s\nwant\n%s", code, out2, out)
	}
}

// TestConfigCheck: `config check` loads the file, the environment and the
// flags as a start would: "ok" and 0, or every problem on stderr, each
// naming its key or variable, and 1.
func TestConfigCheck(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string // no file when empty
		env     map[string]string
		args    []string
		wantErr []string // lines of stderr; none: exit 0 and "ok"
	}{
		{name: "defaults"},
		{name: "a good file", yaml: "hub:\n  history:\n    size: 50\n"},
		{
			name: "bad file",
			yaml: "hub:\n  histroy:\n    size: 5\nsse:\n  heartbeat: soon\n",
			wantErr: []string{
				`config: unknown key "hub.histroy"`,
				`config: sse.heartbeat: time: invalid duration "soon"`,
			},
		},
		{
			name: "out of range",
			yaml: "hub:\n  client_queue: 0\n",
			env:  map[string]string{"SWITCHBOARD_LOG_FORMAT": "xml"},
			wantErr: []string{
				`config: hub.client_queue: must be > 0, got 0`,
				`config: log.format: "xml" is not one of text, json`,
			},
		},
		{
			name:    "unknown environment variable",
			env:     map[string]string{"SWITCHBOARD_HUB_HISTORY_SISE": "5"},
			wantErr: []string{"config: unknown environment variable SWITCHBOARD_HUB_HISTORY_SISE; did you mean SWITCHBOARD_HUB_HISTORY_SIZE (key hub.history.size)?"},
		},
		{
			name:    "a flag",
			args:    []string{"--log-level", "loud"},
			wantErr: []string{`config: log.level: "loud" is not one of debug, info, warn, error`},
		},
		{
			name:    "no such file",
			yaml:    "-",
			wantErr: []string{"config: read "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := append([]string{"config", "check"}, tt.args...)
			switch tt.yaml {
			case "":
			case "-":
				args = append(args, "--config", filepath.Join(t.TempDir(), "missing.yaml"))
			default:
				p := filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(p, []byte(tt.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", p)
			}
			code, out, errOut := runCLI(t, args...)
			if len(tt.wantErr) == 0 {
				if code != 0 || out != "ok\n" || errOut != "" {
					t.Fatalf("exit %d, stdout %q, stderr %q; want 0, \"ok\"", code, out, errOut)
				}
				return
			}
			if code != 1 || out != "" {
				t.Fatalf("exit %d, stdout %q; want 1 and nothing", code, out)
			}
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			if len(lines) != len(tt.wantErr) {
				t.Fatalf("stderr\n%s\nwant %d lines: %q", errOut, len(tt.wantErr), tt.wantErr)
			}
			for i, w := range tt.wantErr {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d: %q, want %q", i+1, lines[i], w)
				}
			}
		})
	}
}

// TestConfigDefaults: `config defaults` prints every key with its default
// and comment, no secret even when the environment holds one, and `config
// check --config` accepts the file unchanged.
func TestConfigDefaults(t *testing.T) {
	cleanEnv(t)
	t.Setenv("SWITCHBOARD_AUTH_SESSION_SECRET", "hunter2-secret")
	code, out, errOut := runCLI(t, "config", "defaults")
	if code != 0 || errOut != "" {
		t.Fatalf("config defaults: exit %d, stderr %q", code, errOut)
	}
	if strings.Contains(out, "hunter2-secret") {
		t.Fatal("config defaults printed the session secret")
	}
	for _, want := range []string{"\n  session_secret: \"\"\n", "\n    ttl: 1h\n", "\n  max_wait: 55s\n", "\n  addr: \":8080\"\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("config defaults lacks %q", want)
		}
	}
	p := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	code, checked, errOut := runCLI(t, "config", "check", "--config", p)
	if code != 0 || checked != "ok\n" {
		t.Fatalf("config check of the defaults: exit %d, stdout %q, stderr %q", code, checked, errOut)
	}
}

// TestUnknownEnvStopsStart: a misspelt SWITCHBOARD_* variable stops the
// start, naming it and the key it was likely meant for; a harness variable
// does not.
func TestUnknownEnvStopsStart(t *testing.T) {
	cleanEnv(t)
	t.Setenv("SWITCHBOARD_HUB_HISTORY_SISE", "5")
	t.Setenv("SWITCHBOARD_CI", "1") // a harness variable: no problem
	code, out, errOut := runCLI(t, "--http-addr", "127.0.0.1:0", "--kafka-embedded-addr", "127.0.0.1:0")
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q; want 1 before starting", code, out)
	}
	want := "switchboard: config: unknown environment variable SWITCHBOARD_HUB_HISTORY_SISE; did you mean SWITCHBOARD_HUB_HISTORY_SIZE (key hub.history.size)?\n"
	if errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	code, _, errOut = runCLI(t, "itemsvc", "--kafka-brokers", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "SWITCHBOARD_HUB_HISTORY_SISE") {
		t.Errorf("itemsvc: exit %d, stderr %q; want it refused too", code, errOut)
	}
}

var flagRe = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z-]+)`)

// TestHelp: --help names the configuration reference and the environment
// rule; itemsvc's lists only the flags it uses.
func TestHelp(t *testing.T) {
	code, out, _ := runCLI(t, "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"docs/configuration.md", "SWITCHBOARD_HUB_HISTORY_TTL", "SWITCHBOARD_* variable that is no key's stops the start", "config defaults", "config check"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
	tests := []struct {
		args  []string
		flags []string
	}{
		{[]string{"--help"}, []string{"config", "demo", "help", "http-addr", "kafka-brokers", "kafka-embedded-addr", "log-format", "log-level", "redis-url", "version"}},
		{[]string{"itemsvc", "--help"}, []string{"config", "help", "kafka-brokers", "log-format", "log-level"}},
		{[]string{"config", "check", "--help"}, []string{"config", "demo", "help", "http-addr", "kafka-brokers", "kafka-embedded-addr", "log-format", "log-level", "redis-url"}},
		{[]string{"config", "defaults", "--help"}, []string{"help"}},
	}
	for _, tt := range tests {
		code, out, _ := runCLI(t, tt.args...)
		var flags []string
		for _, m := range flagRe.FindAllStringSubmatch(out, -1) {
			flags = append(flags, m[1])
		}
		slices.Sort(flags)
		if code != 0 || !slices.Equal(flags, tt.flags) {
			t.Errorf("%v: exit %d, flags %v, want %v", tt.args, code, flags, tt.flags)
		}
		if tt.args[0] == "itemsvc" && !strings.Contains(out, "docs/configuration.md") {
			t.Errorf("itemsvc --help does not name docs/configuration.md")
		}
		// itemsvc starts no embedded broker: its help must not promise one.
		if tt.args[0] == "itemsvc" && (strings.Contains(out, "embedded") || !strings.Contains(out, "required (kafka.brokers)")) {
			t.Errorf("itemsvc --help speaks of an embedded broker, or not of kafka.brokers as required:\n%s", out)
		}
	}
}

// TestConfigRefusesToStart: an unknown key and a bad duration each stop the
// start with a message that names the key.
func TestConfigRefusesToStart(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "hub:\n  histroy:\n    size: 5\n", "hub.histroy"},
		{"bad duration", "sse:\n  heartbeat: soon\n", "sse.heartbeat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(path, []byte(tt.yaml), 0o600)
			cmd := newRootCmd()
			cmd.SetArgs([]string{"--config", path})
			cmd.SetOut(io.Discard)
			err := cmd.ExecuteContext(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
}
