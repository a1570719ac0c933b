package takedown

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
	"github.com/switchboard/switchboard/producers"
)

// node is one node's view of a shared Redis store: its own client (so its
// own connections) and its own store, with the round trips it makes.
type storeNode struct {
	s  *RedisStore
	rt *redistest.RoundTrips
}

func newStoreNode(t *testing.T, srv redistest.Server) storeNode {
	c := srv.Client()
	t.Cleanup(func() { c.Close() })
	rt := &redistest.RoundTrips{}
	c.AddHook(rt)
	return storeNode{s: NewRedisStore(c, time.Hour, srv.Prefix), rt: rt}
}

func pendingRecord(id string) *Record {
	return &Record{CorrelationID: id, ItemID: "item-1", Status: StatusPending, CreatedAt: time.Now(), EventID: "ev-" + id}
}

// TestRedisStoreRoundTrips: on the node that reserved a takedown, marking
// it published and folding in its outcomes are one round trip each (the
// compare-and-set pipelined with the publishing set's ZREM), not a read
// and then a write.
func TestRedisStoreRoundTrips(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n := newStoreNode(t, srv)
			// The first compare-and-set and the first keyed record may
			// load their scripts.
			warm := pendingRecord("rt-warm")
			warm.Principal, warm.IdempotencyKey = "p", "rt-warm"
			if _, err := n.s.Reserve(ctx, warm); err != nil {
				t.Fatal(err)
			}
			if err := n.s.MarkPublished(ctx, warm.CorrelationID); err != nil {
				t.Fatal(err)
			}

			// Reserve: the publishing set and the record in one pipeline
			// on one server; with an idempotency key, its SET NX and the
			// set, then the record.
			rec := pendingRecord("rt-1")
			var err error
			if got := n.rt.Count(func() { _, err = n.s.Reserve(ctx, rec) }); err != nil || got != 1 {
				t.Fatalf("Reserve: %d round trips (%v), want 1", got, err)
			}
			keyed := pendingRecord("rt-k1")
			keyed.Principal, keyed.IdempotencyKey = "p", "rt-key"
			if got := n.rt.Count(func() { _, err = n.s.Reserve(ctx, keyed) }); err != nil || got != 2 {
				t.Fatalf("Reserve with a key: %d round trips (%v), want 2", got, err)
			}
			joined := *keyed
			joined.CorrelationID = "rt-k2"
			if ex, err := n.s.Reserve(ctx, &joined); err != nil || ex == nil || ex.CorrelationID != "rt-k1" {
				t.Fatalf("Reserve with a taken key: %+v %v", ex, err)
			}
			if err := n.s.rdb.ZScore(ctx, n.s.publishingKey(), "rt-k2").Err(); !errors.Is(err, redis.Nil) {
				t.Fatalf("a request that joined a key left its correlation ID publishing: %v", err)
			}
			if claimed, err := n.s.ClaimUnpublished(ctx, time.Now().Add(time.Hour), 10); err != nil || len(claimed) != 2 {
				t.Fatalf("claim: %+v %v, want rt-1 and rt-k1", claimed, err)
			}
			steps := []struct {
				name string
				f    func() error
			}{
				{"MarkPublished", func() error { return n.s.MarkPublished(ctx, "rt-1") }},
				{"Apply item.removed", func() error {
					return n.s.Apply(ctx, outcomeEvent(TypeRemoved, "rt-1", `{"item_id":"item-1","container_id":"g1"}`))
				}},
				{"Apply takedown.confirmed", func() error {
					return n.s.Apply(ctx, outcomeEvent(TypeConfirmed, "rt-1", `{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}`))
				}},
			}
			for _, st := range steps {
				if got := n.rt.Count(func() { err = st.f() }); err != nil || got != 1 {
					t.Fatalf("%s: %d round trips (%v), want 1", st.name, got, err)
				}
			}
			got, err := n.s.Get(ctx, "rt-1")
			if err != nil || !got.Published || got.Status != StatusConfirmed || fmt.Sprint(got.RemovedFrom) != "[g1]" {
				t.Fatalf("%+v %v", got, err)
			}
			if err := n.s.MarkPublished(ctx, "rt-k1"); err != nil {
				t.Fatal(err)
			}
			if claimed, _ := n.s.ClaimUnpublished(ctx, time.Now().Add(time.Hour), 10); len(claimed) != 0 {
				t.Fatalf("still publishing: %+v", claimed)
			}

			// Another node that never saw the record reads it first, once.
			other := newStoreNode(t, srv)
			rec2 := pendingRecord("rt-2")
			if _, err := n.s.Reserve(ctx, rec2); err != nil {
				t.Fatal(err)
			}
			if got := other.rt.Count(func() { err = other.s.MarkPublished(ctx, "rt-2") }); err != nil || got != 2 {
				t.Fatalf("MarkPublished of a record never seen: %d round trips (%v), want 2 (GET, then the compare-and-set)", got, err)
			}
		})
	}
}

