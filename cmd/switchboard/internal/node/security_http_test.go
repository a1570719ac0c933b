package node

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// httpBodyTimeout is the main node's http.body_timeout: short, so the
// withheld bodies are answered quickly.
const httpBodyTimeout = 300 * time.Millisecond

// TestSecurityAttemptsHTTP makes the attacks of issue 11 on the HTTP side
// from outside, over real sockets, against real nodes: withheld bodies and
// ambiguous lengths from a raw TCP client, connections that never
// authenticate, CORS with "*" and the null origin, floods of wrong
// credentials on every door, a non-strict sign-in body, an earlier cookie,
// and a session signed out on one node and replayed on another that shares
// its Redis. Each attempt asserts the exact refusal, next to controls that
// must still work; last, no log line holds a credential.
func TestSecurityAttemptsHTTP(t *testing.T) {
	n := startSecurityNode(t, func(c *config.Config) {
		c.HTTP.BodyTimeout = httpBodyTimeout
		c.HTTP.AllowedOrigins = []string{"https://partner.example", "*"}
	})
	// Failures are throttled on a node of their own: every attempt here
	// comes from 127.0.0.1, and the others must not be throttled by them.
	th := startSecurityNode(t, func(c *config.Config) {
		c.Limits.AuthFailureBurst = 6
		c.Limits.AuthFailureRate = 0.01 // nothing refills while the test runs
	})
	capNode := startSecurityNode(t, func(c *config.Config) { c.Limits.UnauthenticatedConnections = 3 })
	waitReady(t, n.a)
	addr := n.a.ln.Addr().String()
	cookieHdr := func(c string) http.Header { return http.Header{"Cookie": {auth.SessionCookie + "=" + c}} }
	signIn := func(t *testing.T, sn *securityNode) string {
		t.Helper()
		resp, b := sn.do(t, "POST", "/v1/session", bearer(modToken), "")
		if resp.StatusCode != 200 || len(resp.Cookies()) != 1 {
			t.Fatalf("sign in: %d %s", resp.StatusCode, b)
		}
		c := resp.Cookies()[0].Value
		n.secrets = append(n.secrets, c)
		return c
	}
	var thCookie string // a valid cookie of the throttle node, taken before the flood

	attempts := []attempt{
		// Withheld bodies: each held a connection for minutes before.
		{"withheld body, GET /healthz", false, func(t *testing.T) {
			c := dialHTTP(t, addr)
			c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
			c.problem(t, 408)
			c.closed(t)
		}},
		{"withheld body, POST /v1/session", false, func(t *testing.T) {
			c := dialHTTP(t, addr)
			c.send("POST /v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
			c.problem(t, 408)
			c.closed(t)
		}},
		{"withheld body, POST /v1/takedowns", false, func(t *testing.T) {
			c := dialHTTP(t, addr)
			c.send("POST /v1/takedowns HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
			c.problem(t, 408)
			c.closed(t)
		}},
		{"half a body, POST /v1/takedowns with a valid token", false, func(t *testing.T) {
			c := dialHTTP(t, addr)
			c.send("POST /v1/takedowns HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + policeToken +
				"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"item_id\":\"item-1\",")
			c.problem(t, 408)
			c.closed(t)
		}},
		{"withheld body from an HTTP client, POST /v1/takedowns", false, func(t *testing.T) {
			// Through http.DefaultClient: the 408 is checked against
			// docs/openapi.yaml.
			pr, pw := io.Pipe()
			defer pw.Close()
			r, _ := http.NewRequestWithContext(t.Context(), "POST", n.a.base()+"/v1/takedowns", pr)
			r.ContentLength = 100
			r.Header = jsonHeader(policeToken)
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 408 || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
		}},
		{"a body that arrives, twice on one connection, POST /v1/session", true, func(t *testing.T) {
			c := dialHTTP(t, addr)
			body := `{"token":"` + modToken + `"}`
			for range 2 {
				c.send("POST /v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
					strconv.Itoa(len(body)) + "\r\n\r\n" + body)
				if resp, b := c.response(t); resp.StatusCode != 200 || !strings.Contains(b, `"name":"mod"`) {
					t.Fatalf("%d %s", resp.StatusCode, b)
				}
			}
		}},
		{"SSE and WebSocket outlive http.body_timeout", true, func(t *testing.T) {
			s := n.openSSE(t, t, "/v1/sse?channel=reports", bearer(modToken))
			ws := n.dial(t, t, "", bearer(modToken))
			time.Sleep(3 * httpBodyTimeout)
			produce(t, n.a.kafkaAddr, binaryMsg("items.reported", "outlives-1", "item.reported", "item-o", "", map[string]any{"item_id": "item-o"}))
			if id := secEventID(t, []byte(s.next(t)["data"])); id != "outlives-1" {
				t.Fatalf("SSE event %s", id)
			}
			secSend(t, ws, `{"type":"ping","id":"p"}`)
			secExpect(t, ws, "pong", "p", "")
		}},

		// Content-Length and Transfer-Encoding together: net/http served
		// them by Transfer-Encoding and kept the connection.
		{"Content-Length and chunked together, GET /healthz", false, func(t *testing.T) {
			c := dialHTTP(t, addr)
			c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
			c.problem(t, 400)
			c.closed(t)
		}},
		{"a request smuggled behind Content-Length and chunked, POST /v1/takedowns", false, func(t *testing.T) {
			c := dialHTTP(t, addr)
			smuggled := "GET /v1/session HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + modToken + "\r\n\r\n"
			c.send("POST /v1/takedowns HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + policeToken +
				"\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
			if typ := c.problem(t, 400); typ != hub.ProblemBadRequest.URI() {
				t.Fatalf("type %s", typ)
			}
			c.closed(t) // and the smuggled request is never answered
		}},
		{"chunked alone, POST /v1/session", true, func(t *testing.T) {
			c := dialHTTP(t, addr)
			body := `{"token":"` + modToken + `"}`
			c.send(fmt.Sprintf("POST /v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body))
			if resp, b := c.response(t); resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
		}},

		// CORS with http.allowed_origins [https://partner.example, *].
		{"null origin, GET /v1/session", false, func(t *testing.T) {
			h := bearer(modToken)
			h.Set("Origin", "null")
			if resp := n.refuse(t, "GET", "/v1/session", h, "", 403); resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Fatal("CORS headers for null")
			}
		}},
		{"null origin, preflight", false, func(t *testing.T) {
			n.refuse(t, "OPTIONS", "/v1/session", http.Header{"Origin": {"null"}, "Access-Control-Request-Method": {"POST"}}, "", 403)
		}},
		{"null origin, WebSocket upgrade", false, func(t *testing.T) {
			h := bearer(modToken)
			h.Set("Origin", "null")
			c, resp, err := websocket.Dial(t.Context(), n.a.wsURL(""), &websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}, HTTPHeader: h})
			if err == nil {
				c.CloseNow()
				t.Fatal("the null origin upgraded")
			}
			if resp == nil || resp.StatusCode != 403 || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("null origin: %v, %v", resp, err)
			}
		}},
		{"an origin allowed only by * sends the session cookie", false, func(t *testing.T) {
			h := cookieHdr(signIn(t, n))
			h.Set("Origin", "https://evil.example")
			resp := n.refuse(t, "GET", "/v1/session", h, "", 401)
			if resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatalf("CORS headers %v", resp.Header)
			}
		}},
		{"an origin allowed only by * opens a WebSocket with the session cookie", false, func(t *testing.T) {
			h := cookieHdr(signIn(t, n))
			h.Set("Origin", "https://evil.example")
			n.dialRefused(t, "", h, websocket.StatusPolicyViolation)
		}},
		{"an origin allowed only by *, with a bearer token", true, func(t *testing.T) {
			h := bearer(modToken)
			h.Set("Origin", "https://evil.example")
			resp, b := n.do(t, "GET", "/v1/session", h, "")
			if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
				resp.Header.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
			}
		}},
		{"a listed origin, with the session cookie", true, func(t *testing.T) {
			h := cookieHdr(signIn(t, n))
			h.Set("Origin", "https://partner.example")
			resp, b := n.do(t, "GET", "/v1/session", h, "")
			if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://partner.example" ||
				resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
				t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
			}
		}},

		// The sign-in body is read strictly.
		{"case-folded member in the sign-in body", false, func(t *testing.T) {
			n.strictRefusal(t, `{"Token":"`+modToken+`"}`, `unknown member \"Token\"`)
		}},
		{"duplicate member in the sign-in body", false, func(t *testing.T) {
			n.strictRefusal(t, `{"token":"x","token":"`+modToken+`"}`, `member \"token\" appears more than once`)
		}},
		{"unknown member in the sign-in body", false, func(t *testing.T) {
			n.strictRefusal(t, `{"token":"`+modToken+`","admin":true}`, `unknown member \"admin\"`)
		}},

		// Sessions.
		{"a cookie of the earlier form without an id, validly signed", false, func(t *testing.T) {
			old := earlierCookie("mod", modToken, "", time.Now().Add(time.Hour))
			n.secrets = append(n.secrets, old)
			n.refuse(t, "GET", "/v1/session", cookieHdr(old), "", 401)
		}},
		{"a signed-out cookie on the same node", false, func(t *testing.T) {
			c := signIn(t, n)
			if resp, _ := n.do(t, "DELETE", "/v1/session", cookieHdr(c), ""); resp.StatusCode != 204 {
				t.Fatalf("sign out: %d", resp.StatusCode)
			}
			n.refuse(t, "GET", "/v1/session", cookieHdr(c), "", 401)
			n.refuse(t, "GET", "/v1/sse?channel=reports", cookieHdr(c), "", 401)
		}},
		{"a cookie signed out on node A, on node B sharing Redis", false, func(t *testing.T) {
			nodeA, nodeB := startRedisPair(t, n)
			c := signIn(t, nodeA)
			if resp, _ := nodeB.do(t, "GET", "/v1/session", cookieHdr(c), ""); resp.StatusCode != 200 {
				t.Fatalf("node B before sign-out: %d", resp.StatusCode)
			}
			if resp, _ := nodeA.do(t, "DELETE", "/v1/session", cookieHdr(c), ""); resp.StatusCode != 204 {
				t.Fatalf("sign out on node A: %d", resp.StatusCode)
			}
			nodeB.refuse(t, "GET", "/v1/session", cookieHdr(c), "", 401)
			nodeB.refuse(t, "GET", "/v1/sse?channel=reports", cookieHdr(c), "", 401)
			nodeB.dialRefused(t, "", cookieHdr(c), websocket.StatusPolicyViolation)
			nodeA.refuse(t, "GET", "/v1/session", cookieHdr(c), "", 401)
		}},
		{"a signed-out session's open connections end, on its node", false, func(t *testing.T) {
			c := signIn(t, n)
			sse := n.openSSE(t, t, "/v1/sse?channel=reports", cookieHdr(c))
			ws := n.dial(t, t, "", cookieHdr(c))
			other := n.openSSE(t, t, "/v1/sse?channel=reports", bearer(modToken))
			if resp, _ := n.do(t, "DELETE", "/v1/session", cookieHdr(c), ""); resp.StatusCode != 204 {
				t.Fatalf("sign out: %d", resp.StatusCode)
			}
			signedOutEnds(t, sse, ws)
			// A connection of another credential goes on.
			n.a.hub.Publish(t.Context(), []string{"reports"}, &hub.Event{ID: "after-sign-out", Source: "/test", Type: "item.reported",
				JSON: []byte(`{"specversion":"1.0","id":"after-sign-out","source":"/test","type":"item.reported","data":{}}`)})
			if ev := other.next(t); !strings.Contains(ev["data"], "after-sign-out") {
				t.Fatalf("the bearer stream got %v", ev)
			}
		}},
		{"a session signed out on node A ends its connections on node B", false, func(t *testing.T) {
			nodeA, nodeB := startRedisPair(t, n)
			c := signIn(t, nodeA)
			sse := nodeB.openSSE(t, t, "/v1/sse?channel=reports", cookieHdr(c))
			ws := nodeB.dial(t, t, "", cookieHdr(c))
			if resp, _ := nodeA.do(t, "DELETE", "/v1/session", cookieHdr(c), ""); resp.StatusCode != 204 {
				t.Fatalf("sign out on node A: %d", resp.StatusCode)
			}
			signedOutEnds(t, sse, ws)
		}},

		// Failed authentications, on their own node (burst 6).
		{"a cookie taken before the flood", true, func(t *testing.T) {
			thCookie = signIn(t, th)
		}},
		{"six wrong credentials, one on each door", false, func(t *testing.T) {
			bad := "wrong-token-000000"
			th.secrets = append(th.secrets, bad)
			th.refuse(t, "POST", "/v1/takedowns", jsonHeader(bad), `{"item_id":"item-1","reason":"x"}`, 401)
			th.refuse(t, "GET", "/v1/sse?channel=reports&access_token="+bad, nil, "", 401)
			th.refuse(t, "GET", "/v1/session", cookieHdr(thCookie[:len(thCookie)-2]+"AA"), "", 401)
			th.refuse(t, "POST", "/v1/session", http.Header{"Content-Type": {"application/json"}}, `{"token":"`+bad+`"}`, 401)
			th.refuse(t, "GET", "/v1/sse?channel=reports", bearer(bad), "", 401)
			th.dialRefused(t, "", bearer(bad), websocket.StatusPolicyViolation)
		}},
		{"the seventh: a wrong token, POST /v1/takedowns", false, func(t *testing.T) {
			th.throttled(t, "POST", "/v1/takedowns", jsonHeader("wrong-token-000000"), `{"item_id":"item-1","reason":"x"}`)
		}},
		{"then a right token, POST /v1/takedowns", false, func(t *testing.T) {
			th.throttled(t, "POST", "/v1/takedowns", jsonHeader(policeToken), `{"item_id":"item-1","reason":"x"}`)
		}},
		{"then a right access_token, SSE", false, func(t *testing.T) {
			th.throttled(t, "GET", "/v1/sse?channel=reports&access_token="+modToken, nil, "")
		}},
		{"then a right bearer token, SSE", false, func(t *testing.T) {
			th.throttled(t, "GET", "/v1/sse?channel=reports", bearer(modToken), "")
		}},
		{"then a valid session cookie", false, func(t *testing.T) {
			th.throttled(t, "GET", "/v1/session", cookieHdr(thCookie), "")
		}},
		{"then a right token, POST /v1/session", false, func(t *testing.T) {
			th.throttled(t, "POST", "/v1/session", http.Header{"Content-Type": {"application/json"}}, `{"token":"`+modToken+`"}`)
		}},
		{"then a right token, WebSocket upgrade", false, func(t *testing.T) {
			c, resp, err := websocket.Dial(t.Context(), th.a.wsURL(""), &websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}, HTTPHeader: bearer(modToken)})
			if err == nil {
				c.CloseNow()
				t.Fatal("a throttled address upgraded")
			}
			if resp == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("throttled upgrade: %v, %v", resp, err)
			}
		}},
		{"throttled answers documented, through the OpenAPI check", false, func(t *testing.T) {
			resp, _, err := call(t.Context(), nil, http.MethodGet, th.a.base()+"/v1/session", bearer(modToken), "")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 429 {
				t.Fatalf("%d", resp.StatusCode)
			}
		}},
		{"the failures and the throttling are counted", true, func(t *testing.T) {
			m := scrape(t, th.a)
			for k, want := range map[string]float64{
				`switchboard_auth_failures_total{credential=bearer}`:       3,
				`switchboard_auth_failures_total{credential=access_token}`: 1,
				`switchboard_auth_failures_total{credential=cookie}`:       1,
				`switchboard_auth_failures_total{credential=sign_in}`:      1,
			} {
				if m[k] != want {
					t.Errorf("%s = %v, want %v", k, m[k], want)
				}
			}
			if m[`switchboard_auth_throttled_total`] < 8 {
				t.Errorf("throttled %v, want at least 8", m[`switchboard_auth_throttled_total`])
			}
		}},
		{"the failures are logged, without a credential", true, func(t *testing.T) {
			out := th.log.String()
			if !strings.Contains(out, "authentication failed") || !strings.Contains(out, "source=127.0.0.1") {
				t.Fatalf("no failure line:\n%s", out)
			}
			for _, s := range append(th.secrets, thCookie) {
				if strings.Contains(out, s) {
					t.Fatalf("the log holds the credential %.24q…", s)
				}
			}
		}},
		{"another node is not throttled by this one's failures", true, func(t *testing.T) {
			if resp, _ := n.do(t, "GET", "/v1/session", bearer(modToken), ""); resp.StatusCode != 200 {
				t.Fatalf("%d", resp.StatusCode)
			}
		}},

		// Connections that never authenticate, on a node capped at 3.
		{"connections that never authenticate, over limits.unauthenticated_connections", false, func(t *testing.T) {
			caddr := capNode.a.ln.Addr().String()
			var silent []*httpConn
			for range 3 {
				silent = append(silent, dialHTTP(t, caddr))
			}
			capNode.unauthenticated(t, 3, 0)
			dialHTTP(t, caddr).closed(t)
			dialHTTP(t, caddr).closed(t)
			if n := capNode.a.guard.Stats().Counts[hub.GuardRefusedConnection]; n != 2 {
				t.Fatalf("refused %d connections, want 2", n)
			}
			for _, c := range silent {
				c.c.Close()
			}
			capNode.unauthenticated(t, 0, 0)
		}},
		{"a connection that authenticated does not count", true, func(t *testing.T) {
			caddr := capNode.a.ln.Addr().String()
			c := dialHTTP(t, caddr)
			c.send("GET /v1/session HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + modToken + "\r\n\r\n")
			if resp, _ := c.response(t); resp.StatusCode != 200 {
				t.Fatalf("%d", resp.StatusCode)
			}
			capNode.unauthenticated(t, 0, 0)
			var silent []*httpConn
			for range 3 {
				silent = append(silent, dialHTTP(t, caddr))
			}
			capNode.unauthenticated(t, 3, 0)
			c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") // served, whatever it asks next
			if resp, _ := c.response(t); resp.StatusCode != 200 {
				t.Fatalf("%d", resp.StatusCode)
			}
			for _, c := range silent {
				c.c.Close()
			}
			capNode.unauthenticated(t, 0, 0)
		}},
		{"keep-alive connections parked without a credential", false, func(t *testing.T) {
			caddr := capNode.a.ln.Addr().String()
			var parked []*httpConn
			for range 3 {
				c := dialHTTP(t, caddr)
				c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
				if resp, _ := c.response(t); resp.StatusCode != 200 {
					t.Fatalf("%d", resp.StatusCode)
				}
				parked = append(parked, c)
			}
			capNode.unauthenticated(t, 3, 3)
			// A newcomer is served: one parked connection is closed for it.
			c := dialHTTP(t, caddr)
			c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp, _ := c.response(t); resp.StatusCode != 200 {
				t.Fatalf("%d", resp.StatusCode)
			}
			if n := capNode.a.guard.Stats().Counts[hub.GuardClosedIdle]; n != 1 {
				t.Fatalf("closed %d idle connections, want 1", n)
			}
			// The parked connections still open answer; the one closed
			// does not.
			closed := 0
			for _, p := range parked {
				p.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
				p.c.SetReadDeadline(time.Now().Add(waitFor))
				resp, err := http.ReadResponse(p.br, nil)
				switch {
				case err == nil && resp.StatusCode == 200:
					resp.Body.Close()
				case err != nil && !isTimeout(err):
					closed++
				default:
					t.Fatalf("a parked connection: %v, %v", resp, err)
				}
			}
			if closed != 1 {
				t.Fatalf("%d parked connections closed, want 1", closed)
			}
		}},
	}

	runAttempts(t, attempts) // in order: later attempts build on earlier ones

	t.Run("no credential in the log", func(t *testing.T) {
		out := n.log.String()
		if !strings.Contains(out, "signed in") || !strings.Contains(out, "signed out") || !strings.Contains(out, "request refused") {
			t.Fatalf("the log capture missed the sign-in, the sign-out or the guard:\n%s", out)
		}
		for _, sec := range append(n.secrets, th.secrets...) {
			if sec != "" && strings.Contains(out, sec) {
				t.Fatalf("the log holds the credential %.24q…", sec)
			}
		}
	})
}

