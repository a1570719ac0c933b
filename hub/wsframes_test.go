package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// TestWSLongRequestIDs: a client's id is echoed only up to
// MaxRequestIDBytes; a frame with a longer id gets an error frame that does
// not echo it, and is not acted on.
func TestWSLongRequestIDs(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{})
	conn := dialWS(t, th.srv.URL, "")
	fits := `"` + strings.Repeat("i", MaxRequestIDBytes-2) + `"`
	long := `"` + strings.Repeat("i", MaxRequestIDBytes-1) + `"`
	writeFrame(t, conn, `{"type":"ping","id":`+fits+`}`)
	if f := readFrame(t, conn); f["type"] != "pong" || `"`+f["id"].(string)+`"` != fits {
		t.Fatalf("an id of %d bytes: got %v", len(fits), f)
	}
	for _, frame := range []string{
		`{"type":"ping","id":` + long + `}`,
		`{"type":"subscribe","id":` + long + `,"channel":"reports"}`,
		`{"type":"takedown","id":` + long + `,"item_id":"i-1","reason":"r"}`,
		`{"type":"ping","id":{"k":"` + strings.Repeat("o", MaxRequestIDBytes) + `"}}`,
	} {
		writeFrame(t, conn, frame)
		f := readFrame(t, conn)
		if f["type"] != "error" || f["code"] != CodeBadRequest || f["id"] != nil ||
			!strings.Contains(f["message"].(string), fmt.Sprint(MaxRequestIDBytes)) {
			t.Fatalf("%.60s…: got %.200v, want an error frame without the id", frame, f)
		}
	}
	if n := th.Stats().Subscriptions; n != 0 {
		t.Fatalf("%d subscriptions from frames with a long id", n)
	}
}

// newBareHub is a hub over a memory backplane, shut down after the test's
// later cleanups (its connections) have run.
func newBareHub(t testing.TB) *Hub {
	t.Helper()
	mem := NewMemory(MemoryConfig{})
	h, err := New(Config{}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		mem.Close()
	})
	return h
}

