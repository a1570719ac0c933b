package takedown

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/tracing"
)

// TestCommandCarriesTraceContext (SPEC §10): the command carries the
// request's traceparent and tracestate on its first publish and on the
// sweep's republish, which has no request: the outcome store keeps them.
func TestCommandCarriesTraceContext(t *testing.T) {
	const (
		parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		state  = "congo=t61rcWkgMzE"
	)
	r := newRig(t, Config{Timeout: time.Hour, PublishWait: 50 * time.Millisecond, SweepInterval: 10 * time.Millisecond})
	srv := httptest.NewServer(tracing.Handler("POST /v1/takedowns", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.a.Post(w, req.WithContext(auth.WithPrincipal(req.Context(), r.who.Load())))
	})))
	defer srv.Close()
	r.cmd.failWith(errors.New("broker down"))
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, strings.NewReader(`{"item_id":"item-1","reason":"test"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", parent)
	req.Header.Set("Tracestate", state)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%d, want 503", resp.StatusCode)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- r.a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	r.cmd.failWith(nil)
	waitFor(t, func() bool { ok, _ := r.a.Republished(); return ok == 1 })
	tried := r.cmd.tried()
	if len(tried) < 2 {
		t.Fatalf("%d publishes, want the request's and the sweep's", len(tried))
	}
	for i, ev := range tried {
		if ev.TraceParent != parent || ev.TraceState != state {
			t.Errorf("publish %d: traceparent %q tracestate %q, want the request's", i, ev.TraceParent, ev.TraceState)
		}
	}
}
