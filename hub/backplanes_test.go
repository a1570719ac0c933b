package hub_test

// Behaviours of the hub's doors over both backplanes, with real sockets:
// the memory backplane, and the Redis one on a redis-server of the test's
// own that it stops and starts again.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// patience bounds each wait: a deadline against hangs, never a pass/fail
// bound on speed. A Redis restart takes go-redis a few seconds of back-off.
const patience = 60 * time.Second

// node is one hub with its doors on an httptest server.
type node struct {
	*hub.Hub
	url string
}

func startNode(t *testing.T, bp hub.Backplane) *node {
	t.Helper()
	h, err := hub.New(hub.Config{}, bp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/sse", h.SSEHandler(hub.SSEConfig{Heartbeat: time.Hour}))
	mux.Handle("/v1/ws", h.WSHandler(hub.WSConfig{PingInterval: time.Hour}))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		srv.Close()
	})
	return &node{Hub: h, url: srv.URL}
}

// seqEvent is event n of the sequence the tests count: its data is {"n":n}.
func seqEvent(n int) *hub.Event {
	id := fmt.Sprintf("seq-%d", n)
	js := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/test","type":"item.reported","data":{"n":%d}}`, id, n)
	return &hub.Event{ID: id, Source: "/test", Type: "item.reported", JSON: []byte(js)}
}

// gapMark stands for a gap notice among the sequence numbers a peer saw.
const gapMark = 0

// peer is a subscriber of one channel over a real socket, WebSocket or SSE,
// that records what it receives.
type peer struct {
	name string

	mu     sync.Mutex
	got    []int  // sequence numbers, gapMark for a gap
	cursor string // what to resume with
	ended  error  // why the connection ended; nil while it is open

	stop func()
}

func (p *peer) add(n int, cursor string) {
	p.mu.Lock()
	p.got = append(p.got, n)
	if cursor != "" {
		p.cursor = cursor
	}
	p.mu.Unlock()
}

func (p *peer) at(cursor string) {
	p.mu.Lock()
	p.cursor = cursor
	p.mu.Unlock()
}

func (p *peer) end(err error) {
	p.mu.Lock()
	if p.ended == nil {
		p.ended = err
	}
	p.mu.Unlock()
}

func (p *peer) snapshot() (got []int, cursor string, ended error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.got...), p.cursor, p.ended
}

// events returns the sequence numbers seen, gaps left out.
func (p *peer) events() []int {
	got, _, _ := p.snapshot()
	out := got[:0]
	for _, n := range got {
		if n != gapMark {
			out = append(out, n)
		}
	}
	return out
}

func (p *peer) String() string { return p.name }

// open subscribes a peer of door ("ws" or "sse") to channel, resuming
// after cursor when it is not empty. Like a real client, it tries again
// while the node answers that the backplane is unavailable.
func open(t *testing.T, n *node, door, channel, cursor string) *peer {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		p, retry, err := tryOpen(t, n, door, channel, cursor)
		if err == nil {
			t.Cleanup(p.stop)
			return p
		}
		if !retry || time.Now().After(deadline) {
			t.Fatalf("%s subscribe %s: %v", door, channel, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tryOpen(t *testing.T, n *node, door, channel, cursor string) (p *peer, retry bool, err error) {
	p = &peer{name: door + " " + channel}
	ctx, cancel := context.WithCancel(context.Background())
	if door == "ws" {
		u := "ws" + strings.TrimPrefix(n.url, "http") + "/v1/ws"
		conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}})
		if err != nil {
			cancel()
			return nil, false, err
		}
		conn.SetReadLimit(1 << 20)
		sub, _ := json.Marshal(map[string]string{"type": "subscribe", "id": "s", "channel": channel, "cursor": cursor})
		rctx, rcancel := context.WithTimeout(ctx, patience)
		defer rcancel()
		var f wsFrame
		err = conn.Write(rctx, websocket.MessageText, sub)
		if err == nil {
			err = readWS(rctx, conn, &f)
		}
		if err != nil || f.Type != "ack" {
			conn.CloseNow()
			cancel()
			if err == nil {
				err = fmt.Errorf("answer %+v", f)
			}
			return nil, f.Code == hub.CodeUnavailable, err
		}
		p.cursor = f.Cursor
		done := make(chan struct{})
		p.stop = func() { cancel(); conn.CloseNow(); <-done }
		go func() {
			defer close(done)
			for {
				var f wsFrame
				if err := readWS(ctx, conn, &f); err != nil {
					p.end(err)
					return
				}
				switch f.Type {
				case "event":
					p.add(f.Event.Data.N, f.Cursor)
				case "gap":
					p.add(gapMark, "")
				}
			}
		}()
		return p, false, nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.url+"/v1/sse?channel="+channel, nil)
	if cursor != "" {
		req.Header.Set("Last-Event-ID", cursor)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, false, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode == http.StatusServiceUnavailable, fmt.Errorf("status %d", resp.StatusCode)
	}
	done := make(chan struct{})
	p.stop = func() { cancel(); resp.Body.Close(); <-done }
	first := make(chan struct{})
	go func() {
		defer close(done)
		readSSE(p, bufio.NewScanner(resp.Body), first)
	}()
	// The first block is the id where the stream starts.
	select {
	case <-first:
	case <-time.After(patience):
		p.stop()
		return nil, false, fmt.Errorf("no first id")
	}
	return p, false, nil
}

