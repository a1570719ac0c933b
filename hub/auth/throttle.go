package auth

import (
	"container/list"
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/switchboard/switchboard/hub"
)

// The kinds of credential a failed authentication is counted by.
const (
	CredentialBearer      = "bearer"       // Authorization: Bearer
	CredentialAccessToken = "access_token" // the access_token query parameter
	CredentialCookie      = "cookie"       // the session cookie
	CredentialSignIn      = "sign_in"      // a token posted to /v1/session
)

// CredentialKinds are the kinds Stats counts failures by, for a metric's
// labels.
var CredentialKinds = []string{CredentialBearer, CredentialAccessToken, CredentialCookie, CredentialSignIn}

// SourceAddr returns the address a request comes from: the IP of
// r.RemoteAddr. It is the default of Config.SourceAddr; behind a proxy
// every request comes from the proxy, and a deployment that trusts its
// proxies sets Config.SourceAddr to read their forwarding header instead.
func SourceAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// sourceKey is what failures are counted by: an IPv4 address, or the /64
// of an IPv6 address (one host usually holds a whole /64). Unparseable
// addresses share one key.
func sourceKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if !a.IsValid() {
		return netip.Prefix{}
	}
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// failureShards spreads the sources over locks: every request that carries
// a credential looks its source up.
const failureShards = 16

// failureLimiter rate limits failed authentications per source, keeping at
// most about max sources: each shard is an LRU list of sources by last
// failure, and a new source evicts the one that failed longest ago, which
// has most likely earned its whole burst back.
type failureLimiter struct {
	limit  rate.Limit
	burst  int
	seed   maphash.Seed
	shards [failureShards]failureShard
}

type failureShard struct {
	mu  sync.Mutex
	max int
	lru list.List // of *failureEntry, most recent failure first
	m   map[netip.Prefix]*list.Element
}

type failureEntry struct {
	key netip.Prefix
	lim *rate.Limiter
}

func newFailureLimiter(perSecond float64, burst, sources int) *failureLimiter {
	f := &failureLimiter{limit: rate.Limit(perSecond), burst: burst, seed: maphash.MakeSeed()}
	if math.IsInf(perSecond, 1) {
		f.limit = rate.Inf
	}
	for i := range f.shards {
		f.shards[i].max = max(1, (sources+failureShards-1)/failureShards)
		f.shards[i].m = map[netip.Prefix]*list.Element{}
	}
	return f
}

func (f *failureLimiter) shard(k netip.Prefix) *failureShard {
	// The address and the prefix length, on the stack: MarshalBinary
	// would allocate for every request.
	var b [17]byte
	a := k.Addr().As16()
	copy(b[:], a[:])
	b[16] = byte(k.Bits())
	return &f.shards[maphash.Bytes(f.seed, b[:])%failureShards]
}

// wait returns how long src must wait before a credential of its is
// checked again; 0 when it may try now.
func (f *failureLimiter) wait(src netip.Prefix, now time.Time) time.Duration {
	if f.limit == rate.Inf {
		return 0
	}
	sh := f.shard(src)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[src]
	if !ok {
		return 0
	}
	tokens := e.Value.(*failureEntry).lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(f.limit) * float64(time.Second))
}

// fail takes one failure from src's budget; it reports whether src must
// now wait.
func (f *failureLimiter) fail(src netip.Prefix, now time.Time) bool {
	if f.limit == rate.Inf {
		return false
	}
	sh := f.shard(src)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var lim *rate.Limiter
	if e, ok := sh.m[src]; ok {
		sh.lru.MoveToFront(e)
		lim = e.Value.(*failureEntry).lim
	} else {
		lim = rate.NewLimiter(f.limit, f.burst)
		sh.m[src] = sh.lru.PushFront(&failureEntry{key: src, lim: lim})
		if sh.lru.Len() > sh.max {
			old := sh.lru.Remove(sh.lru.Back()).(*failureEntry)
			delete(sh.m, old.key)
		}
	}
	// A reservation is never cancelled: failures that raced past the check
	// push the source's next try further out.
	lim.ReserveN(now, 1)
	return lim.TokensAt(now) < 1
}

