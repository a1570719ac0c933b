package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// revocationLists are the lists to run one body on: memory, and Redis
// (miniredis, and the real server when it answers).
func revocationLists(t *testing.T) map[string]func(t *testing.T) Revocations {
	lists := map[string]func(t *testing.T) Revocations{
		"memory": func(*testing.T) Revocations { return NewMemoryRevocations() },
	}
	for _, srv := range redistest.Servers(t) {
		lists[srv.Name] = func(t *testing.T) Revocations {
			c := srv.Client()
			t.Cleanup(func() { c.Close() })
			return NewRedisRevocations(c, srv.Prefix)
		}
	}
	return lists
}

func TestRevocations(t *testing.T) {
	for name, open := range revocationLists(t) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			ctx := t.Context()
			if err := l.Revoke(ctx, "s-1", time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := l.Revoke(ctx, "s-past", time.Now().Add(-time.Second)); err != nil {
				t.Fatal(err)
			}
			for id, want := range map[string]bool{"s-1": true, "s-2": false, "s-past": false} {
				if got, err := l.Revoked(ctx, id); err != nil || got != want {
					t.Errorf("Revoked(%s) = %v, %v; want %v", id, got, err, want)
				}
			}
		})
	}
}

// TestRedisRevocationKeys: one key per session under the prefix, expiring
// when the session would have.
func TestRedisRevocationKeys(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { c.Close() })
	l := NewRedisRevocations(c, "sb:")
	if err := l.Revoke(t.Context(), "abc", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if keys := mr.Keys(); len(keys) != 1 || keys[0] != "sb:revoked:{abc}" {
		t.Fatalf("keys %v", keys)
	}
	if ttl := mr.TTL("sb:revoked:{abc}"); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("TTL %s, want about an hour", ttl)
	}
	mr.FastForward(time.Hour + time.Second)
	if got, err := l.Revoked(t.Context(), "abc"); err != nil || got {
		t.Fatalf("after the session's end: %v, %v", got, err)
	}
}

// TestMemoryRevocationsBounded: the memory list drops sign-outs whose
// sessions have ended.
func TestMemoryRevocationsBounded(t *testing.T) {
	l := NewMemoryRevocations()
	soon := time.Now().Add(50 * time.Millisecond)
	for i := range 1500 {
		l.Revoke(t.Context(), "old-"+strconv.Itoa(i), soon)
	}
	time.Sleep(time.Until(soon) + 10*time.Millisecond)
	for i := range 1000 {
		l.Revoke(t.Context(), "new-"+strconv.Itoa(i), time.Now().Add(time.Hour))
	}
	if n := l.Len(); n >= 2500 || n < 1000 {
		t.Fatalf("%d entries: the ended sessions were kept", n)
	}
	if got, _ := l.Revoked(t.Context(), "new-999"); !got {
		t.Fatal("a live sign-out was dropped")
	}
}

// sessionNode is one node's session endpoints over a real socket.
type sessionNode struct {
	a   *Auth
	url string
}

func newSessionNode(t *testing.T, rev Revocations) sessionNode {
	a := newTestAuth(t, nil, func(c *Config) { c.Revocations = rev; c.SessionSecret = "shared" })
	srv := httptest.NewServer(a.SessionHandler())
	t.Cleanup(srv.Close)
	return sessionNode{a: a, url: srv.URL}
}

func (n sessionNode) signIn(t *testing.T) string {
	t.Helper()
	resp, body := get(t, "POST", n.url, http.Header{"Authorization": {"Bearer " + modTok}}, nil)
	if resp.StatusCode != 200 || len(resp.Cookies()) != 1 {
		t.Fatalf("sign in: %d %s", resp.StatusCode, body)
	}
	return resp.Cookies()[0].Value
}

func (n sessionNode) who(t *testing.T, cookie string) int {
	t.Helper()
	resp, _ := get(t, "GET", n.url, http.Header{"Cookie": {SessionCookie + "=" + cookie}}, nil)
	return resp.StatusCode
}

