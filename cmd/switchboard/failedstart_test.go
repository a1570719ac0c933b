package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestFailedStartLogsInItsFormat: a node or item service that cannot start
// says why on its log, in the log's format (with --log-format json every
// line of stderr is a JSON object, the reason included), and exits 1; a
// stop that failed nothing logs no null error. Before, the reason was a
// plain-text line after the JSON ones, and "switchboard stopped" carried
// "err":null.
func TestFailedStartLogsInItsFormat(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string // in the error line's err
	}{
		{"node", []string{"--log-format", "json", "--kafka-brokers", "127.0.0.1:1", "--http-addr", "127.0.0.1:0"}, "unreachable"},
		{"itemsvc", []string{"itemsvc", "--log-format", "json", "--kafka-brokers", "127.0.0.1:1"}, "unreachable"},
		{"itemsvc without brokers", []string{"itemsvc", "--log-format", "json"}, "kafka.brokers"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], tt.args...)
			cmd.Env = append(os.Environ(), asCommand+"=1", "SWITCHBOARD_KAFKA_DIAL_TIMEOUT=2s")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1; stderr:\n%s", err, stderr.String())
			}
			found := false
			for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("a stderr line is not JSON: %q", line)
				}
				if v, ok := rec["err"]; ok && v == nil {
					t.Errorf("a line carries a null error: %q", line)
				}
				if rec["level"] == "ERROR" && rec["msg"] == "switchboard could not start" {
					if s, _ := rec["err"].(string); strings.Contains(s, tt.want) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("no ERROR line saying why (%q); stderr:\n%s", tt.want, stderr.String())
			}
		})
	}
}