// sources returns how many sources are remembered.
func (f *failureLimiter) sources() int {
	n := 0
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		n += sh.lru.Len()
		sh.mu.Unlock()
	}
	return n
}

// failureStats are the counts behind Stats.
type failureStats struct {
	byKind    [4]atomic.Uint64 // by index in CredentialKinds
	throttled atomic.Uint64
	// suppressed counts the lines not logged since the last one.
	suppressed atomic.Uint64
}

// Stats counts failed and throttled authentications on this node.
type Stats struct {
	// Failures counts failed authentications by credential kind
	// (CredentialKinds). A request without any credential is not one.
	Failures map[string]uint64
	// Throttled counts requests refused, unchecked, because their source
	// failed too often.
	Throttled uint64
	// Sources is how many source addresses the failure limiter remembers.
	Sources int
}

// Stats returns the counts.
func (a *Auth) Stats() Stats {
	s := Stats{Failures: make(map[string]uint64, len(CredentialKinds)),
		Throttled: a.stats.throttled.Load(), Sources: a.failures.sources()}
	for i, k := range CredentialKinds {
		s.Failures[k] = a.stats.byKind[i].Load()
	}
	return s
}

// source is the failure key of r.
func (a *Auth) source(r *http.Request) netip.Prefix {
	return sourceKey(a.cfg.SourceAddr(r))
}

// throttle refuses, before its credential is checked, a request from a
// source that failed too often: even a right credential is refused then, so
// guessing goes no faster than the failure rate.
func (a *Auth) throttle(r *http.Request, src netip.Prefix) error {
	d := a.failures.wait(src, time.Now())
	if d <= 0 {
		return nil
	}
	a.stats.throttled.Add(1)
	return &RateLimitError{RetryAfter: d, What: "too many failed authentications from your address"}
}

// fail counts a failed authentication of kind from src and logs it, at most
// about once a second (a flood of failures is one line a second, saying
// how many were not logged). The line never holds the credential.
func (a *Auth) fail(ctx context.Context, r *http.Request, src netip.Prefix, kind string, err error) {
	for i, k := range CredentialKinds {
		if k == kind {
			a.stats.byKind[i].Add(1)
		}
	}
	throttled := a.failures.fail(src, time.Now())
	if !a.logs.Allow() {
		a.stats.suppressed.Add(1)
		return
	}
	hub.LoggerFrom(ctx, a.log).LogAttrs(ctx, slog.LevelWarn, "authentication failed",
		slog.String("source", a.cfg.SourceAddr(r).String()), slog.String("credential", kind),
		slog.String("path", r.URL.Path), slog.String("reason", err.Error()),
		slog.Bool("throttled", throttled), slog.Uint64("not_logged", a.stats.suppressed.Swap(0)))
}

// hasCredential reports whether r carries a credential Authenticate would
// check.
func hasCredential(r *http.Request) bool {
	if r.Header.Get("Authorization") != "" || r.URL.Query().Has("access_token") {
		return true
	}
	_, err := r.Cookie(SessionCookie)
	return err == nil
}

// Throttle wraps the API: a request that carries a credential from a source
// that failed to authenticate too often is refused with 429 problem+json
// and Retry-After before any handler sees it, so a WebSocket upgrade is
// refused with a status too, and a flood costs no upgrade. Authenticate
// applies the same rule to what passes.
func (a *Auth) Throttle(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hasCredential(r) {
			if err := a.throttle(r, a.source(r)); err != nil {
				writeAuthError(w, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// writeAuthError answers a request that failed to authenticate: 401, 429
// with the Retry-After the error says, or 503 when a session could not be
// checked.
func writeAuthError(w http.ResponseWriter, err error) {
	var rl *RateLimitError
	switch {
	case errors.As(err, &rl):
		w.Header().Set("Retry-After", retryAfter(rl.RetryAfter))
	case errors.Is(err, ErrSessionUncheckable):
		w.Header().Set("Retry-After", "2")
		hub.WriteProblem(w, hub.Problem{Type: hub.ProblemUnavailable, Detail: err.Error()})
		return
	}
	hub.WriteRefusal(w, err)
}

// retryAfter is a Retry-After value: whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}