// TestSignOutOnEveryNode: after DELETE /v1/session on one node, the cookie
// is refused on that node and on every node sharing the revocation list,
// while another session of the same principal goes on. Before, DELETE only
// asked the browser to forget the cookie, and a copy of it stayed valid
// for the rest of its 12 hours.
func TestSignOutOnEveryNode(t *testing.T) {
	for name, open := range revocationLists(t) {
		t.Run(name, func(t *testing.T) {
			rev := open(t)
			nodeA, nodeB := newSessionNode(t, rev), newSessionNode(t, rev)
			cookie, other := nodeA.signIn(t), nodeA.signIn(t)
			if nodeB.who(t, cookie) != 200 || nodeA.who(t, cookie) != 200 {
				t.Fatal("the cookie is not accepted before sign-out")
			}
			resp, _ := get(t, "DELETE", nodeA.url, http.Header{"Cookie": {SessionCookie + "=" + cookie}}, nil)
			if cs := resp.Cookies(); resp.StatusCode != 204 || len(cs) != 1 || cs[0].MaxAge >= 0 {
				t.Fatalf("sign out: %d %v", resp.StatusCode, cs)
			}
			if nodeA.who(t, cookie) != 401 || nodeB.who(t, cookie) != 401 {
				t.Fatal("a signed-out cookie is accepted")
			}
			if nodeB.who(t, other) != 200 {
				t.Fatal("signing one session out ended another")
			}
			_, err := nodeB.a.Authenticate(req("", "", cookie))
			if !errors.Is(err, hub.ErrUnauthenticated) || !strings.Contains(err.Error(), "signed out") {
				t.Fatalf("refusal %v", err)
			}
		})
	}
}

// TestSessionUncheckableFailsClosed: when the revocation list does not
// answer, a cookie is refused (503 with Retry-After, not 401, so the page
// retries instead of asking to sign in again), and not counted as a failed
// authentication; a bearer token still works; a sign-out is refused with
// 503 and the cookie kept, to be retried.
func TestSessionUncheckableFailsClosed(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	n := newSessionNode(t, NewRedisRevocations(c, "sb:"))
	cookie := n.signIn(t)
	mr.Close()

	if _, err := n.a.Authenticate(req("", "", cookie)); !errors.Is(err, ErrSessionUncheckable) {
		t.Fatalf("cookie with Redis down: %v", err)
	}
	resp, body := get(t, "GET", n.url, http.Header{"Cookie": {SessionCookie + "=" + cookie}}, nil)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, hub.ProblemUnavailable.URI()) {
		t.Fatalf("who with Redis down: %d %s", resp.StatusCode, body)
	}
	resp, _ = get(t, "DELETE", n.url, http.Header{"Cookie": {SessionCookie + "=" + cookie}}, nil)
	if resp.StatusCode != 503 || len(resp.Cookies()) != 0 {
		t.Fatalf("sign out with Redis down: %d %v", resp.StatusCode, resp.Cookies())
	}
	if p, err := n.a.Authenticate(req("Bearer "+modTok, "", "")); err != nil || p.Name != "mod" {
		t.Fatalf("a bearer token with Redis down: %v", err)
	}
	if st := n.a.Stats(); st.Failures[CredentialCookie] != 0 {
		t.Fatalf("an unchecked cookie counted as a failure: %+v", st)
	}
}

// v1Cookie is a cookie of the earlier form, "<name>.<expiry>.<mac>", validly
// signed under the earlier derivation.
func v1Cookie(a *Auth, p *Principal, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	name := base64.RawURLEncoding.EncodeToString([]byte(p.Name))
	key := sha256.Sum256([]byte("switchboard-session-v1:" + a.cfg.SessionSecret + ":" + string(p.hash[:])))
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(name + "." + e))
	return name + "." + e + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// TestEarlierCookieRefused: a cookie issued before sessions had an id cannot
// be signed out, so it is refused: its holder signs in again.
func TestEarlierCookieRefused(t *testing.T) {
	a := newTestAuth(t, nil, nil)
	old := v1Cookie(a, a.byName["mod"], time.Now().Add(time.Hour))
	if _, err := a.Authenticate(req("", "", old)); !errors.Is(err, hub.ErrUnauthenticated) {
		t.Fatalf("an earlier cookie: %v", err)
	}
}

