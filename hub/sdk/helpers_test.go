package sdk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/consumers/kafkatest"
	"github.com/switchboard/switchboard/hub"
)

// The tests' server: a real hub with the memory backplane behind its own
// WebSocket door, over real sockets. It admits the tokens of tokens and
// answers "call" frames of the command "echo" with an ack, one progress
// event on the call's corr: channel and a confirmed result; those of
// "hold" never.

const waitFor = 15 * time.Second

// testServer is a hub's WebSocket door on a real socket.
type testServer struct {
	hub *hub.Hub
	mem *hub.Memory
	srv *httptest.Server

	mu     sync.Mutex
	tokens map[string]bool
	seq    int
	held   chan struct{} // a hold call arrived
}

// newServer starts a server admitting tokens (none: everyone) until
// stopped.
func newServer(tokens ...string) *testServer { return newServerWith(false, tokens...) }

// newServerWith is newServer; legacy makes it a node that predates call
// frames: it knows only the v1 takedown frame, answered like a call of
// "echo" whose data is the frame's item_id and reason.
func newServerWith(legacy bool, tokens ...string) *testServer {
	mem := hub.NewMemory(hub.MemoryConfig{HistorySize: 1000})
	h, err := hub.New(hub.Config{}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	s := &testServer{hub: h, mem: mem, tokens: map[string]bool{}, held: make(chan struct{}, 16)}
	for _, t := range tokens {
		s.tokens[t] = true
	}
	frames := map[string]hub.FrameHandler{"call": s.call}
	if legacy {
		frames = map[string]hub.FrameHandler{"takedown": s.takedown}
	}
	ws := h.WSHandler(hub.WSConfig{Guard: s, Frames: frames})
	mux := http.NewServeMux()
	mux.Handle("/v1/ws", ws)
	s.srv = httptest.NewServer(mux)
	return s
}

// start is newServer stopped at the test's end.
func start(t *testing.T, tokens ...string) *testServer {
	s := newServer(tokens...)
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s.hub.Shutdown(ctx)
	s.srv.Close()
	s.mem.Close()
}

// URL is the server's base URL.
func (s *testServer) URL() string { return s.srv.URL }

// setTokens replaces the admitted tokens.
func (s *testServer) setTokens(tokens ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]bool{}
	for _, t := range tokens {
		s.tokens[t] = true
	}
}

// Admit is the hub.Guard: a bearer token of s.tokens, or any when none.
func (s *testServer) Admit(r *http.Request) (context.Context, func(), error) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tokens) > 0 && !s.tokens[tok] {
		return nil, nil, hub.ErrUnauthenticated
	}
	return r.Context(), func() {}, nil
}

// Allow refuses the channel "secret".
func (s *testServer) Allow(_ context.Context, channel string) error {
	if channel == "secret" {
		return hub.ErrForbidden
	}
	return nil
}

// publish publishes one event of type typ about subject on channels.
func (s *testServer) publish(typ, subject, corr string, data any, channels ...string) {
	s.mu.Lock()
	s.seq++
	id := fmt.Sprintf("ev-%d", s.seq)
	s.mu.Unlock()
	ev := map[string]any{"specversion": "1.0", "id": id, "source": "/test", "type": typ, "subject": subject,
		"time": "2026-12-01T12:00:00Z", "data": data}
	if corr != "" {
		ev["correlationid"] = corr
	}
	b, _ := json.Marshal(ev)
	err := s.hub.Publish(context.Background(), channels, &hub.Event{ID: id, Source: "/test", Type: typ, Subject: subject, CorrelationID: corr, JSON: b})
	if err != nil {
		panic(err)
	}
}

// takedown answers a v1 takedown frame like a call of echo.
func (s *testServer) takedown(ctx context.Context, ss *hub.Session, raw []byte) {
	var f struct {
		ID     json.RawMessage `json:"id"`
		ItemID string          `json:"item_id"`
		Reason string          `json:"reason"`
		Key    string          `json:"idempotency_key"`
	}
	json.Unmarshal(raw, &f)
	call, _ := json.Marshal(map[string]any{"type": "call", "id": f.ID, "command": "echo",
		"data": map[string]string{"item_id": f.ItemID, "reason": f.Reason}, "idempotency_key": f.Key})
	s.call(ctx, ss, call)
}

// call answers {"type":"call","command":"echo",...}: the connection is
// subscribed to corr:<key>, then acked, then gets one progress event and a
// confirmed result whose event's data is the call's data.
func (s *testServer) call(ctx context.Context, ss *hub.Session, raw []byte) {
	var f struct {
		ID      json.RawMessage `json:"id"`
		Command string          `json:"command"`
		Data    map[string]any  `json:"data"`
		Key     string          `json:"idempotency_key"`
	}
	json.Unmarshal(raw, &f)
	if f.Command == "hold" {
		s.held <- struct{}{}
		return // never answered
	}
	if f.Command != "echo" {
		ss.SendError(f.ID, hub.CodeNotFound, "no command "+f.Command)
		return
	}
	corr := "c-" + f.Key
	_, err := ss.Client.Subscribe(ctx, "corr:"+corr, hub.SubscribeOptions{Ack: func(hub.SubscribeResult) []byte {
		b, _ := json.Marshal(map[string]any{"type": "ack", "id": f.ID, "correlation_id": corr})
		return b
	}})
	if err != nil {
		ss.SendError(f.ID, hub.CodeUnavailable, err.Error())
		return
	}
	s.publish("echo.progress", "x", corr, f.Data, "corr:"+corr)
	ev, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": "done-" + corr, "source": "/test",
		"type": "echo.done", "correlationid": corr, "data": f.Data})
	ss.Send(map[string]any{"type": "result", "id": f.ID, "correlation_id": corr, "status": "confirmed", "event": json.RawMessage(ev)})
}

// newProxy forwards TCP to target's host until the test ends: Reset
// drops every connection as a network failure would (no close frame).
func newProxy(t *testing.T, target string) *kafkatest.Proxy {
	t.Helper()
	p, err := kafkatest.NewProxy(strings.TrimPrefix(target, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// next returns the next event of ch, failing the test if none comes.
func next[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return v
	case <-time.After(waitFor):
		t.Fatal("nothing in time")
	}
	var zero T
	return zero
}