// TestRedisStoreStaleSeen: a node whose last sight of a record is stale
// (another node wrote it since) still folds its change into the record as
// it is, keeping the other node's, at the cost of one more round trip (the
// failed compare-and-set hands back the current record; no extra read).
func TestRedisStoreStaleSeen(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			a, b := newStoreNode(t, srv), newStoreNode(t, srv)
			if _, err := a.s.Reserve(ctx, pendingRecord("st-1")); err != nil {
				t.Fatal(err)
			}
			// b marks it published: a's sight (unpublished) is stale.
			if err := b.s.MarkPublished(ctx, "st-1"); err != nil {
				t.Fatal(err)
			}
			var err error
			if got := a.rt.Count(func() {
				err = a.s.Apply(ctx, outcomeEvent(TypeRemoved, "st-1", `{"item_id":"item-1","container_id":"g1"}`))
			}); err != nil || got != 2 {
				t.Fatalf("apply on a stale sight: %d round trips (%v), want 2 (the compare-and-set that fails and hands back the record, the one that holds)", got, err)
			}
			// b's sight (published, no container) is stale now: its progress
			// and a's are both kept.
			if err := b.s.Apply(ctx, outcomeEvent(TypeRemoved, "st-1", `{"item_id":"item-1","container_id":"g2"}`)); err != nil {
				t.Fatal(err)
			}
			got, err := a.s.Get(ctx, "st-1")
			if err != nil || !got.Published || fmt.Sprint(got.RemovedFrom) != "[g1 g2]" {
				t.Fatalf("%+v %v: want published, [g1 g2]", got, err)
			}
			// An untrusted event judged on a stale sight is judged again on
			// the record, and changes nothing.
			if err := b.s.Apply(ctx, outcomeEvent(TypeConfirmed, "st-1", `{"item_id":"item-1","removed_from":["g1","g2"],"confirmed_at":"2026-01-01T00:00:00Z"}`)); err != nil {
				t.Fatal(err)
			}
			if err := a.s.Apply(ctx, outcomeEvent(TypeRejected, "st-1", `{"item_id":"item-1","reason":"late"}`)); err != nil {
				t.Fatal(err)
			}
			got, err = a.s.Get(ctx, "st-1")
			if err != nil || got.Status != StatusConfirmed {
				t.Fatalf("%+v %v: want confirmed (the first outcome stays)", got, err)
			}

			// A record gone (released or expired) is gone for a node that
			// still remembers it: its outcome is untrusted and makes nothing.
			if _, err := a.s.Reserve(ctx, pendingRecord("st-2")); err != nil {
				t.Fatal(err)
			}
			if err := b.s.Release(ctx, pendingRecord("st-2")); err != nil {
				t.Fatal(err)
			}
			var ue *UntrustedError
			if err := a.s.Apply(ctx, outcomeEvent(TypeConfirmed, "st-2", `{"item_id":"item-1"}`)); !errors.As(err, &ue) || ue.Reason != ReasonUnknown {
				t.Fatalf("outcome of a released record: %v", err)
			}
			if err := a.s.MarkPublished(ctx, "st-2"); err != nil {
				t.Fatal(err)
			}
			if _, err := a.s.Get(ctx, "st-2"); err == nil {
				t.Fatal("a write on a stale sight made a released record again")
			}

			// A release finds the record unpublished, but another node's
			// sweep publishes it before the delete: the record stays.
			if _, err := a.s.Reserve(ctx, pendingRecord("st-3")); err != nil {
				t.Fatal(err)
			}
			b.s.releaseRead = func() {
				if err := a.s.MarkPublished(ctx, "st-3"); err != nil {
					t.Error(err)
				}
			}
			err = b.s.Release(ctx, pendingRecord("st-3"))
			b.s.releaseRead = nil
			if err != nil {
				t.Fatal(err)
			}
			if got, err := b.s.Get(ctx, "st-3"); err != nil || !got.Published {
				t.Fatalf("%+v %v: a record published during its release was deleted", got, err)
			}
		})
	}
}