// wsFrame is what the tests read of a server frame.
type wsFrame struct {
	Type   string
	Cursor string
	Code   string
	Event  struct {
		Data struct{ N int }
	}
}

func readWS(ctx context.Context, conn *websocket.Conn, f *wsFrame) error {
	_, b, err := conn.Read(ctx)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, f)
}

// readSSE parses a stream as EventSource does, closely enough for tests:
// an id takes effect when its block ends.
func readSSE(p *peer, sc *bufio.Scanner, first chan struct{}) {
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var id, typ, data string
	for sc.Scan() {
		line := sc.Text()
		if line != "" {
			if !strings.HasPrefix(line, ":") {
				k, v, _ := strings.Cut(line, ":")
				v = strings.TrimPrefix(v, " ")
				switch k {
				case "id":
					id = v
				case "event":
					typ = v
				case "data":
					data = v
				}
			}
			continue
		}
		switch {
		case first != nil:
			p.at(id) // where the stream starts
			close(first)
			first = nil
		case typ == "gap":
			p.add(gapMark, id)
		case data != "":
			var ce struct{ Data struct{ N int } }
			if err := json.Unmarshal([]byte(data), &ce); err != nil {
				p.end(fmt.Errorf("data %q: %w", data, err))
				return
			}
			p.add(ce.Data.N, id)
		case id != "":
			p.at(id) // id only: moves Last-Event-ID
		}
		typ, data = "", ""
	}
	p.end(fmt.Errorf("stream ended: %v", sc.Err()))
}

// waitUntil polls cond until it holds, failing the test after patience.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seq returns from, from+1, ..., to.
func seq(from, to int) []int {
	var out []int
	for n := from; n <= to; n++ {
		out = append(out, n)
	}
	return out
}

