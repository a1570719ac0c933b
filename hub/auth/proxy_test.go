package auth

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/switchboard/switchboard/hub"
)

func TestTrustedProxies(t *testing.T) {
	tp, err := NewTrustedProxies([]string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, peer, xff, proto string
		tls                    bool
		wantSrc                string
		wantHTTPS              bool
	}{
		{"untrusted peer: headers ignored", "203.0.113.9:1234", "198.51.100.1", "https", false, "203.0.113.9", false},
		{"trusted peer", "10.1.2.3:1234", "198.51.100.1", "https", false, "198.51.100.1", true},
		{"trusted single address", "192.0.2.7:1234", "198.51.100.1", "http", false, "198.51.100.1", false},
		{"trusted IPv6", "[2001:db8::1]:1234", "2001:db8:1::5, 198.51.100.1", "HTTPS", false, "198.51.100.1", true},
		{"client's own entries are skipped", "10.1.2.3:1234", "1.2.3.4, 198.51.100.1, 10.9.9.9", "", false, "198.51.100.1", false},
		{"every hop trusted", "10.1.2.3:1234", "10.0.0.1, 10.0.0.2", "", false, "10.0.0.1", false},
		{"no header", "10.1.2.3:1234", "", "", false, "10.1.2.3", false},
		{"garbage hop", "10.1.2.3:1234", "198.51.100.1, nonsense", "", false, "10.1.2.3", false},
		{"TLS to this node", "203.0.113.9:1234", "", "", true, "203.0.113.9", true},
		{"proto list: the first", "10.1.2.3:1234", "", "https, http", false, "10.1.2.3", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/sse", nil)
			r.RemoteAddr = tc.peer
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			if tc.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			if !tc.tls {
				r.TLS = nil
			} else {
				r.TLS = &tls.ConnectionState{}
			}
			if got := tp.SourceAddr(r); got != netip.MustParseAddr(tc.wantSrc) {
				t.Errorf("source = %s, want %s", got, tc.wantSrc)
			}
			if got := tp.HTTPS(r); got != tc.wantHTTPS {
				t.Errorf("https = %v, want %v", got, tc.wantHTTPS)
			}
		})
	}
	if _, err := NewTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad CIDR was accepted")
	}
}

// TestTrustedProxiesThrottleAndCookie: behind a trusted proxy the failure
// throttle counts the forwarded client, and the sign-in cookie is Secure
// when the proxy says HTTPS; an untrusted peer's headers change neither.
func TestTrustedProxiesThrottleAndCookie(t *testing.T) {
	tp, err := NewTrustedProxies([]string{"127.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	a := newTestAuth(t, nil, func(c *Config) {
		c.SourceAddr, c.HTTPS = tp.SourceAddr, tp.HTTPS
		c.FailureRate, c.FailureBurst = 0.001, 1 // nothing refills while the test runs
	})
	try := func(peer, xff string) int {
		r := httptest.NewRequest(http.MethodGet, "/v1/sse", nil)
		r.RemoteAddr = peer
		r.Header.Set("Authorization", "Bearer wrong")
		r.Header.Set("X-Forwarded-For", xff)
		_, err := a.Authenticate(r)
		return statusOf(err)
	}
	// One client behind the proxy uses up its burst; another is not hurt.
	if got := try("127.0.0.1:1", "198.51.100.1"); got != http.StatusUnauthorized {
		t.Fatalf("first failure: %d", got)
	}
	if got := try("127.0.0.1:2", "198.51.100.1"); got != http.StatusTooManyRequests {
		t.Errorf("the same client again: %d, want 429", got)
	}
	if got := try("127.0.0.1:3", "198.51.100.2"); got != http.StatusUnauthorized {
		t.Errorf("another client behind the same proxy: %d, want 401", got)
	}
	// An untrusted peer cannot dodge the throttle by naming a new address.
	if got := try("203.0.113.9:1", "198.51.100.3"); got != http.StatusUnauthorized {
		t.Fatalf("untrusted first failure: %d", got)
	}
	if got := try("203.0.113.9:2", "198.51.100.4"); got != http.StatusTooManyRequests {
		t.Errorf("untrusted peer with a new X-Forwarded-For: %d, want 429", got)
	}

	signIn := func(peer, proto string) *http.Cookie {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/session", nil)
		r.RemoteAddr = peer
		r.Header.Set("Authorization", "Bearer "+modTok)
		r.Header.Set("X-Forwarded-Proto", proto)
		a.SessionHandler().ServeHTTP(w, r)
		for _, c := range w.Result().Cookies() {
			if c.Name == SessionCookie {
				return c
			}
		}
		t.Fatalf("no cookie: %d %s", w.Code, w.Body)
		return nil
	}
	if c := signIn("127.0.0.1:5", "https"); !c.Secure {
		t.Error("behind a trusted proxy that says https the cookie is not Secure")
	}
	if c := signIn("127.0.0.1:5", "http"); c.Secure {
		t.Error("behind a trusted proxy that says http the cookie is Secure")
	}
	if c := signIn("203.0.113.10:5", "https"); c.Secure {
		t.Error("an untrusted peer's X-Forwarded-Proto made the cookie Secure")
	}
}

// statusOf is the HTTP status of an Authenticate error (200 for none).
func statusOf(err error) int {
	if err == nil {
		return http.StatusOK
	}
	return hub.RefusalStatus(err)
}
