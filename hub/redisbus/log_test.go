package redisbus

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// lockedBuffer is a bytes.Buffer that go-redis's goroutines may log into.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestGoRedisLogsThroughSlog: go-redis's own lines (here: it cannot dial)
// come out of the bus's logger as JSON, once "redis: " each, not as raw
// "redis: 2026/…" lines on stderr.
func TestGoRedisLogsThroughSlog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	var buf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	t.Cleanup(func() { redis.SetLogger(redisLogger{slog.New(slog.DiscardHandler)}) })
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	if _, err := New(t.Context(), rdb, Config{}, log); err == nil {
		t.Fatal("New succeeded without a server")
	}

	var lines []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
		lines = append(lines, m)
	}
	found := false
	for _, m := range lines {
		msg, _ := m["msg"].(string)
		if strings.HasPrefix(msg, "redis: redis:") {
			t.Errorf("prefix twice: %q", msg)
		}
		if strings.HasPrefix(msg, "redis: connection pool: failed to dial") && m["level"] == "WARN" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no go-redis dial failure among the bus's log lines:\n%s", buf.String())
	}
}
