package takedown

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/producers"
)

// countingLimiter counts the held slots taken and not yet freed.
type countingLimiter struct {
	allowAll
	holding atomic.Int64
}

func (l *countingLimiter) Hold(*auth.Principal) (func(), error) {
	l.holding.Add(1)
	var once sync.Once
	return func() { once.Do(func() { l.holding.Add(-1) }) }, nil
}

// handedOff returns how many requests are handed off from net/http now.
func (a *Adapter) handedOff() int {
	a.handoffs.mu.Lock()
	defer a.handoffs.mu.Unlock()
	return len(a.handoffs.set)
}

// rawPost sends POST / on a connection of its own, written by hand: the
// client side holds no goroutine, so the server's show in the count.
func rawPost(t *testing.T, url, body string, hdr ...string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var extra strings.Builder
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&extra, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s", len(body), extra.String(), body)
	return conn
}

func readAnswer(t *testing.T, conn net.Conn) (*http.Response, map[string]any) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return resp, m
}

// serveWrapped serves r's POST with each response writer wrapped by wrap,
// behind a middleware that echoes X-Request-ID as the node's request log
// does; it returns the server's URL.
func serveWrapped(t *testing.T, r *rig, wrap func(http.ResponseWriter) http.ResponseWriter) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("X-Request-ID", req.Header.Get("X-Request-ID"))
		r.a.Post(wrap(w), req.WithContext(auth.WithPrincipal(req.Context(), r.who.Load())))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// settledGoroutines waits for the goroutine count to come down to at
// most want, and returns it.
func settledGoroutines(t *testing.T, want int) int {
	t.Helper()
	var n int
	waitFor(t, func() bool { n = runtime.NumGoroutine(); return n <= want })
	return n
}

// TestHandOffAnswers: held requests are handed off from net/http (no
// goroutine of their own while they wait) and still answered 200 when the
// outcome arrives, with the headers and body of an in-handler answer; the
// watchers end with the last of them.
func TestHandOffAnswers(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	lim := &countingLimiter{}
	r.a.limit = lim
	var (
		mu   sync.Mutex
		cmds []producers.CloudEvent
	)
	r.cmd.answer = func(cmd producers.CloudEvent) { mu.Lock(); cmds = append(cmds, cmd); mu.Unlock() }
	url := serveWrapped(t, r, func(w http.ResponseWriter) http.ResponseWriter { return w })
	base := settledGoroutines(t, runtime.NumGoroutine())

	const n = 20
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = rawPost(t, url, fmt.Sprintf(`{"item_id":"item-%d","reason":"x"}`, i), "X-Request-ID", fmt.Sprintf("req-%d", i))
	}
	waitFor(t, func() bool { return r.a.handedOff() == n })
	// n requests held: the hang-up watcher and the shutdown watcher, not
	// a goroutine per request.
	if got := settledGoroutines(t, base+2); got > base+2 {
		t.Fatalf("%d goroutines with %d held, %d before", got, n, base)
	}
	if r.a.Held() != n || lim.holding.Load() != n {
		t.Fatalf("held %d, slots %d, want %d", r.a.Held(), lim.holding.Load(), n)
	}

	mu.Lock()
	all := append([]producers.CloudEvent(nil), cmds...)
	mu.Unlock()
	for _, cmd := range all {
		r.rec.Publish(context.Background(), []string{"corr:" + cmd.CorrelationID},
			outcome(TypeConfirmed, cmd, `{"item_id":"`+cmd.Subject+`","removed_from":["g"],"confirmed_at":"2026-11-22T00:00:00Z"}`))
	}
	for i, conn := range conns {
		resp, m := readAnswer(t, conn)
		if resp.StatusCode != 200 || m["status"] != "confirmed" || m["item_id"] != fmt.Sprintf("item-%d", i) {
			t.Fatalf("%d %v", resp.StatusCode, m)
		}
		if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" ||
			resp.Header.Get("X-Request-ID") != fmt.Sprintf("req-%d", i) || resp.ContentLength <= 0 || !resp.Close || resp.Header.Get("Date") == "" {
			t.Fatalf("headers %v (content length %d, close %v)", resp.Header, resp.ContentLength, resp.Close)
		}
	}
	waitFor(t, func() bool { return r.a.Held() == 0 && lim.holding.Load() == 0 && r.a.handedOff() == 0 })
	settledGoroutines(t, base)
}