// TestRedisStoreTwoNodesConcurrent: two nodes' stores folding outcomes of
// one takedown at once, each from its own (soon stale) sight of it, lose
// none: every progress event is kept, then the outcome.
func TestRedisStoreTwoNodesConcurrent(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			nodes := []storeNode{newStoreNode(t, srv), newStoreNode(t, srv)}
			if _, err := nodes[0].s.Reserve(ctx, pendingRecord("cn-1")); err != nil {
				t.Fatal(err)
			}
			if _, err := nodes[1].s.Get(ctx, "cn-1"); err != nil { // both have seen it
				t.Fatal(err)
			}
			const per = 12
			var wg sync.WaitGroup
			var want []string
			for i, n := range nodes {
				for j := range per {
					want = append(want, fmt.Sprintf("n%d-g%d", i, j))
				}
				wg.Go(func() {
					for j := range per {
						ev := outcomeEvent(TypeRemoved, "cn-1", fmt.Sprintf(`{"item_id":"item-1","container_id":"n%d-g%d"}`, i, j))
						if err := n.s.Apply(ctx, ev); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Go(func() {
				if err := nodes[0].s.MarkPublished(ctx, "cn-1"); err != nil {
					t.Error(err)
				}
			})
			wg.Wait()
			got, err := nodes[1].s.Get(ctx, "cn-1")
			if err != nil {
				t.Fatal(err)
			}
			have := slices.Sorted(slices.Values(got.RemovedFrom))
			slices.Sort(want)
			if !got.Published || !slices.Equal(have, want) {
				t.Fatalf("published %v, containers %v: want published, %v", got.Published, have, want)
			}
			// The outcome from one node while the other still folds progress.
			wg.Go(func() {
				if err := nodes[0].s.Apply(ctx, outcomeEvent(TypeConfirmed, "cn-1", `{"item_id":"item-1","confirmed_at":"2026-01-01T00:00:00Z"}`)); err != nil {
					t.Error(err)
				}
			})
			wg.Go(func() {
				if err := nodes[1].s.Apply(ctx, outcomeEvent(TypeRemoved, "cn-1", `{"item_id":"item-1","container_id":"late"}`)); err != nil {
					t.Error(err)
				}
			})
			wg.Wait()
			got, err = nodes[1].s.Get(ctx, "cn-1")
			if err != nil || got.Status != StatusConfirmed || got.ConfirmedAt == "" || len(got.Event) == 0 {
				t.Fatalf("%+v %v: want confirmed", got, err)
			}
			if n := len(got.RemovedFrom); n != 2*per && n != 2*per+1 {
				t.Fatalf("the outcome lost progress: %v", got.RemovedFrom)
			}
		})
	}
}

// TestSeenRecordsBounded: a node's sight of records stays bounded however
// many it sees.
func TestSeenRecordsBounded(t *testing.T) {
	var c seenRecords
	for i := range 5 * seenSize {
		c.put(fmt.Sprint(i), []byte("x"), false)
		if n := c.len(); n > 2*seenSize {
			t.Fatalf("%d records seen after %d", n, i+1)
		}
	}
	// The newest are kept; the oldest are forgotten.
	if c.get(fmt.Sprint(5*seenSize-1)) == nil || c.get("0") != nil {
		t.Fatal("kept the wrong records")
	}
	// A record used again stays.
	c.put("keep", []byte("k"), false)
	for i := range 3 * seenSize {
		c.put(fmt.Sprint("y", i), []byte("y"), false)
		if i%(seenSize/2) == 0 {
			c.put("keep", c.get("keep"), false)
		}
	}
	if string(c.get("keep")) != "k" {
		t.Fatal("a record in use was forgotten")
	}
	// A big record is not kept, and forgets what was kept of it.
	c.put("keep", make([]byte, seenMaxBytes+1), false)
	if c.get("keep") != nil {
		t.Fatal("kept a record bigger than seenMaxBytes")
	}
}

// TestRedisStoreFinalFromSeen: the node that folded in a takedown's outcome
// answers a read of it with no round trip (a final record changes no more);
// a node that never saw it final reads Redis, once, then answers from what
// it read; a pending record is always read from Redis (an outcome may come
// from another node meanwhile), and so is a final one past half its TTL.
func TestRedisStoreFinalFromSeen(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n, other := newStoreNode(t, srv), newStoreNode(t, srv)
			rec := pendingRecord("fs-1")
			if _, err := n.s.Reserve(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if err := n.s.MarkPublished(ctx, "fs-1"); err != nil {
				t.Fatal(err)
			}
			var got *Record
			var err error
			if rt := n.rt.Count(func() { got, err = n.s.Get(ctx, "fs-1") }); err != nil || rt != 1 || got.Final() {
				t.Fatalf("Get of a pending record: %d round trips, %+v %v; want 1, pending", rt, got, err)
			}
			if err := n.s.Apply(ctx, outcomeEvent(TypeConfirmed, "fs-1", `{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}`)); err != nil {
				t.Fatal(err)
			}
			if rt := n.rt.Count(func() { got, err = n.s.Get(ctx, "fs-1") }); err != nil || rt != 0 || got.Status != StatusConfirmed || fmt.Sprint(got.RemovedFrom) != "[g1]" {
				t.Fatalf("Get of the record this node made final: %d round trips, %+v %v; want 0, confirmed from g1", rt, got, err)
			}
			// A copy: changing it changes nothing the node keeps.
			got.Status = StatusPending
			if again, _ := n.s.Get(ctx, "fs-1"); again.Status != StatusConfirmed {
				t.Fatalf("the node's copy changed: %+v", again)
			}
			for i, want := range []int64{1, 0} {
				if rt := other.rt.Count(func() { got, err = other.s.Get(ctx, "fs-1") }); err != nil || rt != want || got.Status != StatusConfirmed {
					t.Fatalf("Get %d on another node: %d round trips, %+v %v; want %d", i+1, rt, got, err, want)
				}
			}
			// Past half the TTL: read from Redis.
			old := pendingRecord("fs-2")
			old.CreatedAt = time.Now().Add(-40 * time.Minute) // the TTL is an hour
			if _, err := n.s.Reserve(ctx, old); err != nil {
				t.Fatal(err)
			}
			if err := n.s.Apply(ctx, outcomeEvent(TypeConfirmed, "fs-2", `{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}`)); err != nil {
				t.Fatal(err)
			}
			if rt := n.rt.Count(func() { got, err = n.s.Get(ctx, "fs-2") }); err != nil || rt != 1 || got.Status != StatusConfirmed {
				t.Fatalf("Get of a final record past half its TTL: %d round trips, %+v %v; want 1", rt, got, err)
			}
		})
	}
}

