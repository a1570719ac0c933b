package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/takedown"
)

// TestSecurityAttempts runs a table of attacks and misuses against one real
// node. Each attempt asserts the exact refusal; the attacker connections
// that stay open are then shown, with events produced to Kafka on every
// channel involved, to have received nothing they were refused, while a
// moderator received everything. Last, the captured log holds no token.
// attempt is one row of a security suite: an attack that must be refused,
// or a control (allowed) that must still work beside them.
type attempt struct {
	name    string
	allowed bool // a control: a legitimate use next to the attacks
	run     func(t *testing.T)
}

// runAttempts runs the attempts in order, stopping at the first that fails
// (later attempts build on earlier ones: their connections, their
// dead-letter offsets), and logs their count.
func runAttempts(t *testing.T, attempts []attempt) {
	t.Helper()
	refused, allowed := 0, 0
	for _, at := range attempts {
		if at.allowed {
			allowed++
		} else {
			refused++
		}
		if !t.Run(at.name, at.run) {
			t.FailNow()
		}
	}
	t.Logf("%d attempts: %d refused attacks, %d allowed controls", len(attempts), refused, allowed)
}

func TestSecurityAttempts(t *testing.T) {
	n := startSecurityNode(t, func(c *config.Config) {
		c.Limits.Connections = 2
		c.Limits.TakedownBurst = 3
		// One takedown per 100 s: nothing refills while the test runs.
		c.Limits.TakedownRate = 0.01
		c.HTTP.AllowedOrigins = []string{"https://partner.example"}
		c.WS.MaxMessageBytes = 4096
		c.Hub.MaxChannels = 5
	})
	a := n.a
	own(t, a, "c-acme", "acme")
	own(t, a, "c-globex", "globex")
	own(t, a, "c-pol", "police")
	waitReady(t, a)

	// The legitimate moderator watches every channel involved.
	mod := n.openSSE(t, t, "/v1/sse?channel=reports&channel=corr:c-acme&channel=corr:c-globex&channel=corr:c-pol&channel=item:x", bearer(modToken))
	modSeen := map[string]bool{}

	// History an attacker's resume cursor would replay if it were honoured.
	produce(t, a.kafkaAddr,
		binaryMsg("takedown.events", "h-globex", "takedown.confirmed", "item-g", "c-globex", map[string]any{"item_id": "item-g"}),
		binaryMsg("items.reported", "h-report", "item.reported", "item-h", "", map[string]any{"item_id": "item-h"}))
	lastID := secWaitIDs(t, mod, modSeen, "h-globex", "h-report")
	modCursor, err := hub.ParseStreamCursor(lastID)
	if err != nil {
		t.Fatal(err)
	}
	globexFrom0 := hub.Position{Epoch: modCursor["corr:c-globex"].Epoch}
	reportsFrom0 := hub.Position{Epoch: modCursor["reports"].Epoch}
	if globexFrom0.Epoch == "" || modCursor["corr:c-globex"].Offset == 0 {
		t.Fatalf("no history on corr:c-globex: %v", modCursor)
	}
	forged := hub.StreamCursor{"corr:c-globex": globexFrom0, "reports": reportsFrom0}.Encode()

	// The connections that stay open: attackers refused something, kept to
	// show no event of what they were refused reaches them.
	var acmeWS, policeWS, globexWS *websocket.Conn
	var acmeSSE *sseStream
	var cookie, policeTakedown string

	const (
		wrongToken = "wrong-token-9876543210"
		longToken  = "long-token-"
	)
	n.secrets = append(n.secrets, wrongToken, auth.HashToken(modToken))
	huge := longToken + strings.Repeat("z", 5000)

	attempts := []attempt{
		// Authentication.
		{"no token, SSE", false, func(t *testing.T) {
			resp := n.refuse(t, "GET", "/v1/sse?channel=reports", nil, "", 401)
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
		}},
		{"no token, WebSocket", false, func(t *testing.T) {
			n.dialRefused(t, "", nil, websocket.StatusPolicyViolation)
		}},
		{"wrong bearer token, SSE", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=reports", bearer(wrongToken), "", 401)
		}},
		{"wrong bearer token, WebSocket", false, func(t *testing.T) {
			n.dialRefused(t, "", bearer(wrongToken), websocket.StatusPolicyViolation)
		}},
		{"wrong access_token query, SSE", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=reports&access_token="+wrongToken, nil, "", 401)
		}},
		{"wrong access_token query, WebSocket", false, func(t *testing.T) {
			n.dialRefused(t, "?access_token="+wrongToken, nil, websocket.StatusPolicyViolation)
		}},
		{"the token's SHA-256 as the token", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=reports", bearer(auth.HashToken(modToken)), "", 401)
		}},
		{"a valid token in the Basic scheme", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=reports", http.Header{"Authorization": {"Basic " + modToken}}, "", 401)
		}},
		{"a bad header is not rescued by a good access_token", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=reports&access_token="+modToken, bearer(wrongToken), "", 401)
		}},
		{"oversized token", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=reports", bearer(huge), "", 401)
		}},
		{"access_token query, SSE", true, func(t *testing.T) {
			s := n.openSSE(t, t, "/v1/sse?channel=item:x&access_token="+acmeToken, nil)
			s.body.Close()
			n.released(t, "acme", 0)
		}},
		{"access_token query, WebSocket", true, func(t *testing.T) {
			c := n.dial(t, t, "?access_token="+acmeToken, nil)
			secSend(t, c, `{"type":"subscribe","id":"q","channel":"item:x"}`)
			secExpect(t, c, "ack", "q", "")
			c.Close(websocket.StatusNormalClosure, "")
			n.released(t, "acme", 0)
		}},
		{"session cookie", true, func(t *testing.T) {
			resp, _ := n.do(t, "POST", "/v1/session", bearer(modToken), "")
			sc := resp.Header.Get("Set-Cookie")
			if resp.StatusCode != 200 || !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "SameSite=Strict") ||
				strings.Contains(sc, "Secure") || len(resp.Cookies()) != 1 {
				t.Fatalf("sign in: %d, Set-Cookie %q", resp.StatusCode, sc)
			}
			cookie = resp.Cookies()[0].Value
			n.secrets = append(n.secrets, cookie)
			s := n.openSSE(t, t, "/v1/sse?channel=reports", http.Header{"Cookie": {auth.SessionCookie + "=" + cookie}})
			s.body.Close()
			n.released(t, "mod", 1)
		}},
		{"tampered session cookie", false, func(t *testing.T) {
			b := []byte(cookie)
			if b[len(b)-2] == 'A' {
				b[len(b)-2] = 'B'
			} else {
				b[len(b)-2] = 'A'
			}
			n.refuse(t, "GET", "/v1/sse?channel=reports", http.Header{"Cookie": {auth.SessionCookie + "=" + string(b)}}, "", 401)
		}},
		{"a partner's name on the moderator's cookie", false, func(t *testing.T) {
			_, rest, _ := strings.Cut(cookie, ".")
			forgedCookie := "YWNtZQ." + rest // base64url("acme")
			n.refuse(t, "GET", "/v1/sse?channel=reports", http.Header{"Cookie": {auth.SessionCookie + "=" + forgedCookie}}, "", 401)
		}},
		{"sign in with a wrong token", false, func(t *testing.T) {
			resp := n.refuse(t, "POST", "/v1/session", http.Header{"Content-Type": {"application/json"}}, `{"token":"`+wrongToken+`"}`, 401)
			if len(resp.Cookies()) != 0 {
				t.Fatal("a cookie for a wrong token")
			}
		}},
		{"oversized sign-in body", false, func(t *testing.T) {
			resp := n.refuse(t, "POST", "/v1/session", http.Header{"Content-Type": {"application/json"}},
				`{"token":"`+modToken+`","pad":"`+strings.Repeat("p", 9<<10)+`"}`, 413)
			if len(resp.Cookies()) != 0 {
				t.Fatal("a cookie for an oversized body")
			}
		}},

		// Authorisation over SSE.
		{"partner subscribes to reports, SSE", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=reports", bearer(acmeToken), "", 403)
		}},
		{"police subscribes to reports, SSE", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=reports", bearer(policeToken), "", 403)
		}},
		{"partner without a grant subscribes to item:x, SSE", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=item:x", bearer(globexToken), "", 403)
		}},
		{"partner subscribes to another partner's corr:, SSE", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=corr:c-globex", bearer(acmeToken), "", 403)
		}},
		{"partner hides another partner's corr: behind a granted channel, SSE", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=item:x&channel=corr:c-globex", bearer(acmeToken), "", 403)
		}},
		{"partner resumes another partner's corr: by cursor, SSE", false, func(t *testing.T) {
			h := bearer(acmeToken)
			h.Set("Last-Event-ID", forged)
			n.refuse(t, "GET", "/v1/sse?channel=corr:c-globex", h, "", 403)
			n.refuse(t, "GET", "/v1/sse?channel=corr:c-globex&last_event_id="+forged, bearer(acmeToken), "", 403)
		}},
		{"partner's own corr:, SSE", true, func(t *testing.T) {
			s := n.openSSE(t, t, "/v1/sse?channel=corr:c-acme", bearer(acmeToken))
			s.body.Close()
			n.released(t, "acme", 0)
		}},
		{"partner resumes item:x with a cursor naming another partner's corr:, SSE", false, func(t *testing.T) {
			// Kept open: item:x is granted; the cursor's corr:c-globex must
			// not become a subscription (checked below).
			h := bearer(acmeToken)
			h.Set("Last-Event-ID", forged)
			acmeSSE = n.openSSE(t, n.root, "/v1/sse?channel=item:x", h)
		}},

		// Authorisation over WebSocket.
		{"police subscribes to reports, WebSocket", false, func(t *testing.T) {
			policeWS = n.dial(t, n.root, "", bearer(policeToken))
			secSend(t, policeWS, `{"type":"subscribe","id":"r","channel":"reports"}`)
			secExpect(t, policeWS, "error", "r", hub.CodeForbidden)
			secSend(t, policeWS, `{"type":"subscribe","id":"t","channel":"takedowns"}`)
			secExpect(t, policeWS, "error", "t", hub.CodeForbidden)
		}},
		{"police's own corr:, WebSocket", true, func(t *testing.T) {
			secSend(t, policeWS, `{"type":"subscribe","id":"p","channel":"corr:c-pol"}`)
			secExpect(t, policeWS, "ack", "p", "")
		}},
		{"partner subscribes to another partner's corr:, WebSocket", false, func(t *testing.T) {
			acmeWS = n.dial(t, n.root, "", bearer(acmeToken))
			secSend(t, acmeWS, `{"type":"subscribe","id":"g","channel":"corr:c-globex"}`)
			secExpect(t, acmeWS, "error", "g", hub.CodeForbidden)
		}},
		{"partner resumes another partner's corr: by cursor, WebSocket", false, func(t *testing.T) {
			secSend(t, acmeWS, `{"type":"subscribe","id":"gc","channel":"corr:c-globex","cursor":"`+globexFrom0.String()+`"}`)
			secExpect(t, acmeWS, "error", "gc", hub.CodeForbidden)
		}},
		{"partner subscribes to reports and police's corr:, WebSocket", false, func(t *testing.T) {
			secSend(t, acmeWS, `{"type":"subscribe","id":"rep","channel":"reports","cursor":"`+reportsFrom0.String()+`"}`)
			secExpect(t, acmeWS, "error", "rep", hub.CodeForbidden)
			secSend(t, acmeWS, `{"type":"subscribe","id":"pol","channel":"corr:c-pol"}`)
			secExpect(t, acmeWS, "error", "pol", hub.CodeForbidden)
		}},
		{"partner's own corr: and its item:* grant, WebSocket", true, func(t *testing.T) {
			secSend(t, acmeWS, `{"type":"subscribe","id":"a","channel":"corr:c-acme"}`)
			secExpect(t, acmeWS, "ack", "a", "")
			secSend(t, acmeWS, `{"type":"subscribe","id":"x","channel":"item:x"}`)
			secExpect(t, acmeWS, "ack", "x", "")
		}},
		{"partner without a grant subscribes to item:x and another's corr:, WebSocket", false, func(t *testing.T) {
			globexWS = n.dial(t, n.root, "", bearer(globexToken))
			secSend(t, globexWS, `{"type":"subscribe","id":"x","channel":"item:x"}`)
			secExpect(t, globexWS, "error", "x", hub.CodeForbidden)
			secSend(t, globexWS, `{"type":"subscribe","id":"a","channel":"corr:c-acme"}`)
			secExpect(t, globexWS, "error", "a", hub.CodeForbidden)
			secSend(t, globexWS, `{"type":"subscribe","id":"g","channel":"corr:c-globex"}`)
			secExpect(t, globexWS, "ack", "g", "")
		}},

		// Origin.
		{"cross-origin WebSocket upgrade", false, func(t *testing.T) {
			h := bearer(modToken)
			h.Set("Origin", "https://evil.example")
			c, resp, err := websocket.Dial(n.root.Context(), n.a.wsURL(""), &websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}, HTTPHeader: h})
			if err == nil {
				c.CloseNow()
				t.Fatal("a foreign origin upgraded")
			}
			if resp == nil || resp.StatusCode != 403 || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("foreign origin: %v, %v", resp, err)
			}
		}},
		{"allowed host with another scheme, WebSocket", false, func(t *testing.T) {
			h := bearer(modToken)
			h.Set("Origin", "http://partner.example")
			c, resp, err := websocket.Dial(n.root.Context(), n.a.wsURL(""), &websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}, HTTPHeader: h})
			if err == nil {
				c.CloseNow()
				t.Fatal("http://partner.example upgraded")
			}
			if resp == nil || resp.StatusCode != 403 {
				t.Fatalf("scheme mismatch: %v, %v", resp, err)
			}
		}},
		{"cross-origin SSE and preflight", false, func(t *testing.T) {
			h := bearer(modToken)
			h.Set("Origin", "https://evil.example")
			resp := n.refuse(t, "GET", "/v1/sse?channel=reports", h, "", 403)
			if resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Fatal("CORS headers for a foreign origin")
			}
			pre := http.Header{"Origin": {"https://evil.example"}, "Access-Control-Request-Method": {"GET"}}
			n.refuse(t, "OPTIONS", "/v1/sse?channel=reports", pre, "", 403)
		}},
		{"allowed origin, WebSocket and preflight", true, func(t *testing.T) {
			h := bearer(modToken)
			h.Set("Origin", "https://partner.example")
			c := n.dial(t, t, "", h)
			secSend(t, c, `{"type":"subscribe","id":"1","channel":"reports"}`)
			secExpect(t, c, "ack", "1", "")
			c.Close(websocket.StatusNormalClosure, "")
			n.released(t, "mod", 1)
			resp, _ := n.do(t, "OPTIONS", "/v1/sse", http.Header{"Origin": {"https://partner.example"}, "Access-Control-Request-Method": {"GET"}}, "")
			if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://partner.example" {
				t.Fatalf("preflight %d %v", resp.StatusCode, resp.Header)
			}
		}},

		// Limits.
		{"frame over ws.max_message_bytes", false, func(t *testing.T) {
			c := n.dial(t, t, "", bearer(modToken))
			// Under the limit: ids are capped at 128 bytes, so the frame is
			// padded with JSON whitespace.
			secSend(t, c, `{"type":"ping","id":"`+strings.Repeat("s", 100)+`"`+strings.Repeat(" ", 3900)+`}`)
			secExpect(t, c, "pong", strings.Repeat("s", 100), "")
			secSend(t, c, `{"type":"ping","id":"`+strings.Repeat("b", 5000)+`"}`)
			secClosed(t, c, websocket.StatusMessageTooBig)
			n.released(t, "mod", 1)
		}},
		{"resume cursor over its size limit, SSE", false, func(t *testing.T) {
			h := bearer(modToken)
			h.Set("Last-Event-ID", strings.Repeat("A", 9<<10))
			n.refuse(t, "GET", "/v1/sse?channel=reports", h, "", 400)
		}},
		{"channels over hub.max_channels", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/sse?channel=a&channel=b&channel=c&channel=d&channel=e&channel=f", bearer(modToken), "", 400)
			c := n.dial(t, t, "", bearer(modToken))
			for _, ch := range []string{"a", "b", "c", "d", "e"} {
				secSend(t, c, `{"type":"subscribe","id":"`+ch+`","channel":"`+ch+`"}`)
				secExpect(t, c, "ack", ch, "")
			}
			secSend(t, c, `{"type":"subscribe","id":"f","channel":"f"}`)
			secExpect(t, c, "error", "f", hub.CodeBadRequest)
			c.Close(websocket.StatusNormalClosure, "")
			n.released(t, "mod", 1)
		}},
		{"one connection over limits.connections, WebSocket", false, func(t *testing.T) {
			if got := a.auth.Connections("acme"); got != 2 {
				t.Fatalf("acme holds %d connections, want 2", got)
			}
			n.dialRefused(t, "", bearer(acmeToken), websocket.StatusPolicyViolation)
		}},
		{"one connection over limits.connections, SSE", false, func(t *testing.T) {
			resp := n.refuse(t, "GET", "/v1/sse?channel=item:x", bearer(acmeToken), "", 429)
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			if got := a.auth.Connections("acme"); got != 2 {
				t.Fatalf("acme holds %d connections after refusals, want 2", got)
			}
		}},
		{"a burst of takedown frames over limits.takedown_burst, WebSocket", false, func(t *testing.T) {
			c := n.dial(t, t, "", bearer(globexToken))
			want := map[string]string{"t1": "ack", "t2": "ack", "t3": "ack", "t4": hub.CodeRateLimited, "t5": hub.CodeRateLimited}
			for _, id := range []string{"t1", "t2", "t3", "t4", "t5"} {
				secSend(t, c, `{"type":"takedown","id":"`+id+`","item_id":"item-1","reason":"test"}`)
			}
			// Accepted takedowns go on with events and results; read until
			// every request has its answer.
			got := map[string]string{}
			for len(got) < len(want) {
				f := secRead(t, c)
				id, _ := f["id"].(string)
				if _, ok := want[id]; !ok || f["type"] == "result" {
					continue
				}
				if _, dup := got[id]; dup {
					continue
				}
				switch f["type"] {
				case "ack":
					got[id] = "ack"
				case "error":
					got[id], _ = f["code"].(string)
					if f["code"] == hub.CodeRateLimited && !strings.Contains(f["message"].(string), "retry after") {
						t.Fatalf("rate_limited frame without a retry hint: %v", f)
					}
				}
			}
			for id, w := range want {
				if got[id] != w {
					t.Fatalf("takedown %s answered %q, want %q (all: %v)", id, got[id], w, got)
				}
			}
			c.Close(websocket.StatusNormalClosure, "")
			n.released(t, "globex", 1)
		}},
		{"police sends a takedown frame, WebSocket", false, func(t *testing.T) {
			secSend(t, policeWS, `{"type":"takedown","id":"pt","item_id":"item-1","reason":"test"}`)
			secExpect(t, policeWS, "error", "pt", hub.CodeForbidden)
		}},
		{"a takedown frame whose ITEM_ID names another item, WebSocket", false, func(t *testing.T) {
			c := n.dial(t, t, "", bearer(globexToken))
			secSend(t, c, `{"type":"takedown","id":"cf","item_id":"item-1","ITEM_ID":"item-2","reason":"test"}`)
			f := secExpect(t, c, "error", "cf", hub.CodeBadRequest)
			if !strings.Contains(fmt.Sprint(f["message"]), `"ITEM_ID"`) {
				t.Fatalf("the error does not name the member: %v", f)
			}
			c.Close(websocket.StatusNormalClosure, "")
			n.released(t, "globex", 1)
		}},

		// The police door.
		{"no token posts a takedown", false, func(t *testing.T) {
			n.refuse(t, "POST", "/v1/takedowns", jsonHeader(""), `{"item_id":"item-5","reason":"test"}`, 401)
		}},
		{"partner posts a takedown", false, func(t *testing.T) {
			n.refuse(t, "POST", "/v1/takedowns", jsonHeader(acmeToken), `{"item_id":"item-5","reason":"test"}`, 403)
		}},
		{"a takedown body whose ITEM_ID names another item", false, func(t *testing.T) {
			resp, b := n.do(t, "POST", "/v1/takedowns", jsonHeader(policeToken), `{"item_id":"item-1","ITEM_ID":"item-2","reason":"x"}`)
			if resp.StatusCode != 400 || !strings.Contains(b, `unknown member \"ITEM_ID\"`) {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
		}},
		{"a takedown body with item_id twice", false, func(t *testing.T) {
			resp, b := n.do(t, "POST", "/v1/takedowns", jsonHeader(policeToken), `{"item_id":"item-1","item_id":"item-2","reason":"x"}`)
			if resp.StatusCode != 400 || !strings.Contains(b, `member \"item_id\" appears more than once`) {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
		}},
		{"a takedown body with an unknown member", false, func(t *testing.T) {
			resp, b := n.do(t, "POST", "/v1/takedowns", jsonHeader(policeToken), `{"item_id":"item-1","reason":"x","priority":"urgent"}`)
			if resp.StatusCode != 400 || !strings.Contains(b, `unknown member \"priority\"`) {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
		}},
		{"a path under /v1/ with no route", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/admin", bearer(modToken), "", 404)
		}},
		{"a method the route does not have", false, func(t *testing.T) {
			resp := n.refuse(t, "DELETE", "/v1/takedowns", bearer(policeToken), "", 405)
			if resp.Header.Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
		}},
		{"takedown body over http.max_body_bytes", false, func(t *testing.T) {
			n.refuse(t, "POST", "/v1/takedowns", jsonHeader(policeToken),
				`{"item_id":"item-5","reason":"`+strings.Repeat("r", 70<<10)+`"}`, 413)
		}},
		{"police posts a takedown and reads it", true, func(t *testing.T) {
			policeTakedown = n.postAsync(t, policeToken, "item-5")
			resp, b := n.do(t, "GET", "/v1/takedowns/"+policeTakedown, bearer(policeToken), "")
			if resp.StatusCode != 200 || !strings.Contains(b, policeTakedown) {
				t.Fatalf("police reads its takedown: %d %s", resp.StatusCode, b)
			}
		}},
		{"partner reads police's takedown", false, func(t *testing.T) {
			n.refuse(t, "GET", "/v1/takedowns/"+policeTakedown, bearer(acmeToken), "", 404)
		}},
		{"a burst of takedowns over limits.takedown_burst, POST", false, func(t *testing.T) {
			n.postAsync(t, policeToken, "item-6")
			n.postAsync(t, policeToken, "item-7") // the third of the burst of 3
			resp := n.refuse(t, "POST", "/v1/takedowns", jsonHeader(policeToken), `{"item_id":"item-8","reason":"test"}`, 429)
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		}},
	}

	runAttempts(t, attempts) // in order: later attempts build on earlier ones

	t.Run("no event reached an attacker", func(t *testing.T) {
		// What the attackers were refused, and what they hold.
		produce(t, a.kafkaAddr,
			binaryMsg("items.reported", "f-report", "item.reported", "item-r", "", map[string]any{"item_id": "item-r"}),
			binaryMsg("takedown.events", "f-globex", "takedown.confirmed", "item-g", "c-globex", map[string]any{"item_id": "item-g"}),
			binaryMsg("takedown.events", "f-acme", "takedown.confirmed", "item-a", "c-acme", map[string]any{"item_id": "item-a"}),
			binaryMsg("takedown.events", "f-pol", "takedown.confirmed", "item-p", "c-pol", map[string]any{"item_id": "item-p"}),
			binaryMsg("items.reported", "f-x", "item.reported", "x", "", map[string]any{"item_id": "x"}))
		secWaitIDs(t, mod, modSeen, "f-report", "f-globex", "f-acme", "f-pol", "f-x")
		// Every event above has been fanned out: sentinels now queue behind
		// anything an attacker was wrongly given.
		produce(t, a.kafkaAddr,
			binaryMsg("items.reported", "s-x", "item.reported", "x", "", map[string]any{"item_id": "x"}),
			binaryMsg("takedown.events", "s-globex", "takedown.confirmed", "item-g2", "c-globex", map[string]any{"item_id": "item-g2"}),
			binaryMsg("takedown.events", "s-pol", "takedown.confirmed", "item-p2", "c-pol", map[string]any{"item_id": "item-p2"}))
		secWaitIDs(t, mod, modSeen, "s-x", "s-globex", "s-pol")

		secOnly(t, "acme WebSocket", acmeWS, []string{"corr:c-acme", "item:x"}, "f-acme", "f-x", "s-x")
		secOnly(t, "police WebSocket", policeWS, []string{"corr:c-pol"}, "f-pol", "s-pol")
		secOnly(t, "globex WebSocket", globexWS, []string{"corr:c-globex"}, "f-globex", "s-globex")
		secOnlySSE(t, "acme SSE with a forged cursor", acmeSSE, "f-x", "s-x")
	})

	t.Run("no credential in the log", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		out := n.log.String()
		// The capture works: it holds the sign-in and the plain-token warning.
		if !strings.Contains(out, "signed in") || !strings.Contains(out, "principal=mod") || !strings.Contains(out, "globex") {
			t.Fatalf("the log capture missed the sign-in or the plain-token warning:\n%s", out)
		}
		for _, s := range append(n.secrets, longToken) {
			if strings.Contains(out, s) {
				t.Fatalf("the log holds the credential %.24q…", s)
			}
		}
	})
}