// throttled sends a request that must be refused, unchecked, because its
// address failed too often: 429 rate-limited problem with Retry-After.
func (n *securityNode) throttled(t *testing.T, method, path string, hdr http.Header, body string) {
	t.Helper()
	resp := n.refuse(t, method, path, hdr, body, 429)
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if len(resp.Cookies()) != 0 {
		t.Fatal("a throttled request got a cookie")
	}
}

// strictRefusal signs in with a JSON body that must be refused with 400
// naming what is wrong, and no cookie.
func (n *securityNode) strictRefusal(t *testing.T, body, want string) {
	t.Helper()
	resp, b := n.do(t, "POST", "/v1/session", http.Header{"Content-Type": {"application/json"}}, body)
	if resp.StatusCode != 400 || len(resp.Cookies()) != 0 || !strings.Contains(b, want) {
		t.Fatalf("%s: %d %s, want 400 with %s", body, resp.StatusCode, b, want)
	}
	checkProblem(t, resp, b, 400)
	n.noSecret(t, b)
}

// unauthenticated waits until the node's guard counts want unauthenticated
// connections, idle of them idle.
func (n *securityNode) unauthenticated(t *testing.T, want, idle int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d unauthenticated connections, %d idle", want, idle), func() bool {
		st := n.a.guard.Stats()
		return st.Unauthenticated == want && st.Idle == idle
	})
}

