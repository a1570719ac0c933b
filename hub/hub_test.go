package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestValidateChannel(t *testing.T) {
	tests := []struct {
		name string
		ch   string
		ok   bool
	}{
		{"plain", "reports", true},
		{"keyed", "corr:abc-123", true},
		{"key chars", "item:A.b_c~d-9", true},
		{"empty", "", false},
		{"upper namespace", "Reports", false},
		{"empty key", "item:", false},
		{"two colons", "item:a:b", false},
		{"space", "item:a b", false},
		{"long namespace", strings.Repeat("a", 65), false},
		{"long key", "item:" + strings.Repeat("a", 129), false},
		{"max key", "item:" + strings.Repeat("a", 128), true},
		{"unicode", "item:é", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateChannel(tt.ch)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateChannel(%q) = %v, want ok=%v", tt.ch, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadChannel) {
				t.Fatalf("error %v does not wrap ErrBadChannel", err)
			}
		})
	}
}

func TestCursorRoundTrip(t *testing.T) {
	p := Position{Epoch: "abc123", Offset: 123456789}
	got, err := ParseCursor(p.String())
	if err != nil || got != p {
		t.Fatalf("round trip: %v %v", got, err)
	}
	sc := StreamCursor{"reports": p, "corr:x": {Epoch: "e", Offset: 0}}
	back, err := ParseStreamCursor(sc.Encode())
	if err != nil || len(back) != 2 || back["reports"] != p || back["corr:x"] != sc["corr:x"] {
		t.Fatalf("stream round trip: %v %v", back, err)
	}
	if got, want := sc.Encode(), "Y29ycjp4fGUuMDtyZXBvcnRzfGFiYzEyMy4yMWkzdjk"; got != want {
		t.Fatalf("StreamCursor encodes %q, want %q", got, want)
	}
	for _, bad := range []string{"", "x", "abc.", ".1", "a b.1", "abc.zzzzzzzzzzzzzzzz", strings.Repeat("a", 40) + ".1"} {
		if _, err := ParseCursor(bad); !errors.Is(err, ErrBadCursor) {
			t.Errorf("ParseCursor(%q) = %v, want ErrBadCursor", bad, err)
		}
	}
	for _, bad := range []string{"!!", "eHg", strings.Repeat("A", maxStreamCursorLen+1)} {
		if _, err := ParseStreamCursor(bad); !errors.Is(err, ErrBadCursor) {
			t.Errorf("ParseStreamCursor(%q) = %v, want ErrBadCursor", bad, err)
		}
	}
}

func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"abc.1", "e.0", "x.zz", "", ".", "a.-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseCursor(s)
		if err != nil {
			return
		}
		if q, err := ParseCursor(p.String()); err != nil || q != p {
			t.Fatalf("%q decodes to %v, which does not round trip", s, p)
		}
	})
}

func FuzzParseStreamCursor(f *testing.F) {
	f.Add(StreamCursor{"reports": {Epoch: "ab", Offset: 3}, "item:x": {Epoch: "cd", Offset: 9}}.Encode())
	f.Add("")
	f.Add("cmVwb3J0c3xhYi4z")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseStreamCursor(s)
		if err != nil {
			return
		}
		back, err := ParseStreamCursor(c.Encode())
		if err != nil || len(back) != len(c) {
			t.Fatalf("%q decodes to %v, which does not round trip", s, c)
		}
	})
}