// TestRedisStoreApplyAll: a batch of outcomes of records this node saw is
// folded in with one round trip; in a batch that also holds a record never
// seen, a second outcome of one record, a record another node changed
// meanwhile and an unknown correlation ID, each is still folded in as
// apply would (the other node's change kept), and the unknown one is
// untrusted.
func TestRedisStoreApplyAll(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n, other := newStoreNode(t, srv), newStoreNode(t, srv)
			// The first compare-and-set may load the script.
			if _, err := n.s.Reserve(ctx, pendingRecord("aa-warm")); err != nil {
				t.Fatal(err)
			}
			if err := n.s.MarkPublished(ctx, "aa-warm"); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"aa-1", "aa-2", "aa-3", "aa-4"} {
				if _, err := n.s.Reserve(ctx, pendingRecord(id)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := other.s.Reserve(ctx, pendingRecord("aa-5")); err != nil {
				t.Fatal(err)
			}
			confirmed := func(id string) *hub.Event {
				return outcomeEvent(TypeConfirmed, id, `{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}`)
			}
			removed := func(id, g string) *hub.Event {
				return outcomeEvent(TypeRemoved, id, `{"item_id":"item-1","container_id":"`+g+`"}`)
			}
			var errs []error
			if rt := n.rt.Count(func() {
				errs = n.s.applyAll(ctx, []*hub.Event{confirmed("aa-1"), removed("aa-2", "g1"), confirmed("aa-3")}, applyTakedown)
			}); rt != 1 || errors.Join(errs...) != nil {
				t.Fatalf("three outcomes of records this node saw: %d round trips (%v), want 1", rt, errs)
			}
			for id, want := range map[string]Status{"aa-1": StatusConfirmed, "aa-2": StatusPending, "aa-3": StatusConfirmed} {
				if r, err := other.s.Get(ctx, id); err != nil || r.Status != want || fmt.Sprint(r.RemovedFrom) != "[g1]" {
					t.Fatalf("%s: %+v %v, want %s from g1", id, r, err, want)
				}
			}
			// aa-4: another node folds in g2 first; this node does not know.
			if err := other.s.Apply(ctx, removed("aa-4", "g2")); err != nil {
				t.Fatal(err)
			}
			errs = n.s.applyAll(ctx, []*hub.Event{
				removed("aa-2", "g3"), removed("aa-4", "g3"), confirmed("aa-5"),
				confirmed("aa-2"), confirmed("aa-unknown"),
			}, applyTakedown)
			var ue *UntrustedError
			if errors.Join(errs[:4]...) != nil || !errors.As(errs[4], &ue) || ue.Reason != ReasonUnknown {
				t.Fatalf("errors %v, want none but an unknown correlation ID for the last", errs)
			}
			for id, want := range map[string]string{"aa-2": "confirmed [g1]", "aa-4": "pending [g2 g3]", "aa-5": "confirmed [g1]"} {
				if r, err := other.s.Get(ctx, id); err != nil || fmt.Sprint(r.Status, " ", r.RemovedFrom) != want {
					t.Fatalf("%s: %+v %v, want %s", id, r, err, want)
				}
			}
		})
	}
}

// TestFreshTakedownReadByMark: on the Redis store a takedown the request
// reserved is not read again before its command is published: the mark of
// the published command reads it (its compare-and-set hands the record
// back), so the request costs the reservation and the mark, two round
// trips, not three. An outcome stored meanwhile, whose event this node never
// hears, is still found by that read: the request is answered with it at
// once, not at its deadline.
func TestFreshTakedownReadByMark(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			n := newStoreNode(t, srv)
			r := newRigOn(t, Config{Timeout: time.Hour}, n.s)
			// The first compare-and-set may load the script.
			if _, err := n.s.Reserve(t.Context(), pendingRecord("fr-warm")); err != nil {
				t.Fatal(err)
			}
			if err := n.s.MarkPublished(t.Context(), "fr-warm"); err != nil {
				t.Fatal(err)
			}
			var resp *http.Response
			if rt := n.rt.Count(func() {
				resp, _ = r.post(t, `{"item_id":"item-1","reason":"r"}`, "Prefer", "respond-async")
			}); rt != 2 || resp.StatusCode != http.StatusAccepted {
				t.Fatalf("a fresh takedown: %d round trips, status %d; want 2 (reserve, mark), 202", rt, resp.StatusCode)
			}
			// The outcome is stored while the command is published, and its
			// event never reaches this node's hub.
			other := newStoreNode(t, srv)
			r.cmd.answer = func(cmd producers.CloudEvent) {
				ev := outcome(TypeConfirmed, cmd, `{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}`)
				if err := other.s.Apply(context.Background(), ev); err != nil {
					t.Error(err)
				}
			}
			resp, body := r.post(t, `{"item_id":"item-1","reason":"r"}`)
			if resp.StatusCode != http.StatusOK || body["status"] != "confirmed" {
				t.Fatalf("status %d %v, want 200 confirmed at once", resp.StatusCode, body)
			}
		})
	}
}

// holdFirst holds the first command or pipeline a client sends until
// release is closed.
type holdFirst struct {
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (h *holdFirst) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdFirst) hold() {
	h.once.Do(func() {
		close(h.held)
		<-h.release
	})
}

func (h *holdFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !redistest.Handshake(cmd) {
			h.hold()
		}
		return next(ctx, cmd)
	}
}

func (h *holdFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !slices.ContainsFunc(cmds, redistest.Handshake) {
			h.hold()
		}
		return next(ctx, cmds)
	}
}

