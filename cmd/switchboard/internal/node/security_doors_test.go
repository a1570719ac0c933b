package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
)

// TestSecurityAttemptsDoors runs the attacks on the hub's doors against one
// real node, over real sockets: a client that makes the node queue for it
// and never reads, frames that end a connection with answers still
// queued, frames that are not UTF-8, upgrades without the subprotocol,
// frames whose members are duplicated, unknown or spelt otherwise, and
// connections that outlive their session. Each attempt asserts the exact
// refusal; the controls next to them show the legitimate use still works.
func TestSecurityAttemptsDoors(t *testing.T) {
	const sessionTTL = 3 * time.Second
	n := startSecurityNode(t, func(c *config.Config) {
		c.Auth.SessionTTL = sessionTTL
	})
	a := n.a
	own(t, a, "c-acme", "acme")
	waitReady(t, a)

	idOf := func(n int) string { return strings.Repeat("i", n) }
	attempts := []attempt{
		// Queues and echoed ids.
		{"pings with 60 KB ids, never read", false, func(t *testing.T) {
			c := n.dialStalled(t, bearer(modToken))
			const pings = 100
			for i := range pings {
				secSend(t, c, `{"type":"ping","id":"`+idOf(60<<10)+fmt.Sprint(i)+`"}`)
			}
			// Read at last: each answer is a small error frame that does not
			// echo the id, and the connection is still open.
			total := 0
			for range pings {
				_, b, err := c.Read(t.Context())
				if err != nil {
					t.Fatalf("after %d bytes of answers: %v", total, err)
				}
				total += len(b)
				var f map[string]any
				if json.Unmarshal(b, &f) != nil || f["type"] != "error" || f["code"] != hub.CodeBadRequest || f["id"] != nil ||
					!strings.Contains(f["message"].(string), fmt.Sprint(hub.MaxRequestIDBytes)) {
					t.Fatalf("answer %.200s, want an error frame without the id", b)
				}
			}
			if total > pings*256 {
				t.Fatalf("%d bytes of answers to %d pings, want small error frames", total, pings)
			}
			secSend(t, c, `{"type":"ping","id":"after"}`)
			secExpect(t, c, "pong", "after", "")
			c.Close(websocket.StatusNormalClosure, "")
			n.released(t, "mod", 0)
		}},
		{"an id of 128 bytes is echoed", true, func(t *testing.T) {
			c := n.dial(t, t, "", bearer(modToken))
			id := idOf(hub.MaxRequestIDBytes - 2) // and its quotes
			secSend(t, c, `{"type":"ping","id":"`+id+`"}`)
			secExpect(t, c, "pong", id, "")
			c.Close(websocket.StatusNormalClosure, "")
			n.released(t, "mod", 0)
		}},
		{"large events to a WebSocket that never reads", false, func(t *testing.T) {
			slow := n.dialStalled(t, bearer(modToken))
			secSend(t, slow, `{"type":"subscribe","id":"s","channel":"reports"}`)
			secExpect(t, slow, "ack", "s", "")
			live := n.openSSE(t, t, "/v1/sse?channel=reports", bearer(modToken))
			before := a.hub.Stats().SlowConsumers
			dropped := func() bool { return a.hub.Stats().SlowConsumers > before }
			// Once it is dropped, the stalled client reads again: what was
			// on its way, then the close (4000; 1006 if its socket stayed
			// full past the 1 s the close gets, as docs/asyncapi.yaml says).
			closed := make(chan error, 1)
			go func() {
				for !dropped() {
					time.Sleep(time.Millisecond)
				}
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				for {
					if _, _, err := slow.Read(ctx); err != nil {
						closed <- err
						return
					}
				}
			}()
			// 40 KB reports, 8 at a time, in step with a reader that keeps
			// up: 1 MiB queued for the stalled one is about 26 of them
			// beyond what its socket holds (a few MB on loopback); the
			// frame bound alone would have let 1024 (40 MB) wait.
			pad := strings.Repeat("p", 40<<10)
			sent := 0
			for !dropped() {
				if sent >= 600 {
					t.Fatalf("%d reports of 40 KB (%d MB) and the stalled client is still on", sent, sent*40>>10)
				}
				var msgs []kafka.Message
				var ids []string
				for range 8 {
					id := fmt.Sprintf("big-%d", sent)
					sent++
					ids = append(ids, id)
					msgs = append(msgs, binaryMsg("items.reported", id, "item.reported", "item-big", "", map[string]any{"item_id": "item-big", "pad": pad}))
				}
				produce(t, a.kafkaAddr, msgs...)
				secWaitIDs(t, live, map[string]bool{}, ids...)
			}
			select {
			case err := <-closed:
				var ce websocket.CloseError
				if errors.As(err, &ce) && ce.Code != hub.StatusSlowConsumer {
					t.Fatalf("close %v, want 4000", err)
				}
			case <-time.After(waitFor):
				t.Fatal("the dropped client's connection did not end")
			}
			t.Logf("dropped after %d reports of 40 KB", sent)
			live.body.Close()
			n.released(t, "mod", 0)
		}},

		// Frames that end a connection.
		{"20 pings then invalid JSON", false, func(t *testing.T) {
			n.pingsThen(t, websocket.MessageText, "{nope", websocket.StatusInvalidFramePayloadData, "invalid JSON")
		}},
		{"a text frame that is not UTF-8", false, func(t *testing.T) {
			n.pingsThen(t, websocket.MessageText, "{\"type\":\"ping\",\"id\":\"\xc0\xaf\"}", websocket.StatusInvalidFramePayloadData, "invalid UTF-8")
		}},
		{"20 pings then a binary frame", false, func(t *testing.T) {
			n.pingsThen(t, websocket.MessageBinary, `{"type":"ping"}`, websocket.StatusUnsupportedData, "binary frames are not supported")
		}},

		// The subprotocol.
		{"upgrade without a subprotocol", false, func(t *testing.T) {
			n.upgradeRefused(t, nil)
		}},
		{"upgrade offering only another subprotocol", false, func(t *testing.T) {
			n.upgradeRefused(t, []string{"switchboard.v2", "chat"})
		}},
		{"upgrade offering switchboard.v1 among others", true, func(t *testing.T) {
			c, _, err := websocket.Dial(t.Context(), n.a.wsURL(""), &websocket.DialOptions{Subprotocols: []string{"chat", hub.Subprotocol}, HTTPHeader: bearer(modToken)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if c.Subprotocol() != hub.Subprotocol {
				t.Fatalf("selected %q", c.Subprotocol())
			}
			c.Close(websocket.StatusNormalClosure, "")
			n.released(t, "mod", 0)
		}},

		// Strict frames.
		{"duplicate type: subscribe, then ping", false, func(t *testing.T) {
			n.frameRefused(t, acmeToken, `{"type":"subscribe","id":"d1","channel":"corr:c-acme","type":"ping"}`, nil, `"type"`)
		}},
		{"a takedown behind a duplicate type, either order", false, func(t *testing.T) {
			n.frameRefused(t, acmeToken, `{"type":"subscribe","id":"d2","channel":"item:x","type":"takedown","item_id":"item-1","reason":"test"}`, nil, `"type"`)
			n.frameRefused(t, acmeToken, `{"type":"takedown","id":"d3","item_id":"item-1","reason":"test","type":"subscribe","channel":"item:x"}`, nil, `"type"`)
		}},
		{"duplicate channel", false, func(t *testing.T) {
			n.frameRefused(t, acmeToken, `{"type":"subscribe","id":"d4","channel":"corr:c-acme","channel":"reports"}`, nil, `"channel"`)
		}},
		{"unknown member in a subscribe", false, func(t *testing.T) {
			n.frameRefused(t, modToken, `{"type":"subscribe","id":"u1","channel":"reports","chanel":"takedowns"}`, "u1", `"chanel"`)
		}},
		{"member name in another case", false, func(t *testing.T) {
			n.frameRefused(t, modToken, `{"type":"subscribe","id":"u2","CHANNEL":"reports"}`, "u2", `"CHANNEL"`)
		}},
		{"a takedown frame with a 200-byte id", false, func(t *testing.T) {
			n.frameRefused(t, acmeToken, `{"type":"takedown","id":"`+idOf(200)+`","item_id":"item-1","reason":"test"}`, nil, "128")
		}},
		{"strict frames of every type", true, func(t *testing.T) {
			c := n.dial(t, t, "", bearer(acmeToken))
			secSend(t, c, ` {"channel":"corr:c-acme","id":"s","type":"subscribe"} `)
			secExpect(t, c, "ack", "s", "")
			secSend(t, c, `{"type":"unsubscribe","id":"u","channel":"corr:c-acme"}`)
			secExpect(t, c, "ack", "u", "")
			secSend(t, c, `{"type":"ping","id":"p"}`)
			secExpect(t, c, "pong", "p", "")
			c.Close(websocket.StatusNormalClosure, "")
			n.released(t, "acme", 0)
		}},

		// Credential expiry.
		{"a session that expires with a WebSocket and an SSE stream open", false, func(t *testing.T) {
			resp, _ := n.do(t, "POST", "/v1/session", bearer(modToken), "")
			if resp.StatusCode != 200 || len(resp.Cookies()) != 1 {
				t.Fatalf("sign in: %d", resp.StatusCode)
			}
			cookie := resp.Cookies()[0].Value
			n.secrets = append(n.secrets, cookie)
			withCookie := http.Header{"Cookie": {auth.SessionCookie + "=" + cookie}}
			ws := n.dial(t, t, "", withCookie)
			secSend(t, ws, `{"type":"subscribe","id":"e","channel":"reports"}`)
			secExpect(t, ws, "ack", "e", "")
			sse := n.openSSE(t, t, "/v1/sse?channel=reports", withCookie)
			token := n.dial(t, t, "", bearer(modToken)) // no expiry
			if got := a.auth.Connections("mod"); got != 3 {
				t.Fatalf("mod holds %d connections, want 3", got)
			}

			reason := secClosed(t, ws, websocket.StatusPolicyViolation)
			if reason != "expired" {
				t.Fatalf("close reason %q, want expired", reason)
			}
			if ev := sse.next(t); ev["event"] != "expired" || ev["id"] != "" {
				t.Fatalf("SSE %v, want event: expired without an id", ev)
			}
			select {
			case ev, open := <-sse.events:
				if open {
					t.Fatalf("SSE %v after event: expired, want the end", ev)
				}
			case <-time.After(waitFor):
				t.Fatal("the stream did not end after event: expired")
			}
			n.released(t, "mod", 1)
			// The token's connection goes on; the cookie is refused once
			// its last second is over (it names its expiry in seconds).
			secSend(t, token, `{"type":"ping","id":"still"}`)
			secExpect(t, token, "pong", "still", "")
			time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
			n.refuse(t, "GET", "/v1/sse?channel=reports", withCookie, "", 401)
			token.Close(websocket.StatusNormalClosure, "")
			n.released(t, "mod", 0)
		}},
	}

	runAttempts(t, attempts) // in order: later attempts build on earlier ones
}

// dialStalled opens a WebSocket whose socket takes little before the
// server's writes block, for a client that does not read.
func (n *securityNode) dialStalled(t *testing.T, hdr http.Header) *websocket.Conn {
	t.Helper()
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return err
	}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	c, resp, err := websocket.Dial(t.Context(), n.a.wsURL(""), &websocket.DialOptions{
		Subprotocols: []string{hub.Subprotocol}, HTTPHeader: hdr, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// pingsThen sends 20 pings and, without reading, a last frame that ends the
// connection: the 20 pongs must come first, then the close with code and
// reason.
func (n *securityNode) pingsThen(t *testing.T, typ websocket.MessageType, last string, code websocket.StatusCode, reason string) {
	t.Helper()
	c := n.dial(t, t, "", bearer(modToken))
	for i := range 20 {
		secSend(t, c, fmt.Sprintf(`{"type":"ping","id":"%d"}`, i))
	}
	if err := c.Write(t.Context(), typ, []byte(last)); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		secExpect(t, c, "pong", fmt.Sprint(i), "")
	}
	if got := secClosed(t, c, code); got != reason {
		t.Fatalf("close reason %q, want %q", got, reason)
	}
	n.released(t, "mod", 0)
}

// upgradeRefused offers subprotocols (or none) with a valid token: the
// upgrade must be refused with 400 problem+json naming switchboard.v1,
// and take no connection slot.
func (n *securityNode) upgradeRefused(t *testing.T, subprotocols []string) {
	t.Helper()
	c, resp, err := websocket.Dial(t.Context(), n.a.wsURL(""), &websocket.DialOptions{Subprotocols: subprotocols, HTTPHeader: bearer(modToken)})
	if err == nil {
		c.CloseNow()
		t.Fatalf("offering %q: upgraded", subprotocols)
	}
	if resp == nil || resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("offering %q: %v (%v), want 400 problem+json", subprotocols, resp, err)
	}
	b, _ := io.ReadAll(resp.Body)
	checkProblem(t, resp, string(b), http.StatusBadRequest)
	var p struct {
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(b, &p) != nil || p.Status != 400 || !strings.Contains(p.Detail, hub.Subprotocol) {
		t.Fatalf("offering %q: problem %s, want one naming %s", subprotocols, b, hub.Subprotocol)
	}
	n.noSecret(t, string(b))
	if got := n.a.auth.Connections("mod"); got != 0 {
		t.Fatalf("a refused upgrade holds %d connections", got)
	}
}

// frameRefused sends frame on a new connection of tok's principal: the
// answer must be an error frame bad_request answering id (none when nil)
// whose message names member; nothing else comes of it, and the connection
// stays open.
func (n *securityNode) frameRefused(t *testing.T, tok, frame string, id any, member string) {
	t.Helper()
	c := n.dial(t, t, "", bearer(tok))
	secSend(t, c, frame)
	f := secRead(t, c)
	msg, _ := f["message"].(string)
	if f["type"] != "error" || f["code"] != hub.CodeBadRequest || f["id"] != id || !strings.Contains(msg, member) {
		t.Fatalf("got %.300v; want an error frame bad_request answering %v and naming %s", f, id, member)
	}
	// No ack, event or result follows: the next frame answers the next
	// request.
	secSend(t, c, `{"type":"ping","id":"next"}`)
	secExpect(t, c, "pong", "next", "")
	c.Close(websocket.StatusNormalClosure, "")
	name := map[string]string{modToken: "mod", acmeToken: "acme"}[tok]
	n.released(t, name, 0)
}
