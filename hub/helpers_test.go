package hub

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor is how long a test waits for something that should happen at once;
// it is a deadline against hangs, never a pass/fail bound on speed.
const waitFor = 10 * time.Second

type testHub struct {
	*Hub
	mem *Memory
	srv *httptest.Server
}

func newTestHub(t *testing.T, hcfg Config, mcfg MemoryConfig) *testHub {
	t.Helper()
	return newTestHubOn(t, hcfg, mcfg, nil)
}

// newTestHubOn is newTestHub whose server listens on what wrap makes of its
// listener, when wrap is not nil.
func newTestHubOn(t *testing.T, hcfg Config, mcfg MemoryConfig, wrap func(net.Listener) net.Listener) *testHub {
	t.Helper()
	mem := NewMemory(mcfg)
	h, err := New(hcfg, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/sse", h.SSEHandler(SSEConfig{Heartbeat: time.Hour}))
	mux.Handle("/v1/ws", h.WSHandler(WSConfig{PingInterval: time.Hour, MaxMessageBytes: 1024}))
	srv := httptest.NewUnstartedServer(mux)
	if wrap != nil {
		srv.Listener = wrap(srv.Listener)
	}
	srv.Start()
	th := &testHub{Hub: h, mem: mem, srv: srv}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		srv.Close()
		mem.Close()
	})
	return th
}

// publish publishes event n of item to channels.
func (th *testHub) publish(t *testing.T, n int, channels ...string) *Event {
	t.Helper()
	ev := testEvent(n, "item.reported", "item-1", "")
	if err := th.Publish(t.Context(), channels, ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func testEvent(n int, typ, subject, corr string) *Event {
	id := fmt.Sprintf("ev-%d", n)
	js := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/test","type":%q,"subject":%q,"data":{"n":%d}}`, id, typ, subject, n)
	return &Event{ID: id, Source: "/test", Type: typ, Subject: subject, CorrelationID: corr, JSON: []byte(js)}
}

// received is one event as a client of either door saw it.
type received struct {
	Kind    string // "event" or "gap"
	Channel string
	Cursor  string
	ID      string // CloudEvent id
	N       int
}

// sub is a subscriber of either door, for tests that run on both.
type sub interface {
	next(t *testing.T) received
	cursor() string // what to resume with
	close()
}

type wsSub struct {
	conn   *websocket.Conn
	ctx    context.Context
	last   map[string]string
	frames chan map[string]any
}

func dialWS(t *testing.T, base, query string) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/ws" + query
	conn, _, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

func readFrame(t *testing.T, conn *websocket.Conn) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	typ, b, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got a binary message")
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	return m
}

func writeFrame(t *testing.T, conn *websocket.Conn, s string) {
	t.Helper()
	if err := conn.Write(t.Context(), websocket.MessageText, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

// subscribeWS subscribes on a new connection and waits for the ack.
func subscribeWS(t *testing.T, base string, channel string, cursor string) *wsSub {
	t.Helper()
	conn := dialWS(t, base, "")
	f := fmt.Sprintf(`{"type":"subscribe","id":"s1","channel":%q,"cursor":%q}`, channel, cursor)
	writeFrame(t, conn, f)
	ack := readFrame(t, conn)
	if ack["type"] != "ack" || ack["id"] != "s1" {
		t.Fatalf("want ack, got %v", ack)
	}
	return &wsSub{conn: conn, last: map[string]string{channel: ack["cursor"].(string)}}
}

func (s *wsSub) next(t *testing.T) received {
	t.Helper()
	f := readFrame(t, s.conn)
	switch f["type"] {
	case "event":
		ev := f["event"].(map[string]any)
		ch := f["channel"].(string)
		s.last[ch] = f["cursor"].(string)
		return received{Kind: "event", Channel: ch, Cursor: f["cursor"].(string), ID: ev["id"].(string), N: int(ev["data"].(map[string]any)["n"].(float64))}
	case "gap":
		return received{Kind: "gap", Channel: f["channel"].(string)}
	}
	t.Fatalf("unexpected frame %v", f)
	return received{}
}

func (s *wsSub) cursor() string {
	for _, c := range s.last {
		return c
	}
	return ""
}

func (s *wsSub) close() { s.conn.Close(websocket.StatusNormalClosure, "") }

// sseEvent is one parsed SSE event.
type sseEvent struct {
	ID, Event, Data string
}

type sseSub struct {
	resp   *http.Response
	events chan sseEvent
	lastID string
}

// openSSE opens a stream and parses it in the background.
func openSSE(t *testing.T, base, query, lastID string) *sseSub {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v1/sse"+query, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	s := &sseSub{resp: resp, events: make(chan sseEvent, 1024), lastID: lastID}
	go parseSSE(resp.Body, s.events)
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

// parseSSE follows the EventSource parsing rules closely enough for tests:
// an id-only block updates the last id but dispatches nothing.
func parseSSE(r io.Reader, out chan<- sseEvent) {
	defer close(out)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var ev sseEvent
	var hasData bool
	var id string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if hasData {
				ev.ID = id
				out <- ev
			} else if id != "" {
				out <- sseEvent{ID: id} // id-only: moves Last-Event-ID
			}
			ev, hasData = sseEvent{}, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimPrefix(v, " ")
		switch k {
		case "id":
			id = v
		case "event":
			ev.Event = v
		case "data":
			ev.Data, hasData = v, true
		}
	}
}

func (s *sseSub) next(t *testing.T) received {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.ID != "" {
				s.lastID = ev.ID
			}
			if ev.Event == "" && ev.Data == "" {
				continue
			}
			if ev.Event == "gap" {
				var g struct{ Channel string }
				json.Unmarshal([]byte(ev.Data), &g)
				return received{Kind: "gap", Channel: g.Channel, Cursor: ev.ID}
			}
			var ce struct {
				ID   string
				Data struct{ N int }
			}
			if err := json.Unmarshal([]byte(ev.Data), &ce); err != nil {
				t.Fatalf("data %q: %v", ev.Data, err)
			}
			return received{Kind: "event", Cursor: ev.ID, ID: ce.ID, N: ce.Data.N}
		case <-timer.C:
			t.Fatal("no SSE event in time")
		}
	}
}

func (s *sseSub) cursor() string { return s.lastID }
func (s *sseSub) close()         { s.resp.Body.Close() }

// waitEnded waits for the stream to end (the server closed it).
func (s *sseSub) waitEnded(t *testing.T) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-s.events:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatal("stream did not end")
		}
	}
}

// transports runs body once per door.
var transports = []struct {
	name string
	open func(t *testing.T, base, channel, cursor string) sub
}{
	{"ws", func(t *testing.T, base, channel, cursor string) sub { return subscribeWS(t, base, channel, cursor) }},
	{"sse", func(t *testing.T, base, channel, cursor string) sub {
		s := openSSE(t, base, "?channel="+channel, cursor)
		// The first block is the id where the stream starts.
		select {
		case ev := <-s.events:
			s.lastID = ev.ID
		case <-time.After(waitFor):
			t.Fatal("no initial id")
		}
		return s
	}},
}

// readies holds the channel readyOf gave each client.
var readies sync.Map // *Client -> chan struct{}

// readyOf returns a channel signalled whenever c has queued items (and
// once at first, for what is already queued): the tests' writer loop.
func readyOf(c *Client) <-chan struct{} {
	if ch, ok := readies.Load(c); ok {
		return ch.(chan struct{})
	}
	ch := make(chan struct{}, 1)
	readies.Store(c, ch)
	c.setNotify(func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	ch <- struct{}{}
	return ch
}
