package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard/switchboard/hub/sdk"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fast is a client's options for tests: quick reconnections.
func fast(o sdk.Options) sdk.Options {
	o.MinBackoff, o.MaxBackoff = time.Millisecond, 20*time.Millisecond
	return o
}

func dial(t *testing.T, url string, o sdk.Options) *sdk.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	c, err := sdk.Dial(ctx, url, fast(o))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// numbered reads n events of s and checks that their data "n" counts 0..n-1.
func numbered(t *testing.T, s *sdk.Subscription, n int) {
	t.Helper()
	for i := range n {
		ev := next(t, s.Events())
		if ev.Gap {
			t.Fatalf("event %d: unexpected gap", i)
		}
		var d struct{ N int }
		if err := json.Unmarshal(ev.Data, &d); err != nil || d.N != i {
			t.Fatalf("event %d: data %s (%v): lost, repeated or out of order", i, ev.Data, err)
		}
	}
}

// TestResumeAcrossCuts: events published while the network drops the
// connection again and again reach the subscriber each once, in order,
// with and without packing.
func TestResumeAcrossCuts(t *testing.T) {
	for _, pack := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "packed"}[pack], func(t *testing.T) {
			srv := start(t)
			p := newProxy(t, srv.URL())
			c := dial(t, "http://"+p.Addr(), sdk.Options{Pack: pack})
			s, err := c.Subscribe(t.Context(), "reports", "")
			if err != nil {
				t.Fatal(err)
			}
			const n = 500
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					srv.publish("item.reported", "item-1", "", map[string]int{"n": i}, "reports")
					if i%50 == 25 {
						p.Reset()
					}
				}
			}()
			numbered(t, s, n)
			wg.Wait()
			select {
			case ev := <-s.Events():
				t.Fatalf("an extra event: %+v", ev)
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
}

// TestOldest: Oldest replays history in order.
func TestOldest(t *testing.T) {
	srv := start(t)
	for i := range 3 {
		srv.publish("item.reported", "item-1", "", map[string]int{"n": i}, "reports")
	}
	c := dial(t, srv.URL(), sdk.Options{})
	s, err := c.Subscribe(t.Context(), "reports", sdk.Oldest)
	if err != nil {
		t.Fatal(err)
	}
	numbered(t, s, 3)

	got := make(chan sdk.Event, 3)
	if _, err := c.SubscribeFunc(t.Context(), "other", sdk.Oldest, func(ev sdk.Event) { got <- ev }); err != nil {
		t.Fatal(err)
	}
	srv.publish("item.reported", "item-2", "", map[string]int{"n": 0}, "other")
	if ev := next(t, got); ev.Channel != "other" || ev.Subject != "item-2" {
		t.Fatalf("SubscribeFunc got %+v", ev)
	}
}

// TestGap: a cursor of a lost epoch is a gap, then live events.
func TestGap(t *testing.T) {
	srv := start(t)
	c := dial(t, srv.URL(), sdk.Options{})
	s, err := c.Subscribe(t.Context(), "reports", "zz9.5")
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, s.Events()); !ev.Gap || ev.Channel != "reports" {
		t.Fatalf("first: %+v, want a gap", ev)
	}
	srv.publish("item.reported", "item-1", "", map[string]int{"n": 0}, "reports")
	numbered(t, s, 1)
}

