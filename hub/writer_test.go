package hub

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub/internal/cork"
)

// countingListener counts the writes on every connection it accepts, and
// their sizes: what reaches write(2).
type countingListener struct {
	net.Listener
	mu    sync.Mutex
	sizes []int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, l: l}, nil
}

// writes returns the sizes of the writes since the last call.
func (l *countingListener) writes() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sizes
	l.sizes = nil
	return s
}

type countingConn struct {
	net.Conn
	l *countingListener
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.sizes = append(c.l.sizes, len(p))
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

// newCountingHub is newTestHub behind a countingListener.
func newCountingHub(t *testing.T) (*testHub, *countingListener) {
	t.Helper()
	var cl *countingListener
	th := newTestHubOn(t, Config{}, MemoryConfig{}, func(l net.Listener) net.Listener {
		cl = &countingListener{Listener: l}
		return cl
	})
	return th, cl
}

// publishSized publishes n events of about size bytes each to channel.
func publishSized(t *testing.T, th *testHub, channel string, n, size int) {
	t.Helper()
	pad := strings.Repeat("x", size)
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("ev-%d", i)
		js := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/test","type":"item.reported","data":{"n":%d,"pad":%q}}`, id, i, pad)
		if err := th.Publish(t.Context(), []string{channel}, &Event{ID: id, Source: "/test", Type: "item.reported", JSON: []byte(js)}); err != nil {
			t.Fatal(err)
		}
	}
}

// eventN returns the data.n of a WebSocket event frame.
func eventN(t *testing.T, f map[string]any) int {
	t.Helper()
	if f["type"] != "event" {
		t.Fatalf("want an event, got %v", f)
	}
	return int(f["event"].(map[string]any)["data"].(map[string]any)["n"].(float64))
}

// TestCoalescedWrites queues frames while the writer is idle (a resume
// from the oldest event queues the ack and the whole history at once) and
// checks they leave in one write(2): as one WebSocket message each, as one
// packed message, and as one SSE write after the response head.
func TestCoalescedWrites(t *testing.T) {
	const n = 50
	t.Run("ws", func(t *testing.T) {
		th, cl := newCountingHub(t)
		publishSized(t, th, "reports", n, 100)
		conn := dialWS(t, th.srv.URL, "")
		cl.writes()
		w0 := th.Stats().Writes
		writeFrame(t, conn, `{"type":"subscribe","id":"1","channel":"reports","from":"oldest"}`)
		if f := readFrame(t, conn); f["type"] != "ack" {
			t.Fatalf("want the ack, got %v", f)
		}
		for i := 1; i <= n; i++ {
			if got := eventN(t, readFrame(t, conn)); got != i {
				t.Fatalf("message %d carries event %d", i, got)
			}
		}
		if got := cl.writes(); len(got) != 1 {
			t.Fatalf("%d messages left in writes of %v bytes, want one write", n+1, got)
		}
		if got := th.Stats().Writes - w0; got != 1 {
			t.Fatalf("Stats.Writes counted %d, want 1", got)
		}
	})
	t.Run("ws packed", func(t *testing.T) {
		th, cl := newCountingHub(t)
		publishSized(t, th, "reports", n, 100)
		conn := dialWS(t, th.srv.URL, "?pack=1")
		cl.writes()
		writeFrame(t, conn, `{"type":"subscribe","id":"1","channel":"reports","from":"oldest"}`)
		f := readFrame(t, conn)
		frames, _ := f["frames"].([]any)
		if f["type"] != "batch" || len(frames) != n+1 {
			t.Fatalf("want one batch of %d frames, got %v", n+1, f)
		}
		if got := cl.writes(); len(got) != 1 {
			t.Fatalf("writes of %v bytes, want one write", got)
		}
	})
	t.Run("sse", func(t *testing.T) {
		th, cl := newCountingHub(t)
		publishSized(t, th, "reports", n, 100)
		cl.writes()
		s := openSSE(t, th.srv.URL, "?channel=reports&from=oldest", "")
		<-s.events // the id the stream starts at
		for i := 1; i <= n; i++ {
			if got := s.next(t); got.N != i {
				t.Fatalf("event %d is %d", i, got.N)
			}
		}
		// The response head with the first id, then the events.
		if got := cl.writes(); len(got) != 2 {
			t.Fatalf("writes of %v bytes, want the head and one write", got)
		}
	})
}

// TestCorkBound writes a batch several times the cork's bound: it leaves in
// several writes, none much over the bound, with every event in order.
func TestCorkBound(t *testing.T) {
	const n, size = 300, 900 // about 4 bounds
	check := func(t *testing.T, sizes []int) {
		t.Helper()
		total := 0
		for _, s := range sizes {
			total += s
			if s > cork.Bound+4<<10 {
				t.Fatalf("a write of %d bytes, over the bound %d and a frame", s, cork.Bound)
			}
		}
		if len(sizes) < total/(cork.Bound+4<<10)+1 || len(sizes) < 3 {
			t.Fatalf("%d bytes in %d writes %v", total, len(sizes), sizes)
		}
		t.Logf("%d bytes in writes of %v", total, sizes)
	}
	t.Run("ws", func(t *testing.T) {
		th, cl := newCountingHub(t)
		publishSized(t, th, "reports", n, size)
		conn := dialWS(t, th.srv.URL, "")
		conn.SetReadLimit(1 << 20)
		cl.writes()
		writeFrame(t, conn, `{"type":"subscribe","id":"1","channel":"reports","from":"oldest"}`)
		readFrame(t, conn) // the ack
		for i := 1; i <= n; i++ {
			if got := eventN(t, readFrame(t, conn)); got != i {
				t.Fatalf("message %d carries event %d", i, got)
			}
		}
		check(t, cl.writes())
	})
	t.Run("sse", func(t *testing.T) {
		th, cl := newCountingHub(t)
		publishSized(t, th, "reports", n, size)
		cl.writes()
		s := openSSE(t, th.srv.URL, "?channel=reports&from=oldest", "")
		<-s.events
		for i := 1; i <= n; i++ {
			if got := s.next(t); got.N != i {
				t.Fatalf("event %d is %d", i, got.N)
			}
		}
		check(t, cl.writes()[1:]) // after the head
	})
}

// writers counts the goroutines running a writer.
func writers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	sc := bufio.NewScanner(strings.NewReader(string(buf)))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "hub.(*writer).run(") {
			n++
		}
	}
	return n
}

// TestIdleConnectionHoldsNoWriter feeds a WebSocket and an SSE stream
// steadily, so their writers linger, then lets them idle: the writers
// exit, and the next event starts a new one.
func TestIdleConnectionHoldsNoWriter(t *testing.T) {
	th, _ := newCountingHub(t)
	ws := subscribeWS(t, th.srv.URL, "reports", "")
	sse := transports[1].open(t, th.srv.URL, "reports", "")
	for i := 1; i <= 5; i++ {
		th.publish(t, i, "reports")
		if got := ws.next(t); got.N != i {
			t.Fatalf("ws got %d, want %d", got.N, i)
		}
		if got := sse.next(t); got.N != i {
			t.Fatalf("sse got %d, want %d", got.N, i)
		}
	}
	deadline := time.Now().Add(waitFor)
	for writers() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d writers still run on idle connections", writers())
		}
		time.Sleep(50 * time.Millisecond)
	}
	th.publish(t, 6, "reports")
	if got := ws.next(t); got.N != 6 {
		t.Fatalf("ws got %d after idling, want 6", got.N)
	}
	if got := sse.next(t); got.N != 6 {
		t.Fatalf("sse got %d after idling, want 6", got.N)
	}
}
