package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/producers/itemsvc"
)

// post sends POST /v1/takedowns and decodes the JSON answer.
func post(t *testing.T, ctx context.Context, a *Node, token, body string, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	resp, b, err := call(ctx, nil, http.MethodPost, a.base()+"/v1/takedowns", jsonHeader(token, hdr...), body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp, m
}

// get sends GET path with token and decodes the JSON answer.
func get(t *testing.T, a *Node, token, path string, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	resp, b, err := call(t.Context(), nil, http.MethodGet, a.base()+path, headers(token, hdr...), "")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp, m
}

func containersOf(t *testing.T, item string) []string {
	t.Helper()
	cs, ok := itemsvc.DemoCatalogue().Containers(item)
	if !ok {
		t.Fatalf("%s not in the catalogue", item)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func isProblem(resp *http.Response) bool {
	return resp.Header.Get("Content-Type") == "application/problem+json"
}

// TestTakedownOutcomes: every row of the contract's outcome table, end to end
// through the embedded broker and the simulated item service.
func TestTakedownOutcomes(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) {
		c.ItemSvc.Latency = 20 * time.Millisecond
		c.HTTP.MaxBodyBytes = 1024
		c.Limits.TakedownBurst = 1000
	})
	waitReady(t, a)
	ctx := t.Context()

	t.Run("confirmed 200", func(t *testing.T) {
		resp, m := post(t, ctx, a, policeToken, `{"item_id":"item-1","reason":"court order","authority_ref":"NL-1"}`)
		if resp.StatusCode != 200 || m["status"] != "confirmed" || m["item_id"] != "item-1" || m["correlation_id"] == "" || m["confirmed_at"] == "" {
			t.Fatalf("%d %v", resp.StatusCode, m)
		}
		got := strs(m["removed_from"])
		slices.Sort(got)
		want := containersOf(t, "item-1")
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("removed_from %v, want %v", got, want)
		}
	})
	t.Run("unknown item 404", func(t *testing.T) {
		resp, m := post(t, ctx, a, policeToken, `{"item_id":"no-such-item","reason":"x"}`)
		if resp.StatusCode != 404 || !isProblem(resp) || m["correlation_id"] == nil || m["status"] != float64(404) {
			t.Fatalf("%d %v", resp.StatusCode, m)
		}
	})
	t.Run("respond-async 202 then GET", func(t *testing.T) {
		resp, m := post(t, ctx, a, modToken, `{"item_id":"item-2","reason":"spam"}`, "Prefer", "respond-async")
		loc := resp.Header.Get("Location")
		if resp.StatusCode != 202 || loc == "" || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Preference-Applied") != "respond-async" || m["status"] != "pending" {
			t.Fatalf("%d %v %v", resp.StatusCode, resp.Header, m)
		}
		resp, m = get(t, a, modToken, loc, "Prefer", "wait=10")
		if resp.StatusCode != 200 || m["status"] != "confirmed" || len(strs(m["removed_from"])) != len(containersOf(t, "item-2")) {
			t.Fatalf("GET %d %v", resp.StatusCode, m)
		}
		// Only the principal that asked, or a moderator, may read it; to
		// anyone else it does not exist.
		if resp, _ := get(t, a, policeToken, loc); resp.StatusCode != 404 || !isProblem(resp) {
			t.Fatalf("police read a moderator's takedown: %d", resp.StatusCode)
		}
		if resp, _ := get(t, a, modToken, "/v1/takedowns/nope"); resp.StatusCode != 404 {
			t.Fatalf("unknown id: %d", resp.StatusCode)
		}
	})
	refusals := []struct {
		name   string
		token  string
		body   string
		ctype  string
		status int
	}{
		{"bad body 400", policeToken, `{"item_id":`, "application/json", 400},
		{"missing item_id 400", policeToken, `{"reason":"x"}`, "application/json", 400},
		{"missing reason 400", policeToken, `{"item_id":"item-3"}`, "application/json", 400},
		{"blank reason 400", policeToken, `{"item_id":"item-3","reason":"  "}`, "application/json", 400},
		{"bad item_id 400", policeToken, `{"item_id":"a b","reason":"test"}`, "application/json", 400},
		{"wrong content type 415", policeToken, `{"item_id":"item-3","reason":"test"}`, "text/plain", 415},
		{"too large 413", policeToken, `{"item_id":"item-3","reason":"` + strings.Repeat("x", 2000) + `"}`, "application/json", 413},
		{"no token 401", "", `{"item_id":"item-3","reason":"test"}`, "application/json", 401},
		{"bad token 401", "nope", `{"item_id":"item-3","reason":"test"}`, "application/json", 401},
		{"partner over HTTP 403", acmeToken, `{"item_id":"item-3","reason":"test"}`, "application/json", 403},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			resp, _, err := call(ctx, nil, http.MethodPost, a.base()+"/v1/takedowns", headers(tt.token, "Content-Type", tt.ctype), tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || !isProblem(resp) {
				t.Fatalf("status %d %s, want %d problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), tt.status)
			}
		})
	}
}

