package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// gatedBackplane is the memory backplane whose Listen (and its cancel) can
// be held for a channel, made to fail, and counted.
type gatedBackplane struct {
	*Memory

	mu         sync.Mutex
	listens    map[string]int           // Listen calls by channel
	active     map[string]int           // listeners by channel
	overlap    bool                     // a channel had two listeners at once
	listenGate map[string]chan struct{} // Listen blocks until closed
	cancelGate map[string]chan struct{} // cancel blocks until closed
	entered    map[string]chan struct{} // closed when Listen or cancel is held
	fail       map[string]error         // the next Listen fails
}

func newGatedBackplane() *gatedBackplane {
	return &gatedBackplane{
		Memory:     NewMemory(MemoryConfig{}),
		listens:    map[string]int{},
		active:     map[string]int{},
		listenGate: map[string]chan struct{}{},
		cancelGate: map[string]chan struct{}{},
		entered:    map[string]chan struct{}{},
		fail:       map[string]error{},
	}
}

// hold makes the next Listen (or cancel) of ch block until the returned
// release is called; held is closed once it blocks.
func (b *gatedBackplane) hold(ch string, cancel bool) (held <-chan struct{}, release func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	gate, in := make(chan struct{}), make(chan struct{})
	if cancel {
		b.cancelGate[ch] = gate
	} else {
		b.listenGate[ch] = gate
	}
	b.entered[ch] = in
	var once sync.Once
	return in, func() { once.Do(func() { close(gate) }) }
}

func (b *gatedBackplane) wait(ch string, gates map[string]chan struct{}) {
	b.mu.Lock()
	gate, in := gates[ch], b.entered[ch]
	delete(gates, ch)
	b.mu.Unlock()
	if gate != nil {
		close(in)
		<-gate
	}
}

func (b *gatedBackplane) Listen(ctx context.Context, ch string, deliver func(Entry)) (func(), error) {
	b.mu.Lock()
	b.listens[ch]++
	err := b.fail[ch]
	delete(b.fail, ch)
	b.mu.Unlock()
	b.wait(ch, b.listenGate)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	cancel, err := b.Memory.Listen(ctx, ch, deliver)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.active[ch]++
	if b.active[ch] > 1 {
		b.overlap = true
	}
	b.mu.Unlock()
	return func() {
		b.wait(ch, b.cancelGate)
		b.mu.Lock()
		b.active[ch]--
		b.mu.Unlock()
		cancel()
	}, nil
}

func (b *gatedBackplane) count(ch string) (listens, active int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.listens[ch], b.active[ch]
}

func newGatedHub(t *testing.T) (*Hub, *gatedBackplane) {
	t.Helper()
	bp := newGatedBackplane()
	h, err := New(Config{}, bp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		bp.Close()
	})
	return h, bp
}

func newClient(t *testing.T, h *Hub) *Client {
	t.Helper()
	c, err := h.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// sameShard returns a channel other than ch in ch's shard.
func sameShard(t *testing.T, h *Hub, ch string) string {
	t.Helper()
	for i := range 100000 {
		other := fmt.Sprintf("item:neighbour-%d", i)
		if h.shard(other) == h.shard(ch) {
			return other
		}
	}
	t.Fatal("no channel in the same shard")
	return ""
}

// subscribeAsync subscribes c to ch in a goroutine; the channel gets the
// result.
func subscribeAsync(ctx context.Context, c *Client, ch string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(ctx, ch, SubscribeOptions{})
		done <- err
	}()
	return done
}

func waitDone(t *testing.T, what string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(waitFor):
		t.Fatalf("%s did not return", what)
	}
}

func waitClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitFor):
		t.Fatalf("%s did not happen", what)
	}
}

// expectEvent waits until c has an event of channel ch queued.
func expectEvent(t *testing.T, c *Client, ch string) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		for _, it := range c.drain() {
			if it.Kind == itemEvent && it.delivery.Channel == ch {
				return
			}
		}
		select {
		case <-readyOf(c):
		case <-deadline:
			t.Fatalf("no event of %s delivered", ch)
		}
	}
}

