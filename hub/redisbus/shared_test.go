package redisbus

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

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
