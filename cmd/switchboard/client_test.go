package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/cmd/switchboard/internal/node"
	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers/kafkatest"
	"github.com/switchboard/switchboard/hub/sdk"
)

const (
	waitFor     = 15 * time.Second
	modToken    = "cli-mod-token-0123456789"
	policeToken = "cli-police-token-0123456789"
)

// startNode starts a whole node (embedded broker, item service) on free
// ports, adjusted by mutate, and stops it at cleanup.
func startNode(t *testing.T, mutate func(*config.Config)) *node.Node {
	t.Helper()
	cleanEnv(t)
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Kafka.Embedded.Addr = "127.0.0.1:0"
	cfg.ItemSvc.Latency = 0
	cfg.Auth.Principals = []config.Principal{
		{Name: "mod", Role: "moderator", Token: modToken},
		{Name: "police", Role: "police", Token: policeToken},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := node.Start(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	base := strings.TrimSuffix(a.URL(), "/")
	deadline := time.Now().Add(waitFor)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("node never ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func baseOf(a *node.Node) string { return strings.TrimSuffix(a.URL(), "/") }

// callAnswer runs switchboard call and returns its exit status and the
// answer it printed.
func callAnswer(t *testing.T, args ...string) (int, map[string]any) {
	t.Helper()
	code, out, errOut := runCLI(t, append([]string{"call"}, args...)...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("call %v: exit %d, stdout %q (%v), stderr %q", args, code, out, err, errOut)
	}
	return code, m
}

// TestCallExitStatus: switchboard call prints the node's answer and exits
// by outcome: 0 confirmed, 3 not found, 4 rejected (a reused key), 5 no
// outcome in time, 1 refused; the token comes from the flag, a file or
// the environment.
func TestCallExitStatus(t *testing.T) {
	a := startNode(t, nil)
	url := baseOf(a)
	code, m := callAnswer(t, "--url", url, "--token", policeToken, "--idempotency-key", "k-1", "takedowns", "item_id=item-3", "reason=court order")
	if code != 0 || m["status"] != "confirmed" || m["item_id"] != "item-3" {
		t.Fatalf("item-3: exit %d, %v", code, m)
	}
	// The same key and body again: the same takedown, replayed.
	if code, again := callAnswer(t, "--url", url, "--token", policeToken, "--idempotency-key", "k-1", "takedowns", "item_id=item-3", "reason=court order"); code != 0 || again["correlation_id"] != m["correlation_id"] {
		t.Fatalf("replay: exit %d, %v, want %v", code, again, m["correlation_id"])
	}
	if code, m := callAnswer(t, "--url", url, "--token", policeToken, "--idempotency-key", "k-1", "takedowns", "item_id=item-4", "reason=court order"); code != exitCallRejected {
		t.Fatalf("reused key: exit %d, %v", code, m)
	}
	t.Setenv(envToken, policeToken)
	if code, m := callAnswer(t, "--url", url, "takedowns", "item_id=no-such-item", "reason=x"); code != exitCallNotFound || m["status"] != float64(404) {
		t.Fatalf("unknown item: exit %d, %v", code, m)
	}
	os.Unsetenv(envToken)
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("wrong-token-0123456789\n"), 0o600)
	if code, m := callAnswer(t, "--url", url, "--token-file", file, "takedowns", "item_id=item-3", "reason=x"); code != exitCallOther || m["status"] != float64(401) {
		t.Fatalf("bad token: exit %d, %v", code, m)
	}
	if code, _, errOut := runCLI(t, "call", "--url", url, "--token", policeToken, "takedowns", "item_id"); code != 1 || !strings.Contains(errOut, "key=value") {
		t.Fatalf("bad argument: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, "call", "--url", url, "takedowns", "item_id=x"); code != 1 || !strings.Contains(errOut, "no token") {
		t.Fatalf("no token: exit %d, %q", code, errOut)
	}

	slow := startNode(t, func(c *config.Config) {
		c.ItemSvc.Enabled = false
		c.Takedown.Timeout = 200 * time.Millisecond
	})
	if code, m := callAnswer(t, "--url", baseOf(slow), "--token", policeToken, "takedowns", "item_id=item-3", "reason=x"); code != exitCallTimeout || m["status_url"] == nil {
		t.Fatalf("no outcome: exit %d, %v", code, m)
	}
}

// TestTailResumes: switchboard tail prints each event of its channels as
// a JSON line; when the network drops its connection it resumes, printing
// no event twice and skipping none.
func TestTailResumes(t *testing.T) {
	a := startNode(t, nil)
	p, err := kafkatest.NewProxy(strings.TrimPrefix(baseOf(a), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	exited := make(chan int, 1)
	go func() {
		var stderr strings.Builder
		exited <- execute(ctx, []string{"tail", "--url", "http://" + p.Addr(), "--token", modToken,
			"--channel", "takedowns", "--channel", "reports", "--from", "oldest"}, pw, &stderr)
		pw.Close()
	}()
	lines := make(chan map[string]any, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("not a JSON line: %q", sc.Text())
				continue
			}
			lines <- m
		}
	}()
	seen := map[string]bool{}
	var printed []string // event IDs, in the order tail printed them
	// until reads lines until the takedown corr is confirmed.
	until := func(corr string) {
		t.Helper()
		for {
			select {
			case m, ok := <-lines:
				if !ok {
					t.Fatal("tail ended")
				}
				ev, _ := m["event"].(map[string]any)
				if m["type"] != "event" || m["channel"] != "takedowns" || m["cursor"] == "" || ev == nil {
					t.Fatalf("line %v", m)
				}
				id := ev["source"].(string) + " " + ev["id"].(string)
				if seen[id] {
					t.Fatalf("event %s printed twice", id)
				}
				seen[id] = true
				printed = append(printed, id)
				if ev["type"] == "takedown.confirmed" && ev["correlationid"] == corr {
					return
				}
			case <-time.After(waitFor):
				t.Fatalf("no confirmation of %s on tail", corr)
			}
		}
	}
	var last string
	for i, item := range []string{"item-1", "item-2", "item-3"} {
		code, m := callAnswer(t, "--url", baseOf(a), "--token", policeToken, "takedowns", "item_id="+item, "reason=x")
		if code != 0 {
			t.Fatalf("%s: exit %d, %v", item, code, m)
		}
		last = m["correlation_id"].(string)
		until(last)
		if i < 2 {
			p.Reset()
		}
	}
	cancel()
	if code := <-exited; code != 0 {
		t.Fatalf("tail exit %d after interrupt", code)
	}
	for range lines {
	}

	// A refused token ends tail at once with 1; so does a refused channel.
	if code, out, errOut := runCLI(t, "tail", "--url", baseOf(a), "--token", "wrong-token-0123456789", "--channel", "reports"); code != 1 || out != "" || !strings.Contains(errOut, "not authorised") {
		t.Fatalf("bad token: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, "tail", "--url", baseOf(a), "--token", policeToken, "--channel", "reports"); code != 1 || !strings.Contains(errOut, "forbidden") {
		t.Fatalf("police on reports: exit %d, stderr %q", code, errOut)
	}

	// What tail printed is the channel's history, whole and in order.
	c, err := sdk.Dial(t.Context(), baseOf(a), sdk.Options{Token: modToken})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Subscribe(t.Context(), "takedowns", sdk.Oldest)
	if err != nil {
		t.Fatal(err)
	}
	var history []string
	for len(history) < len(printed) {
		select {
		case ev := <-s.Events():
			history = append(history, ev.Source+" "+ev.ID)
		case <-time.After(waitFor):
			t.Fatalf("history: %d events, tail printed %d", len(history), len(printed))
		}
	}
	if !slices.Equal(history, printed) {
		t.Fatalf("tail printed\n%v\nhistory holds\n%v", printed, history)
	}
}