// startRedisPair starts two nodes sharing one Redis (the real server when
// it answers, miniredis otherwise) and one key prefix, with like's log
// capture and secrets.
func startRedisPair(t *testing.T, like *securityNode) (*securityNode, *securityNode) {
	t.Helper()
	servers := redistest.Servers(t)
	srv := servers[len(servers)-1]
	t.Logf("Redis: %s at %s", srv.Name, srv.Addr)
	var pair [2]*securityNode
	for i := range pair {
		a := startTestNode(t, nodeSpec{
			config: func(cfg *config.Config) { cfg.Redis.URL = srv.URL() },
			log:    slog.New(slog.NewTextHandler(like.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
			opts:   []Option{withRedisPrefix(srv.Prefix)},
		})
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		pair[i] = &securityNode{root: t, a: a, log: like.log, client: &http.Client{Transport: tr}, secrets: like.secrets}
	}
	return pair[0], pair[1]
}

// earlierCookie is a session cookie of the form before sessions had an id,
// "<name>.<expiry>.<mac>", signed as it was then.
func earlierCookie(name, token, secret string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	n := base64.RawURLEncoding.EncodeToString([]byte(name))
	hash := sha256.Sum256([]byte(token))
	key := sha256.Sum256([]byte("switchboard-session-v1:" + secret + ":" + string(hash[:])))
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(n + "." + e))
	return n + "." + e + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// httpConn is a raw HTTP/1.1 client: it writes exactly the bytes it is
// given.
type httpConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialHTTP(t *testing.T, addr string) *httpConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &httpConn{c: c, br: bufio.NewReader(c)}
}

func (h *httpConn) send(s string) {
	io.WriteString(h.c, s) // a refusal may close the connection first
}

// response reads one whole response.
func (h *httpConn) response(t *testing.T) (*http.Response, string) {
	t.Helper()
	h.c.SetReadDeadline(time.Now().Add(waitFor))
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// problem reads a response that must be a problem of status, and returns
// its type.
func (h *httpConn) problem(t *testing.T, status int) string {
	t.Helper()
	resp, b := h.response(t)
	checkProblem(t, resp, b, status)
	var p struct {
		Type string `json:"type"`
	}
	json.Unmarshal([]byte(b), &p)
	return p.Type
}

// closed asserts the server closes the connection without another byte.
func (h *httpConn) closed(t *testing.T) {
	t.Helper()
	h.c.SetReadDeadline(time.Now().Add(waitFor))
	b, err := h.br.ReadByte()
	switch {
	case err == nil:
		t.Fatalf("the connection is open: it sent %q", b)
	case isTimeout(err):
		t.Fatal("the connection is still open")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// signedOutEnds checks that a signed-out session's SSE stream got
// "event: expired" with reason signed_out and ended, and its WebSocket
// closed 1008 "signed out".
func signedOutEnds(t *testing.T, sse *sseStream, ws *websocket.Conn) {
	t.Helper()
	if ev := sse.next(t); ev["event"] != "expired" || ev["data"] != `{"reason":"signed_out"}` {
		t.Fatalf("the signed-out SSE stream got %v, want the expired event", ev)
	}
	select {
	case ev, ok := <-sse.events:
		if ok {
			t.Fatalf("the signed-out SSE stream went on: %v", ev)
		}
	case <-time.After(waitFor):
		t.Fatal("the signed-out SSE stream did not end")
	}
	if reason := secClosed(t, ws, websocket.StatusPolicyViolation); reason != "signed out" {
		t.Fatalf("the signed-out WebSocket closed with %q", reason)
	}
}