func TestMemoryHistory(t *testing.T) {
	m := NewMemory(MemoryConfig{HistorySize: 3, HistoryTTL: time.Hour})
	defer m.Close()
	ctx := t.Context()
	top := func() Position {
		r, err := m.Read(ctx, "c", nil)
		if err != nil {
			t.Fatal(err)
		}
		return r.Top
	}
	start := top()
	for i := 1; i <= 5; i++ {
		m.Publish(ctx, []string{"c"}, testEvent(i, "t", "", ""))
	}
	tests := []struct {
		name  string
		after Position
		gap   bool
		want  []uint64
	}{
		{"at top", Position{start.Epoch, 5}, false, nil},
		{"covered", Position{start.Epoch, 2}, false, []uint64{3, 4, 5}},
		{"one too old", Position{start.Epoch, 1}, true, nil},
		{"other epoch", Position{"zz", 4}, true, nil},
		{"future", Position{start.Epoch, 9}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := m.Read(ctx, "c", &tt.after)
			if err != nil {
				t.Fatal(err)
			}
			if r.Gap != tt.gap || r.Top.Offset != 5 {
				t.Fatalf("gap=%v top=%v", r.Gap, r.Top)
			}
			var got []uint64
			for _, e := range r.Entries {
				got = append(got, e.Pos.Offset)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("entries %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMemoryExpiry(t *testing.T) {
	m := NewMemory(MemoryConfig{HistorySize: 10, HistoryTTL: time.Minute})
	defer m.Close()
	now := time.Now()
	m.now = func() time.Time { return now }
	ctx := t.Context()
	m.Publish(ctx, []string{"c"}, testEvent(1, "t", "", ""))
	now = now.Add(2 * time.Minute)
	m.Publish(ctx, []string{"c"}, testEvent(2, "t", "", ""))
	r, _ := m.Read(ctx, "c", nil)
	after := Position{r.Top.Epoch, 0}
	if r, _ := m.Read(ctx, "c", &after); !r.Gap {
		t.Fatalf("an expired event still covers the resume: %+v", r)
	}
	after.Offset = 1
	if r, _ := m.Read(ctx, "c", &after); r.Gap || len(r.Entries) != 1 {
		t.Fatalf("want the fresh event: %+v", r)
	}
	// An idle channel with nothing left is forgotten; a new log gets a new
	// epoch, so an old cursor is a gap, never a silent skip.
	now = now.Add(3 * time.Minute)
	m.sweepOnce()
	r2, _ := m.Read(ctx, "c", &after)
	if !r2.Gap || r2.Top.Epoch == r.Top.Epoch {
		t.Fatalf("want a gap on a new epoch: %+v", r2)
	}
}

// TestDelivery runs on both doors: subscribers of a channel receive exactly
// what is published there, in order.
func TestDelivery(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			th := newTestHub(t, Config{}, MemoryConfig{})
			a := tr.open(t, th.srv.URL, "item:1", "")
			b := tr.open(t, th.srv.URL, "item:2", "")
			for i := 1; i <= 20; i++ {
				th.publish(t, i, fmt.Sprintf("item:%d", 1+i%2))
			}
			for i := 2; i <= 20; i += 2 {
				if got := a.next(t); got.N != i {
					t.Fatalf("item:1 got %d, want %d", got.N, i)
				}
			}
			for i := 1; i <= 20; i += 2 {
				if got := b.next(t); got.N != i {
					t.Fatalf("item:2 got %d, want %d", got.N, i)
				}
			}
		})
	}
}

// TestResume runs on both doors: a subscriber that comes back with its
// cursor gets every missed event once, in order; one whose cursor history no
// longer covers gets a gap, then live events.
func TestResume(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			th := newTestHub(t, Config{}, MemoryConfig{HistorySize: 10})
			s := tr.open(t, th.srv.URL, "reports", "")
			for i := 1; i <= 3; i++ {
				th.publish(t, i, "reports")
			}
			for i := 1; i <= 3; i++ {
				if got := s.next(t); got.N != i {
					t.Fatalf("got %d, want %d", got.N, i)
				}
			}
			cur := s.cursor()
			s.close()
			for i := 4; i <= 8; i++ {
				th.publish(t, i, "reports")
			}
			s2 := tr.open(t, th.srv.URL, "reports", cur)
			th.publish(t, 9, "reports")
			for i := 4; i <= 9; i++ {
				if got := s2.next(t); got.Kind != "event" || got.N != i {
					t.Fatalf("after resume got %+v, want event %d", got, i)
				}
			}
			cur = s2.cursor()
			s2.close()

			// Twenty more events overflow the history of ten.
			for i := 10; i <= 29; i++ {
				th.publish(t, i, "reports")
			}
			s3 := tr.open(t, th.srv.URL, "reports", cur)
			if got := s3.next(t); got.Kind != "gap" || (tr.name == "ws" && got.Channel != "reports") {
				t.Fatalf("want a gap, got %+v", got)
			}
			th.publish(t, 30, "reports")
			if got := s3.next(t); got.N != 30 {
				t.Fatalf("after the gap got %+v, want live event 30", got)
			}
		})
	}
}

// TestResumeUnderLoad resumes while events keep coming: no event is lost or
// doubled in the hand-off from history to live delivery.
func TestResumeUnderLoad(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			th := newTestHub(t, Config{ClientQueue: 4096}, MemoryConfig{HistorySize: 5000})
			s := tr.open(t, th.srv.URL, "reports", "")
			th.publish(t, 1, "reports")
			s.next(t)
			cur := s.cursor()
			s.close()
			var wg sync.WaitGroup
			wg.Add(1)
			const total = 2000
			go func() {
				defer wg.Done()
				for i := 2; i <= total; i++ {
					th.Publish(context.Background(), []string{"reports"}, testEvent(i, "item.reported", "item-1", ""))
				}
			}()
			s2 := tr.open(t, th.srv.URL, "reports", cur)
			for i := 2; i <= total; i++ {
				if got := s2.next(t); got.N != i {
					t.Fatalf("got %+v, want %d", got, i)
				}
			}
			wg.Wait()
		})
	}
}

func TestSSEOneIDOverChannels(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{})
	s := openSSE(t, th.srv.URL, "?channel=reports&channel=item:item-1&channel=corr:c1", "")
	if h := s.resp.Header; h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" || h.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("headers %v", h)
	}
	// One event on all three channels is sent once.
	th.publish(t, 1, "reports", "item:item-1", "corr:c1")
	th.publish(t, 2, "reports")
	if got := s.next(t); got.N != 1 {
		t.Fatalf("got %+v", got)
	}
	if got := s.next(t); got.N != 2 {
		t.Fatalf("event 1 sent twice, or 2 lost: %+v", got)
	}
	cur := s.cursor()
	s.close()
	th.publish(t, 3, "item:item-1", "reports")
	th.publish(t, 4, "corr:c1")
	// Resume through the query parameter, as a client that cannot set headers.
	s2 := openSSE(t, th.srv.URL, "?channel=reports&channel=item:item-1&channel=corr:c1&last_event_id="+cur, "")
	// Order holds per channel; across channels a replay has none to keep.
	got := map[int]bool{}
	for range 2 {
		got[s2.next(t).N] = true
	}
	if !got[3] || !got[4] {
		t.Fatalf("resumed %v, want 3 and 4", got)
	}
	th.publish(t, 5, "reports")
	if n := s2.next(t).N; n != 5 {
		t.Fatalf("got %d, want 5", n)
	}
}

