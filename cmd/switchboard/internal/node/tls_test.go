package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
	"github.com/switchboard/switchboard/hub/auth"
)

// issueTo has ca issue a server certificate named cn for 127.0.0.1 and
// puts it, with its key, at certFile and keyFile (replacing what is there,
// as an operator rotating a certificate would).
func issueTo(t *testing.T, ca *kafkaconntest.CA, cn, certFile, keyFile string) {
	t.Helper()
	c, k, _ := ca.Issue(t, cn, true)
	if err := os.Rename(c, certFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(k, keyFile); err != nil {
		t.Fatal(err)
	}
}

// served is the common name of the certificate a new connection gets.
func served(t *testing.T, addr string, pool *x509.CertPool) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestHTTPS: with http.tls.* the node serves HTTPS; SSE and WebSocket
// subscribers over it get events; the sign-in cookie is Secure; after the
// files change, Reload and SIGHUP give new connections the new certificate
// while the streams opened before keep delivering.
func TestHTTPS(t *testing.T) {
	ca := kafkaconntest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	issueTo(t, ca, "first", certFile, keyFile)
	a := startTestApp(t, func(c *config.Config) {
		c.HTTP.TLS = config.HTTPTLS{CertFile: certFile, KeyFile: keyFile}
	})
	if !strings.HasPrefix(a.URL(), "https://") {
		t.Fatalf("URL %s is not https", a.URL())
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}
	client := &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	addr := a.ln.Addr().String()

	// SSE over HTTPS.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.base()+"/v1/sse?channel=reports", nil)
	req.Header.Set("Authorization", "Bearer "+modToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("SSE over HTTPS: %s", resp.Status)
	}
	sse := readSSE(resp.Body)

	// WebSocket over wss.
	ws, _, err := websocket.Dial(t.Context(), "wss"+strings.TrimPrefix(a.base(), "https")+"/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{"switchboard.v1"}, HTTPClient: client,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + modToken}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	ws.Write(t.Context(), websocket.MessageText, []byte(`{"type":"subscribe","id":"1","channel":"reports"}`))
	if f := wsFrame(t, ws); f["type"] != "ack" {
		t.Fatalf("want ack, got %v", f)
	}
	for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Millisecond) {
		if r, err := client.Get(a.base() + "/readyz"); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
	}

	deliver := func(id string) {
		t.Helper()
		produce(t, a.kafkaAddr, binaryMsg("items.reported", id, "item.reported", "item-1", "", map[string]any{"item_id": "item-1"}))
		if ev := sse.next(t); !strings.Contains(ev["data"], `"`+id+`"`) {
			t.Fatalf("SSE got %v, want %s", ev, id)
		}
		for {
			f := wsFrame(t, ws)
			if f["type"] == "event" {
				if !strings.Contains(toJSON(f), `"`+id+`"`) {
					t.Fatalf("WebSocket got %v, want %s", f, id)
				}
				return
			}
		}
	}
	deliver("r-before")

	// Sign-in over HTTPS: the cookie is Secure.
	sresp, _, err := call(t.Context(), client, http.MethodPost, a.base()+"/v1/session", bearer(modToken), "")
	if err != nil {
		t.Fatal(err)
	}
	if c := sessionCookie(sresp); c == nil || !c.Secure {
		t.Errorf("the session cookie over HTTPS is not Secure: %v", c)
	}

	// Reload: new connections get the new certificate, the streams go on.
	issueTo(t, ca, "second", certFile, keyFile)
	if err := a.cert.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(t, addr, ca.Pool()); got != "second" {
		t.Errorf("after Reload a new connection got %q, want second", got)
	}
	deliver("r-after-reload")

	// SIGHUP, as an operator sends it: the node listens for it from start.
	issueTo(t, ca, "third", certFile, keyFile)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for served(t, addr, ca.Pool()) != "third" {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}
	deliver("r-after-sighup")
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func sessionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == auth.SessionCookie {
			return c
		}
	}
	return nil
}

