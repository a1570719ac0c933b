package hub

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestRequestLog: every line logged while serving a request carries its
// request ID, the access line never carries the query (tokens), and a sane
// incoming X-Request-ID is kept.
func TestRequestLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	h := RequestLog(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		LoggerFrom(r.Context(), nil).Info("inside", "correlation_id", "c-1")
		w.WriteHeader(http.StatusTeapot)
	}))
	for _, tt := range []struct{ in, want string }{{"abc-123", "abc-123"}, {"bad id with spaces", ""}} {
		buf.Reset()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/v1/sse?access_token=secret-token", nil)
		req.Header.Set("X-Request-ID", tt.in)
		h.ServeHTTP(rec, req)
		id := rec.Header().Get("X-Request-ID")
		if id == "" || (tt.want != "" && id != tt.want) || (tt.want == "" && id == tt.in) {
			t.Fatalf("request id %q for incoming %q", id, tt.in)
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("lines %q", lines)
		}
		for _, l := range lines {
			if !strings.Contains(l, `"request_id":"`+id+`"`) {
				t.Fatalf("line without the request id: %s", l)
			}
		}
		if !strings.Contains(lines[1], `"client":"192.0.2.1"`) {
			t.Fatalf("request line without the peer's address: %s", lines[1])
		}
		if strings.Contains(buf.String(), "secret-token") || !strings.Contains(lines[1], `"status":418`) {
			t.Fatalf("access line %s", lines[1])
		}
	}
}

// TestRequestLogClient: the request line names the client its function
// gives (the address behind trusted proxies).
func TestRequestLogClient(t *testing.T) {
	var buf bytes.Buffer
	h := RequestLogClient(slog.New(slog.NewJSONHandler(&buf, nil)), func(*http.Request) netip.Addr { return netip.MustParseAddr("203.0.113.9") },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if !strings.Contains(buf.String(), `"client":"203.0.113.9"`) {
		t.Fatalf("line %s", buf.String())
	}
}

// TestNewRequestID: a made request ID is a random (version 4, RFC 4122
// variant) UUID, as uuid.NewString makes them.
func TestNewRequestID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := newRequestID()
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 4 || u.Variant() != uuid.RFC4122 || u.String() != id || !saneID(id) {
			t.Fatalf("request id %q: %v, version %d, variant %v", id, err, u.Version(), u.Variant())
		}
		if seen[id] {
			t.Fatalf("request id %q made twice", id)
		}
		seen[id] = true
	}
}

// TestRequestLogContext: the handler's context keeps its parent's values
// and deadline, and carries the logger with the request ID.
func TestRequestLogContext(t *testing.T) {
	type key struct{}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	h := RequestLog(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, _ := r.Context().Value(key{}).(string); v != "parent" {
			t.Errorf("parent value %q", v)
		}
		if _, ok := r.Context().Deadline(); !ok {
			t.Error("parent deadline lost")
		}
		LoggerFrom(r.Context(), nil).Info("inside")
	}))
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), key{}, "parent"), time.Minute)
	defer cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/x", nil)
	r.Header.Set("X-Request-ID", "abc-123")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if !strings.Contains(buf.String(), `"msg":"inside","request_id":"abc-123"`) {
		t.Fatalf("log %s", buf.String())
	}
	if LoggerFrom(ctx, nil) != nil {
		t.Fatal("the parent context carries a logger")
	}
}

// TestRequestLogNoClient: a peer address that does not parse is logged as
// an empty client, and the answer carries the request ID once.
func TestRequestLogNoClient(t *testing.T) {
	var buf bytes.Buffer
	h := RequestLog(slog.New(slog.NewJSONHandler(&buf, nil)), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.RemoteAddr = "pipe"
	r.Header.Set("X-Request-ID", "abc-123")
	w := httptest.NewRecorder()
	w.Header().Set("X-Request-Id", "earlier")
	h.ServeHTTP(w, r)
	if !strings.Contains(buf.String(), `"client":""`) {
		t.Fatalf("log %s", buf.String())
	}
	if got := w.Result().Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "abc-123" {
		t.Fatalf("X-Request-Id %q", got)
	}
}