func TestSSEBadRequests(t *testing.T) {
	th := newTestHub(t, Config{MaxChannels: 2}, MemoryConfig{})
	for _, q := range []string{"", "?channel=Bad", "?channel=a&channel=b&channel=c", "?channel=a&last_event_id=!!"} {
		resp, err := http.Get(th.srv.URL + "/v1/sse" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%q: status %d %s, want 400 problem+json", q, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}

func TestWSFrames(t *testing.T) {
	th := newTestHub(t, Config{MaxChannels: 2}, MemoryConfig{})
	conn := dialWS(t, th.srv.URL, "")
	if conn.Subprotocol() != Subprotocol {
		t.Fatalf("subprotocol %q", conn.Subprotocol())
	}
	tests := []struct {
		name, frame, wantType, wantCode string
	}{
		{"ping", `{"type":"ping","id":"4"}`, "pong", ""},
		{"unknown type", `{"type":"dance","id":"5"}`, "error", CodeBadRequest},
		{"no type", `{"id":"5"}`, "error", CodeBadRequest},
		{"bad channel", `{"type":"subscribe","id":"6","channel":"NO SPACES"}`, "error", CodeBadRequest},
		{"bad cursor", `{"type":"subscribe","id":"7","channel":"reports","cursor":"!!"}`, "error", CodeBadRequest},
		// The hub knows no commands: the command layer registers them
		// (WSConfig.Frames); without, a takedown is an unknown type.
		{"command without its handler", `{"type":"takedown","id":"8","item_id":"i-9"}`, "error", CodeBadRequest},
		{"unsubscribe unknown", `{"type":"unsubscribe","id":"9","channel":"reports"}`, "error", CodeNotFound},
		{"subscribe", `{"type":"subscribe","id":"10","channel":"a"}`, "ack", ""},
		{"subscribe 2", `{"type":"subscribe","id":"11","channel":"b"}`, "ack", ""},
		{"over the channel limit", `{"type":"subscribe","id":"12","channel":"c"}`, "error", CodeBadRequest},
		{"unsubscribe", `{"type":"unsubscribe","id":"13","channel":"a"}`, "ack", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			writeFrame(t, conn, tt.frame)
			f := readFrame(t, conn)
			if f["type"] != tt.wantType || (tt.wantCode != "" && f["code"] != tt.wantCode) {
				t.Fatalf("got %v, want %s %s", f, tt.wantType, tt.wantCode)
			}
			if f["type"] == "error" && f["message"] == "" {
				t.Fatal("error frame without a message")
			}
		})
	}
}

func TestWSCloseCodes(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{})
	tests := []struct {
		name string
		send func(conn *websocket.Conn) error
		want websocket.StatusCode
	}{
		{"binary", func(c *websocket.Conn) error {
			return c.Write(context.Background(), websocket.MessageBinary, []byte("x"))
		}, websocket.StatusUnsupportedData},
		{"invalid json", func(c *websocket.Conn) error {
			return c.Write(context.Background(), websocket.MessageText, []byte("{nope"))
		}, websocket.StatusInvalidFramePayloadData},
		{"too big", func(c *websocket.Conn) error {
			return c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping","id":"`+strings.Repeat("x", 2000)+`"}`))
		}, websocket.StatusMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dialWS(t, th.srv.URL, "")
			if err := tt.send(conn); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), waitFor)
			defer cancel()
			_, _, err := conn.Read(ctx)
			if got := websocket.CloseStatus(err); got != tt.want {
				t.Fatalf("close status %d (%v), want %d", got, err, tt.want)
			}
		})
	}
	// The hub keeps serving.
	s := subscribeWS(t, th.srv.URL, "reports", "")
	th.publish(t, 1, "reports")
	if s.next(t).N != 1 {
		t.Fatal("no event after bad frames")
	}
}