// TestExpiryInContext: a connection admitted with a session cookie carries
// the cookie's expiry for the doors (hub.WithExpiry); one admitted with a
// token that does not expire carries none. Require does the same.
func TestExpiryInContext(t *testing.T) {
	a := newTestAuth(t, nil, nil)
	now := time.Now()
	cookie := a.newSession(a.byName["mod"], now)
	want := time.Unix(now.Add(DefaultSessionTTL).Unix(), 0)

	ctx, release, err := a.Admit(req("", "", cookie))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if at, ok := hub.ExpiryFrom(ctx); !ok || !at.Equal(want) {
		t.Fatalf("expiry %v %v, want %v", at, ok, want)
	}
	ctx, release2, err := a.Admit(req("Bearer "+modTok, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if at, ok := hub.ExpiryFrom(ctx); ok {
		t.Fatalf("a static token expires at %v", at)
	}

	var seen time.Time
	h := a.Require(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen, _ = hub.ExpiryFrom(r.Context()) }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req("", "", cookie))
	if rec.Code != 200 || !seen.Equal(want) {
		t.Fatalf("Require: %d, expiry %v", rec.Code, seen)
	}
}

// TestSignInStrict: the JSON sign-in body is decoded strictly; the refusal
// names the member, and is not a failed authentication.
func TestSignInStrict(t *testing.T) {
	a := newTestAuth(t, nil, nil)
	srv := httptest.NewServer(a.SessionHandler())
	t.Cleanup(srv.Close)
	json := http.Header{"Content-Type": {"application/json"}}
	for body, want := range map[string]string{
		`{"Token":"` + modTok + `"}`:                 `unknown member \"Token\"`,
		`{"TOKEN":"` + modTok + `"}`:                 `unknown member \"TOKEN\"`,
		`{"token":"x","token":"` + modTok + `"}`:     `member \"token\" appears more than once`,
		`{"token":"` + modTok + `","remember":true}`: `unknown member \"remember\"`,
		`{"token":7}`: `member \"token\" must be a string`,
		`{"token":"` + modTok + `"} {"token":"other"}`: `not valid JSON`,
		`["` + modTok + `"]`:                           `must be a JSON object`,
		`{"token":"` + modTok + `","token2":"` + `x"}`: `unknown member \"token2\"`,
	} {
		resp, got := get(t, "POST", srv.URL, json, strings.NewReader(body))
		if resp.StatusCode != 400 || len(resp.Cookies()) != 0 || !strings.Contains(got, want) {
			t.Errorf("%s: %d %s, want 400 with %s", body, resp.StatusCode, got, want)
		}
		if strings.Contains(got, modTok) {
			t.Errorf("the refusal repeats the token: %s", got)
		}
	}
	if st := a.Stats(); st.Failures[CredentialSignIn] != 0 {
		t.Fatalf("a malformed body counted as a failed sign-in: %+v", st)
	}
}

// TestHold: a held request takes one of the principal's connection slots,
// shared with its connections; over the limit it is refused with
// hub.ErrTooManyConnections; release gives the slot back once.
func TestHold(t *testing.T) {
	a := newTestAuth(t, nil, func(c *Config) { c.MaxConnections = 2 })
	police := a.byName["police"]
	_, relConn, err := a.Admit(req("Bearer "+policeTok, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	release, err := a.Hold(police)
	if err != nil {
		t.Fatal(err)
	}
	if n := a.Connections("police"); n != 2 {
		t.Fatalf("police holds %d, want 2", n)
	}
	if rel, err := a.Hold(police); !errors.Is(err, hub.ErrTooManyConnections) || rel != nil ||
		hub.RefusalStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("a third hold: %v", err)
	}
	if _, _, err := a.Admit(req("Bearer "+policeTok, "", "")); !errors.Is(err, hub.ErrTooManyConnections) {
		t.Fatalf("a connection while two are held: %v", err)
	}
	release()
	release()
	if n := a.Connections("police"); n != 1 {
		t.Fatalf("police holds %d after one release called twice, want 1", n)
	}
	relConn()
	if n := a.Connections("police"); n != 0 {
		t.Fatalf("police holds %d, want 0", n)
	}
}

// TestAllowWait: held reads have a budget of their own, the size of the
// takedown one.
func TestAllowWait(t *testing.T) {
	a := newTestAuth(t, nil, func(c *Config) { c.TakedownRate = 0.001; c.TakedownBurst = 2 })
	police := a.byName["police"]
	for range 2 {
		if err := a.AllowWait(police); err != nil {
			t.Fatal(err)
		}
	}
	err := a.AllowWait(police)
	var rl *RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter <= 0 || !strings.Contains(err.Error(), "held reads") {
		t.Fatalf("a third wait: %v", err)
	}
	if err := a.AllowTakedown(police); err != nil {
		t.Fatalf("waiting used up the takedown budget: %v", err)
	}
}

// TestCORSDropsSessionCookie: a request from an origin allowed only by "*"
// reaches the handler without its session cookie (so a WebSocket upgrade,
// which browsers send with cookies whatever CORS says, cannot use it); from
// an origin listed exactly, or the same origin, the cookie stays.
func TestCORSDropsSessionCookie(t *testing.T) {
	var got []string
	srv := httptest.NewServer(CORS([]string{"https://partner.example", "*"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = got[:0]
		for _, c := range r.Cookies() {
			got = append(got, c.Name)
		}
	})))
	t.Cleanup(srv.Close)
	cookies := SessionCookie + "=abc; theme=dark"
	for origin, want := range map[string]string{
		"https://evil.example":    "theme",
		"https://partner.example": SessionCookie + " theme",
		srv.URL:                   SessionCookie + " theme",
		"":                        SessionCookie + " theme",
	} {
		hdr := http.Header{"Cookie": {cookies}}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		if resp, _ := get(t, "GET", srv.URL, hdr, nil); resp.StatusCode != 200 || strings.Join(got, " ") != want {
			t.Errorf("origin %q: %d, cookies %v, want %s", origin, resp.StatusCode, got, want)
		}
	}
}

// watchSignOuts runs l's WatchSignOuts until the test ends, and returns
// what it tells: the sessions signed out, and a tick per resync.
func watchSignOuts(t *testing.T, l Revocations) (ended <-chan string, resynced <-chan struct{}) {
	t.Helper()
	w, ok := l.(SignOuts)
	if !ok {
		t.Fatalf("%T does not tell of sign-outs", l)
	}
	e, r := make(chan string, 16), make(chan struct{}, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.WatchSignOuts(ctx, func(id string) { e <- id }, func() { r <- struct{}{} })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchSignOuts: %v", err)
		}
	})
	return e, r
}