// TestRedisStoreMarksTogether: the marks of published commands that come
// while one is in flight wait for it and then go together, in one round
// trip; each gets its own record back, marked.
func TestRedisStoreMarksTogether(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n := newStoreNode(t, srv)
			// The first compare-and-set may load the script.
			if _, err := n.s.Reserve(ctx, pendingRecord("mt-warm")); err != nil {
				t.Fatal(err)
			}
			if err := n.s.MarkPublished(ctx, "mt-warm"); err != nil {
				t.Fatal(err)
			}
			ids := []string{"mt-0", "mt-1", "mt-2", "mt-3", "mt-4", "mt-5"}
			for _, id := range ids {
				if _, err := n.s.Reserve(ctx, pendingRecord(id)); err != nil {
					t.Fatal(err)
				}
			}
			h := &holdFirst{held: make(chan struct{}), release: make(chan struct{})}
			n.s.rdb.AddHook(h)
			before := n.rt.N()
			var wg sync.WaitGroup
			recs := make([]*Record, len(ids))
			errs := make([]error, len(ids))
			wg.Go(func() { recs[0], errs[0] = n.s.markPublished(ctx, ids[0]) })
			<-h.held
			for i := 1; i < len(ids); i++ {
				wg.Go(func() { recs[i], errs[i] = n.s.markPublished(ctx, ids[i]) })
			}
			for {
				n.s.marks.mu.Lock()
				queued := len(n.s.marks.queue)
				n.s.marks.mu.Unlock()
				if queued == len(ids)-1 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			close(h.release)
			wg.Wait()
			if rt := n.rt.N() - before; rt != 2 {
				t.Fatalf("%d marks, one in flight when the rest came: %d round trips, want 2", len(ids), rt)
			}
			for i, id := range ids {
				if errs[i] != nil || recs[i] == nil || recs[i].CorrelationID != id || !recs[i].Published {
					t.Fatalf("mark of %s: %+v %v", id, recs[i], errs[i])
				}
				if r, err := newStoreNode(t, srv).s.Get(ctx, id); err != nil || !r.Published {
					t.Fatalf("%s in Redis: %+v %v", id, r, err)
				}
			}
		})
	}
}

// TestRedisStoreReservesTogether: the reservations that come while one is
// in flight wait for it and then go together: their keys' SET NX, the
// publishing set and the records without a key in one round trip, the
// records with a key in a second; a request whose key was taken, even by
// another in the same batch, joins the takedown it names.
func TestRedisStoreReservesTogether(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n := newStoreNode(t, srv)
			taken := pendingRecord("rv-t")
			taken.Principal, taken.IdempotencyKey = "p", "rv-taken"
			if ex, err := n.s.Reserve(ctx, taken); ex != nil || err != nil {
				t.Fatal(ex, err)
			}
			keyed := func(id, key string) *Record {
				r := pendingRecord(id)
				r.Principal, r.IdempotencyKey = "p", key
				return r
			}
			recs := []*Record{pendingRecord("rv-0"), pendingRecord("rv-1"), pendingRecord("rv-2"), pendingRecord("rv-3"),
				keyed("rv-k1", "rv-key"), keyed("rv-k2", "rv-key"), keyed("rv-j", "rv-taken")}
			h := &holdFirst{held: make(chan struct{}), release: make(chan struct{})}
			n.s.rdb.AddHook(h)
			before := n.rt.N()
			var wg sync.WaitGroup
			existing := make([]*Record, len(recs))
			errs := make([]error, len(recs))
			wg.Go(func() { existing[0], errs[0] = n.s.Reserve(ctx, recs[0]) })
			<-h.held
			for i := 1; i < len(recs); i++ {
				// In order, so rv-k1 takes the key rv-k2 then finds taken.
				n.s.reserves.mu.Lock()
				queued := len(n.s.reserves.queue)
				n.s.reserves.mu.Unlock()
				wg.Go(func() { existing[i], errs[i] = n.s.Reserve(ctx, recs[i]) })
				for queued < i {
					time.Sleep(time.Millisecond)
					n.s.reserves.mu.Lock()
					queued = len(n.s.reserves.queue)
					n.s.reserves.mu.Unlock()
				}
			}
			close(h.release)
			wg.Wait()
			// The first alone (1); the rest together (1), then rv-k1's
			// record (1); each of the two joins reads its key and then
			// the record it names (2 each), as a join alone does.
			if rt := n.rt.N() - before; rt != 7 {
				t.Fatalf("%d reservations, one in flight when the rest came: %d round trips, want 7", len(recs), rt)
			}
			for i, r := range recs {
				switch r.CorrelationID {
				case "rv-k2":
					if errs[i] != nil || existing[i] == nil || existing[i].CorrelationID != "rv-k1" {
						t.Fatalf("rv-k2 took rv-k1's key in the same batch: %+v %v, want rv-k1", existing[i], errs[i])
					}
				case "rv-j":
					if errs[i] != nil || existing[i] == nil || existing[i].CorrelationID != "rv-t" {
						t.Fatalf("rv-j: %+v %v, want rv-t", existing[i], errs[i])
					}
				default:
					if errs[i] != nil || existing[i] != nil {
						t.Fatalf("%s: %+v %v, want reserved", r.CorrelationID, existing[i], errs[i])
					}
					if got, err := newStoreNode(t, srv).s.Get(ctx, r.CorrelationID); err != nil || got.Status != StatusPending {
						t.Fatalf("%s in Redis: %+v %v", r.CorrelationID, got, err)
					}
				}
			}
			claimed, err := n.s.ClaimUnpublished(ctx, time.Now().Add(time.Hour), 20)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range claimed {
				ids = append(ids, r.CorrelationID)
			}
			slices.Sort(ids)
			if fmt.Sprint(ids) != "[rv-0 rv-1 rv-2 rv-3 rv-k1 rv-t]" {
				t.Fatalf("publishing: %v, want the reserved ones and not those that joined", ids)
			}
		})
	}
}