func TestWSPacking(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{})
	conn := dialWS(t, th.srv.URL, "?pack=1")
	writeFrame(t, conn, `{"type":"subscribe","id":"1","channel":"reports"}`)
	if f := readFrame(t, conn); f["type"] != "ack" {
		t.Fatalf("got %v", f)
	}
	for i := 1; i <= 500; i++ {
		th.publish(t, i, "reports")
	}
	n, batches := 0, 0
	for n < 500 {
		f := readFrame(t, conn)
		switch f["type"] {
		case "batch":
			batches++
			frames := f["frames"].([]any)
			if len(frames) > maxBatchFrames {
				t.Fatalf("batch of %d frames", len(frames))
			}
			for _, fr := range frames {
				n++
				if got := fr.(map[string]any)["event"].(map[string]any)["data"].(map[string]any)["n"].(float64); int(got) != n {
					t.Fatalf("got %v, want %d", got, n)
				}
			}
		case "event":
			n++
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	t.Logf("500 events in %d batches", batches)
}

// smallBufferDialer makes a client whose socket takes little before the
// server's writes block, to stall it for real.
func smallBufferDialer() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return err
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

func TestSlowConsumer(t *testing.T) {
	th := newTestHub(t, Config{ClientQueue: 16}, MemoryConfig{HistorySize: 100})
	u := "ws" + strings.TrimPrefix(th.srv.URL, "http") + "/v1/ws"
	slow, _, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{Subprotocols: []string{Subprotocol}, HTTPClient: smallBufferDialer()})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	writeFrame(t, slow, `{"type":"subscribe","id":"1","channel":"reports"}`)
	if f := readFrame(t, slow); f["type"] != "ack" {
		t.Fatal(f)
	}
	fast := subscribeWS(t, th.srv.URL, "reports", "")
	sse := transports[1].open(t, th.srv.URL, "reports", "")
	// The stalled client reads again once it is counted a slow consumer:
	// what was written, then close 4000.
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), waitFor)
		defer cancel()
		for th.Stats().SlowConsumers == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		for {
			if _, _, err := slow.Read(ctx); err != nil {
				closed <- err
				return
			}
		}
	}()
	payload := strings.Repeat("x", 4000)
	const total = 2000
	// Lockstep with the healthy subscribers: they never fall behind, while
	// the stalled one's socket fills and its queue overflows.
	for i := 1; i <= total; i++ {
		ev := testEvent(i, "item.reported", "item-1", "")
		ev.JSON = []byte(fmt.Sprintf(`{"id":"ev-%d","data":{"n":%d,"pad":%q}}`, i, i, payload))
		if err := th.Publish(t.Context(), []string{"reports"}, ev); err != nil {
			t.Fatal(err)
		}
		if got := fast.next(t); got.N != i {
			t.Fatalf("fast subscriber got %d, want %d", got.N, i)
		}
		if got := sse.next(t); got.N != i {
			t.Fatalf("SSE subscriber got %d, want %d", got.N, i)
		}
	}
	if th.Stats().SlowConsumers != 1 {
		t.Fatalf("%d slow consumers, want 1", th.Stats().SlowConsumers)
	}
	if got := websocket.CloseStatus(<-closed); got != StatusSlowConsumer {
		t.Fatalf("close status %d, want 4000", got)
	}
}

func TestShutdown(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{})
	ws := subscribeWS(t, th.srv.URL, "reports", "")
	sse := openSSE(t, th.srv.URL, "?channel=reports", "")
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- th.Shutdown(ctx) }()
	_, _, err := ws.conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Fatalf("close status %d (%v), want 1001", got, err)
	}
	sse.waitEnded(t)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := th.Clients(); n != 0 {
		t.Fatalf("%d clients left", n)
	}
	// New connections are refused while shutting down.
	resp, err := http.Get(th.srv.URL + "/v1/sse?channel=reports")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d after shutdown", resp.StatusCode)
	}
}

// TestFromOldest runs on both doors: a subscriber that asks for it starts
// with everything the channel's history holds, then goes on live.
func TestFromOldest(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{HistorySize: 3})
	for i := 1; i <= 5; i++ {
		th.publish(t, i, "item:7")
	}
	ws := dialWS(t, th.srv.URL, "")
	writeFrame(t, ws, `{"type":"subscribe","id":"1","channel":"item:7","from":"oldest"}`)
	if f := readFrame(t, ws); f["type"] != "ack" {
		t.Fatal(f)
	}
	sse := openSSE(t, th.srv.URL, "?channel=item:7&from=oldest", "")
	th.publish(t, 6, "item:7")
	wsSub := &wsSub{conn: ws, last: map[string]string{}}
	for _, s := range []sub{wsSub, sse} {
		for want := 3; want <= 6; want++ {
			if got := s.next(t); got.Kind != "event" || got.N != want {
				t.Fatalf("got %+v, want event %d", got, want)
			}
		}
	}
}

// TestSSEResumeRemembersRecentKeys: an event that two channels of a stream
// carry, announced on the second only after the client dropped (a backplane
// without sibling positions), is not sent again on resume: the stream's id
// carries the keys of the newest events it sent.
func TestSSEResumeRemembersRecentKeys(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{})
	s := openSSE(t, th.srv.URL, "?channel=reports&channel=item:item-1", "")
	e := testEvent(1, "item.reported", "item-1", "")
	if err := th.Publish(t.Context(), []string{"reports"}, e); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got.N != 1 {
		t.Fatalf("got %+v", got)
	}
	cur := s.cursor()
	s.close()
	// The same event reaches the stream's other channel late.
	if err := th.Publish(t.Context(), []string{"item:item-1"}, e); err != nil {
		t.Fatal(err)
	}
	th.publish(t, 2, "reports")
	s2 := openSSE(t, th.srv.URL, "?channel=reports&channel=item:item-1", cur)
	if got := s2.next(t); got.N != 2 {
		t.Fatalf("after resume got %+v, want event 2 (event 1 again would be a duplicate)", got)
	}
	// And the id it resumes with next time still covers both channels.
	c, err := ParseStreamCursor(s2.cursor())
	if err != nil || c["item:item-1"].Offset != 1 || c["reports"].Offset != 2 {
		t.Fatalf("cursor %v %v", c, err)
	}
}

