package hub

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// fanoutWindow is how many events the publisher of BenchmarkFanout may be
// ahead of its subscribers in total: the pace a real source (Kafka) would
// set. It bounds memory without ever letting one client's queue fill up.
const fanoutWindow = 64

// BenchmarkFanout measures the hub's in-process fan-out: one channel, N
// clients, each drained by its own goroutine as a door's writer would (no
// socket). It reports deliveries per second, the cost of one delivery, and
// its allocations.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) { benchFanout(b, n) })
	}
}

func benchFanout(b *testing.B, subs int) {
	mem := NewMemory(MemoryConfig{HistorySize: 1000, HistoryTTL: time.Hour})
	defer mem.Close()
	// Large enough that nobody is dropped: the window bounds the backlog.
	h, err := New(Config{ClientQueue: 1 << 20}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()

	tl := newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	counts := make([]int64, subs)
	clients := make([]*Client, subs)
	for i := range clients {
		c, err := h.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
		if _, err := c.Subscribe(ctx, "reports", SubscribeOptions{}); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-readyOf(c):
					items := c.drain()
					k := int64(0)
					for j := range items {
						if items[j].Kind == itemEvent {
							k++
						}
					}
					c.release(items)
					counts[i] += k
					tl.add(k)
				case <-c.Done():
					return
				case <-stop:
					return
				}
			}
		}()
	}
	stopDrainers := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer func() {
		stopDrainers()
		for _, c := range clients {
			c.Close()
		}
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(sctx); err != nil {
			b.Error(err)
		}
	}()
	events := benchEvents(b.N)
	runtime.GC()

	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	elapsed := publishPaced(b, h, events, subs, tl)
	total := int64(b.N) * int64(subs)
	runtime.ReadMemStats(&ms1)

	if n := h.Stats().SlowConsumers; n > 0 {
		b.Fatalf("%d clients were dropped as slow consumers", n)
	}
	stopDrainers()
	for i, n := range counts {
		if n != int64(b.N) {
			b.Fatalf("client %d received %d events, want %d", i, n, b.N)
		}
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(total), "ns/delivery")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(total), "allocs/delivery")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(total), "B/delivery")
}

// BenchmarkSubscribe measures subscribing and unsubscribing one client on a
// channel that already has N local subscribers: the cost a connection storm
// (a node restart, a deploy) pays per connection.
func BenchmarkSubscribe(b *testing.B) {
	for _, n := range []int{0, 1000, 10000} {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) {
			h := newMemoryHub(b)
			ctx := context.Background()
			others := make([]*Client, n)
			for i := range others {
				c, err := h.NewClient()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Subscribe(ctx, "reports", SubscribeOptions{}); err != nil {
					b.Fatal(err)
				}
				others[i] = c
			}
			defer func() {
				for _, c := range others {
					c.Close()
				}
			}()
			c, err := h.NewClient()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Subscribe(ctx, "reports", SubscribeOptions{}); err != nil {
					b.Fatal(err)
				}
				c.Unsubscribe("reports")
			}
		})
	}
}

// BenchmarkFrameEncode measures making one delivery's wire frames, which
// every subscriber of a channel shares.
func BenchmarkFrameEncode(b *testing.B) {
	ev := testEvent(1, "item.reported", "item-1", "")
	pos := Position{Epoch: "abcd1234", Offset: 12345}
	b.Run("ws", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			d := &delivery{Entry: Entry{Channel: "reports", Pos: pos, Event: ev}}
			_ = d.WSFrame()
		}
	})
	b.Run("sse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			d := &delivery{Entry: Entry{Channel: "reports", Pos: pos, Event: ev}}
			_ = d.SSEFrame()
		}
	})
}

// BenchmarkWriter measures the doors' writers over real loopback sockets:
// conns connections on one channel, each read by an in-process client, the
// publisher at most fanoutWindow events ahead. It reports the cost of one
// delivery in wall time and in CPU time (the clients' reads included) and
// the socket writes per delivery (Stats.Writes): below 1 when writes
// coalesce.
func BenchmarkWriter(b *testing.B) {
	for _, door := range []string{"ws", "ws-packed", "sse"} {
		b.Run(door, func(b *testing.B) { benchWriter(b, door, 100) })
	}
}