// TestHandOffDeadline: a handed-off request with no outcome in time is
// answered 504 at its deadline, with Location, as in the handler; a
// respond-async one 202 with Preference-Applied, byte for byte the
// headers of the 202 a handler writes at once.
func TestHandOffDeadline(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour, MaxWait: time.Second})
	conn := rawPost(t, r.srv.URL, `{"item_id":"item-1","reason":"x"}`, "Prefer", "wait=1")
	resp, m := readAnswer(t, conn)
	if resp.StatusCode != 504 || resp.Header.Get("Location") != StatusURL(m["correlation_id"].(string)) ||
		resp.Header.Get("Content-Type") != "application/problem+json" || m["status_url"] == nil {
		t.Fatalf("%d %v %v", resp.StatusCode, resp.Header, m)
	}

	conn = rawPost(t, r.srv.URL, `{"item_id":"item-2","reason":"x"}`, "Prefer", "respond-async, wait=1")
	held, hm := readAnswer(t, conn)
	now, nm := r.post(t, `{"item_id":"item-3","reason":"x"}`, "Prefer", "respond-async")
	if held.StatusCode != 202 || now.StatusCode != 202 || held.Header.Get("Preference-Applied") != "respond-async, wait=1" {
		t.Fatalf("%d %v; %d %v", held.StatusCode, held.Header, now.StatusCode, now.Header)
	}
	for _, k := range []string{"Content-Type", "Cache-Control", "Retry-After"} {
		if held.Header.Get(k) != now.Header.Get(k) {
			t.Fatalf("%s: %q handed off, %q in the handler", k, held.Header.Get(k), now.Header.Get(k))
		}
	}
	if len(hm) != len(nm) || hm["status"] != nm["status"] || hm["status_url"] != StatusURL(hm["correlation_id"].(string)) {
		t.Fatalf("bodies %v and %v", hm, nm)
	}
	waitFor(t, func() bool { return r.a.Held() == 0 && r.a.handedOff() == 0 })
}

// TestHandOffHangUp: a client that hangs up while its handed-off request
// waits frees the wait and the held slot at once, without an answer; the
// takedown goes on, and its outcome is stored.
func TestHandOffHangUp(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	lim := &countingLimiter{}
	r.a.limit = lim
	cmds := make(chan producers.CloudEvent, 1)
	r.cmd.answer = func(cmd producers.CloudEvent) { cmds <- cmd }
	base := settledGoroutines(t, runtime.NumGoroutine())

	conn := rawPost(t, r.srv.URL, `{"item_id":"item-1","reason":"x"}`)
	waitFor(t, func() bool { return r.a.handedOff() == 1 })
	cmd := <-cmds
	conn.Close()
	waitFor(t, func() bool { return r.a.Held() == 0 && lim.holding.Load() == 0 && r.a.handedOff() == 0 })
	settledGoroutines(t, base)

	r.rec.Publish(context.Background(), []string{"corr:" + cmd.CorrelationID},
		outcome(TypeConfirmed, cmd, `{"item_id":"item-1","removed_from":[],"confirmed_at":"2026-11-22T00:00:00Z"}`))
	waitFor(t, func() bool {
		rec, err := r.store.Get(t.Context(), cmd.CorrelationID)
		return err == nil && rec.Status == StatusConfirmed
	})
}

// recordingWriter is a ResponseWriter wrapper that records responses the
// way a request log does, including one written after a hand-off.
type recordingWriter struct {
	http.ResponseWriter
	got chan [2]int64
}

