package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
)

// from is req from the address addr.
func from(r *http.Request, addr string) *http.Request {
	r.RemoteAddr = addr
	return r
}

// TestFailedAuthenticationsThrottled: past its burst of failures, a source
// address is refused, unchecked, even with a right credential, with a
// *RateLimitError (429); other addresses, and requests without any
// credential, are not. Every kind of credential counts. Before, 2,000 wrong
// tokens in half a second were all 401.
func TestFailedAuthenticationsThrottled(t *testing.T) {
	var buf lockedBuffer
	a := newTestAuth(t, nil, func(c *Config) {
		c.FailureRate = 0.001 // nothing refills while the test runs
		c.FailureBurst = 3
	})
	a.log = slog.New(slog.NewTextHandler(&buf, nil))
	const attacker = "192.0.2.1:4321"
	wrongCookie := flipLast(a.newSession(a.byName["mod"], time.Now()))

	for _, r := range []*http.Request{
		req("Bearer wrong-token-1", "", ""),
		req("", "wrong-token-2", ""),
		req("", "", wrongCookie),
	} {
		if _, err := a.Authenticate(from(r, attacker)); !errors.Is(err, hub.ErrUnauthenticated) {
			t.Fatalf("a failure within the burst: %v, want ErrUnauthenticated", err)
		}
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
	}{
		{"a wrong token", req("Bearer wrong-token-4", "", "")},
		{"a right token", req("Bearer "+modTok, "", "")},
		{"a right access_token", req("", modTok, "")},
	} {
		_, err := a.Authenticate(from(tc.r, attacker))
		var rl *RateLimitError
		if !errors.As(err, &rl) || !errors.Is(err, hub.ErrRateLimited) || rl.RetryAfter <= 0 ||
			hub.RefusalStatus(err) != http.StatusTooManyRequests || hub.RefusalProblem(err) != hub.ProblemRateLimited {
			t.Fatalf("%s past the burst: %v, want a *RateLimitError", tc.name, err)
		}
		if !strings.Contains(err.Error(), "failed authentications") {
			t.Fatalf("refusal %q", err)
		}
	}
	// No credential is nothing to throttle: it is told what to send.
	if _, err := a.Authenticate(from(req("", "", ""), attacker)); !errors.Is(err, hub.ErrUnauthenticated) {
		t.Fatalf("no credential: %v", err)
	}
	// Another address is not throttled by this one.
	if p, err := a.Authenticate(from(req("Bearer "+modTok, "", ""), "198.51.100.7:1")); err != nil || p.Name != "mod" {
		t.Fatalf("another address: %v, %v", p, err)
	}
	st := a.Stats()
	if st.Failures[CredentialBearer] != 1 || st.Failures[CredentialAccessToken] != 1 || st.Failures[CredentialCookie] != 1 ||
		st.Failures[CredentialSignIn] != 0 || st.Throttled != 3 || st.Sources != 1 {
		t.Fatalf("stats %+v", st)
	}
	out := buf.String()
	if !strings.Contains(out, "authentication failed") || !strings.Contains(out, "source=192.0.2.1") ||
		!strings.Contains(out, "credential=cookie") || !strings.Contains(out, "throttled=true") {
		t.Fatalf("log:\n%s", out)
	}
	for _, secret := range append(allTokens, "wrong-token", wrongCookie) {
		if strings.Contains(out, secret) {
			t.Fatalf("the log holds a credential: %s", out)
		}
	}
}

// TestFailuresByNetwork: the failures of IPv6 addresses count by /64, IPv4
// by address, and an IPv4-mapped IPv6 address as its IPv4 address.
func TestFailuresByNetwork(t *testing.T) {
	a := newTestAuth(t, nil, func(c *Config) { c.FailureRate = 0.001; c.FailureBurst = 2 })
	throttled := func(addr string) bool {
		_, err := a.Authenticate(from(req("Bearer "+modTok, "", ""), addr))
		return errors.Is(err, hub.ErrRateLimited)
	}
	a.Authenticate(from(req("Bearer wrong", "", ""), "[2001:db8:1:2::1]:1"))
	a.Authenticate(from(req("Bearer wrong", "", ""), "[2001:db8:1:2::ffff]:1"))
	a.Authenticate(from(req("Bearer wrong", "", ""), "203.0.113.9:1"))
	a.Authenticate(from(req("Bearer wrong", "", ""), "[::ffff:203.0.113.9]:2"))
	for addr, want := range map[string]bool{
		"[2001:db8:1:2:aaaa::1]:9": true,  // the same /64
		"[2001:db8:1:3::1]:9":      false, // another /64
		"203.0.113.9:9":            true,
		"203.0.113.10:9":           false,
	} {
		if got := throttled(addr); got != want {
			t.Errorf("%s throttled %v, want %v", addr, got, want)
		}
	}
}