// TestRedisStoreMarkAfterOutcome: the broker's ack of a command may come
// after the node's consumer folded in its outcome. Marking a takedown this
// node saw final then costs no round trip (a final record changes no
// more, and its outcome took it out of the publishing set); one it saw
// published by a progress event is read and taken out of the set in one
// round trip, not two. Either way the mark hands back the record as
// stored.
func TestRedisStoreMarkAfterOutcome(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n := newStoreNode(t, srv)
			for _, id := range []string{"ma-1", "ma-2"} {
				if _, err := n.s.Reserve(ctx, pendingRecord(id)); err != nil {
					t.Fatal(err)
				}
			}
			if err := n.s.Apply(ctx, outcomeEvent(TypeConfirmed, "ma-1", `{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}`)); err != nil {
				t.Fatal(err)
			}
			if err := n.s.Apply(ctx, outcomeEvent(TypeRemoved, "ma-2", `{"item_id":"item-1","container_id":"g1"}`)); err != nil {
				t.Fatal(err)
			}
			var rec *Record
			var err error
			if got := n.rt.Count(func() { rec, err = n.s.markPublished(ctx, "ma-1") }); err != nil || got != 0 || rec == nil || rec.Status != StatusConfirmed {
				t.Fatalf("mark of a takedown seen final: %d round trips, %+v %v; want 0, confirmed", got, rec, err)
			}
			if got := n.rt.Count(func() { rec, err = n.s.markPublished(ctx, "ma-2") }); err != nil || got != 1 || rec == nil || !rec.Published || fmt.Sprint(rec.RemovedFrom) != "[g1]" {
				t.Fatalf("mark of a takedown seen published: %d round trips, %+v %v; want 1, published, removed from g1", got, rec, err)
			}
			if claimed, err := n.s.ClaimUnpublished(ctx, time.Now().Add(time.Hour), 10); err != nil || len(claimed) != 0 {
				t.Fatalf("still publishing: %+v %v", claimed, err)
			}
			// A mark of a record gone finds nothing, and says so.
			other := newStoreNode(t, srv)
			if _, err := other.s.Reserve(ctx, pendingRecord("ma-3")); err != nil {
				t.Fatal(err)
			}
			if err := other.s.rdb.Del(ctx, other.s.recKey("ma-3")).Err(); err != nil {
				t.Fatal(err)
			}
			if rec, err := other.s.markPublished(ctx, "ma-3"); err != nil || rec != nil {
				t.Fatalf("mark of a record gone: %+v %v", rec, err)
			}
		})
	}
}

// TestRedisStoreSeenParsedOnce: the records a node answers from what it
// saw are copies of the one parse it keeps: changing one changes neither
// what the node answers next nor what it writes.
func TestRedisStoreSeenParsedOnce(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n := newStoreNode(t, srv)
			if _, err := n.s.Reserve(ctx, pendingRecord("sp-1")); err != nil {
				t.Fatal(err)
			}
			if err := n.s.Apply(ctx, outcomeEvent(TypeConfirmed, "sp-1", `{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}`)); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				var r *Record
				var err error
				if got := n.rt.Count(func() { r, err = n.s.Get(ctx, "sp-1") }); err != nil || got != 0 {
					t.Fatalf("Get of a record seen final: %d round trips (%v), want 0", got, err)
				}
				if r.Status != StatusConfirmed || fmt.Sprint(r.RemovedFrom) != "[g1]" {
					t.Fatalf("Get: %+v", r)
				}
				r.Status, r.RemovedFrom[0] = StatusPending, "changed"
				r.RemovedFrom = append(r.RemovedFrom, "g2")
			}
			m, err := n.s.markPublished(ctx, "sp-1")
			if err != nil || m.Status != StatusConfirmed || fmt.Sprint(m.RemovedFrom) != "[g1]" {
				t.Fatalf("mark: %+v %v", m, err)
			}
			if r, err := newStoreNode(t, srv).s.Get(ctx, "sp-1"); err != nil || r.Status != StatusConfirmed || fmt.Sprint(r.RemovedFrom) != "[g1]" {
				t.Fatalf("in Redis: %+v %v", r, err)
			}
		})
	}
}