func TestTakedownRateLimit(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) {
		c.Limits.TakedownRate = 0.01
		c.Limits.TakedownBurst = 2
	})
	waitReady(t, a)
	for i := range 2 {
		if resp, _ := post(t, t.Context(), a, policeToken, fmt.Sprintf(`{"item_id":"item-%d","reason":"test"}`, 10+i)); resp.StatusCode != 200 {
			t.Fatalf("within the burst: %d", resp.StatusCode)
		}
	}
	resp, _ := post(t, t.Context(), a, policeToken, `{"item_id":"item-12","reason":"test"}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !isProblem(resp) {
		t.Fatalf("over the rate: %d %v", resp.StatusCode, resp.Header)
	}
	// Another principal has its own budget.
	if resp, _ := post(t, t.Context(), a, modToken, `{"item_id":"item-13","reason":"test"}`); resp.StatusCode != 200 {
		t.Fatalf("moderator: %d", resp.StatusCode)
	}
}

// responder stands in for an item service that answers every command with
// a rejection of the given reason.
func responder(t *testing.T, a *Node, reason string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{a.kafkaAddr}, GroupID: "responder", Topic: "takedown.commands", MaxWait: 50 * time.Millisecond})
	p, err := producers.New(producers.Config{Brokers: []string{a.kafkaAddr}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		defer r.Close()
		defer p.Close()
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				return
			}
			ev, err := consumers.Decode(m)
			if err != nil {
				continue
			}
			p.Publish(ctx, "takedown.events", ev.Subject, producers.NewEvent("/test", "takedown.rejected", ev.Subject, ev.CorrelationID,
				map[string]string{"item_id": ev.Subject, "reason": reason}))
		}
	}()
}

func TestTakedownRejected422(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) {
		c.ItemSvc.Enabled = false
		c.Takedown.OutcomeSources = []string{"/test"} // the responder's
	})
	waitReady(t, a)
	responder(t, a, "legal_hold")
	resp, m := post(t, t.Context(), a, policeToken, `{"item_id":"item-1","reason":"test"}`)
	if resp.StatusCode != 422 || !isProblem(resp) || m["reason"] != "legal_hold" || m["correlation_id"] == nil {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
}

// countCommands reads the whole command topic and counts the commands of a
// correlation ID.
func countCommands(t *testing.T, a *Node, corr string) int {
	t.Helper()
	return countCommandsWhere(t, a, func(ev *hub.Event) bool { return ev.CorrelationID == corr })
}

// countCommandsWhere reads the whole command topic and counts the commands
// match accepts.
func countCommandsWhere(t *testing.T, a *Node, match func(*hub.Event) bool) int {
	t.Helper()
	return countRecords(t, a, "takedown.commands", match)
}

// countRecords reads the whole of topic and counts the events match
// accepts.
func countRecords(t *testing.T, a *Node, topic string, match func(*hub.Event) bool) int {
	t.Helper()
	n := 0
	for part := range 3 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{a.kafkaAddr}, Topic: topic, Partition: part, MaxWait: 50 * time.Millisecond})
		conn, err := kafka.DialLeader(t.Context(), "tcp", a.kafkaAddr, topic, part)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < last; off++ {
			ctx, cancel := context.WithTimeout(t.Context(), waitFor)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if ev, err := consumers.Decode(m); err == nil && match(ev) {
				n++
			}
		}
		r.Close()
	}
	return n
}

// TestTakedownTimeoutThenRetry: with the item service stopped the request
// times out with 504 and Location; once it is back, the same request with the
// same Idempotency-Key returns 200, and the command topic holds one command.
func TestTakedownTimeoutThenRetry(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) {
		c.ItemSvc.Enabled = false
		c.Takedown.Timeout = 300 * time.Millisecond
	})
	waitReady(t, a)
	body := `{"item_id":"item-7","reason":"court order"}`
	resp, m := post(t, t.Context(), a, policeToken, body, "Idempotency-Key", "k-1")
	corr, _ := m["correlation_id"].(string)
	if resp.StatusCode != 504 || !isProblem(resp) || corr == "" || resp.Header.Get("Location") != "/v1/takedowns/"+corr || m["status_url"] != "/v1/takedowns/"+corr {
		t.Fatalf("%d %v %v", resp.StatusCode, resp.Header, m)
	}
	// The same key with another body is refused.
	if resp, _ := post(t, t.Context(), a, policeToken, `{"item_id":"item-8","reason":"test"}`, "Idempotency-Key", "k-1"); resp.StatusCode != 422 {
		t.Fatalf("same key, other body: %d", resp.StatusCode)
	}

	// The item service comes back.
	runItemService(t, a, a.kafkaAddr)

	resp, m = post(t, t.Context(), a, policeToken, body, "Idempotency-Key", "k-1", "Prefer", "wait=10")
	if resp.StatusCode != 200 || m["correlation_id"] != corr || m["status"] != "confirmed" {
		t.Fatalf("retry: %d %v", resp.StatusCode, m)
	}
	// Finished: a further retry replays the answer.
	resp, m = post(t, t.Context(), a, policeToken, body, "Idempotency-Key", "k-1")
	if resp.StatusCode != 200 || m["correlation_id"] != corr {
		t.Fatalf("replay: %d %v", resp.StatusCode, m)
	}
	if n := countCommands(t, a, corr); n != 1 {
		t.Fatalf("%d commands for the key, want 1", n)
	}
}

// TestTakedownConcurrent: 1,000 concurrent takedowns of different items each
// get their own answer; no correlation ID is crossed.
func TestTakedownConcurrent(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) {
		c.ItemSvc.Latency = 0
		c.Limits.TakedownRate = 1e6
		c.Limits.TakedownBurst = 1e6
		c.Limits.Connections = 1000 // each held request takes a slot
		// 1,000 publishes at once under -race on two cores can take longer
		// than the default 2 s; this test is not about that answer (503).
		c.Takedown.PublishTimeout = 10 * time.Second
		c.Takedown.Timeout = 30 * time.Second
		c.Takedown.MaxWait = 30 * time.Second
	})
	waitReady(t, a)
	const n = 1000
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	type answer struct {
		status int
		body   map[string]any
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			item := fmt.Sprintf("item-%d", i+1)
			resp, b, _ := call(t.Context(), client, http.MethodPost, a.base()+"/v1/takedowns", jsonHeader(policeToken), `{"item_id":"`+item+`","reason":"bulk"}`)
			if resp == nil {
				return
			}
			answers[i].status = resp.StatusCode
			json.Unmarshal(b, &answers[i].body)
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	cat := itemsvc.DemoCatalogue()
	for i, ans := range answers {
		item := fmt.Sprintf("item-%d", i+1)
		if ans.status != 200 || ans.body["item_id"] != item {
			t.Fatalf("%s: %d %v", item, ans.status, ans.body)
		}
		corr := ans.body["correlation_id"].(string)
		if seen[corr] {
			t.Fatalf("correlation ID %s answered twice", corr)
		}
		seen[corr] = true
		cs, _ := cat.Containers(item)
		if got := strs(ans.body["removed_from"]); len(got) != len(cs) {
			t.Fatalf("%s removed from %v, want %d containers", item, got, len(cs))
		}
	}
}

// TestTakedownClientHangsUp: a client that disconnects mid-wait frees its
// wait at once: no held request, no hub watch on its corr: channel and no
// hub client is left; the takedown goes on and its outcome stays readable.
func TestTakedownClientHangsUp(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) { c.ItemSvc.Enabled = false })
	waitReady(t, a)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, _, err := call(ctx, nil, http.MethodPost, a.base()+"/v1/takedowns", jsonHeader(policeToken), `{"item_id":"item-9","reason":"test"}`)
		errc <- err
	}()
	eventually(t, "a held request", func() bool { return a.takedowns.Held() == 1 && a.hub.Watchers() == 1 })
	cancel()
	<-errc
	eventually(t, "the wait freed", func() bool {
		return a.takedowns.Held() == 0 && a.hub.Watchers() == 0 && a.doorClients() == 0
	})
}

// TestTakedownKafkaDown: with the broker stopped, POST answers 503 with
// Retry-After well before the takedown timeout, and nothing is recorded.
func TestTakedownKafkaDown(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) { c.Takedown.Timeout = 20 * time.Second })
	waitReady(t, a)
	a.broker.Close()
	start := time.Now()
	resp, m := post(t, t.Context(), a, policeToken, `{"item_id":"item-4","reason":"test"}`, "Idempotency-Key", "down-1")
	t.Logf("503 after %v", time.Since(start))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !isProblem(resp) {
		t.Fatalf("%d %v %v", resp.StatusCode, resp.Header, m)
	}
	// Nothing was accepted: the key is free for a new request.
	if _, err := a.store.Reserve(t.Context(), &takedown.Record{CorrelationID: "probe", Principal: "police", IdempotencyKey: "down-1", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// TestTakedownWebSocket: a partner's takedown frame receives ack, one
// item.removed per container, and a result confirmed.
func TestTakedownWebSocket(t *testing.T) {
	a := startTestApp(t, nil)
	waitReady(t, a)
	c := dialWSWith(t, t, a.wsURL(""), bearer(acmeToken))
	defer c.CloseNow()
	c.Write(t.Context(), websocket.MessageText, []byte(`{"type":"takedown","id":"3","item_id":"item-5","reason":"counterfeit"}`))
	ack := wsFrame(t, c)
	corr, _ := ack["correlation_id"].(string)
	if ack["type"] != "ack" || ack["id"] != "3" || corr == "" {
		t.Fatalf("ack %v", ack)
	}
	want := containersOf(t, "item-5")
	var removed []string
	for {
		f := wsFrame(t, c)
		if f["type"] == "result" {
			if f["id"] != "3" || f["correlation_id"] != corr || f["status"] != "confirmed" || f["event"].(map[string]any)["type"] != "takedown.confirmed" {
				t.Fatalf("result %v", f)
			}
			break
		}
		ev := f["event"].(map[string]any)
		if f["type"] != "event" || f["channel"] != "corr:"+corr || ev["correlationid"] != corr {
			t.Fatalf("frame %v", f)
		}
		if ev["type"] == "item.removed" {
			removed = append(removed, ev["data"].(map[string]any)["container_id"].(string))
		}
	}
	slices.Sort(removed)
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Fatalf("item.removed for %v, want %v", removed, want)
	}
	// The partner may now follow its own takedown's channel on SSE too.
	openSSEWith(t, t, nil, a.base()+"/v1/sse?channel=corr:"+corr, bearer(acmeToken))
}

// TestShutdownLetsHeldTakedownsAnswer: on shutdown a held takedown is still
// answered (the consumer runs until the HTTP server has drained).
func TestShutdownLetsHeldTakedownsAnswer(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) { c.ItemSvc.Latency = 500 * time.Millisecond })
	waitReady(t, a)
	type answer struct {
		status int
		body   map[string]any
	}
	done := make(chan answer, 1)
	go func() {
		resp, m := post(t, context.Background(), a, policeToken, `{"item_id":"item-6","reason":"test"}`)
		done <- answer{resp.StatusCode, m}
	}()
	eventually(t, "a held request", func() bool { return a.takedowns.Held() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.status != 200 || got.body["status"] != "confirmed" {
		t.Fatalf("held takedown answered %d %v", got.status, got.body)
	}
}