// TestRefusals: a forbidden channel and an unknown command are
// *ServerError; a second subscription to a channel is refused.
func TestRefusals(t *testing.T) {
	srv := start(t)
	c := dial(t, srv.URL(), sdk.Options{})
	var se *sdk.ServerError
	if _, err := c.Subscribe(t.Context(), "secret", ""); !errors.As(err, &se) || se.Code != "forbidden" {
		t.Fatalf("subscribe secret: %v", err)
	}
	if _, err := c.Call(t.Context(), "nope", nil, ""); !errors.As(err, &se) || se.Code != "not_found" {
		t.Fatalf("call nope: %v", err)
	}
	if _, err := c.Subscribe(t.Context(), "reports", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(t.Context(), "reports", ""); !errors.Is(err, sdk.ErrAlreadySubscribed) {
		t.Fatalf("second subscribe: %v", err)
	}
}

// TestCall: a call returns the result, with the corr: progress events.
func TestCall(t *testing.T) {
	srv := start(t)
	c := dial(t, srv.URL(), sdk.Options{})
	res, err := c.Call(t.Context(), "echo", map[string]any{"item_id": "item-7"}, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "confirmed" || res.CorrelationID != "c-k1" || res.Event == nil || res.Event.Type != "echo.done" ||
		string(res.Event.Data) != `{"item_id":"item-7"}` {
		t.Fatalf("result %+v", res)
	}
	if len(res.Progress) != 1 || res.Progress[0].Type != "echo.progress" || res.Progress[0].CorrelationID != "c-k1" {
		t.Fatalf("progress %+v", res.Progress)
	}
}

// TestUnauthorized: a refused static token ends Dial with ErrUnauthorized
// after one attempt; a token function that gives the refused token again
// is not retried either; one that gives a new token is.
func TestUnauthorized(t *testing.T) {
	srv := start(t, "good")
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	if _, err := sdk.Dial(ctx, srv.URL(), fast(sdk.Options{Token: "bad"})); !errors.Is(err, sdk.ErrUnauthorized) {
		t.Fatalf("static bad token: %v", err)
	}
	var calls atomic.Int32
	same := func(context.Context) (string, error) { calls.Add(1); return "bad", nil }
	if _, err := sdk.Dial(ctx, srv.URL(), fast(sdk.Options{TokenFunc: same})); !errors.Is(err, sdk.ErrUnauthorized) {
		t.Fatalf("same bad token: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("token function called %d times, want 2 (the first connection, then once after 1008)", n)
	}
	calls.Store(0)
	rotating := func(context.Context) (string, error) {
		if calls.Add(1) == 1 {
			return "stale", nil
		}
		return "good", nil
	}
	c, err := sdk.Dial(ctx, srv.URL(), fast(sdk.Options{TokenFunc: rotating}))
	if err != nil {
		t.Fatalf("rotated token: %v", err)
	}
	c.Close()
	if !errors.Is(c.Err(), sdk.ErrClosed) {
		t.Fatalf("after Close: %v", c.Err())
	}
}

// TestTokenRotationOnReconnect: the token function is called again on
// every reconnection; the subscription resumes on the new token.
func TestTokenRotationOnReconnect(t *testing.T) {
	srv := start(t, "t1")
	p := newProxy(t, srv.URL())
	var mu sync.Mutex
	current, calls := "t1", 0
	tok := func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return current, nil
	}
	c := dial(t, "http://"+p.Addr(), sdk.Options{TokenFunc: tok})
	s, err := c.Subscribe(t.Context(), "reports", "")
	if err != nil {
		t.Fatal(err)
	}
	srv.publish("item.reported", "item-1", "", map[string]int{"n": 0}, "reports")
	numbered(t, s, 1)
	srv.setTokens("t2")
	mu.Lock()
	current = "t2"
	mu.Unlock()
	p.Reset()
	srv.publish("item.reported", "item-1", "", map[string]int{"n": 1}, "reports")
	ev := next(t, s.Events())
	if string(ev.Data) != `{"n":1}` {
		t.Fatalf("after rotation: %s", ev.Data)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls < 2 {
		t.Fatalf("token function called %d times", calls)
	}
}

// TestGoingAway: a node that shuts down closes with 1001; the client
// retries (and keeps its subscriptions) until it is closed.
func TestGoingAway(t *testing.T) {
	srv := newServer()
	c := dial(t, srv.URL(), sdk.Options{})
	s, err := c.Subscribe(t.Context(), "reports", "")
	if err != nil {
		t.Fatal(err)
	}
	srv.stop()
	select {
	case <-c.Done():
		t.Fatalf("client ended after 1001: %v", c.Err())
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	if _, ok := <-s.Events(); ok {
		t.Fatal("events not closed after Close")
	}
	if !errors.Is(s.Err(), sdk.ErrClosed) {
		t.Fatalf("subscription error %v", s.Err())
	}
}

// TestCallLegacyTakedown: a node that refuses call frames gets a takedowns
// call as the v1 takedown frame.
func TestCallLegacyTakedown(t *testing.T) {
	srv := newServerWith(true)
	t.Cleanup(srv.stop)
	c := dial(t, srv.URL(), sdk.Options{})
	res, err := c.Call(t.Context(), "takedowns", map[string]any{"item_id": "item-7", "reason": "x"}, "k2")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "confirmed" || res.CorrelationID != "c-k2" || string(res.Event.Data) != `{"item_id":"item-7","reason":"x"}` {
		t.Fatalf("result %+v", res)
	}
	var se *sdk.ServerError
	if _, err := c.Call(t.Context(), "restores", nil, ""); !errors.As(err, &se) || se.Code != "bad_request" {
		t.Fatalf("another command on a v1 node: %v", err)
	}
}

// TestStalledNetwork: a connection the network stalls without closing it
// is found by the client's protocol pings and replaced; the subscription
// resumes once the network flows again.
func TestStalledNetwork(t *testing.T) {
	srv := start(t)
	p := newProxy(t, srv.URL())
	redial := make(chan struct{}, 100)
	var calls atomic.Int32
	tok := func(context.Context) (string, error) {
		if calls.Add(1) > 1 {
			redial <- struct{}{}
		}
		return "", nil
	}
	c := dial(t, "http://"+p.Addr(), sdk.Options{TokenFunc: tok, PingInterval: 50 * time.Millisecond})
	s, err := c.Subscribe(t.Context(), "reports", "")
	if err != nil {
		t.Fatal(err)
	}
	p.Pause()
	srv.publish("item.reported", "item-1", "", map[string]int{"n": 0}, "reports")
	next(t, redial) // the stalled connection was given up
	p.Resume()
	numbered(t, s, 1)
}

// TestCallBounds: past MaxPendingCalls a call fails at once; Close ends the
// calls in flight with ErrClosed.
func TestCallBounds(t *testing.T) {
	srv := start(t)
	c := dial(t, srv.URL(), sdk.Options{MaxPendingCalls: 1})
	held := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), "hold", nil, "")
		held <- err
	}()
	next(t, srv.held)
	if _, err := c.Call(t.Context(), "echo", nil, ""); !errors.Is(err, sdk.ErrTooManyCalls) {
		t.Fatalf("a second call: %v", err)
	}
	c.Close()
	if err := next(t, held); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("held call after Close: %v", err)
	}
	if _, err := c.Call(t.Context(), "echo", nil, ""); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
}

// BenchmarkDeliver: events per second from a hub's WebSocket door through
// the client to a subscriber, over loopback, with and without packing.
func BenchmarkDeliver(b *testing.B) {
	for _, pack := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "packed"}[pack], func(b *testing.B) {
			srv := newServer()
			defer srv.stop()
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			c, err := sdk.Dial(ctx, srv.URL(), sdk.Options{Pack: pack})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			s, err := c.Subscribe(ctx, "reports", "")
			if err != nil {
				b.Fatal(err)
			}
			// At most window events in flight: a burst beyond the hub's
			// client queue would be a slow consumer, beyond history a gap.
			const window = 256
			credit := make(chan struct{}, window)
			for range window {
				credit <- struct{}{}
			}
			b.ResetTimer()
			go func() {
				for i := range b.N {
					select {
					case <-credit:
					case <-ctx.Done():
						return
					}
					srv.publish("item.reported", "item-1", "", map[string]int{"n": i}, "reports")
				}
			}()
			for range b.N {
				select {
				case ev := <-s.Events():
					if ev.Gap {
						b.Fatal("gap")
					}
					credit <- struct{}{}
				case <-time.After(waitFor):
					b.Fatal("no event in time")
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