// securityNode is a running node with a captured log and the credentials
// that must appear in no log or refusal.
type securityNode struct {
	root    *testing.T // the lifetime of the connections kept across attempts
	a       *Node
	log     *securityLog
	client  *http.Client
	secrets []string
}

// securityLog is a log sink safe for the node and the test to share.
type securityLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *securityLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *securityLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startSecurityNode is startTestNode with every log line captured at debug.
func startSecurityNode(t *testing.T, mutate func(*config.Config)) *securityNode {
	t.Helper()
	n := &securityNode{root: t, log: &securityLog{},
		secrets: []string{modToken, acmeToken, globexToken, policeToken}}
	a := startTestNode(t, nodeSpec{config: mutate, log: slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	n.a = a
	tr := &http.Transport{}
	n.client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return n
}

// postAsync posts a takedown that must be accepted (202, respond-async) and
// returns its correlation ID.
func (n *securityNode) postAsync(t *testing.T, tok, item string) string {
	t.Helper()
	h := jsonHeader(tok)
	h.Set("Prefer", "respond-async")
	resp, b := n.do(t, "POST", "/v1/takedowns", h, `{"item_id":"`+item+`","reason":"test"}`)
	var body struct {
		CorrelationID string `json:"correlation_id"`
	}
	if resp.StatusCode != 202 || resp.Header.Get("Location") == "" || json.Unmarshal([]byte(b), &body) != nil || body.CorrelationID == "" {
		t.Fatalf("takedown: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	return body.CorrelationID
}

// do sends one request and reads the whole answer.
func (n *securityNode) do(t *testing.T, method, path string, hdr http.Header, body string) (*http.Response, string) {
	t.Helper()
	resp, b, err := call(t.Context(), n.client, method, n.a.base()+path, hdr, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// refuse sends a request that must be refused with status as problem+json
// that repeats no credential.
func (n *securityNode) refuse(t *testing.T, method, path string, hdr http.Header, body string, status int) *http.Response {
	t.Helper()
	resp, b := n.do(t, method, path, hdr, body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, status, b)
	}
	checkProblem(t, resp, b, status)
	n.noSecret(t, b)
	return resp
}

func (n *securityNode) noSecret(t *testing.T, s string) {
	t.Helper()
	for _, sec := range n.secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Fatalf("a refusal repeats a credential: %.200s", s)
		}
	}
}

// openSSE opens a stream that must be accepted; it lives as long as life.
func (n *securityNode) openSSE(t, life *testing.T, path string, hdr http.Header) *sseStream {
	t.Helper()
	return openSSEWith(t, life, n.client, n.a.base()+path, hdr)
}

// dial opens a WebSocket that must be accepted; it lives as long as life.
func (n *securityNode) dial(t, life *testing.T, query string, hdr http.Header) *websocket.Conn {
	t.Helper()
	return dialWSWith(t, life, n.a.wsURL(query), hdr)
}

// dialRefused opens a WebSocket the server must close with code, giving a
// reason that repeats no credential.
func (n *securityNode) dialRefused(t *testing.T, query string, hdr http.Header, code websocket.StatusCode) {
	t.Helper()
	c := n.dial(t, t, query, hdr)
	reason := secClosed(t, c, code)
	if reason == "" {
		t.Fatal("a refusal without a reason")
	}
	n.noSecret(t, reason)
}

// released waits until name holds want connections: a closed connection
// gives its slot back once the server has noticed.
func (n *securityNode) released(t *testing.T, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for n.a.auth.Connections(name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d connections, want %d", name, n.a.auth.Connections(name), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func secSend(t *testing.T, c *websocket.Conn, frame string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

// secRead reads one frame. Its context is not the subtest's: a read whose
// context ends closes the connection, and some connections outlive their
// subtest.
func secRead(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	return f
}

// secExpect reads the next frame: it must be typ, answer id, and carry
// code when code is set.
func secExpect(t *testing.T, c *websocket.Conn, typ, id, code string) map[string]any {
	t.Helper()
	f := secRead(t, c)
	if f["type"] != typ || f["id"] != id || (code != "" && f["code"] != code) {
		t.Fatalf("got %.300v, want type %s id %.20s code %q", f, typ, id, code)
	}
	return f
}

// secClosed reads until the server closes c; the close must carry code.
func secClosed(t *testing.T, c *websocket.Conn, code websocket.StatusCode) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err == nil {
		t.Fatalf("a refused connection got a frame: %.300s", b)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("close %v, want %d", err, code)
	}
	return ce.Reason
}

// secEventID is the CloudEvents id of an SSE data line or a WS event frame.
func secEventID(t *testing.T, data []byte) string {
	t.Helper()
	var ce struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(data, &ce); err != nil || ce.ID == "" {
		t.Fatalf("event %s: %v", data, err)
	}
	return ce.ID
}

// secWaitIDs reads s until every id has been seen (in seen, which it
// fills), and returns the last SSE id.
func secWaitIDs(t *testing.T, s *sseStream, seen map[string]bool, ids ...string) string {
	t.Helper()
	var last string
	for !allSeen(seen, ids) {
		ev := s.next(t)
		seen[secEventID(t, []byte(ev["data"]))] = true
		last = ev["id"]
	}
	return last
}

func allSeen(seen map[string]bool, ids []string) bool {
	for _, id := range ids {
		if !seen[id] {
			return false
		}
	}
	return true
}

// secOnly reads c until it has every event of ids; any other frame, event
// or channel fails.
func secOnly(t *testing.T, who string, c *websocket.Conn, channels []string, ids ...string) {
	t.Helper()
	seen := map[string]bool{}
	for !allSeen(seen, ids) {
		f := secRead(t, c)
		ev, _ := json.Marshal(f["event"])
		ch, _ := f["channel"].(string)
		if f["type"] != "event" || !slices.Contains(channels, ch) {
			t.Fatalf("%s got %.300v; it holds only %v", who, f, channels)
		}
		id := secEventID(t, ev)
		if !slices.Contains(ids, id) || seen[id] {
			t.Fatalf("%s got event %s on %s; it may have only %v, once", who, id, ch, ids)
		}
		seen[id] = true
	}
}

// secOnlySSE reads s until it has every event of ids; any other event fails.
func secOnlySSE(t *testing.T, who string, s *sseStream, ids ...string) {
	t.Helper()
	seen := map[string]bool{}
	for !allSeen(seen, ids) {
		ev := s.next(t)
		id := secEventID(t, []byte(ev["data"]))
		if !slices.Contains(ids, id) || seen[id] {
			t.Fatalf("%s got event %s (%s); it may have only %v, once", who, id, ev["event"], ids)
		}
		seen[id] = true
	}
}

// own records in the outcome store that principal asked for the takedown of
// correlation ID id, as the adapter does for a real request.
func own(t *testing.T, a *Node, id, principal string) {
	t.Helper()
	rec := &takedown.Record{CorrelationID: id, Principal: principal, ItemID: "item-1", Status: takedown.StatusPending, CreatedAt: time.Now()}
	if _, err := a.store.Reserve(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

// TestHeldRequestsCountAgainstLimits: a held GET (Prefer: wait) and a held
// POST each take one of the principal's limits.connections slots, and held
// reads have a rate limit; before, 1,500 held GETs passed a limit of 20.
// Each attempt asserts the refusal; the controls show what still passes.
func TestHeldRequestsCountAgainstLimits(t *testing.T) {
	n := startSecurityNode(t, func(c *config.Config) {
		c.ItemSvc.Enabled = false // takedowns stay pending
		c.Limits.Connections = 2
		c.Limits.TakedownBurst = 4
		c.Limits.TakedownRate = 0.01
	})
	a := n.a
	waitReady(t, a)
	corr := n.postAsync(t, policeToken, "item-1")
	waitHdr := func(secs string) http.Header {
		h := bearer(policeToken)
		h.Set("Prefer", "wait="+secs)
		return h
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var held sync.WaitGroup

	attempts := []attempt{
		{"two held reads take the two slots", true, func(t *testing.T) {
			for range 2 {
				held.Go(func() {
					call(ctx, n.client, http.MethodGet, a.base()+"/v1/takedowns/"+corr, headers(policeToken, "Prefer", "wait=50"), "")
				})
			}
			eventually(t, "two held reads", func() bool { return a.takedowns.Held() == 2 })
		}},
		{"a third held read over limits.connections", false, func(t *testing.T) {
			resp, b := n.do(t, "GET", "/v1/takedowns/"+corr, waitHdr("50"), "")
			checkProblem(t, resp, b, 429)
			if resp.Header.Get("Retry-After") == "" || !strings.Contains(b, "too-many-connections") {
				t.Fatalf("a third held read: %v %s", resp.Header, b)
			}
		}},
		{"a held post over limits.connections", false, func(t *testing.T) {
			post := jsonHeader(policeToken)
			post.Set("Prefer", "wait=50")
			n.refuse(t, "POST", "/v1/takedowns", post, `{"item_id":"item-2","reason":"test"}`, 429)
		}},
		{"a read that does not wait needs no slot", true, func(t *testing.T) {
			if resp, b := n.do(t, "GET", "/v1/takedowns/"+corr, bearer(policeToken), ""); resp.StatusCode != 200 {
				t.Fatalf("a plain read: %d %s", resp.StatusCode, b)
			}
			cancel()
			held.Wait()
			eventually(t, "the slots given back", func() bool { return a.auth.Connections("police") == 0 })
		}},
		// Held reads have their own rate: the burst (4) is spent by the two
		// held reads and the refused one; the next passes, the one after is
		// refused.
		{"a held read within the held reads' rate", true, func(t *testing.T) {
			if resp, b := n.do(t, "GET", "/v1/takedowns/"+corr, waitHdr("1"), ""); resp.StatusCode != 200 {
				t.Fatalf("a held read within the rate: %d %s", resp.StatusCode, b)
			}
		}},
		{"a held read over the held reads' rate", false, func(t *testing.T) {
			resp, b := n.do(t, "GET", "/v1/takedowns/"+corr, waitHdr("1"), "")
			checkProblem(t, resp, b, 429)
			if !strings.Contains(b, "rate-limited") {
				t.Fatalf("a held read over the rate: %s", b)
			}
		}},
	}

	runAttempts(t, attempts) // in order: later attempts build on earlier ones
}
