package takedown

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// TestRedisStoreOnCluster runs the store on a real Redis Cluster (three
// masters), where a script may touch one slot only: the record and its
// fence share one ({<correlation id>}), the idempotency key has its own.
// The store's contract holds; requests with one Idempotency-Key on four
// nodes at once make exactly one command; and a record late after its key
// was taken over is fenced off.
func TestRedisStoreOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	// Each part has its own prefix: the publishing set is one per prefix.
	store := func(prefix string) *RedisStore {
		cl := c.Client()
		t.Cleanup(func() { cl.Close() })
		return NewRedisStore(cl, time.Hour, prefix)
	}
	ctx := t.Context()
	t.Run("contract", func(t *testing.T) { testStore(t, store("contract:")) })

	t.Run("one command per key", func(t *testing.T) {
		nodes := []*RedisStore{store("race:"), store("race:"), store("race:"), store("race:")}
		owners := map[string]bool{}
		for round := range 50 {
			var k keyRound
			var wg sync.WaitGroup
			for i, s := range nodes {
				for j := range 5 {
					rec := pendingRecord(fmt.Sprintf("ckr-%d-%d-%d", round, i, j))
					rec.Principal, rec.IdempotencyKey = "p", fmt.Sprintf("ckr-key-%d", round)
					wg.Go(func() { k.reserve(ctx, t, s, rec) })
				}
			}
			wg.Wait()
			owners[k.owner(t, round)] = true
		}
		sweepPublishesOwners(ctx, t, nodes[0], owners)
	})

	t.Run("a late record is fenced off", func(t *testing.T) {
		s := store("late:")
		gone := "ck-never"
		rec := pendingRecord(gone + "-2")
		rec.Principal, rec.IdempotencyKey = "p", gone
		if err := s.rdb.Set(ctx, s.idemKey(rec), gone, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if ex, err := s.Reserve(ctx, rec); ex != nil || err != nil {
			t.Fatalf("%+v %v, want the key taken", ex, err)
		}
		late, err := s.runInt(ctx, recordScript, s.recordKeys(gone), "{}", int64(3600000))
		if err != nil || late != 0 {
			t.Fatalf("the late record: %d %v, want fenced off", late, err)
		}
	})
}