func receive[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s", what)
		panic("not reached")
	}
}

// TestWatchSignOuts: a watch is resynced once it starts, then told of
// every sign-out, on every list.
func TestWatchSignOuts(t *testing.T) {
	for name, open := range revocationLists(t) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			ended, resynced := watchSignOuts(t, l)
			receive(t, resynced, "resync when the watch starts")
			for _, id := range []string{"s-1", "s-2"} {
				if err := l.Revoke(t.Context(), id, time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
				if got := receive(t, ended, "sign-out of "+id); got != id {
					t.Fatalf("told of %q, want %q", got, id)
				}
			}
		})
	}
}

// TestWatchSignOutsAfterRedisRestart: pub/sub keeps nothing for a node
// that is not listening, so a watch that lost Redis is resynced when it is
// back (the node then checks its sessions), and hears sign-outs again.
func TestWatchSignOutsAfterRedisRestart(t *testing.T) {
	own := redistest.StartOwn(t)
	c := own.Client()
	t.Cleanup(func() { c.Close() })
	l := NewRedisRevocations(c, "restart:")
	ended, resynced := watchSignOuts(t, l)
	receive(t, resynced, "resync when the watch starts")
	own.Stop(t)
	own.Start(t)
	receive(t, resynced, "resync once Redis is back")
	if err := l.Revoke(t.Context(), "s-after", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ended, "sign-out after the restart"); got != "s-after" {
		t.Fatalf("told of %q", got)
	}
}