// TestRedisStoreApplyAllOneRecord: the outcomes of one record in a batch
// are folded into one compare-and-set, in order (one round trip, not one
// each); one not trusted is refused alone. When another node wrote the
// record meanwhile, they are folded into what it wrote, one at a time.
func TestRedisStoreApplyAllOneRecord(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n, other := newStoreNode(t, srv), newStoreNode(t, srv)
			// The first compare-and-set may load the script.
			if _, err := n.s.Reserve(ctx, pendingRecord("ao-warm")); err != nil {
				t.Fatal(err)
			}
			if err := n.s.MarkPublished(ctx, "ao-warm"); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"ao-1", "ao-2"} {
				if _, err := n.s.Reserve(ctx, pendingRecord(id)); err != nil {
					t.Fatal(err)
				}
			}
			removed := func(id, item, g string) *hub.Event {
				return outcomeEvent(TypeRemoved, id, `{"item_id":"`+item+`","container_id":"`+g+`"}`)
			}
			var errs []error
			if rt := n.rt.Count(func() {
				errs = n.s.applyAll(ctx, []*hub.Event{
					removed("ao-1", "item-1", "g1"), removed("ao-1", "item-other", "gx"), removed("ao-1", "item-1", "g2"),
					outcomeEvent(TypeConfirmed, "ao-1", `{"item_id":"item-1","removed_from":["g1","g2"],"confirmed_at":"2026-01-01T00:00:00Z"}`),
				}, applyTakedown)
			}); rt != 1 {
				t.Fatalf("four outcomes of one record: %d round trips, want 1", rt)
			}
			if errs[0] != nil || errs[2] != nil || errs[3] != nil || errs[1] == nil {
				t.Fatalf("errors %v, want one for the other item's alone", errs)
			}
			if r, err := other.s.Get(ctx, "ao-1"); err != nil || fmt.Sprint(r.Status, " ", r.RemovedFrom) != "confirmed [g1 g2]" {
				t.Fatalf("ao-1: %+v %v", r, err)
			}
			// ao-2: another node folds in g9 first; this node does not know.
			if err := other.s.Apply(ctx, removed("ao-2", "item-1", "g9")); err != nil {
				t.Fatal(err)
			}
			errs = n.s.applyAll(ctx, []*hub.Event{removed("ao-2", "item-1", "g1"), removed("ao-2", "item-1", "g2")}, applyTakedown)
			if errors.Join(errs...) != nil {
				t.Fatal(errs)
			}
			if r, err := other.s.Get(ctx, "ao-2"); err != nil || fmt.Sprint(r.Status, " ", r.RemovedFrom) != "pending [g9 g1 g2]" {
				t.Fatalf("ao-2: %+v %v, want pending from g9, g1, g2", r, err)
			}
		})
	}
}

// holdKey holds the first command or pipeline a client sends that names
// key, until release is closed.
type holdKey struct {
	key     string
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (h *holdKey) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdKey) names(cmd redis.Cmder) bool {
	return slices.ContainsFunc(cmd.Args(), func(a any) bool { s, ok := a.(string); return ok && s == h.key })
}

func (h *holdKey) hold() {
	h.once.Do(func() {
		close(h.held)
		<-h.release
	})
}

func (h *holdKey) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.names(cmd) {
			h.hold()
		}
		return next(ctx, cmd)
	}
}

func (h *holdKey) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, h.names) {
			h.hold()
		}
		return next(ctx, cmds)
	}
}

// TestRedisStoreKeyRaceOneCommand: however many requests with one
// Idempotency-Key come at once, on however many nodes, exactly one of them
// reserves (its command is published) and every other one joins it, also
// when the first one's record is late after its key (a slow node): held
// until the others came, or until they are done. Only the reserved ones
// are left for the sweep to publish.
func TestRedisStoreKeyRaceOneCommand(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			var nodes []storeNode
			for range 4 {
				nodes = append(nodes, newStoreNode(t, srv))
			}
			const per = 5 // requests per node and round
			owners := map[string]bool{}
			// race runs a round; held > 0 holds the record of a first
			// request on a node of its own, after its key was set, and
			// releases it once the others came (1) or are done (2).
			race := func(round, held int) {
				key := fmt.Sprintf("kr-key-%d", round)
				var k keyRound
				reserve := func(s *RedisStore, rec *Record) { k.reserve(ctx, t, s, rec) }
				var first, others sync.WaitGroup
				var h *holdKey
				if held > 0 {
					rec := pendingRecord(fmt.Sprintf("kr-%d-first", round))
					rec.Principal, rec.IdempotencyKey = "p", key
					h = &holdKey{key: nodes[0].s.recKey(rec.CorrelationID), held: make(chan struct{}), release: make(chan struct{})}
					c := srv.Client()
					t.Cleanup(func() { c.Close() })
					c.AddHook(h)
					first.Go(func() { reserve(NewRedisStore(c, time.Hour, srv.Prefix), rec) })
					<-h.held
				}
				for i, n := range nodes {
					for j := range per {
						rec := pendingRecord(fmt.Sprintf("kr-%d-%d-%d", round, i, j))
						rec.Principal, rec.IdempotencyKey = "p", key
						others.Go(func() { reserve(n.s, rec) })
					}
				}
				if held == 1 {
					close(h.release)
				}
				others.Wait()
				if held == 2 {
					close(h.release)
				}
				first.Wait()
				owners[k.owner(t, round)] = true
			}
			for round := range 200 {
				race(round, 0)
			}
			for round := 200; round < 220; round++ {
				race(round, 1+round%2)
			}
			sweepPublishesOwners(ctx, t, nodes[0].s, owners)
		})
	}
}