func publishTo(t *testing.T, h *Hub, n int, ch string) {
	t.Helper()
	if err := h.Publish(t.Context(), []string{ch}, testEvent(n, "item.reported", "item-1", "")); err != nil {
		t.Fatal(err)
	}
}

// TestSlowListenStallsOnlyItsChannel: while the backplane's Listen (or its
// cancel) of one channel does not return, another channel of the same hub
// shard is subscribed to, published on, delivered and left; a subscriber of
// the held channel waits for it and then gets a listener.
func TestSlowListenStallsOnlyItsChannel(t *testing.T) {
	h, bp := newGatedHub(t)
	slow := "item:slow"
	fast := sameShard(t, h, slow)

	// The clients first: a cleanup that releases a hold runs before they close.
	c1, c2, c3 := newClient(t, h), newClient(t, h), newClient(t, h)
	held, release := bp.hold(slow, false)
	t.Cleanup(release)
	first := subscribeAsync(t.Context(), c1, slow)
	waitClosed(t, "Listen of "+slow, held)

	waitDone(t, "subscribe to "+fast+" while Listen of "+slow+" is held", subscribeAsync(t.Context(), c2, fast))
	publishTo(t, h, 1, fast)
	expectEvent(t, c2, fast)
	c2.Unsubscribe(fast)
	select {
	case err := <-first:
		t.Fatalf("subscribe to %s returned (%v) while its Listen was held", slow, err)
	default:
	}

	release()
	waitDone(t, "subscribe to "+slow, first)
	publishTo(t, h, 2, slow)
	expectEvent(t, c1, slow)

	// The last subscriber's cancel is held: the shard is not.
	held, release = bp.hold(slow, true)
	t.Cleanup(release)
	left := make(chan struct{})
	go func() { c1.Unsubscribe(slow); close(left) }()
	waitClosed(t, "cancel of "+slow, held)
	waitDone(t, "subscribe to "+fast+" while cancel of "+slow+" is held", subscribeAsync(t.Context(), c2, fast))
	publishTo(t, h, 3, fast)
	expectEvent(t, c2, fast)

	// A subscriber meanwhile waits for the cancel, then listens anew.
	again := subscribeAsync(t.Context(), c3, slow)
	release()
	waitClosed(t, "unsubscribe from "+slow, left)
	waitDone(t, "subscribe to "+slow+" after its cancel", again)
	publishTo(t, h, 4, slow)
	expectEvent(t, c3, slow)
	if listens, active := bp.count(slow); listens != 2 || active != 1 {
		t.Fatalf("%s: %d Listen calls and %d listeners, want 2 and 1", slow, listens, active)
	}
}

// TestConcurrentFirstSubscribersListenOnce: subscribers that arrive while
// the channel's first Listen is in flight wait for it: one Listen, and every
// one of them gets the channel's events.
func TestConcurrentFirstSubscribersListenOnce(t *testing.T) {
	h, bp := newGatedHub(t)
	const ch, n = "item:crowd", 50
	cs := make([]*Client, n)
	for i := range cs {
		cs[i] = newClient(t, h)
	}
	held, release := bp.hold(ch, false)
	t.Cleanup(release)
	dones := make([]<-chan error, n)
	for i := range cs {
		dones[i] = subscribeAsync(t.Context(), cs[i], ch)
	}
	waitClosed(t, "Listen of "+ch, held)
	// Every subscriber has registered its subscription and is in (or
	// about to be in) attach.
	deadline := time.Now().Add(waitFor)
	for i := 0; i < n; {
		if cs[i].Channels() == 1 {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber %d did not start", i)
		}
		time.Sleep(time.Millisecond)
	}
	release()
	for i, done := range dones {
		waitDone(t, fmt.Sprintf("subscriber %d", i), done)
	}
	if listens, _ := bp.count(ch); listens != 1 {
		t.Fatalf("%d Listen calls for %d concurrent first subscribers, want 1", listens, n)
	}
	publishTo(t, h, 1, ch)
	for _, c := range cs {
		expectEvent(t, c, ch)
	}
}

