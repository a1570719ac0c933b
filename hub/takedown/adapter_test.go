package takedown

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/producers"
)

// commander stands in for Kafka: before it returns from publishing a
// command, it may answer the command (the item service "answers instantly",
// faster than the publish call returns) or fail.
type commander struct {
	answer   func(ev producers.CloudEvent)
	fail     error
	commands atomic.Int32
}

func (c *commander) Publish(_ context.Context, _, _ string, ev producers.CloudEvent) error {
	if c.fail != nil {
		return c.fail
	}
	c.commands.Add(1)
	if c.answer != nil {
		c.answer(ev)
	}
	return nil
}

type allowAll struct{}

func (allowAll) AllowTakedown(*auth.Principal) error { return nil }

type rig struct {
	srv   *httptest.Server
	store *MemoryStore
	rec   *Recorder
	cmd   *commander
	a     *Adapter
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	mem := hub.NewMemory(hub.MemoryConfig{})
	h, err := hub.New(hub.Config{}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	store := NewMemoryStore(time.Hour)
	cmd := &commander{}
	cfg.CommandsTopic = "takedown.commands"
	a, err := New(cfg, h, store, cmd, allowAll{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	police := &auth.Principal{Name: "police", Role: auth.RolePolice}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.Post(w, r.WithContext(auth.WithPrincipal(r.Context(), police)))
	}))
	t.Cleanup(func() {
		srv.Close()
		h.Shutdown(context.Background())
		mem.Close()
	})
	return &rig{srv: srv, store: store, rec: &Recorder{Store: store, Next: h}, cmd: cmd, a: a}
}

// outcome makes the item service's event for a command.
func outcome(typ string, cmd producers.CloudEvent, data string) *hub.Event {
	id := typ + "-" + cmd.ID // unique per event, as CloudEvents ids are
	js := `{"specversion":"1.0","id":"` + id + `","source":"/itemsvc","type":"` + typ + `","correlationid":"` + cmd.CorrelationID + `","data":` + data + `}`
	return &hub.Event{ID: id, Source: "/itemsvc", Type: typ, Subject: cmd.Subject, CorrelationID: cmd.CorrelationID, JSON: []byte(js)}
}

func (r *rig) post(t *testing.T, body string, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, r.srv.URL, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp, m
}

// TestConfirmationBeforePublishReturns: the outcome arrives through the
// consume path while the command is still being published. The wait was
// registered first, so the answer is 200 at once, not a timeout.
func TestConfirmationBeforePublishReturns(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	r.cmd.answer = func(cmd producers.CloudEvent) {
		ctx := context.Background()
		ch := []string{"corr:" + cmd.CorrelationID}
		r.rec.Publish(ctx, ch, outcome(TypeRemoved, cmd, `{"item_id":"item-1","container_id":"group-1"}`))
		r.rec.Publish(ctx, ch, outcome(TypeConfirmed, cmd, `{"item_id":"item-1","removed_from":["group-1"],"confirmed_at":"2026-11-22T00:00:00Z"}`))
	}
	resp, m := r.post(t, `{"item_id":"item-1","reason":"x"}`)
	if resp.StatusCode != 200 || m["status"] != "confirmed" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
}

// TestOutcomeAlreadyStored: a retry whose outcome is already in the store
// is answered from the store, without a second command.
func TestOutcomeAlreadyStored(t *testing.T) {
	r := newRig(t, Config{Timeout: 50 * time.Millisecond})
	resp, m := r.post(t, `{"item_id":"item-1","reason":"test"}`, "Idempotency-Key", "k")
	if resp.StatusCode != 504 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	corr := m["correlation_id"].(string)
	// The item service answers while nobody waits.
	cmd := producers.CloudEvent{ID: "c", CorrelationID: corr, Subject: "item-1"}
	r.store.Apply(t.Context(), outcome(TypeRejected, cmd, `{"item_id":"item-1","reason":"not_found"}`))
	resp, m = r.post(t, `{"item_id":"item-1","reason":"test"}`, "Idempotency-Key", "k")
	if resp.StatusCode != 404 || m["correlation_id"] != corr {
		t.Fatalf("retry: %d %v", resp.StatusCode, m)
	}
	if n := r.cmd.commands.Load(); n != 1 {
		t.Fatalf("%d commands, want 1", n)
	}
}

// TestPublishRefused: Kafka refusing the command is 503 with Retry-After,
// and nothing is recorded: the same key may be used again.
func TestPublishRefused(t *testing.T) {
	r := newRig(t, Config{})
	r.cmd.fail = errors.New("broker down")
	resp, _ := r.post(t, `{"item_id":"item-1","reason":"test"}`, "Idempotency-Key", "k")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	if ex, _ := r.store.Reserve(t.Context(), &Record{CorrelationID: "new", Principal: "police", IdempotencyKey: "k", CreatedAt: time.Now()}); ex != nil {
		t.Fatalf("a refused takedown kept its key: %+v", ex)
	}
	if n := r.a.Held(); n != 0 {
		t.Fatalf("%d held", n)
	}
}

// TestWaitCapped: Prefer: wait beyond takedown.max_wait is capped; with
// respond-async the answer after the wait is 202.
func TestWaitCapped(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour, MaxWait: 1 * time.Second})
	resp, m := r.post(t, `{"item_id":"item-1","reason":"test"}`, "Prefer", "wait=3600, respond-async")
	if resp.StatusCode != 202 || resp.Header.Get("Preference-Applied") != "respond-async, wait=1" || m["status"] != "pending" {
		t.Fatalf("%d %v %v", resp.StatusCode, resp.Header, m)
	}
	resp, _ = r.post(t, `{"item_id":"item-2","reason":"test"}`, "Prefer", "wait=3600")
	if resp.StatusCode != 504 || resp.Header.Get("Location") == "" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
}

// TestSlowBody: a body that does not arrive within the body timeout is
// refused with 400, and nothing is published.
func TestSlowBody(t *testing.T) {
	r := newRig(t, Config{BodyTimeout: 100 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"item_id\":")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || r.cmd.commands.Load() != 0 {
		t.Fatalf("status %d, %d commands", resp.StatusCode, r.cmd.commands.Load())
	}
}