// TestRedisStoreStaleKeyTaken: a key naming a record that never came (its
// node died between the two) is taken over by the next request with it,
// which the ones after join; the late record of the first is never
// written then.
func TestRedisStoreStaleKeyTaken(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n := newStoreNode(t, srv)
			gone := "sk-never"
			rec := pendingRecord(gone + "-2")
			rec.Principal, rec.IdempotencyKey = "p", gone
			ik := n.s.idemKey(rec)
			if err := n.s.rdb.Set(ctx, ik, gone, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			if ex, err := n.s.Reserve(ctx, rec); ex != nil || err != nil {
				t.Fatalf("%s: %+v %v, want the key taken", gone, ex, err)
			}
			again := *rec
			again.CorrelationID = gone + "-3"
			if ex, err := newStoreNode(t, srv).s.Reserve(ctx, &again); err != nil || ex == nil || ex.CorrelationID != rec.CorrelationID {
				t.Fatalf("%s: %+v %v, want %s joined", gone, ex, err, rec.CorrelationID)
			}
			late, err := n.s.runInt(ctx, recordScript, n.s.recordKeys(gone), "{}", int64(3600000))
			if err != nil || late != 0 {
				t.Fatalf("%s: the late record: %d %v, want fenced off", gone, late, err)
			}
		})
	}
}

// TestRedisStoreOutcomeOverItsMark: a takedown's outcome often reaches
// the store right after its mark, which another node (or this one's
// marks in flight) wrote since this node read the record. The outcome's
// compare-and-set writes over the marked record as over the one it read:
// one round trip, alone and in a batch, and the record ends final and
// marked. A record changed in any other way since is still read again
// and folded into.
func TestRedisStoreOutcomeOverItsMark(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			n, other := newStoreNode(t, srv), newStoreNode(t, srv)
			// The first compare-and-sets may load the script.
			for _, node := range []storeNode{n, other} {
				if _, err := node.s.Reserve(ctx, pendingRecord("om-warm")); err != nil {
					t.Fatal(err)
				}
				if err := node.s.MarkPublished(ctx, "om-warm"); err != nil {
					t.Fatal(err)
				}
			}
			confirmed := func(id string) *hub.Event {
				return outcomeEvent(TypeConfirmed, id, `{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}`)
			}
			for _, id := range []string{"om-1", "om-2", "om-3", "om-4"} {
				if _, err := n.s.Reserve(ctx, pendingRecord(id)); err != nil {
					t.Fatal(err)
				}
				// Marked behind n's back: n still holds the record unmarked.
				if err := other.s.MarkPublished(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if rt := n.rt.Count(func() { err = n.s.Apply(ctx, confirmed("om-1")) }); err != nil || rt != 1 {
				t.Fatalf("an outcome over its mark: %d round trips (%v), want 1", rt, err)
			}
			var errs []error
			if rt := n.rt.Count(func() {
				errs = n.s.applyAll(ctx, []*hub.Event{confirmed("om-2"), confirmed("om-3")}, applyTakedown)
			}); errors.Join(errs...) != nil || rt != 1 {
				t.Fatalf("two outcomes over their marks: %d round trips (%v), want 1", rt, errs)
			}
			// om-4: marked, and a container removed, behind n's back.
			if err := other.s.Apply(ctx, outcomeEvent(TypeRemoved, "om-4", `{"item_id":"item-1","container_id":"g2"}`)); err != nil {
				t.Fatal(err)
			}
			// Its confirmation names no containers: what the record holds
			// stays, so writing over the wrong form would lose g2.
			if err := n.s.Apply(ctx, outcomeEvent(TypeConfirmed, "om-4", `{"item_id":"item-1","confirmed_at":"2026-01-01T00:00:00Z"}`)); err != nil {
				t.Fatal(err)
			}
			third := newStoreNode(t, srv)
			for id, want := range map[string]string{"om-1": "confirmed [g1]", "om-2": "confirmed [g1]", "om-3": "confirmed [g1]", "om-4": "confirmed [g2]"} {
				r, err := third.s.Get(ctx, id)
				if err != nil || !r.Published || fmt.Sprint(r.Status, " ", r.RemovedFrom) != want {
					t.Fatalf("%s: %+v %v, want %s and published", id, r, err, want)
				}
			}
			if claimed, _ := third.s.ClaimUnpublished(ctx, time.Now().Add(time.Hour), 10); len(claimed) != 0 {
				t.Fatalf("still publishing: %+v", claimed)
			}
		})
	}
}

// TestSeenFinalStays: once a node saw a record final, an older sight of
// it handled later (a mark's answer after its outcome's, a refused
// compare-and-set's unparsed record) does not take its place: the call
// woken by the outcome reads it from what was seen, not from Redis.
func TestSeenFinalStays(t *testing.T) {
	var c seenRecords
	final := []byte(`{"correlation_id":"x","status":"confirmed"}`)
	c.put("x", []byte(`{"correlation_id":"x","status":"pending"}`), false)
	c.put("x", final, true)
	c.put("x", []byte(`{"correlation_id":"x","status":"pending","published":true}`), false)
	c.putRec("x", []byte(`{"correlation_id":"x","status":"pending","published":true}`), &Record{CorrelationID: "x", Status: StatusPending})
	if got := c.final("x"); string(got) != string(final) {
		t.Fatalf("final %s, want %s", got, final)
	}
	c.forget("x")
	if c.final("x") != nil || c.get("x") != nil {
		t.Fatal("forgotten, still seen")
	}
}
