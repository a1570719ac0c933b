package redisbus

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
	"github.com/switchboard/switchboard/hub/takedown"
)

// TestClusterSharedState: the outcome store, its idempotency keys and the
// session revocations run on the bus's client on a Cluster too, with
// records on every master (each of their keys is alone in its slot, or
// tagged with its record's).
func TestClusterSharedState(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	ctx := t.Context()
	bus, err := New(ctx, c.Client(), Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	store := takedown.NewRedisStore(bus.Client(), time.Hour, DefaultPrefix)
	masters := map[string]bool{}
	for i := range 12 {
		id := fmt.Sprintf("corr-%d", i)
		masters[c.MasterOf(t, DefaultPrefix+"td:{"+id+"}").Addr] = true
		rec := &takedown.Record{CorrelationID: id, Principal: "police", IdempotencyKey: "key-" + id, ItemID: "item-1", Status: takedown.StatusPending, CreatedAt: time.Now()}
		if prev, err := store.Reserve(ctx, rec); err != nil || prev != nil {
			t.Fatalf("reserve %s: %v %v", id, prev, err)
		}
		again := *rec
		again.CorrelationID = "other-" + id
		if prev, err := store.Reserve(ctx, &again); err != nil || prev == nil || prev.CorrelationID != id {
			t.Fatalf("the same key again: %+v %v, want %s", prev, err, id)
		}
		if err := store.MarkPublished(ctx, id); err != nil {
			t.Fatal(err)
		}
		if got, err := store.Get(ctx, id); err != nil || !got.Published {
			t.Fatalf("get %s: %+v %v", id, got, err)
		}
	}
	if len(masters) != 3 {
		t.Errorf("records on %d masters, want 3", len(masters))
	}
	// Without a key, and changed by two nodes' stores, each with its own
	// (soon stale) sight of the record.
	other := takedown.NewRedisStore(bus.Client(), time.Hour, DefaultPrefix)
	for i := range 6 {
		id := fmt.Sprintf("nokey-%d", i)
		rec := &takedown.Record{CorrelationID: id, ItemID: "item-1", Status: takedown.StatusPending, CreatedAt: time.Now()}
		if prev, err := store.Reserve(ctx, rec); err != nil || prev != nil {
			t.Fatalf("reserve %s: %v %v", id, prev, err)
		}
		if err := other.MarkPublished(ctx, id); err != nil {
			t.Fatal(err)
		}
		ev := func(typ, data string) *hub.Event {
			js := fmt.Sprintf(`{"specversion":"1.0","id":"e-%s","source":"/t","type":%q,"correlationid":%q,"data":%s}`, typ, typ, id, data)
			return &hub.Event{ID: "e", Source: "/t", Type: typ, CorrelationID: id, Subject: "item-1", JSON: []byte(js)}
		}
		if err := store.Apply(ctx, ev(takedown.TypeRemoved, `{"item_id":"item-1","container_id":"g1"}`)); err != nil {
			t.Fatal(err)
		}
		if err := other.Apply(ctx, ev(takedown.TypeRemoved, `{"item_id":"item-1","container_id":"g2"}`)); err != nil {
			t.Fatal(err)
		}
		if got, err := store.Get(ctx, id); err != nil || !got.Published || fmt.Sprint(got.RemovedFrom) != "[g1 g2]" {
			t.Fatalf("get %s: %+v %v", id, got, err)
		}
	}
	if left, err := store.ClaimUnpublished(ctx, time.Now().Add(time.Hour), 100); err != nil || len(left) != 0 {
		t.Fatalf("unpublished %v %v", left, err)
	}

	rev := auth.NewRedisRevocations(bus.Client(), DefaultPrefix)
	if err := rev.Revoke(ctx, "session-1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"session-1": true, "session-2": false} {
		if got, err := rev.Revoked(ctx, id); err != nil || got != want {
			t.Fatalf("revoked %s = %v %v, want %v", id, got, err, want)
		}
	}
}
