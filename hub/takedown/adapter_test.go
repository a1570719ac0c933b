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
	"slices"
	"strings"
	"sync"
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
	fail     atomic.Pointer[error]
	commands atomic.Int32

	mu       sync.Mutex
	attempts []producers.CloudEvent // every publish, failed or not
}

func (c *commander) Publish(_ context.Context, _, _ string, ev producers.CloudEvent) error {
	c.mu.Lock()
	c.attempts = append(c.attempts, ev)
	c.mu.Unlock()
	if err := c.fail.Load(); err != nil {
		return *err
	}
	c.commands.Add(1)
	if c.answer != nil {
		c.answer(ev)
	}
	return nil
}

func (c *commander) failWith(err error) {
	if err == nil {
		c.fail.Store(nil)
		return
	}
	c.fail.Store(&err)
}

func (c *commander) tried() []producers.CloudEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.attempts)
}

type allowAll struct{}

func (allowAll) AllowTakedown(*auth.Principal) error            { return nil }
func (allowAll) AllowWait(*auth.Principal) error                { return nil }
func (allowAll) Hold(*auth.Principal) (release func(), _ error) { return func() {}, nil }

type rig struct {
	srv   *httptest.Server
	ws    *httptest.Server // GET /v1/ws with the takedown frame
	store *MemoryStore
	rec   *Recorder
	cmd   *commander
	a     *Adapter
	// who makes the requests of both doors: police unless a test says.
	who atomic.Pointer[auth.Principal]
}

// admitAs is a hub.Guard that admits every connection as the rig's
// principal.
type admitAs struct{ r *rig }

func (g admitAs) Admit(r *http.Request) (context.Context, func(), error) {
	return auth.WithPrincipal(r.Context(), g.r.who.Load()), func() {}, nil
}

func (admitAs) Allow(context.Context, string) error { return nil }

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	store := NewMemoryStore(time.Hour, 0)
	r := newRigOn(t, cfg, store)
	r.store = store
	return r
}

// newRigOn is newRig on the given store (rig.store is then nil).
func newRigOn(t *testing.T, cfg Config, store Store) *rig {
	t.Helper()
	mem := hub.NewMemory(hub.MemoryConfig{})
	h, err := hub.New(hub.Config{}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cmd := &commander{}
	cfg.CommandsTopic = "takedown.commands"
	cfg.Trust = testTrust
	a, err := New(cfg, h, store, cmd, allowAll{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rg := &rig{rec: &Recorder{Store: store, Next: h, Trust: testTrust, Wake: a}, cmd: cmd, a: a}
	rg.who.Store(&auth.Principal{Name: "police", Role: auth.RolePolice})
	rg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.Post(w, r.WithContext(auth.WithPrincipal(r.Context(), rg.who.Load())))
	}))
	rg.ws = httptest.NewServer(h.WSHandler(hub.WSConfig{Guard: admitAs{rg}, Frames: map[string]hub.FrameHandler{"takedown": a.Frame}}))
	t.Cleanup(func() {
		rg.srv.Close()
		rg.ws.Close()
		h.Shutdown(context.Background())
		mem.Close()
	})
	return rg
}

// testTrust is where the tests' trusted outcomes come from.
var testTrust = Trust{Topic: "takedown.events", Sources: []string{"/itemsvc"}}