func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestWSStrictFrames: the hub's frames are read strictly (exact member
// names, no duplicates, no unknown members), refused with an error frame
// naming the member, and the connection stays open. A duplicate "type"
// never reaches a registered handler, whichever of the two would pick it.
func TestWSStrictFrames(t *testing.T) {
	h := newBareHub(t)
	var handled atomic.Int64
	srv := newServer(t, h.WSHandler(WSConfig{Frames: map[string]FrameHandler{
		"takedown": func(_ context.Context, s *Session, raw []byte) {
			handled.Add(1)
			s.Send(map[string]string{"type": "ack", "id": "handled"})
		},
	}}))
	conn := dialWS(t, srv, "")
	tests := []struct {
		name, frame string
		id          any    // the id the error frame echoes
		member      string // the member the message names
	}{
		{"duplicate type, subscribe then ping", `{"type":"subscribe","type":"ping","id":"1"}`, nil, `"type"`},
		{"duplicate type, takedown then subscribe", `{"type":"takedown","type":"subscribe","id":"2","channel":"reports"}`, nil, `"type"`},
		{"duplicate type, subscribe then takedown", `{"type":"subscribe","id":"3","channel":"reports","type":"takedown"}`, nil, `"type"`},
		{"duplicate channel", `{"type":"subscribe","id":"4","channel":"reports","channel":"takedowns"}`, nil, `"channel"`},
		{"duplicate id", `{"type":"ping","id":"5","id":"6"}`, nil, `"id"`},
		{"unknown member", `{"type":"ping","id":"7","extra":true}`, "7", `"extra"`},
		{"member in another case", `{"type":"subscribe","id":"8","Channel":"reports"}`, "8", `"Channel"`},
		{"member of another frame", `{"type":"unsubscribe","id":"9","channel":"reports","cursor":"x"}`, "9", `"cursor"`},
		{"wrong type of member", `{"type":"subscribe","id":"10","channel":5}`, "10", `"channel"`},
		{"type not a string", `{"type":["ping"],"id":"11"}`, nil, `"type"`},
		{"bad from", `{"type":"subscribe","id":"12","channel":"reports","from":"newest"}`, "12", `"from"`},
		{"not an object", `["ping"]`, nil, "object"},
		{"type in another case", `{"TYPE":"ping","id":"13"}`, "13", `"type"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			writeFrame(t, conn, tt.frame)
			f := readFrame(t, conn)
			msg, _ := f["message"].(string)
			if f["type"] != "error" || f["code"] != CodeBadRequest || f["id"] != tt.id || !strings.Contains(msg, tt.member) {
				t.Fatalf("got %v; want an error frame bad_request, id %v, naming %s", f, tt.id, tt.member)
			}
		})
	}
	if n := handled.Load(); n != 0 {
		t.Fatalf("the takedown handler ran %d times", n)
	}
	if n := h.Stats().Subscriptions; n != 0 {
		t.Fatalf("%d subscriptions from refused frames", n)
	}
	// The connection stays open, the frames of the contract still work, and
	// a well-formed frame of a registered type reaches its handler.
	for _, ok := range []struct{ frame, typ string }{
		{`{"type":"ping","id":"p"}`, "pong"},
		{` {"id":"s","channel":"reports","cursor":"","from":"oldest","type":"subscribe"}`, "ack"},
		{`{"type":"unsubscribe","id":"u","channel":"reports"}`, "ack"},
		{`{"type":"takedown","id":"t","item_id":"i-1","reason":"r"}`, "ack"},
	} {
		writeFrame(t, conn, ok.frame)
		if f := readFrame(t, conn); f["type"] != ok.typ {
			t.Fatalf("%s: got %v, want %s", ok.frame, f, ok.typ)
		}
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("the takedown handler ran %d times, want 1", n)
	}
}

// pipeNet serves HTTP over net.Pipe, so a test runs both doors, with real
// clients, inside a synctest bubble.

// FuzzWSFrame feeds the door's frame handling arbitrary client frames: it
// never panics, every answer is one JSON object, and no answer echoes an
// id over MaxRequestIDBytes.
func FuzzWSFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping","id":"1"}`,
		`{"type":"subscribe","id":"2","channel":"reports","cursor":"abc.1","from":"oldest"}`,
		`{"type":"unsubscribe","id":3,"channel":"item:x"}`,
		`{"type":"subscribe","type":"ping"}`,
		`{"type":"takedown","id":{"a":[1,2]},"item_id":"i"}`,
		`{"TYPE":"ping","id":null}`,
		`[{"type":"ping"}]`,
		`{"type":"ping","id":"` + strings.Repeat("x", 200) + `"}`,
	} {
		f.Add([]byte(s))
	}
	h := newBareHub(f)
	wh := &wsHandler{h: h}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if !utf8.Valid(frame) || !json.Valid(frame) {
			return // the read loop closes the connection first
		}
		c, err := h.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wh.handle(t.Context(), &Session{Ctx: t.Context(), Client: c}, frame)
		for _, it := range c.drain() {
			if it.Kind != itemFrame {
				continue
			}
			var answer struct {
				Type string          `json:"type"`
				ID   json.RawMessage `json:"id"`
			}
			if err := json.Unmarshal(it.Raw, &answer); err != nil || answer.Type == "" {
				t.Fatalf("answer %s to %q: %v", it.Raw, frame, err)
			}
			if len(answer.ID) > MaxRequestIDBytes {
				t.Fatalf("answer %s echoes an id of %d bytes", it.Raw, len(answer.ID))
			}
		}
	})
}

