package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"
)

// heard records what a watch's fn was called with: event IDs, "nil" for a
// look-again.
type heard struct {
	mu  sync.Mutex
	got []string
}

func (h *heard) fn(ev *Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev == nil {
		h.got = append(h.got, "nil")
		return
	}
	h.got = append(h.got, ev.ID)
}

func (h *heard) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return fmt.Sprint(h.got)
}

// TestWatchOnMemory: a watch hears every event published after it returns
// (not those before), as many watches of one channel as there are, past
// the size where the channel indexes its subscribers; each stop ends that
// watch alone, and once all have stopped the channel has no listener, no
// subscription and no watch left, and no goroutine was started.
func TestWatchOnMemory(t *testing.T) {
	mem := NewMemory(MemoryConfig{})
	defer mem.Close()
	h, err := New(Config{}, mem, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(context.Background())
	ctx := t.Context()
	const ch = "corr:abc"
	if err := h.Publish(ctx, []string{ch}, testEvent(1, "takedown.requested", "item-1", "abc")); err != nil {
		t.Fatal(err)
	}
	goroutines := runtime.NumGoroutine()
	const n = 2*smallChannel + 1
	hs := make([]*heard, n)
	stops := make([]func(), n)
	for i := range n {
		hs[i] = &heard{}
		stop, done, err := h.Watch(ctx, ch, hs[i].fn)
		if err != nil {
			t.Fatal(err)
		}
		if done == nil {
			t.Fatal("no done channel")
		}
		stops[i] = stop
	}
	if got := runtime.NumGoroutine(); got > goroutines {
		t.Errorf("%d goroutines after %d watches, %d before", got, n, goroutines)
	}
	if h.Watchers() != n || h.Stats().Subscriptions != n {
		t.Fatalf("%d watches, %d subscriptions; want %d", h.Watchers(), h.Stats().Subscriptions, n)
	}
	if err := h.Publish(ctx, []string{ch}, testEvent(2, "takedown.confirmed", "item-1", "abc")); err != nil {
		t.Fatal(err)
	}
	for i, hd := range hs {
		if hd.String() != "[ev-2]" {
			t.Fatalf("watch %d heard %s, want [ev-2]", i, hd)
		}
	}
	// Stop the first, the last and one in the middle, then the rest: each
	// stop ends its own watch.
	order := []int{0, n - 1, n / 2}
	for i := 1; i < n-1; i++ {
		if i != n/2 {
			order = append(order, i)
		}
	}
	stopped := map[int]bool{}
	for k, i := range order {
		stops[i]()
		stops[i]() // idempotent
		stopped[i] = true
		if err := h.Publish(ctx, []string{ch}, testEvent(3+k, "item.removed", "item-1", "abc")); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("ev-%d", 3+k)
		for j, hd := range hs {
			hd.mu.Lock()
			last := hd.got[len(hd.got)-1]
			hd.mu.Unlock()
			if (last == id) == stopped[j] {
				t.Fatalf("after stopping %v: watch %d heard %s", order[:k+1], j, hd)
			}
		}
		if want := n - k - 1; h.Watchers() != want || h.Stats().Subscriptions != int64(want) {
			t.Fatalf("%d watches, %d subscriptions; want %d", h.Watchers(), h.Stats().Subscriptions, want)
		}
	}
	s := h.shard(ch)
	s.mu.Lock()
	hc := s.chans[ch]
	s.mu.Unlock()
	if hc != nil {
		t.Fatalf("the channel is still in the hub (%d subscribers)", len(hc.subs))
	}
	if l := mem.log(ch, false); l != nil && len(l.deliver) != 0 {
		t.Fatalf("%d backplane listeners left", len(l.deliver))
	}
}

// TestWatchSaysLookAgain: an event that is not the next offset (a hole, a
// new epoch) and a backplane resync call fn with nil besides the event; an
// event already seen is not heard again.
func TestWatchSaysLookAgain(t *testing.T) {
	bp := &scriptedBackplane{reads: make(chan Replay, 1), deliver: make(chan func(Entry), 1)}
	h, err := New(Config{}, bp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(context.Background())
	hd := &heard{}
	stop, _, err := h.Watch(t.Context(), "corr:x", hd.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	deliver := <-bp.deliver
	entry := func(epoch string, off uint64) Entry {
		return Entry{Channel: "corr:x", Pos: Position{Epoch: epoch, Offset: off}, Event: testEvent(int(off), "item.removed", "item-1", "x")}
	}
	deliver(entry("old", 10)) // the first heard: where the channel stands
	deliver(entry("old", 11))
	deliver(entry("old", 13)) // 12 was lost
	deliver(entry("old", 13)) // twice
	deliver(entry("new", 1))  // another epoch
	deliver(Entry{Channel: "corr:x", Resync: true})
	deliver(entry("new", 2))
	if want := "[ev-10 ev-11 nil ev-13 nil ev-1 nil ev-2]"; hd.String() != want {
		t.Fatalf("heard %s, want %s", hd, want)
	}
}

// TestWatchReadsNoHistory: a watch reads nothing from the backplane (on
// Redis that read was a round trip per command's call): the first event it
// hears says where the channel stands, even on a channel with events
// before it, and a hole after that is still one.
func TestWatchReadsNoHistory(t *testing.T) {
	h, bp := newReadCountingHub(t)
	ctx := t.Context()
	for i := 1; i <= 4; i++ { // before the watch: not heard
		if err := h.Publish(ctx, []string{"corr:x"}, testEvent(i, "item.removed", "item-1", "x")); err != nil {
			t.Fatal(err)
		}
	}
	hd := &heard{}
	stop, _, err := h.Watch(ctx, "corr:x", hd.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, i := range []int{5, 6, 8} {
		if i == 8 {
			bp.drop.Store("ev-7")
			if err := h.Publish(ctx, []string{"corr:x"}, testEvent(7, "item.removed", "item-1", "x")); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.Publish(ctx, []string{"corr:x"}, testEvent(i, "item.removed", "item-1", "x")); err != nil {
			t.Fatal(err)
		}
	}
	if want := "[ev-5 ev-6 nil ev-8]"; hd.String() != want {
		t.Fatalf("heard %s, want %s", hd, want)
	}
	if n := bp.reads.Load(); n != 0 {
		t.Fatalf("a watch read history %d times, want 0", n)
	}
}

// TestWatchShutdown: done is closed when the hub shuts down, and a watch
// asked for afterwards is refused.
func TestWatchShutdown(t *testing.T) {
	h := newMemoryHub(t)
	stop, done, err := h.Watch(t.Context(), "corr:y", func(*Event) {})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err) // a watch is no door's client: nothing to wait for
	}
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("done not closed by the shutdown")
	}
	if _, _, err := h.Watch(t.Context(), "corr:z", func(*Event) {}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("a watch after the shutdown: %v", err)
	}
}
