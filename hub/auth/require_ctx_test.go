package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/switchboard/switchboard/tracing"
)

// TestRequireContextHandler: Require's handler is a tracing.ContextHandler,
// and serving a request with a context is serving it with that context:
// the handler sees the context's values and the principal; the request's
// own context is left as it was.
func TestRequireContextHandler(t *testing.T) {
	type key struct{}
	a := newTestAuth(t, nil, nil)
	var got context.Context
	h, ok := a.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Context()
	}), RolePolice).(tracing.ContextHandler)
	if !ok {
		t.Fatal("Require's handler is not a tracing.ContextHandler")
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/takedowns", nil)
	r.Header.Set("Authorization", "Bearer "+policeTok)
	ctx := context.WithValue(r.Context(), key{}, "given")
	w := httptest.NewRecorder()
	h.ServeHTTPContext(ctx, w, r)
	if got == nil {
		t.Fatalf("status %d: the handler was not called", w.Code)
	}
	if v, _ := got.Value(key{}).(string); v != "given" {
		t.Errorf("the handler's context lacks the given value: %q", v)
	}
	if p := FromContext(got); p == nil || p.Role != RolePolice {
		t.Errorf("principal %+v", p)
	}
	if r.Context().Value(key{}) != nil || FromContext(r.Context()) != nil {
		t.Error("the request's own context changed")
	}

	// A refusal is the same either way.
	r.Header.Set("Authorization", "Bearer "+modTok)
	got, w = nil, httptest.NewRecorder()
	h.ServeHTTPContext(ctx, w, r)
	w2 := httptest.NewRecorder()
	h.ServeHTTP(w2, r.WithContext(ctx))
	if got != nil || w.Code != http.StatusForbidden || w2.Code != w.Code || w.Body.String() != w2.Body.String() {
		t.Fatalf("refusal %d %q, by ServeHTTP %d %q", w.Code, w.Body, w2.Code, w2.Body)
	}
}
