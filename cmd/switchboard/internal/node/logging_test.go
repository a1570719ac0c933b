package node

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/config"
)

// logBuffer collects log lines from many goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.b.String()), "\n")
}

// duplicateKeys returns the keys that occur twice in one object of the JSON
// line, at any depth, as "group.key".
func duplicateKeys(line string) ([]string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	var dups []string
	var walk func(prefix string) error
	walk = func(prefix string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				key := prefix + k.(string)
				if seen[key] {
					dups = append(dups, key)
				}
				seen[key] = true
				if err := walk(key + "."); err != nil {
					return err
				}
			}
			_, err = dec.Token() // }
			return err
		case json.Delim('['):
			for dec.More() {
				if err := walk(prefix); err != nil {
					return err
				}
			}
			_, err = dec.Token() // ]
			return err
		}
		return nil
	}
	return dups, walk("")
}

// TestLoggerDurations: the node's logger writes durations as strings such
// as "1.5s", in JSON (where slog writes nanoseconds) and in text, inside
// groups too.
func TestLoggerDurations(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		log := newLogger(config.Log{Level: "info", Format: format}, &b)
		log.Info("m", "took", 1500*time.Millisecond, slog.Group("g", "wait", 2*time.Minute), "n", 3)
		out := b.String()
		want := []string{`"took":"1.5s"`, `"g":{"wait":"2m0s"}`, `"n":3`}
		if format == "text" {
			want = []string{"took=1.5s", "g.wait=2m0s", "n=3"}
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: %q lacks %s", format, out, w)
			}
		}
	}
}

// TestNodeLogLines: a node that starts, serves requests, runs a takedown
// through the simulated item service and stops logs no attribute twice on
// one line (component=itemsvc was there twice), its request lines carry
// the duration as a string, and kafka-go's own lines are JSON lines of the
// component's logger, not kafka-go's printf output.
func TestNodeLogLines(t *testing.T) {
	var buf logBuffer
	log := newLogger(config.Log{Level: "debug", Format: "json"}, &buf)
	a := startTestNode(t, nodeSpec{config: func(c *config.Config) { c.ItemSvc.Latency = 0 }, log: log})
	waitReady(t, a)
	if resp, _ := post(t, t.Context(), a, policeToken, `{"item_id":"item-1","reason":"test"}`); resp.StatusCode != 200 {
		t.Fatalf("takedown %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	var itemsvc, requests, kafkaGo int
	for _, line := range buf.lines() {
		dups, err := duplicateKeys(line)
		if err != nil {
			t.Fatalf("not a JSON log line: %v: %s", err, line)
		}
		if len(dups) > 0 {
			t.Errorf("%v twice in %s", dups, line)
		}
		var m map[string]any
		json.Unmarshal([]byte(line), &m)
		if m["component"] == "itemsvc" {
			itemsvc++
		}
		// kafka-go's own lines come through the component's logger.
		if msg, _ := m["msg"].(string); strings.Contains(msg, "kafka reader: ") && m["component"] != nil {
			kafkaGo++
		}
		if m["msg"] == "http request" {
			requests++
			if d, ok := m["duration"].(string); !ok || !strings.HasSuffix(d, "s") {
				t.Errorf("duration %#v is not a duration string: %s", m["duration"], line)
			}
		}
	}
	if itemsvc == 0 || requests == 0 || kafkaGo == 0 {
		t.Fatalf("%d item service lines, %d request lines, %d kafka-go lines: nothing checked\n%s", itemsvc, requests, kafkaGo, strings.Join(buf.lines(), "\n"))
	}
}
