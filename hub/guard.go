package hub

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Guard admits connections and authorises subscriptions; the doors ask it.
// A nil Guard admits everyone (for tests and trusted networks).
type Guard interface {
	// Admit authenticates r and takes a connection slot for it. It returns
	// the context the connection runs in, which carries who it is, and the
	// func that gives the slot back. Errors wrap ErrUnauthenticated,
	// ErrForbidden or ErrTooManyConnections.
	Admit(r *http.Request) (ctx context.Context, release func(), err error)
	// Allow reports whether the connection running in ctx may subscribe to
	// channel; the error wraps ErrForbidden.
	Allow(ctx context.Context, channel string) error
}

// Refusals a Guard reports.
var (
	// ErrUnauthenticated: no credentials, or unknown ones (401, close 1008).
	ErrUnauthenticated = errors.New("not authenticated")
	// ErrForbidden: known, but not allowed (403, error frame forbidden).
	ErrForbidden = errors.New("forbidden")
	// ErrTooManyConnections: over the principal's connection limit (429).
	ErrTooManyConnections = errors.New("too many connections")
	// ErrRateLimited: over a rate limit (429, error frame rate_limited).
	ErrRateLimited = errors.New("rate limited")
)

// admit runs g.Admit, or admits r as it is when g is nil.
func admit(g Guard, r *http.Request) (context.Context, func(), error) {
	if g == nil {
		return r.Context(), func() {}, nil
	}
	return g.Admit(r)
}

func allow(g Guard, ctx context.Context, channel string) error {
	if g == nil {
		return nil
	}
	return g.Allow(ctx, channel)
}

// RefusalStatus maps a Guard's refusal to its HTTP status.
func RefusalStatus(err error) int {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, ErrTooManyConnections), errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests
	default:
		return http.StatusForbidden
	}
}

// RefusalProblem maps a Guard's refusal to its problem type.
func RefusalProblem(err error) ProblemType {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return ProblemUnauthenticated
	case errors.Is(err, ErrTooManyConnections):
		return ProblemTooManyConnections
	case errors.Is(err, ErrRateLimited):
		return ProblemRateLimited
	default:
		return ProblemForbidden
	}
}

// WriteRefusal answers an HTTP request that a Guard refused.
func WriteRefusal(w http.ResponseWriter, err error) {
	t := RefusalProblem(err)
	switch t.Status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard"`)
	case http.StatusTooManyRequests:
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", "1")
		}
	}
	WriteProblem(w, Problem{Type: t, Detail: err.Error()})
}

type expiryKey struct{}

// WithExpiry records in a connection's context when its credential expires
// (a JWT's exp, a session cookie's end). A Guard's Admit sets it; the doors
// end the connection then: WebSocket close 1008 "expired", SSE stream ended.
func WithExpiry(ctx context.Context, at time.Time) context.Context {
	return context.WithValue(ctx, expiryKey{}, at)
}

type sessionKey struct{}

// WithSession records in a connection's context the signed-in session it
// was admitted with (a session cookie's ID), so that signing it out ends
// the connection (Hub.EndSession).
func WithSession(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, sessionKey{}, id)
}

// SessionFrom returns the session WithSession recorded, if any.
func SessionFrom(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(sessionKey{}).(string)
	return id, ok && id != ""
}

// ExpiryFrom returns the credential expiry WithExpiry recorded, if any.
func ExpiryFrom(ctx context.Context) (time.Time, bool) {
	at, ok := ctx.Value(expiryKey{}).(time.Time)
	return at, ok && !at.IsZero()
}
