package redisbus

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// TestBusPublishBatch: a batch of events, each to its own channels (a
// shared corr: one among them), goes to Redis in one round trip; every
// channel's log gets its events in the batch's order, each once (an event
// twice in the batch is appended once), and listeners on another node hear
// them in that order. A batch one of whose channels Redis refuses fails,
// naming it; the other events are in; the same batch again, once the
// channel is fixed, appends what was missing and doubles nothing. A batch
// of more appends than one script takes is one round trip too.
func TestBusPublishBatch(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			rdb := srv.Client()
			rt := &redistest.RoundTrips{}
			rdb.AddHook(rt)
			a, err := New(ctx, rdb, Config{Prefix: srv.Prefix}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b := newBus(t, srv, Config{})
			items, corr := newCollector(), newCollector()
			for ch, col := range map[string]*collector{"item:1": items, "corr:c-9": corr} {
				cancel, err := b.Listen(ctx, ch, col.deliver)
				if err != nil {
					t.Fatal(err)
				}
				defer cancel()
			}
			// Load the script first: the batch below is then one round trip.
			if err := a.Publish(ctx, []string{"warm"}, ev(0)); err != nil {
				t.Fatal(err)
			}
			batch := []hub.Publication{
				{Channels: []string{"item:1", "corr:c-9"}, Event: ev(1)},
				{Channels: []string{"item:1"}, Event: ev(2)},
				{Channels: []string{"item:1", "reports"}, Event: ev(3)},
				{Channels: []string{"item:1", "corr:c-9"}, Event: ev(1)}, // again
				{Channels: []string{"corr:c-9"}, Event: ev(4)},
			}
			before := rt.N()
			if err := a.PublishBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			if n := rt.N() - before; n != 1 {
				t.Fatalf("a batch of %d events took %d round trips, want 1", len(batch), n)
			}
			ids := func(es []hub.Entry) string {
				var out []string
				for _, e := range es {
					out = append(out, fmt.Sprintf("%d:%s", e.Pos.Offset, e.Event.ID))
				}
				return fmt.Sprint(out)
			}
			if got := ids(items.wait(t, 3)); got != "[1:e-1 2:e-2 3:e-3]" {
				t.Fatalf("item:1 heard %s", got)
			}
			if got := ids(corr.wait(t, 2)); got != "[1:e-1 2:e-4]" {
				t.Fatalf("corr:c-9 heard %s", got)
			}
			if r, err := b.Read(ctx, "item:1", &hub.Oldest); err != nil || ids(r.Entries) != "[1:e-1 2:e-2 3:e-3]" {
				t.Fatalf("item:1 holds %s (%v)", ids(r.Entries), err)
			}

			// A channel whose keys Redis refuses (its meta is not a hash).
			meta, _, _ := a.keys("item:bad")
			if err := rdb.Set(ctx, meta, "x", 0).Err(); err != nil {
				t.Fatal(err)
			}
			batch = []hub.Publication{
				{Channels: []string{"item:1"}, Event: ev(5)},
				{Channels: []string{"item:bad", "item:1"}, Event: ev(6)},
				{Channels: []string{"item:1"}, Event: ev(7)},
			}
			if err := a.PublishBatch(ctx, batch); err == nil || !strings.Contains(err.Error(), "item:bad") {
				t.Fatalf("a batch with a refused channel: %v, want an error naming item:bad", err)
			}
			if err := rdb.Del(ctx, meta).Err(); err != nil {
				t.Fatal(err)
			}
			if err := a.PublishBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			if r, err := b.Read(ctx, "item:1", &hub.Oldest); err != nil || ids(r.Entries) != "[1:e-1 2:e-2 3:e-3 4:e-5 5:e-6 6:e-7]" {
				t.Fatalf("item:1 holds %s after the batch failed once (%v)", ids(r.Entries), err)
			}
			if r, err := b.Read(ctx, "item:bad", &hub.Oldest); err != nil || ids(r.Entries) != "[1:e-6]" {
				t.Fatalf("item:bad holds %s (%v)", ids(r.Entries), err)
			}
			if got := ids(items.wait(t, 6)); got != "[1:e-1 2:e-2 3:e-3 4:e-5 5:e-6 6:e-7]" {
				t.Fatalf("item:1 heard %s", got)
			}

			// A batch of more appends than one script takes (manyAppends)
			// is still one round trip, in order.
			batch = nil
			var want []string
			for i := range 2*manyAppends + 7 {
				e := ev(100 + i)
				batch = append(batch, hub.Publication{Channels: []string{"big", "item:big-" + fmt.Sprint(i%3)}, Event: e})
				want = append(want, fmt.Sprintf("%d:%s", i+1, e.ID))
			}
			before = rt.N()
			if err := a.PublishBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			if n := rt.N() - before; n != 1 {
				t.Fatalf("a batch of %d appends took %d round trips, want 1", 2*len(batch), n)
			}
			if r, err := b.Read(ctx, "big", &hub.Oldest); err != nil || ids(r.Entries) != fmt.Sprint(want) {
				t.Fatalf("big holds %s (%v), want %v", ids(r.Entries), err, want)
			}
		})
	}
}