// TestMemoryPublishIdempotent: an event Kafka delivers twice is held and
// delivered once; once it left history, it is new again.
func TestMemoryPublishIdempotent(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{HistorySize: 2})
	s := subscribeWS(t, th.srv.URL, "reports", "")
	e1 := testEvent(1, "item.reported", "item-1", "")
	for range 2 {
		if err := th.Publish(t.Context(), []string{"reports"}, e1); err != nil {
			t.Fatal(err)
		}
	}
	th.publish(t, 2, "reports")
	if got := s.next(t); got.N != 1 {
		t.Fatalf("got %+v", got)
	}
	if got := s.next(t); got.N != 2 {
		t.Fatalf("event 1 delivered twice: %+v", got)
	}
	r, _ := th.mem.Read(t.Context(), "reports", &Oldest)
	if len(r.Entries) != 2 || r.Top.Offset != 2 {
		t.Fatalf("history %+v", r)
	}
}

// TestWSPingDropsSilentPeer: a peer that does not answer protocol pings
// (it never reads, so it never sends a pong) is dropped; one that reads
// stays connected across several ping intervals.
func TestWSPingDropsSilentPeer(t *testing.T) {
	mem := NewMemory(MemoryConfig{})
	defer mem.Close()
	h, _ := New(Config{}, mem, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h.WSHandler(WSConfig{PingInterval: 50 * time.Millisecond}))
	defer srv.Close()
	defer h.Shutdown(context.Background())
	u := "ws" + strings.TrimPrefix(srv.URL, "http")
	silent, _, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.CloseNow()
	live, _, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer live.CloseNow()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go live.Read(ctx) // reading answers pings
	deadline := time.Now().Add(waitFor)
	for h.Clients() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d clients: the silent peer was not dropped", h.Clients())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The reading peer survives more ping intervals.
	time.Sleep(200 * time.Millisecond)
	if err := live.Ping(t.Context()); err != nil {
		t.Fatalf("the answering peer was dropped: %v", err)
	}
}

// TestWSRequestFloodWithoutReading: a client that sends pings and never
// reads the pongs ends as a slow consumer; its queue does not grow without
// end.
func TestWSRequestFloodWithoutReading(t *testing.T) {
	th := newTestHub(t, Config{ClientQueue: 4}, MemoryConfig{})
	u := "ws" + strings.TrimPrefix(th.srv.URL, "http") + "/v1/ws"
	c, _, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{Subprotocols: []string{Subprotocol}, HTTPClient: smallBufferDialer()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	ping := []byte(`{"type":"ping","id":"` + strings.Repeat("p", 900) + `"}`)
	deadline := time.Now().Add(waitFor)
	for th.Stats().SlowConsumers == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a client flooding requests without reading was never dropped")
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		err := c.Write(ctx, websocket.MessageText, ping)
		cancel()
		if err != nil {
			break // the server closed the connection
		}
	}
	eventuallyHub(t, func() bool { return th.Stats().SlowConsumers == 1 && th.Clients() == 0 })
}