func (w *recordingWriter) HandOff() func(int, int64) {
	return func(status int, n int64) { w.got <- [2]int64{int64(status), n} }
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestHandOffRecorder: a wrapper that records responses is told the
// status and size of the answer written after the hand-off, and status 0
// for a client that hung up.
func TestHandOffRecorder(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	got := make(chan [2]int64, 2)
	url := serveWrapped(t, r, func(w http.ResponseWriter) http.ResponseWriter { return &recordingWriter{ResponseWriter: w, got: got} })
	conn := rawPost(t, url, `{"item_id":"item-1","reason":"x"}`, "Prefer", "wait=1")
	resp, _ := readAnswer(t, conn)
	if rec := <-got; rec[0] != 504 || rec[1] != resp.ContentLength {
		t.Fatalf("recorded %v, answered %d of %d bytes", rec, resp.StatusCode, resp.ContentLength)
	}
	conn = rawPost(t, url, `{"item_id":"item-2","reason":"x"}`, "Prefer", "wait=1000")
	waitFor(t, func() bool { return r.a.handedOff() == 1 })
	conn.Close()
	if rec := <-got; rec != [2]int64{0, 0} {
		t.Fatalf("recorded %v for a hang-up", rec)
	}
}

// TestDropHeld: DropHeld closes every handed-off request's connection
// without an answer, and frees its wait and slot; the takedown goes on.
func TestDropHeld(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	lim := &countingLimiter{}
	r.a.limit = lim
	conn := rawPost(t, r.srv.URL, `{"item_id":"item-1","reason":"x"}`)
	waitFor(t, func() bool { return r.a.handedOff() == 1 })
	if n := r.a.DropHeld(); n != 1 {
		t.Fatalf("dropped %d, want 1", n)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
		t.Fatal("a dropped request was answered")
	}
	if r.a.Held() != 0 || lim.holding.Load() != 0 || r.a.handedOff() != 0 {
		t.Fatalf("held %d, slots %d, handed off %d", r.a.Held(), lim.holding.Load(), r.a.handedOff())
	}
}

// TestHandOffNotOverHTTP2: over HTTP/2, which cannot be hijacked, a held
// request waits in its handler, as before, and is answered there.
func TestHandOffNotOverHTTP2(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	cmds := make(chan producers.CloudEvent, 1)
	r.cmd.answer = func(cmd producers.CloudEvent) { cmds <- cmd }
	srv := httptest.NewUnstartedServer(r.srv.Config.Handler)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	type answer struct {
		resp *http.Response
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{"item_id":"item-1","reason":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		got <- answer{resp, err}
	}()
	cmd := <-cmds
	waitFor(t, func() bool { return r.a.Held() == 1 })
	if n := r.a.handedOff(); n != 0 {
		t.Fatalf("%d handed off over HTTP/2", n)
	}
	r.rec.Publish(context.Background(), []string{"corr:" + cmd.CorrelationID},
		outcome(TypeConfirmed, cmd, `{"item_id":"item-1","removed_from":[],"confirmed_at":"2026-11-22T00:00:00Z"}`))
	a := <-got
	if a.err != nil || a.resp.StatusCode != 200 || a.resp.ProtoMajor != 2 {
		t.Fatalf("%v %v", a.resp, a.err)
	}
	waitFor(t, func() bool { return r.a.Held() == 0 })
}

// TestHandOffHeldRead: GET with Prefer: wait is handed off too, and
// answered with the final state when the outcome arrives.
func TestHandOffHeldRead(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	cmds := make(chan producers.CloudEvent, 1)
	r.cmd.answer = func(cmd producers.CloudEvent) { cmds <- cmd }
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/takedowns/{correlation_id}", func(w http.ResponseWriter, req *http.Request) {
		r.a.Get(w, req.WithContext(auth.WithPrincipal(req.Context(), r.who.Load())))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	resp, m := r.post(t, `{"item_id":"item-1","reason":"x"}`, "Prefer", "respond-async")
	if resp.StatusCode != 202 {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	cmd := <-cmds
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nPrefer: wait=3600\r\n\r\n", StatusURL(cmd.CorrelationID))
	waitFor(t, func() bool { return r.a.handedOff() == 1 })
	r.rec.Publish(context.Background(), []string{"corr:" + cmd.CorrelationID},
		outcome(TypeConfirmed, cmd, `{"item_id":"item-1","removed_from":["g"],"confirmed_at":"2026-11-22T00:00:00Z"}`))
	resp, m = readAnswer(t, conn)
	if resp.StatusCode != 200 || m["status"] != "confirmed" || m["correlation_id"] != cmd.CorrelationID {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	waitFor(t, func() bool { return r.a.Held() == 0 && r.a.handedOff() == 0 })
}

// TestHandOffHubShutdown: when the hub shuts down, a handed-off request
// (its watch ended with the hub) reads the store instead, and is answered
// with the outcome stored then; WaitHeld, which a stopping node calls
// after the hub's shutdown, returns once it is answered.
func TestHandOffHubShutdown(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	cmds := make(chan producers.CloudEvent, 1)
	r.cmd.answer = func(cmd producers.CloudEvent) { cmds <- cmd }
	conn := rawPost(t, r.srv.URL, `{"item_id":"item-1","reason":"x"}`)
	waitFor(t, func() bool { return r.a.handedOff() == 1 })
	cmd := <-cmds
	shut := make(chan error, 1)
	go func() { shut <- r.a.hub.Shutdown(context.Background()) }()
	waitFor(t, func() bool { r.a.handoffs.mu.Lock(); defer r.a.handoffs.mu.Unlock(); return r.a.handoffs.down })
	ended, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r.a.WaitHeld(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitHeld with a request held: %v", err)
	}
	if err := r.store.Apply(t.Context(), outcome(TypeConfirmed, cmd, `{"item_id":"item-1","removed_from":[],"confirmed_at":"2026-11-22T00:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	resp, m := readAnswer(t, conn)
	if resp.StatusCode != 200 || m["status"] != "confirmed" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := r.a.WaitHeld(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestAnsweredBeforeHandOffKeepsConnection: a takedown answered while its
// request still waits in the handler (within HandOffAfter) is answered by
// net/http, on a connection that stays open for the next request.
func TestAnsweredBeforeHandOffKeepsConnection(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour, HandOffAfter: time.Hour})
	r.cmd.answer = func(cmd producers.CloudEvent) {
		go r.rec.Publish(context.Background(), []string{"corr:" + cmd.CorrelationID},
			outcome(TypeConfirmed, cmd, `{"item_id":"`+cmd.Subject+`","removed_from":["g"],"confirmed_at":"2026-11-22T00:00:00Z"}`))
	}
	url := serveWrapped(t, r, func(w http.ResponseWriter) http.ResponseWriter { return w })
	conn := rawPost(t, url, `{"item_id":"item-1","reason":"x"}`)
	for i := 1; i <= 2; i++ {
		resp, m := readAnswer(t, conn)
		if resp.StatusCode != 200 || m["status"] != "confirmed" || resp.Close {
			t.Fatalf("answer %d: %d %v (close %v)", i, resp.StatusCode, m, resp.Close)
		}
		body := fmt.Sprintf(`{"item_id":"item-%d","reason":"x"}`, i+1)
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	if n := r.a.handedOff(); n != 0 {
		t.Fatalf("%d handed off", n)
	}
}

// ctxPayload is a value a middleware puts in a request's context.
type ctxPayload struct{ _ [64]byte }

type ctxPayloadKey struct{}

// TestHandOffLetsGoOfTheRequest: once a held request is handed off from
// net/http, nothing keeps its request's context (and what the
// middlewares put there) alive while it waits; it is still answered.
func TestHandOffLetsGoOfTheRequest(t *testing.T) {
	r := newRig(t, Config{Timeout: time.Hour})
	cmds := make(chan producers.CloudEvent, 1)
	r.cmd.answer = func(cmd producers.CloudEvent) { cmds <- cmd }
	payloads := make(chan weak.Pointer[ctxPayload], 2)
	// Behind the request log, as on a node: the call and its door keep
	// the request's logger, which must not keep its context.
	// The payload goes in before the request log, another after it.
	logged := hub.RequestLog(slog.New(slog.NewJSONHandler(io.Discard, nil)), http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p := &ctxPayload{}
		payloads <- weak.Make(p)
		ctx := context.WithValue(auth.WithPrincipal(req.Context(), r.who.Load()), ctxPayloadKey{}, p)
		r.a.Post(w, req.WithContext(ctx))
	}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p := &ctxPayload{}
		payloads <- weak.Make(p)
		logged.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), ctxPayloadKey{}, p)))
	}))
	t.Cleanup(srv.Close)
	conn := rawPost(t, srv.URL, `{"item_id":"item-1","reason":"x"}`)
	waitFor(t, func() bool { return r.a.handedOff() == 1 })
	cmd := <-cmds
	outer, inner := <-payloads, <-payloads
	waitFor(t, func() bool { runtime.GC(); return outer.Value() == nil && inner.Value() == nil })
	if r.a.Held() != 1 {
		t.Fatalf("held %d, want 1", r.a.Held())
	}
	r.rec.Publish(context.Background(), []string{"corr:" + cmd.CorrelationID},
		outcome(TypeConfirmed, cmd, `{"item_id":"item-1","removed_from":["g"],"confirmed_at":"2026-11-22T00:00:00Z"}`))
	resp, m := readAnswer(t, conn)
	if resp.StatusCode != 200 || m["status"] != "confirmed" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
}