// TestFailedListenIsRetried: a Listen that fails fails its subscribe (and
// leaves nothing behind); the next subscriber listens anew. A Listen that
// fails because its subscriber gave up does not fail a subscriber that
// waited for it.
func TestFailedListenIsRetried(t *testing.T) {
	errDown := errors.New("backplane down")

	t.Run("next subscriber", func(t *testing.T) {
		h, bp := newGatedHub(t)
		const ch = "item:flaky"
		bp.mu.Lock()
		bp.fail[ch] = errDown
		bp.mu.Unlock()
		c := newClient(t, h)
		if _, err := c.Subscribe(t.Context(), ch, SubscribeOptions{}); !errors.Is(err, errDown) {
			t.Fatalf("subscribe: %v, want %v", err, errDown)
		}
		if c.Channels() != 0 || h.Stats().Subscriptions != 0 || h.Stats().BackplaneErrors != 1 {
			t.Fatalf("after a failed Listen: %d channels, %d subscriptions, %d backplane errors, want 0, 0, 1",
				c.Channels(), h.Stats().Subscriptions, h.Stats().BackplaneErrors)
		}
		if _, err := c.Subscribe(t.Context(), ch, SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
		publishTo(t, h, 1, ch)
		expectEvent(t, c, ch)
		if listens, active := bp.count(ch); listens != 2 || active != 1 {
			t.Fatalf("%d Listen calls and %d listeners, want 2 and 1", listens, active)
		}
	})

	t.Run("starter gave up", func(t *testing.T) {
		h, bp := newGatedHub(t)
		const ch = "item:abandoned"
		c1, c2 := newClient(t, h), newClient(t, h)
		held, release := bp.hold(ch, false)
		t.Cleanup(release)
		ctx, cancel := context.WithCancel(t.Context())
		first := subscribeAsync(ctx, c1, ch)
		waitClosed(t, "Listen of "+ch, held)
		second := subscribeAsync(t.Context(), c2, ch)
		cancel()
		release()
		select {
		case err := <-first:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("abandoned subscribe: %v, want %v", err, context.Canceled)
			}
		case <-time.After(waitFor):
			t.Fatal("abandoned subscribe did not return")
		}
		waitDone(t, "second subscribe", second)
		publishTo(t, h, 1, ch)
		expectEvent(t, c2, ch)
		if listens, active := bp.count(ch); listens != 2 || active != 1 {
			t.Fatalf("%d Listen calls and %d listeners, want 2 and 1", listens, active)
		}
	})
}

// TestAttachDetachRace: subscribers that come and go on one channel at once
// never make two listeners of it, leave no listener once all are gone, and
// one that stays gets the channel's events.
func TestAttachDetachRace(t *testing.T) {
	h, bp := newGatedHub(t)
	const ch, n, rounds = "item:busy", 16, 200
	var wg sync.WaitGroup
	for range n {
		c := newClient(t, h)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if _, err := c.Subscribe(t.Context(), ch, SubscribeOptions{}); err != nil {
					t.Error(err)
					return
				}
				c.Unsubscribe(ch)
			}
		}()
	}
	wg.Wait()
	bp.mu.Lock()
	overlap := bp.overlap
	bp.mu.Unlock()
	if overlap {
		t.Fatal("two listeners of one channel at once")
	}
	if _, active := bp.count(ch); active != 0 {
		t.Fatalf("%d listeners without a subscriber", active)
	}
	if hubs, _ := registered(h, bp.Memory); hubs != 0 {
		t.Fatalf("%d hub entries without a subscriber", hubs)
	}
	c := newClient(t, h)
	if _, err := c.Subscribe(t.Context(), ch, SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishTo(t, h, 1, ch)
	expectEvent(t, c, ch)
}
