package takedown

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/producers"
)

// dialWS opens a WebSocket to the rig's door.
func (r *rig) dialWS(t *testing.T) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(r.ws.URL, "http"), &websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// readFrame reads one server frame.
func readFrame(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

// answerWith publishes the item service's outcome of cmd through the
// Recorder: an item.removed, then a confirmation.
func (r *rig) confirm(t *testing.T, cmd producers.CloudEvent) {
	ctx := context.Background()
	ch := []string{"corr:" + cmd.CorrelationID}
	for _, ev := range []*hub.Event{
		outcome(TypeRemoved, cmd, `{"item_id":"item-1","container_id":"group-1"}`),
		outcome(TypeConfirmed, cmd, `{"item_id":"item-1","removed_from":["group-1"],"confirmed_at":"2026-11-22T00:00:00Z"}`),
	} {
		if err := r.rec.Publish(ctx, ch, ev); err != nil {
			t.Error(err)
		}
	}
}

// readWSTakedown reads, after a takedown frame's ack, the corr: events and
// the one result frame, and checks their order: the result comes after the
// confirmation's event frame.
func readWSTakedown(t *testing.T, c *websocket.Conn, corr string) map[string]any {
	t.Helper()
	var types []string
	for {
		f := readFrame(t, c)
		switch f["type"] {
		case "event":
			if f["channel"] != "corr:"+corr {
				t.Fatalf("event of another channel: %v", f)
			}
			types = append(types, f["event"].(map[string]any)["type"].(string))
		case "result":
			if len(types) == 0 || types[len(types)-1] != TypeConfirmed {
				t.Fatalf("result %v after events %v: it must follow the outcome's event frame", f, types)
			}
			return f
		default:
			t.Fatalf("frame %v", f)
		}
	}
}

// TestWebSocketAndHTTPJoin: a WebSocket takedown frame and a POST of the
// same principal with the same idempotency key are one takedown, whichever
// comes first: one command, and both are answered with its outcome (the
// WebSocket with the ack, the corr: events and one result frame).
func TestWebSocketAndHTTPJoin(t *testing.T) {
	const body = `{"item_id":"item-1","reason":"x"}`
	frame := `{"type":"takedown","id":"7","item_id":"item-1","reason":"x","idempotency_key":"k"}`
	type answer struct {
		status int
		body   map[string]any
	}
	for _, wsFirst := range []bool{true, false} {
		name := map[bool]string{true: "websocket first", false: "http first"}[wsFirst]
		t.Run(name, func(t *testing.T) {
			r := newRig(t, Config{Timeout: time.Hour})
			r.who.Store(&auth.Principal{Name: "mod", Role: auth.RoleModerator})
			c := r.dialWS(t)
			posted := make(chan answer, 1)
			postJoin := func() {
				go func() {
					resp, m := r.post(t, body, "Idempotency-Key", "k")
					posted <- answer{resp.StatusCode, m}
				}()
				waitFor(t, func() bool { return r.a.Held() == 1 })
			}
			if !wsFirst {
				postJoin()
			}
			if err := c.Write(t.Context(), websocket.MessageText, []byte(frame)); err != nil {
				t.Fatal(err)
			}
			ack := readFrame(t, c)
			corr, _ := ack["correlation_id"].(string)
			if ack["type"] != "ack" || ack["id"] != "7" || corr == "" {
				t.Fatalf("ack %v", ack)
			}
			if wsFirst {
				postJoin()
			}
			tried := r.cmd.tried()
			if len(tried) != 1 || tried[0].CorrelationID != corr {
				t.Fatalf("%d commands (%v), want one of %s", len(tried), tried, corr)
			}
			r.confirm(t, tried[0])
			res := readWSTakedown(t, c, corr)
			if res["id"] != "7" || res["correlation_id"] != corr || res["status"] != "confirmed" {
				t.Fatalf("result %v", res)
			}
			got := <-posted
			if got.status != 200 || got.body["correlation_id"] != corr || got.body["status"] != "confirmed" {
				t.Fatalf("POST answered %d %v, want 200 confirmed for %s", got.status, got.body, corr)
			}
			if n := len(r.cmd.tried()); n != 1 {
				t.Fatalf("%d commands, want 1", n)
			}
		})
	}
}

// TestWebSocketTimeout: without an outcome, the frame's one result is
// timeout after takedown.timeout, and an outcome after it adds no second
// result.
func TestWebSocketTimeout(t *testing.T) {
	r := newRig(t, Config{Timeout: 100 * time.Millisecond})
	r.who.Store(&auth.Principal{Name: "acme", Role: auth.RolePartner})
	c := r.dialWS(t)
	c.Write(t.Context(), websocket.MessageText, []byte(`{"type":"takedown","id":"1","item_id":"item-1","reason":"x"}`))
	ack := readFrame(t, c)
	corr, _ := ack["correlation_id"].(string)
	if ack["type"] != "ack" || corr == "" {
		t.Fatalf("ack %v", ack)
	}
	if res := readFrame(t, c); res["type"] != "result" || res["status"] != "timeout" || res["correlation_id"] != corr {
		t.Fatalf("result %v", res)
	}
	r.confirm(t, r.cmd.tried()[0])
	for _, want := range []string{TypeRemoved, TypeConfirmed} {
		if f := readFrame(t, c); f["type"] != "event" || f["event"].(map[string]any)["type"] != want {
			t.Fatalf("frame %v, want the %s event", f, want)
		}
	}
	c.Write(t.Context(), websocket.MessageText, []byte(`{"type":"ping","id":"p"}`))
	if f := readFrame(t, c); f["type"] != "pong" {
		t.Fatalf("frame %v after the outcome, want only the pong", f)
	}
}