// outcome makes the item service's event for a command.
func outcome(typ string, cmd producers.CloudEvent, data string) *hub.Event {
	id := typ + "-" + cmd.ID // unique per event, as CloudEvents ids are
	js := `{"specversion":"1.0","id":"` + id + `","source":"/itemsvc","type":"` + typ + `","correlationid":"` + cmd.CorrelationID + `","data":` + data + `}`
	return &hub.Event{ID: id, Source: "/itemsvc", Type: typ, Subject: cmd.Subject, CorrelationID: cmd.CorrelationID, Topic: "takedown.events", JSON: []byte(js)}
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

// TestPublishRefused: Kafka not acknowledging the command is 503 with
// Retry-After and the correlation ID. The takedown is kept, not released
// (the write may still happen): a retry with the same key publishes the
// same command again, with the same identity, and is answered.
func TestPublishRefused(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	r.cmd.failWith(errors.New("broker down"))
	resp, m := r.post(t, `{"item_id":"item-1","reason":"test"}`, "Idempotency-Key", "k")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || m["correlation_id"] == nil {
		t.Fatalf("%d %v %v", resp.StatusCode, resp.Header, m)
	}
	corr := m["correlation_id"].(string)
	if rec, err := r.store.Get(t.Context(), corr); err != nil || rec.Published {
		t.Fatalf("the refused takedown was not kept as publishing: %+v %v", rec, err)
	}
	if n := r.a.Held(); n != 0 {
		t.Fatalf("%d held", n)
	}

	r.cmd.failWith(nil)
	r.cmd.answer = func(cmd producers.CloudEvent) {
		r.rec.Publish(context.Background(), []string{"corr:" + cmd.CorrelationID},
			outcome(TypeConfirmed, cmd, `{"item_id":"item-1","removed_from":[],"confirmed_at":"2026-11-22T00:00:00Z"}`))
	}
	resp, m = r.post(t, `{"item_id":"item-1","reason":"test"}`, "Idempotency-Key", "k")
	if resp.StatusCode != 200 || m["correlation_id"] != corr {
		t.Fatalf("retry: %d %v, want 200 for %s", resp.StatusCode, m, corr)
	}
	tried := r.cmd.tried()
	if len(tried) != 2 || tried[0].ID != tried[1].ID || tried[0].CorrelationID != tried[1].CorrelationID || tried[0].Time != tried[1].Time {
		t.Fatalf("two publishes of one takedown must be one command: %+v", tried)
	}
}

// TestSweepRepublishes: a takedown whose command was not acknowledged is
// published again by the sweep, as the same command, and then no more.
func TestSweepRepublishes(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour, PublishWait: 50 * time.Millisecond, SweepInterval: 10 * time.Millisecond})
	r.cmd.failWith(errors.New("broker down"))
	resp, m := r.post(t, `{"item_id":"item-1","reason":"test"}`)
	if resp.StatusCode != 503 {
		t.Fatalf("%d", resp.StatusCode)
	}
	corr := m["correlation_id"].(string)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- r.a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(200 * time.Millisecond) // a few sweeps while the broker is down
	r.cmd.failWith(nil)
	waitFor(t, func() bool { rec, err := r.store.Get(t.Context(), corr); return err == nil && rec.Published })
	n := len(r.cmd.tried())
	time.Sleep(200 * time.Millisecond) // more sweeps: nothing left to publish
	tried := r.cmd.tried()
	if len(tried) != n || r.cmd.commands.Load() != 1 {
		t.Fatalf("published %d times after it was acknowledged (%d ok)", len(tried)-n, r.cmd.commands.Load())
	}
	for _, ev := range tried {
		if ev.ID != tried[0].ID || ev.CorrelationID != corr {
			t.Fatalf("the sweep published another command: %+v", ev)
		}
	}
	if ok, _ := r.a.Republished(); ok != 1 {
		t.Fatalf("republished %d, want 1", ok)
	}
}

// TestForgedOutcomes: outcomes from another topic, another source, about
// another item, or for a correlation ID never published change no
// takedown; they are counted by reason, and the real outcome decides.
func TestForgedOutcomes(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	r.cmd.answer = func(cmd producers.CloudEvent) {
		ctx := context.Background()
		ch := []string{"corr:" + cmd.CorrelationID}
		forge := func(mut func(*hub.Event)) {
			ev := outcome(TypeConfirmed, producers.CloudEvent{ID: "forged", CorrelationID: cmd.CorrelationID, Subject: cmd.Subject},
				`{"item_id":"item-1","removed_from":["nowhere"],"confirmed_at":"2000-01-01T00:00:00Z"}`)
			mut(ev)
			if err := r.rec.Publish(ctx, ch, ev); err != nil {
				t.Error(err)
			}
		}
		forge(func(ev *hub.Event) { ev.Topic = "items.reported" })
		forge(func(ev *hub.Event) { ev.Source = "/elsewhere"; ev.ID += "-src" })
		forge(func(ev *hub.Event) {
			ev.ID += "-item"
			ev.Subject = "item-2"
			ev.JSON = []byte(strings.ReplaceAll(string(ev.JSON), "item-1", "item-2"))
		})
		forge(func(ev *hub.Event) { ev.ID += "-corr"; ev.CorrelationID = "never-published" })
		if rec, _ := r.store.Get(ctx, cmd.CorrelationID); rec.Final() {
			t.Errorf("a forgery decided the takedown: %+v", rec)
		}
		go func() {
			time.Sleep(50 * time.Millisecond) // the forgeries reach the waiter first
			r.rec.Publish(ctx, ch, outcome(TypeRejected, cmd, `{"item_id":"item-1","reason":"not_found"}`))
		}()
	}
	resp, m := r.post(t, `{"item_id":"item-1","reason":"x"}`)
	if resp.StatusCode != 404 || m["reason"] != "not_found" {
		t.Fatalf("%d %v: the real outcome must decide", resp.StatusCode, m)
	}
	got := r.rec.Untrusted()
	for _, reason := range []string{ReasonTopic, ReasonSource, ReasonItem, ReasonUnknown} {
		if got[reason] != 1 {
			t.Errorf("untrusted %s = %d, want 1 (%v)", reason, got[reason], got)
		}
	}
	if _, err := r.store.Get(t.Context(), "never-published"); !errors.Is(err, ErrNotFound) {
		t.Fatal("an outcome for an unknown correlation ID made a record")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
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