// TestRedisRestartKeepsSubscribers: the Redis of the backplane stops while
// WebSocket and SSE subscribers are connected, and comes back empty. No
// subscriber is ended: the re-reads that fail while go-redis reconnects are
// tried again. Every event published after the restart, including those a
// publisher retried through the outage (as the Kafka consumer does), reaches
// every subscriber exactly once, after a gap notice for the new epoch.
func TestRedisRestartKeepsSubscribers(t *testing.T) {
	rs := redistest.StartOwn(t)
	bus, err := redisbus.Open(t.Context(), rs.URL(), redisbus.Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	n := startNode(t, bus)
	const perDoor = 25
	var peers []*peer
	for i := 0; i < perDoor; i++ {
		peers = append(peers, open(t, n, "ws", "reports", ""), open(t, n, "sse", "reports", ""))
	}
	publish := func(ctx context.Context, i int) error {
		return n.Publish(ctx, []string{"reports"}, seqEvent(i))
	}
	for i := 1; i <= 10; i++ {
		if err := publish(t.Context(), i); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range peers {
		waitUntil(t, p.name+" got 10 events", func() bool { return len(p.events()) == 10 })
	}

	rs.Stop(t)
	// A publisher that retries each event until the backplane takes it, as
	// the Kafka consumer does with the record it holds.
	const total = 60
	var failures sync.WaitGroup
	failures.Add(1)
	pubDone := make(chan error, 1)
	go func() {
		failed := 0
		for i := 11; i <= total; i++ {
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := publish(ctx, i)
				cancel()
				if err == nil {
					break
				}
				if failed++; failed == 40 {
					failures.Done()
				}
				if failed > 100000 {
					pubDone <- err
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		pubDone <- nil
	}()
	// Enough failed dials that go-redis backs off dialling when Redis is
	// back, as after a real outage.
	failures.Wait()
	rs.Start(t)
	select {
	case err := <-pubDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(patience):
		t.Fatal("the publisher never got through")
	}
	want := seq(1, total)
	for _, p := range peers {
		waitUntil(t, fmt.Sprintf("%s got %d events or ended", p.name, total), func() bool {
			_, _, ended := p.snapshot()
			return ended != nil || len(p.events()) >= total
		})
	}
	ended := 0
	for _, p := range peers {
		got, _, err := p.snapshot()
		if err != nil {
			ended++
			t.Errorf("%s ended: %v (after %d events)", p.name, err, len(p.events()))
			continue
		}
		if ev := p.events(); fmt.Sprint(ev) != fmt.Sprint(want) {
			t.Errorf("%s got %v, want every event once, in order: %v", p.name, ev, want)
		}
		if gaps := len(got) - len(p.events()); gaps > 1 {
			t.Errorf("%s got %d gap notices for one new epoch: %v", p.name, gaps, got)
		}
	}
	if ended > 0 {
		t.Errorf("%d of %d subscribers ended by a Redis restart", ended, len(peers))
	}
	t.Logf("%d subscribers, %d ended, %d events published (50 through the outage), each subscriber's events checked once and in order; slow consumers %d, backplane errors %d",
		len(peers), ended, total, n.Stats().SlowConsumers, n.Stats().BackplaneErrors)
}

// publishRetry publishes events from..to on n, each retried until the
// backplane takes it (a Redis that just restarted).
func publishRetry(t *testing.T, n *node, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		waitUntil(t, fmt.Sprintf("event %d published", i), func() bool {
			return n.Publish(t.Context(), []string{"reports"}, seqEvent(i)) == nil
		})
	}
}

// TestResumeAfterNewEpoch: a subscriber resumes with a cursor of an epoch
// that is gone (the memory backplane restarted; Redis flushed, or restarted
// without persistence). It is told with a gap, then receives the new
// epoch from its start, as a connected subscriber does: nothing consumed
// since the restart is skipped. Both doors, every backplane.
func TestResumeAfterNewEpoch(t *testing.T) {
	redisBus := func(t *testing.T, url string) *node {
		bus, err := redisbus.Open(t.Context(), url, redisbus.Config{Prefix: "sbtest:epoch:"}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		return startNode(t, bus)
	}
	backplanes := []struct {
		name string
		// start returns a node and what makes its channels start a new
		// epoch, which returns the node to resume on.
		start func(t *testing.T) (*node, func() *node)
	}{
		{"memory", func(t *testing.T) (*node, func() *node) {
			mem := hub.NewMemory(hub.MemoryConfig{})
			t.Cleanup(func() { mem.Close() })
			return startNode(t, mem), func() *node {
				mem := hub.NewMemory(hub.MemoryConfig{}) // the node restarted
				t.Cleanup(func() { mem.Close() })
				return startNode(t, mem)
			}
		}},
		{"miniredis", func(t *testing.T) (*node, func() *node) {
			mr := redistest.Servers(t)[0].Mini
			n := redisBus(t, "redis://"+mr.Addr())
			return n, func() *node { mr.FlushAll(); return n }
		}},
		{"redis restarted empty", func(t *testing.T) (*node, func() *node) {
			rs := redistest.StartOwn(t)
			n := redisBus(t, rs.URL())
			return n, func() *node { rs.Stop(t); rs.Start(t); return n }
		}},
	}
	for _, bp := range backplanes {
		for _, door := range []string{"ws", "sse"} {
			t.Run(bp.name+"/"+door, func(t *testing.T) {
				n, newEpoch := bp.start(t)
				s := open(t, n, door, "reports", "")
				publishRetry(t, n, 1, 3)
				waitUntil(t, "3 events", func() bool { return len(s.events()) == 3 })
				_, cur, _ := s.snapshot()
				s.stop()

				n = newEpoch()
				publishRetry(t, n, 4, 8)
				s2 := open(t, n, door, "reports", cur)
				publishRetry(t, n, 9, 9)
				waitUntil(t, "event 9 or the end", func() bool {
					ev := s2.events()
					_, _, ended := s2.snapshot()
					return ended != nil || len(ev) > 0 && ev[len(ev)-1] == 9
				})
				got, _, ended := s2.snapshot()
				if ended != nil {
					t.Fatalf("ended: %v", ended)
				}
				if want := []int{gapMark, 4, 5, 6, 7, 8, 9}; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("resumed with an old epoch's cursor, got %v, want a gap then the new epoch from its start: %v", got, want)
				}
			})
		}
	}
}
