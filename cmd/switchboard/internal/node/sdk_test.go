package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub/sdk"
)

// The Go SDK (hub/sdk) against a whole node: the embedded broker, real
// kafka-go producers, the item service, and a TCP proxy that drops the
// SDK's connection while events flow.

// sdkDial connects the SDK to url, failing the test if it cannot; the
// client is closed at cleanup.
func sdkDial(t *testing.T, url string, o sdk.Options) *sdk.Client {
	t.Helper()
	o.MinBackoff, o.MaxBackoff = time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	c, err := sdk.Dial(ctx, url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nextSDKEvent returns s's next event, failing the test if none comes.
func nextSDKEvent(t *testing.T, s *sdk.Subscription) sdk.Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("subscription ended: %v", s.Err())
		}
		return ev
	case <-time.After(waitFor):
		t.Fatal("no SDK event in time")
	}
	return sdk.Event{}
}

// TestSDKResumesThroughCuts: while a kafka-go producer writes reports, the
// network drops the SDK's connection again and again; the subscriber gets
// every event once, in order, and the token function is asked for a token
// on every reconnection.
func TestSDKResumesThroughCuts(t *testing.T) {
	a := startTestApp(t, nil)
	waitReady(t, a)
	p := newCutProxy(t, strings.TrimPrefix(a.base(), "http://"))
	var mu sync.Mutex
	tokens := 0
	tok := func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		tokens++
		return modToken, nil
	}
	c := sdkDial(t, p.url(), sdk.Options{TokenFunc: tok, Pack: true})
	s, err := c.Subscribe(t.Context(), "reports", "")
	if err != nil {
		t.Fatal(err)
	}
	const n, batch = 300, 30
	done := make(chan error, 1)
	go func() {
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		w := &kafka.Writer{Addr: kafka.TCP(a.kafkaAddr), Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, Transport: tr}
		defer w.Close()
		for i := 0; i < n; i += batch {
			var msgs []kafka.Message
			for j := i; j < i+batch; j++ {
				// One key: one partition, so Kafka keeps their order.
				msgs = append(msgs, binaryMsg(a.cfg.ReportsTopic(), fmt.Sprintf("r-%d", j), "item.reported", "item-1", "", map[string]int{"n": j}))
			}
			if err := w.WriteMessages(t.Context(), msgs...); err != nil {
				done <- err
				return
			}
			p.cut()
		}
		done <- nil
	}()
	for i := range n {
		ev := nextSDKEvent(t, s)
		var d struct{ N int }
		if ev.Gap || json.Unmarshal(ev.Data, &d) != nil || d.N != i || ev.Type != "item.reported" || ev.ID != fmt.Sprintf("r-%d", i) {
			t.Fatalf("event %d: %+v (gap %v): lost, repeated or out of order", i, string(ev.Raw), ev.Gap)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-s.Events():
		t.Fatalf("an extra event: %s", ev.Raw)
	case <-time.After(100 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	if tokens < 2 {
		t.Fatalf("token function called %d times over %d cuts", tokens, n/batch)
	}
}

// TestSDKGapAndAuth: a cursor history cannot cover is a gap; a refused
// token ends Dial with ErrUnauthorized, also when the token function gives
// the same token again.
func TestSDKGapAndAuth(t *testing.T) {
	a := startTestApp(t, nil)
	waitReady(t, a)
	c := sdkDial(t, a.base(), sdk.Options{Token: acmeToken})
	s, err := c.Subscribe(t.Context(), "item:item-3", "lost0epoch.9")
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextSDKEvent(t, s); !ev.Gap || ev.Channel != "item:item-3" {
		t.Fatalf("want a gap, got %+v", ev)
	}
	produce(t, a.kafkaAddr, binaryMsg(a.cfg.ReportsTopic(), "g-1", "item.reported", "item-3", "", map[string]string{"reason": "x"}))
	if ev := nextSDKEvent(t, s); ev.Gap || ev.ID != "g-1" || ev.Subject != "item-3" {
		t.Fatalf("after the gap: %+v", ev)
	}

	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	if _, err := sdk.Dial(ctx, a.base(), sdk.Options{Token: "wrong-token-0123456789"}); !errors.Is(err, sdk.ErrUnauthorized) {
		t.Fatalf("bad static token: %v", err)
	}
	calls := 0
	same := func(context.Context) (string, error) { calls++; return "wrong-token-0123456789", nil }
	if _, err := sdk.Dial(ctx, a.base(), sdk.Options{TokenFunc: same, MinBackoff: time.Millisecond}); !errors.Is(err, sdk.ErrUnauthorized) || calls != 2 {
		t.Fatalf("same bad token: %v after %d calls of the token function, want ErrUnauthorized after 2", err, calls)
	}
}

// TestSDKCallTakedowns: the takedowns command is confirmed for a catalogue
// item (with its item.removed progress) and rejected not_found for an
// unknown one; a retry with the same idempotency key joins the first and
// publishes nothing more.
func TestSDKCallTakedowns(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) { c.ItemSvc.Latency = 0 })
	waitReady(t, a)
	c := sdkDial(t, a.base(), sdk.Options{Token: acmeToken})
	res, err := c.Call(t.Context(), "takedowns", map[string]any{"item_id": "item-5", "reason": "counterfeit"}, "sdk-key-1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "confirmed" || res.Code != 200 || res.CorrelationID == "" || res.Event == nil || res.Event.Type != "takedown.confirmed" {
		t.Fatalf("item-5: %+v", res)
	}
	removed := 0
	for _, ev := range res.Progress {
		if ev.Type == "item.removed" {
			removed++
		}
	}
	if want := len(containersOf(t, "item-5")); removed != want {
		t.Fatalf("%d item.removed in the progress, want %d", removed, want)
	}
	again, err := c.Call(t.Context(), "takedowns", map[string]any{"item_id": "item-5", "reason": "counterfeit"}, "sdk-key-1")
	if err != nil || again.CorrelationID != res.CorrelationID || again.Status != "confirmed" {
		t.Fatalf("retry: %+v, %v; want the first call's %s", again, err, res.CorrelationID)
	}
	if n := countCommands(t, a, res.CorrelationID); n != 1 {
		t.Fatalf("%d commands published for one idempotency key", n)
	}

	res, err = c.Call(t.Context(), "takedowns", map[string]any{"item_id": "no-such-item", "reason": "x"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "rejected" || res.Code != 404 || res.Reason() != "not_found" {
		t.Fatalf("unknown item: status %q code %d reason %q", res.Status, res.Code, res.Reason())
	}
	var se *sdk.ServerError
	if _, err := c.Call(t.Context(), "takedowns", map[string]any{"reason": "no item"}, ""); !errors.As(err, &se) || se.Code != "bad_request" {
		t.Fatalf("a call without item_id: %v", err)
	}
}