// TestWSClosesAfterAnswers: a frame that ends the connection (invalid JSON,
// invalid UTF-8, binary) is closed with its code only after the answers to
// every frame before it.
func TestWSClosesAfterAnswers(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{})
	tests := []struct {
		name string
		typ  websocket.MessageType
		last string
		want websocket.StatusCode
	}{
		{"invalid JSON", websocket.MessageText, "{nope", websocket.StatusInvalidFramePayloadData},
		{"invalid UTF-8", websocket.MessageText, "{\"type\":\"ping\",\"id\":\"\xff\xfe\"}", websocket.StatusInvalidFramePayloadData},
		{"invalid UTF-8 in a member name", websocket.MessageText, "{\"typ\xc3\":\"ping\"}", websocket.StatusInvalidFramePayloadData},
		{"binary", websocket.MessageBinary, `{"type":"ping"}`, websocket.StatusUnsupportedData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dialWS(t, th.srv.URL, "")
			const pings = 20
			for i := range pings {
				writeFrame(t, conn, fmt.Sprintf(`{"type":"ping","id":%d}`, i))
			}
			if err := conn.Write(t.Context(), tt.typ, []byte(tt.last)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), waitFor)
			defer cancel()
			for i := 0; ; i++ {
				_, b, err := conn.Read(ctx)
				if err != nil {
					if i != pings || websocket.CloseStatus(err) != tt.want {
						t.Fatalf("after %d pongs: %v; want %d pongs, then close %d", i, err, pings, tt.want)
					}
					break
				}
				var f map[string]any
				if json.Unmarshal(b, &f) != nil || f["type"] != "pong" || f["id"] != float64(i) {
					t.Fatalf("frame %d: %s, want pong %d", i, b, i)
				}
			}
		})
	}
}

// countingGuard admits everyone, counts admissions, and records the
// expiry of the tokens it knows.
type countingGuard struct {
	admitted atomic.Int64
	ttl      map[string]time.Duration // token -> credential lifetime
	expiry   atomic.Int64             // the last expiry set, unix nanoseconds
}

func (g *countingGuard) Admit(r *http.Request) (context.Context, func(), error) {
	g.admitted.Add(1)
	ctx := r.Context()
	if d, ok := g.ttl[r.URL.Query().Get("access_token")]; ok {
		at := time.Now().Add(d)
		g.expiry.Store(at.UnixNano())
		ctx = WithExpiry(ctx, at)
	}
	return ctx, func() {}, nil
}

func (g *countingGuard) Allow(context.Context, string) error { return nil }

// TestWSSubprotocolRequired: an upgrade that does not offer switchboard.v1
// is refused with 400 problem+json naming it, before the Guard is asked;
// one that offers it among others gets it.
func TestWSSubprotocolRequired(t *testing.T) {
	h := newBareHub(t)
	g := &countingGuard{}
	srv := newServer(t, h.WSHandler(WSConfig{Guard: g}))
	u := "ws" + strings.TrimPrefix(srv, "http")
	for _, offer := range [][]string{nil, {"chat"}, {"switchboard.v2", "Switchboard.v1x"}} {
		conn, resp, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{Subprotocols: offer})
		if err == nil {
			conn.CloseNow()
			t.Fatalf("offering %q: upgraded", offer)
		}
		if resp == nil || resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("offering %q: %v, want 400 problem+json", offer, resp)
		}
		var p struct{ Type, Detail string }
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || p.Type != ProblemBadRequest.URI() || !strings.Contains(p.Detail, Subprotocol) {
			t.Fatalf("offering %q: problem %+v (%v)", offer, p, err)
		}
	}
	if n := g.admitted.Load(); n != 0 {
		t.Fatalf("the Guard admitted %d upgrades without the subprotocol", n)
	}
	conn, _, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{Subprotocols: []string{"chat", Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if conn.Subprotocol() != Subprotocol {
		t.Fatalf("selected %q", conn.Subprotocol())
	}
	// A request that is no upgrade is left to the WebSocket library.
	resp, err := http.Get(srv)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusBadRequest {
		t.Fatalf("a plain GET got %d, the subprotocol refusal", resp.StatusCode)
	}
}