func benchWriter(b *testing.B, door string, conns int) {
	mem := NewMemory(MemoryConfig{HistorySize: 1000, HistoryTTL: time.Hour})
	defer mem.Close()
	h, err := New(Config{}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/sse", h.SSEHandler(SSEConfig{Heartbeat: time.Hour}))
	mux.Handle("/v1/ws", h.WSHandler(WSConfig{PingInterval: time.Hour}))
	srv := httptest.NewServer(mux)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			b.Error(err)
		}
		srv.Close()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	tl := newTally()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	event := []byte(`"type":"event"`)
	for range conns {
		switch door {
		case "sse":
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/sse?channel=reports", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer resp.Body.Close()
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "event: item") {
						tl.add(1)
					}
				}
			}()
		default:
			u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
			if door == "ws-packed" {
				u += "?pack=1"
			}
			conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
			if err != nil {
				b.Fatal(err)
			}
			conn.SetReadLimit(1 << 20)
			if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","id":"1","channel":"reports"}`)); err != nil {
				b.Fatal(err)
			}
			if _, _, err := conn.Read(ctx); err != nil { // the ack
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.CloseNow()
				for {
					_, msg, err := conn.Read(ctx)
					if err != nil {
						return
					}
					tl.add(int64(bytes.Count(msg, event)))
				}
			}()
		}
	}
	for h.Stats().Subscriptions < int64(conns) {
		time.Sleep(time.Millisecond)
	}
	events := benchEvents(b.N)
	writes0 := h.Stats().Writes
	cpu0 := processCPU()
	elapsed := publishPaced(b, h, events, conns, tl)
	cpu := processCPU() - cpu0
	total := int64(b.N) * int64(conns)
	writes := h.Stats().Writes - writes0
	if n := h.Stats().SlowConsumers; n > 0 {
		b.Fatalf("%d clients were dropped as slow consumers", n)
	}
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(total), "ns/delivery")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(total), "cpu-ns/delivery")
	b.ReportMetric(float64(writes)/float64(total), "writes/delivery")
}

// processCPU returns the CPU time (user and system) the process has used:
// the server's and the in-process clients' together.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// tally counts the deliveries of every subscriber of a benchmark together.
type tally struct {
	delivered atomic.Int64
	want      atomic.Int64 // the publisher waits until delivered reaches it
	wake      chan struct{}
}

func newTally() *tally { return &tally{wake: make(chan struct{}, 1)} }

// add counts k deliveries and wakes the publisher at its target.
func (t *tally) add(k int64) {
	if k == 0 {
		return
	}
	total := t.delivered.Add(k)
	if w := t.want.Load(); total >= w && total-k < w {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// waitFor blocks until the subscribers together have delivered target.
func (t *tally) waitFor(target int64) {
	t.want.Store(target)
	for t.delivered.Load() < target {
		<-t.wake
	}
}

func benchEvents(n int) []*Event {
	events := make([]*Event, n)
	for i := range events {
		events[i] = testEvent(i, "item.reported", fmt.Sprintf("item-%d", i%1000), "")
	}
	return events
}

// publishPaced times publishing events to reports, at most fanoutWindow
// ahead of its subs subscribers, until every one of them has them all.
func publishPaced(b *testing.B, h *Hub, events []*Event, subs int, tl *tally) time.Duration {
	channels := []string{"reports"}
	b.ResetTimer()
	start := time.Now()
	for i, ev := range events {
		if i >= fanoutWindow {
			tl.waitFor(int64(i-fanoutWindow+1) * int64(subs))
		}
		if err := h.Publish(context.Background(), channels, ev); err != nil {
			b.Fatal(err)
		}
	}
	tl.waitFor(int64(len(events)) * int64(subs))
	elapsed := time.Since(start)
	b.StopTimer()
	return elapsed
}