func eventuallyHub(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKeyHash: the SSE writer's allocation-free hash is FNV-1a of the event
// key, so every node agrees on the keys a stream id carries.
func TestKeyHash(t *testing.T) {
	e := &Event{Source: "/itemsvc", ID: "abc-1"}
	f := fnv.New64a()
	f.Write([]byte(e.key()))
	if e.keyHash() != f.Sum64() {
		t.Fatalf("keyHash %x, FNV-1a %x", e.keyHash(), f.Sum64())
	}
}

// flakyBackplane is a memory backplane whose history reads fail while down
// is set (a Redis that is restarting), and which can tell its listeners
// that announcements were lost (a dropped pub/sub connection).
type flakyBackplane struct {
	*Memory
	down atomic.Bool

	mu      sync.Mutex
	deliver map[string]func(Entry)
}

func (f *flakyBackplane) Read(ctx context.Context, ch string, after *Position) (Replay, error) {
	if f.down.Load() {
		return Replay{}, errors.New("backplane down")
	}
	return f.Memory.Read(ctx, ch, after)
}

func (f *flakyBackplane) Listen(ctx context.Context, ch string, deliver func(Entry)) (func(), error) {
	f.mu.Lock()
	f.deliver[ch] = deliver
	f.mu.Unlock()
	return f.Memory.Listen(ctx, ch, deliver)
}

func (f *flakyBackplane) lose(ch string) {
	f.mu.Lock()
	deliver := f.deliver[ch]
	f.mu.Unlock()
	deliver(Entry{Channel: ch, Resync: true})
}

// TestResyncWaitsOutBackplane: a subscription whose re-read of history
// fails keeps trying instead of ending the client; meanwhile it holds no
// more live entries than the client's queue bound (history has them), and
// once reads work again it delivers every event once, in order.
func TestResyncWaitsOutBackplane(t *testing.T) {
	mem := NewMemory(MemoryConfig{})
	defer mem.Close()
	bp := &flakyBackplane{Memory: mem, deliver: map[string]func(Entry){}}
	const bound = 8
	h, err := New(Config{ClientQueue: bound}, bp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(context.Background())
	c, err := h.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Subscribe(t.Context(), "reports", SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []int
	collect := func(n int) {
		t.Helper()
		deadline := time.After(waitFor)
		for len(got) < n {
			select {
			case <-readyOf(c):
				items := c.drain()
				for _, it := range items {
					if it.Kind == itemEvent {
						var ev struct{ Data struct{ N int } }
						json.Unmarshal(it.delivery.Event.JSON, &ev)
						got = append(got, ev.Data.N)
					}
				}
				c.release(items)
			case <-c.Done():
				t.Fatalf("client ended: %v", c.Err())
			case <-deadline:
				t.Fatalf("got %v, want %d events", got, n)
			}
		}
	}
	pub := func(from, to int) {
		for i := from; i <= to; i++ {
			if err := h.Publish(t.Context(), []string{"reports"}, testEvent(i, "item.reported", "item-1", "")); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub(1, 3)
	collect(3)
	bp.down.Store(true)
	bp.lose("reports")
	pub(4, 100)
	eventuallyHub(t, func() bool { return h.Stats().BackplaneErrors >= 3 || c.Err() != nil })
	c.mu.Lock()
	held := len(c.subs["reports"].pending)
	c.mu.Unlock()
	if held > bound {
		t.Fatalf("%d live entries held while history cannot be read, bound %d", held, bound)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("client ended while the backplane was down: %v", err)
	}
	bp.down.Store(false)
	pub(101, 110)
	collect(110)
	if fmt.Sprint(got) != fmt.Sprint(seqInts(1, 110)) {
		t.Fatalf("got %v", got)
	}
}

func seqInts(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// smallSendBufferListener is a listener whose connections have a small
// socket send buffer (accepted sockets inherit it), so what the server
// has written but the client not read stays small.
func smallSendBufferListener(t *testing.T) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 16<<10)
		})
		return err
	}}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestSlowConsumerGetsCloseFrame: a WebSocket client falls behind while
// the server is in the middle of a long write (here, the replay of a whole
// history), and its queue overflows. The server does not write the rest of
// that batch first: the client, reading slowly again, gets close 4000 after
// the frames already on their way, well before the batch's write timeout
// would have dropped it without a close frame (1006).
func TestSlowConsumerGetsCloseFrame(t *testing.T) {
	mem := NewMemory(MemoryConfig{HistorySize: 1000})
	defer mem.Close()
	h, err := New(Config{ClientQueue: 4}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h.WSHandler(WSConfig{PingInterval: time.Hour, WriteTimeout: 2 * time.Second}))
	srv.Listener.Close()
	srv.Listener = smallSendBufferListener(t)
	srv.Start()
	defer srv.Close()
	defer h.Shutdown(context.Background())
	pad := strings.Repeat("x", 8000)
	publish := func(i int) {
		ev := testEvent(i, "item.reported", "item-1", "")
		ev.JSON = []byte(fmt.Sprintf(`{"id":"ev-%d","data":{"n":%d,"pad":%q}}`, i, i, pad))
		if err := h.Publish(t.Context(), []string{"reports"}, ev); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 1000; i++ {
		publish(i)
	}
	u := "ws" + strings.TrimPrefix(srv.URL, "http")
	conn, _, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{Subprotocols: []string{Subprotocol}, HTTPClient: smallBufferDialer()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	// The ack and the whole history are queued together: once the ack is
	// read, the writer holds all of it in one batch.
	writeFrame(t, conn, `{"type":"subscribe","id":"1","channel":"reports","from":"oldest"}`)
	if f := readFrame(t, conn); f["type"] != "ack" {
		t.Fatalf("got %v", f)
	}
	for i := 1001; h.Stats().SlowConsumers == 0; i++ {
		if i > 2000 {
			t.Fatal("the client never overflowed its queue")
		}
		publish(i)
	}
	// The client reads again, slowly.
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	frames := 0
	for {
		_, _, err := conn.Read(ctx)
		if err != nil {
			if got := websocket.CloseStatus(err); got != StatusSlowConsumer {
				t.Fatalf("after %d frames: close status %d (%v), want 4000", frames, got, err)
			}
			break
		}
		frames++
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("%d frames before the close frame", frames)
}

// TestSlowConsumerSSEEnds: an SSE client that stopped reading while the
// server was in the middle of a long write overflows its queue. Its stream
// ends and the client is let go, though the write timeout would let that
// write wait an hour.
func TestSlowConsumerSSEEnds(t *testing.T) {
	mem := NewMemory(MemoryConfig{HistorySize: 1000})
	defer mem.Close()
	h, err := New(Config{ClientQueue: 4}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h.SSEHandler(SSEConfig{Heartbeat: time.Hour, WriteTimeout: time.Hour}))
	srv.Listener.Close()
	srv.Listener = smallSendBufferListener(t)
	srv.Start()
	defer srv.Close()
	defer h.Shutdown(context.Background())
	pad := strings.Repeat("x", 8000)
	publish := func(i int) {
		ev := testEvent(i, "item.reported", "item-1", "")
		ev.JSON = []byte(fmt.Sprintf(`{"id":"ev-%d","data":{"n":%d,"pad":%q}}`, i, i, pad))
		if err := h.Publish(t.Context(), []string{"reports"}, ev); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 1000; i++ {
		publish(i)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"?channel=reports&from=oldest", nil)
	resp, err := smallBufferDialer().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The stream's whole history is one write, which the client does not
	// read.
	for i := 1001; h.Stats().SlowConsumers == 0; i++ {
		if i > 2000 {
			t.Fatal("the client never overflowed its queue")
		}
		publish(i)
	}
	eventuallyHub(t, func() bool { return h.Clients() == 0 })
}

// scriptedBackplane answers reads from a script, one reply per read, each
// read waiting until the test releases it; it hands the test the channel's
// deliver func.
type scriptedBackplane struct {
	reads   chan Replay
	deliver chan func(Entry)
}

func (s *scriptedBackplane) Publish(context.Context, []string, *Event) error { return nil }

func (s *scriptedBackplane) Read(ctx context.Context, _ string, _ *Position) (Replay, error) {
	select {
	case r := <-s.reads:
		return r, nil
	case <-ctx.Done():
		return Replay{}, ctx.Err()
	}
}

func (s *scriptedBackplane) Listen(_ context.Context, _ string, deliver func(Entry)) (func(), error) {
	s.deliver <- deliver
	return func() {}, nil
}

// TestResyncForgetsGoneEpoch: while a re-read is in flight, an entry of the
// subscription's epoch arrives; the read finds that epoch gone. The
// subscriber gets one gap and the new epoch from its start, once: the
// stale entry does not take it back to the old epoch for a second gap and
// a second copy of the new epoch.
func TestResyncForgetsGoneEpoch(t *testing.T) {
	bp := &scriptedBackplane{reads: make(chan Replay), deliver: make(chan func(Entry), 1)}
	h, err := New(Config{}, bp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(context.Background())
	c, err := h.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	entry := func(epoch string, off uint64) Entry {
		return Entry{Channel: "reports", Pos: Position{Epoch: epoch, Offset: off}, Event: testEvent(int(off), "item.reported", "item-1", "")}
	}
	go func() { bp.reads <- Replay{Top: Position{Epoch: "old", Offset: 10}} }()
	if _, err := c.Subscribe(t.Context(), "reports", SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	deliver := <-bp.deliver
	deliver(Entry{Channel: "reports", Resync: true}) // announcements lost
	deliver(entry("old", 11))                        // waits for the re-read
	bp.reads <- Replay{Top: Position{Epoch: "new", Offset: 2}, Gap: true}
	bp.reads <- Replay{Top: Position{Epoch: "new", Offset: 2}, Entries: []Entry{entry("new", 1), entry("new", 2)}}
	deliver(entry("new", 3))
	var got []string
	deadline := time.After(waitFor)
	for len(got) == 0 || got[len(got)-1] != "new.3" {
		if len(got) > 20 {
			t.Fatalf("got %v ...", got)
		}
		select {
		case <-readyOf(c):
			for _, it := range c.drain() {
				switch it.Kind {
				case itemGap:
					got = append(got, "gap")
				case itemEvent:
					got = append(got, it.delivery.Pos.String())
				}
			}
		case bp.reads <- Replay{Top: Position{Epoch: "new", Offset: 3}, Gap: true}:
			// A read the subscription should not have made.
			got = append(got, "read")
		case <-deadline:
			t.Fatalf("got %v", got)
		}
	}
	if want := "[gap new.1 new.2 new.3]"; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

// TestFollowHearsResyncGaps: a follower (Hub.Follow) hears of a gap that a
// re-read after lost announcements finds, as a door's client gets a gap
// notice: in a new epoch, and in the same epoch when history no longer
// covers what was missed.
func TestFollowHearsResyncGaps(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply Replay
		want  string
	}{
		{"new epoch", Replay{Top: Position{Epoch: "new", Offset: 1}, Gap: true}, "[e10 gap]"},
		{"same epoch", Replay{Top: Position{Epoch: "old", Offset: 30}, Gap: true}, "[e10 gap]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bp := &scriptedBackplane{reads: make(chan Replay, 4), deliver: make(chan func(Entry), 1)}
			h, err := New(Config{}, bp, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Shutdown(context.Background())
			var mu sync.Mutex
			var got []string
			heard := make(chan struct{}, 16)
			stop, _, err := h.Follow(t.Context(), "reports", nil, func(ev *Event) {
				mu.Lock()
				if ev == nil {
					got = append(got, "gap")
				} else {
					got = append(got, ev.ID)
				}
				mu.Unlock()
				heard <- struct{}{}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			deliver := <-bp.deliver
			// A live follower reads no history: the first entry it hears
			// says where it stands.
			ev := testEvent(10, "item.reported", "item-1", "")
			ev.ID = "e10"
			deliver(Entry{Channel: "reports", Pos: Position{Epoch: "old", Offset: 10}, Event: ev})
			<-heard
			bp.reads <- tc.reply
			bp.reads <- Replay{Top: tc.reply.Top} // the new epoch read from its start: nothing yet
			deliver(Entry{Channel: "reports", Resync: true})
			select {
			case <-heard:
			case <-time.After(waitFor):
			}
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(got) != tc.want {
				t.Fatalf("heard %v, want %s", got, tc.want)
			}
		})
	}
}

// TestMemoryPublishIdempotentPastSmallLog: a log of a few entries finds a
// repeated event by searching its ring; past smallLog entries it keeps a
// key map, made from what the ring holds; either way a repeat is not
// appended while history holds it, and an event that left history is new
// again.
func TestMemoryPublishIdempotentPastSmallLog(t *testing.T) {
	const size = 3 * smallLog
	mem := NewMemory(MemoryConfig{HistorySize: size})
	defer mem.Close()
	ctx := t.Context()
	ev := func(n int) *Event { return testEvent(n, "item.reported", "item-1", "") }
	top := func() uint64 {
		r, err := mem.Read(ctx, "c", nil)
		if err != nil {
			t.Fatal(err)
		}
		return r.Top.Offset
	}
	for n := 1; n <= size+5; n++ {
		if err := mem.Publish(ctx, []string{"c"}, ev(n)); err != nil {
			t.Fatal(err)
		}
		// Every event still held, published again: no new entry.
		for _, again := range []int{1, n / 2, n} {
			if again < 1 || again <= n-size {
				continue
			}
			before := top()
			if err := mem.Publish(ctx, []string{"c"}, ev(again)); err != nil {
				t.Fatal(err)
			}
			if after := top(); after != before {
				t.Fatalf("after %d events, event %d again moved the top %d -> %d", n, again, before, after)
			}
		}
	}
	// Event 1 left history (size+5 events): it is new again.
	before := top()
	if err := mem.Publish(ctx, []string{"c"}, ev(1)); err != nil {
		t.Fatal(err)
	}
	if after := top(); after != before+1 {
		t.Fatalf("an event that left history was not appended: top %d -> %d", before, after)
	}
}

// readCounter is a backplane that counts its history reads, and loses
// the announcement of the event whose ID is drop.
// newReadCountingHub is a hub on a memory backplane that counts its
// history reads; both are closed when the test ends.
func newReadCountingHub(t *testing.T) (*Hub, *readCounter) {
	t.Helper()
	mem := NewMemory(MemoryConfig{})
	t.Cleanup(func() { mem.Close() })
	bp := &readCounter{Backplane: mem}
	h, err := New(Config{}, bp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	return h, bp
}

type readCounter struct {
	Backplane
	reads atomic.Int64
	drop  atomic.Value // string
}

func (r *readCounter) Listen(ctx context.Context, ch string, deliver func(Entry)) (func(), error) {
	return r.Backplane.Listen(ctx, ch, func(e Entry) {
		if d, _ := r.drop.Load().(string); e.Event != nil && e.Event.ID == d {
			return
		}
		deliver(e)
	})
}

func (r *readCounter) Read(ctx context.Context, ch string, after *Position) (Replay, error) {
	r.reads.Add(1)
	return r.Backplane.Read(ctx, ch, after)
}

// TestFollowLiveReadsNoHistory: a follower that starts live (Hub.Follow
// with no cursor) reads no history at its start: on a shared backplane
// that read was a round trip per synchronous command. It still hears every
// event published after Follow returned, in order, even on a channel that
// had events before (the first one it hears says where it stands); a hole
// after that is still filled from history, in order.
func TestFollowLiveReadsNoHistory(t *testing.T) {
	h, bp := newReadCountingHub(t)
	ctx := t.Context()
	for i := 1; i <= 3; i++ { // before the follow: not heard
		if err := h.Publish(ctx, []string{"corr:c1"}, testEvent(i, "takedown.requested", "item-1", "c1")); err != nil {
			t.Fatal(err)
		}
	}
	heard := make(chan string, 16)
	stop, _, err := h.Follow(ctx, "corr:c1", nil, func(ev *Event) {
		if ev == nil {
			heard <- "gap"
			return
		}
		heard <- ev.ID
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if n := bp.reads.Load(); n != 0 {
		t.Fatalf("a live follow read history %d times, want 0", n)
	}
	next := func() string {
		select {
		case id := <-heard:
			return id
		case <-time.After(waitFor):
			return "nothing"
		}
	}
	for i := 4; i <= 5; i++ {
		if err := h.Publish(ctx, []string{"corr:c1"}, testEvent(i, "takedown.confirmed", "item-1", "c1")); err != nil {
			t.Fatal(err)
		}
		if got, want := next(), fmt.Sprintf("ev-%d", i); got != want {
			t.Fatalf("heard %s, want %s", got, want)
		}
	}
	if n := bp.reads.Load(); n != 0 {
		t.Fatalf("the follow read history %d times for events in order, want 0", n)
	}
	// A hole: event 6 is appended without an announcement (as when one is
	// lost), then 7 is announced; the follower reads 6 from history first.
	bp.drop.Store("ev-6")
	if err := h.Publish(ctx, []string{"corr:c1"}, testEvent(6, "takedown.confirmed", "item-1", "c1")); err != nil {
		t.Fatal(err)
	}
	if err := h.Publish(ctx, []string{"corr:c1"}, testEvent(7, "takedown.confirmed", "item-1", "c1")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ev-6", "ev-7"} {
		if got := next(); got != want {
			t.Fatalf("heard %s, want %s", got, want)
		}
	}
	if bp.reads.Load() == 0 {
		t.Fatal("the hole was not filled from history")
	}
}

// newMemoryHub is a hub on a memory backplane of its own, closed when tb
// ends, that logs nothing.
func newMemoryHub(tb testing.TB) *Hub {
	tb.Helper()
	mem := NewMemory(MemoryConfig{})
	tb.Cleanup(func() { mem.Close() })
	h, err := New(Config{}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	return h
}