// TestTrustedProxyHeaders: X-Forwarded-Proto makes the sign-in cookie
// Secure only from a peer in http.trusted_proxies; X-Forwarded-For from
// such a peer is the address failed authentications are counted by, and
// the client the request log line names.
func TestTrustedProxyHeaders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		proxies []string
		secure  bool
	}{
		{"trusted", []string{"127.0.0.0/8"}, true},
		{"untrusted", []string{"10.0.0.0/8"}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			a := startTestNode(t, nodeSpec{config: func(c *config.Config) {
				c.HTTP.TrustedProxies = tc.proxies
				c.Limits.AuthFailureRate, c.Limits.AuthFailureBurst = 0.001, 1
			}, log: newLogger(config.Log{Level: "info", Format: "json"}, &logs)})
			resp, _, err := call(t.Context(), nil, http.MethodPost, a.base()+"/v1/session", headers(modToken, "X-Forwarded-Proto", "https"), "")
			if err != nil {
				t.Fatal(err)
			}
			if c := sessionCookie(resp); c == nil || c.Secure != tc.secure {
				t.Errorf("cookie %v, want Secure %v", c, tc.secure)
			}
			// A wrong token from two forwarded clients: behind a trusted
			// proxy each has its own budget; otherwise they share the
			// proxy's.
			fail := func(client string) int {
				resp, _, err := call(t.Context(), nil, http.MethodGet, a.base()+"/v1/session", headers("wrong-token", "X-Forwarded-For", client), "")
				if err != nil {
					t.Fatal(err)
				}
				return resp.StatusCode
			}
			if got := fail("198.51.100.1"); got != http.StatusUnauthorized {
				t.Fatalf("first failure: %d", got)
			}
			want := http.StatusTooManyRequests
			if tc.secure {
				want = http.StatusUnauthorized
			}
			if got := fail("198.51.100.2"); got != want {
				t.Errorf("a failure from another forwarded client: %d, want %d", got, want)
			}
			// The request lines name the forwarded client only from a
			// trusted proxy.
			wantClient := map[string]bool{"127.0.0.1": !tc.secure, "198.51.100.1": tc.secure, "198.51.100.2": tc.secure}
			var clients []string
			for _, line := range logs.lines() {
				var m map[string]any
				if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "http request" && m["path"] == "/v1/session" && m["method"] == "GET" {
					c, _ := m["client"].(string)
					clients = append(clients, c)
					if !wantClient[c] {
						t.Errorf("request line names client %q: %s", c, line)
					}
				}
			}
			if len(clients) != 2 {
				t.Errorf("%d request lines for GET /v1/session, want 2: %v", len(clients), clients)
			}
		})
	}
}

// TestJWTDoors: a JWT signed with auth.jwt.hmac_secret opens SSE
// (Authorization) and WebSocket (access_token) and signs in; the WebSocket
// is closed with 1008 "expired" at the JWT's exp.
func TestJWTDoors(t *testing.T) {
	secret := strings.Repeat("x", 32)
	a := startTestApp(t, func(c *config.Config) {
		c.Auth.JWT.HMACSecret = secret
		c.Auth.JWT.Issuer, c.Auth.JWT.Audience = "idp", "switchboard"
		c.Auth.JWT.Leeway = 0
	})
	tok := func(exp time.Duration) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "jane", "role": "moderator",
			"iss": "idp", "aud": "switchboard", "exp": time.Now().Add(exp).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.base()+"/v1/sse?channel=reports", nil)
	req.Header.Set("Authorization", "Bearer "+tok(time.Minute))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("SSE with a JWT: %s", resp.Status)
	}
	sresp, body, err := call(t.Context(), nil, http.MethodPost, a.base()+"/v1/session", bearer(tok(time.Minute)), "")
	if err != nil {
		t.Fatal(err)
	}
	if sresp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"jane"`) {
		t.Errorf("sign-in with a JWT: %s %s", sresp.Status, body)
	}
	if c := sessionCookie(sresp); c == nil || c.MaxAge > 60 {
		t.Errorf("the cookie outlives the JWT: %v", c)
	}

	ws := dialWSWith(t, t, a.wsURL("?access_token="+tok(2*time.Second)), nil)
	defer ws.CloseNow()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	for {
		if _, _, err = ws.Read(ctx); err != nil {
			break
		}
	}
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation || !strings.Contains(err.Error(), "expired") {
		t.Errorf("the WebSocket ended with %v, want 1008 expired", err)
	}
}