// TestFailureLimiterBounded: however many addresses fail, the limiter
// remembers at most its bound, and the most recent ones.
func TestFailureLimiterBounded(t *testing.T) {
	const bound = 64
	f := newFailureLimiter(0.001, 1, bound)
	now := time.Now()
	var last netip.Prefix
	for i := range 20000 {
		last = sourceKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		if !f.fail(last, now) {
			t.Fatal("a failure past a burst of 1 does not throttle")
		}
	}
	if n := f.sources(); n > bound || n < bound/2 {
		t.Fatalf("%d sources remembered, want at most %d (and most of them)", n, bound)
	}
	if f.wait(last, now) <= 0 {
		t.Fatal("the last address to fail was forgotten")
	}
	if first := sourceKey(netip.AddrFrom4([4]byte{10, 0, 0, 0})); f.wait(first, now) != 0 {
		t.Fatal("the first address is still remembered")
	}
}

// TestFailureLogRateLimited: a flood of failures, each from a new address
// so none is throttled, logs a bounded number of lines.
func TestFailureLogRateLimited(t *testing.T) {
	var buf lockedBuffer
	a := newTestAuth(t, nil, nil)
	a.log = slog.New(slog.NewTextHandler(&buf, nil))
	start := time.Now()
	const n = 500
	for i := range n {
		a.Authenticate(from(req("Bearer wrong", "", ""), fmt.Sprintf("10.1.%d.%d:1", i/256, i%256)))
	}
	lines := strings.Count(buf.String(), "authentication failed")
	// The log limiter lets 5 lines through at once, then 1 a second.
	if most := 5 + int(time.Since(start).Seconds()) + 1; lines < 1 || lines > most {
		t.Fatalf("%d lines for %d failures, want 1 to %d", lines, n, most)
	}
	if st := a.Stats(); st.Failures[CredentialBearer] != n || st.Throttled != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestThrottleAndSignIn over real sockets: every door counts its failures
// against the source, and once over, the Throttle middleware, Require and
// the sign-in answer 429 problem+json with Retry-After, while a request
// without a credential still reaches its handler.
func TestThrottleAndSignIn(t *testing.T) {
	a := newTestAuth(t, nil, func(c *Config) { c.FailureRate = 0.001; c.FailureBurst = 3 })
	reached := 0
	mux := http.NewServeMux()
	mux.Handle("/v1/session", a.SessionHandler())
	mux.Handle("/v1/takedowns", a.Require(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	mux.HandleFunc("/v1/open", func(http.ResponseWriter, *http.Request) { reached++ })
	srv := httptest.NewServer(a.Throttle(mux))
	t.Cleanup(srv.Close)
	json := http.Header{"Content-Type": {"application/json"}}

	// Three failures, on three doors.
	for _, tc := range []struct {
		method, path string
		hdr          http.Header
		body         string
	}{
		{"POST", "/v1/session", json, `{"token":"wrong-1"}`},
		{"POST", "/v1/session", http.Header{"Authorization": {"Basic x"}}, ""},
		{"GET", "/v1/takedowns", http.Header{"Authorization": {"Bearer wrong-3"}}, ""},
	} {
		if resp, body := get(t, tc.method, srv.URL+tc.path, tc.hdr, strings.NewReader(tc.body)); resp.StatusCode != 401 {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, resp.StatusCode, body)
		}
	}
	for _, tc := range []struct {
		name, method, path string
		hdr                http.Header
		body               string
	}{
		{"sign in with the right token", "POST", "/v1/session", json, `{"token":"` + modTok + `"}`},
		{"sign in with a bearer header", "POST", "/v1/session", http.Header{"Authorization": {"Bearer " + modTok}}, ""},
		{"who am I", "GET", "/v1/session", http.Header{"Authorization": {"Bearer " + modTok}}, ""},
		{"an API call", "GET", "/v1/takedowns", http.Header{"Authorization": {"Bearer " + modTok}}, ""},
		{"an open path with a credential", "GET", "/v1/open?access_token=x", nil, ""},
	} {
		resp, body := get(t, tc.method, srv.URL+tc.path, tc.hdr, strings.NewReader(tc.body))
		ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		if resp.StatusCode != 429 || resp.Header.Get("Content-Type") != "application/problem+json" || ra < 1 ||
			!strings.Contains(body, hub.ProblemRateLimited.URI()) || len(resp.Cookies()) != 0 {
			t.Fatalf("%s: %d Retry-After %q %s", tc.name, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	if resp, _ := get(t, "GET", srv.URL+"/v1/open", nil, nil); resp.StatusCode != 200 || reached != 1 {
		t.Fatalf("a request without a credential: %d, reached %d", resp.StatusCode, reached)
	}
	if st := a.Stats(); st.Failures[CredentialSignIn] != 2 || st.Failures[CredentialBearer] != 1 || st.Throttled != 5 {
		t.Fatalf("stats %+v", st)
	}
}
