package hub

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func registered(h *Hub, m *Memory) (hubEntries, logs int) {
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		hubEntries += len(s.chans)
		s.mu.Unlock()
	}
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		logs += len(s.logs)
		s.mu.Unlock()
	}
	return hubEntries, logs
}

// TestChannelChurn: subscribing to and leaving many distinct channels that
// hold no event leaves nothing behind, in the hub's registry or in the
// memory backplane. A forgotten channel comes back with the same epoch; one
// that holds events keeps its history.
func TestChannelChurn(t *testing.T) {
	mem := NewMemory(MemoryConfig{})
	defer mem.Close()
	h, _ := New(Config{}, mem, slog.New(slog.DiscardHandler))
	defer h.Shutdown(context.Background())
	c, err := h.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 5000
	for i := range n {
		ch := fmt.Sprintf("item:churn-%d", i)
		if _, err := c.Subscribe(t.Context(), ch, SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Unsubscribe(ch); !ok {
			t.Fatal("not subscribed")
		}
	}
	runtime.GC()
	if hubs, logs := registered(h, mem); hubs != 0 || logs != 0 {
		t.Fatalf("after %d channels came and went: %d hub entries and %d logs, want none", n, hubs, logs)
	}

	// A channel that comes back after it was forgotten keeps its epoch:
	// a subscriber that resumes it with its cursor has missed nothing,
	// and is not told of a gap.
	res, err := c.Subscribe(t.Context(), "item:empty", SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Unsubscribe("item:empty")
	if _, logs := registered(h, mem); logs != 0 {
		t.Fatalf("%d logs after item:empty was left", logs)
	}
	h.Publish(t.Context(), []string{"item:empty"}, testEvent(1, "item.reported", "empty", ""))
	if again, err := c.Subscribe(t.Context(), "item:empty", SubscribeOptions{After: &res.Start}); err != nil || again.Gap || again.Start != res.Start {
		t.Fatalf("resume of a forgotten empty channel with %v: %+v, %v", res.Start, again, err)
	}
	if n := c.queued(); n != 1 {
		t.Fatalf("%d queued after the resume, want the event published meanwhile", n)
	}
	c.Unsubscribe("item:empty")

	// A channel with history keeps it.
	if _, err := c.Subscribe(t.Context(), "item:kept", SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	h.Publish(t.Context(), []string{"item:kept"}, testEvent(1, "item.reported", "kept", ""))
	pos, _ := c.Unsubscribe("item:kept")
	if hubs, logs := registered(h, mem); hubs != 0 || logs != 2 {
		t.Fatalf("item:empty and item:kept with history: %d hub entries and %d logs, want 0 and 2", hubs, logs)
	}
	kept, err := c.Subscribe(t.Context(), "item:kept", SubscribeOptions{After: &pos})
	if err != nil || kept.Gap || kept.Start != pos {
		t.Fatalf("resume with %v: %+v, %v", pos, kept, err)
	}
}

// TestChannelChurnKeepsEvents: while subscribers come and go on channels
// that hold nothing yet, events published to them all stay in history: a
// log dropped by its last subscriber is never the one an event goes to.
func TestChannelChurnKeepsEvents(t *testing.T) {
	mem := NewMemory(MemoryConfig{})
	defer mem.Close()
	h, _ := New(Config{}, mem, slog.New(slog.DiscardHandler))
	defer h.Shutdown(context.Background())
	const rounds, chans = 2000, 4
	names := func(r int) []string {
		chs := make([]string, chans)
		for k := range chs {
			chs[k] = fmt.Sprintf("item:r%d-%d", r, k)
		}
		return chs
	}
	// The churners come and go on the channels of the round the publisher
	// is about to publish to.
	var round atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			c, err := h.NewClient()
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for r := int(round.Load()); r < rounds; r = int(round.Load()) {
				for _, ch := range names(r) {
					if _, err := c.Subscribe(context.Background(), ch, SubscribeOptions{}); err != nil {
						t.Error(err)
						return
					}
					c.Unsubscribe(ch)
				}
			}
		})
	}
	for r := range rounds {
		if err := h.Publish(t.Context(), names(r), testEvent(r, "item.reported", "x", "")); err != nil {
			t.Fatal(err)
		}
		round.Store(int64(r + 1))
	}
	wg.Wait()
	for r := range rounds {
		for _, ch := range names(r) {
			rep, err := mem.Read(t.Context(), ch, &Oldest)
			if err != nil || len(rep.Entries) != 1 {
				t.Fatalf("%s holds %d entries (%v), want its event", ch, len(rep.Entries), err)
			}
		}
	}
}

// BenchmarkChannelChurn reports what subscribing to and leaving one
// distinct channel that holds no event leaves on the heap after GC.
func BenchmarkChannelChurn(b *testing.B) {
	mem := NewMemory(MemoryConfig{})
	defer mem.Close()
	h, _ := New(Config{}, mem, slog.New(slog.DiscardHandler))
	defer h.Shutdown(context.Background())
	c, err := h.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	names := make([]string, b.N)
	for i := range names {
		names[i] = fmt.Sprintf("item:churn-%d", i)
	}
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for _, ch := range names {
		if _, err := c.Subscribe(ctx, ch, SubscribeOptions{}); err != nil {
			b.Fatal(err)
		}
		c.Unsubscribe(ch)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc))/float64(b.N), "retained-B/channel")
	runtime.KeepAlive(names)
}
