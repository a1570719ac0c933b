package hub

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// syncWriter is a ResponseWriter whose body may be read while the handler
// writes.
type syncWriter struct {
	mu   sync.Mutex
	hdr  http.Header
	body bytes.Buffer
	code int
}

func (w *syncWriter) Header() http.Header { return w.hdr }
func (w *syncWriter) WriteHeader(code int) {
	w.mu.Lock()
	w.code = code
	w.mu.Unlock()
}
func (w *syncWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.Write(b)
}
func (w *syncWriter) Flush() {}
func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.String()
}

// TestSSEHeartbeat checks the ": ping" comment every sse.heartbeat on an
// idle stream, and the retry hint, on a fake clock.
func TestSSEHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := NewMemory(MemoryConfig{})
		defer mem.Close()
		h, _ := New(Config{}, mem, slog.New(slog.DiscardHandler))
		handler := h.SSEHandler(SSEConfig{Heartbeat: 15 * time.Second, Retry: 2 * time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v1/sse?channel=reports", nil)
		w := &syncWriter{hdr: http.Header{}}
		done := make(chan struct{})
		go func() { handler.ServeHTTP(w, req); close(done) }()

		synctest.Wait()
		if got := w.String(); !strings.HasPrefix(got, "retry: 2000\nid: ") || strings.Contains(got, "ping") {
			t.Fatalf("stream starts %q", got)
		}
		time.Sleep(14 * time.Second)
		synctest.Wait()
		if strings.Contains(w.String(), ": ping") {
			t.Fatal("ping before the heartbeat interval")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := strings.Count(w.String(), ": ping\n\n"); n != 1 {
			t.Fatalf("%d pings after 15s, want 1", n)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if n := strings.Count(w.String(), ": ping\n\n"); n != 3 {
			t.Fatalf("%d pings after 45s, want 3", n)
		}
		cancel()
		<-done
		if err := h.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSSEHeartbeatOverSocket: a hijacked stream on a real socket gets its
// ": ping" comments from the heartbeat timer while idle.
func TestSSEHeartbeatOverSocket(t *testing.T) {
	mem := NewMemory(MemoryConfig{})
	defer mem.Close()
	h, _ := New(Config{}, mem, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h.SSEHandler(SSEConfig{Heartbeat: 20 * time.Millisecond}))
	defer srv.Close()
	defer h.Shutdown(context.Background())
	resp, err := http.Get(srv.URL + "/v1/sse?channel=reports")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("headers %v", resp.Header)
	}
	sc := bufio.NewScanner(resp.Body)
	pings := 0
	for pings < 3 && sc.Scan() {
		if sc.Text() == ": ping" {
			pings++
		}
	}
	if pings < 3 {
		t.Fatalf("stream ended after %d pings: %v", pings, sc.Err())
	}
}
