package takedown

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

func outcomeEvent(typ, corr, data string) *hub.Event {
	js := fmt.Sprintf(`{"specversion":"1.0","id":"e-%s-%s","source":"/t","type":%q,"correlationid":%q,"data":%s}`, typ, corr, typ, corr, data)
	return &hub.Event{ID: "e", Source: "/t", Type: typ, CorrelationID: corr, Subject: "item-1", JSON: []byte(js)}
}

func TestParsePrefer(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    Preferences
	}{
		{"none", nil, Preferences{}},
		{"wait", []string{"wait=5"}, Preferences{Wait: 5 * time.Second}},
		{"async", []string{"respond-async"}, Preferences{RespondAsync: true}},
		{"both in one", []string{"respond-async, wait=12"}, Preferences{Wait: 12 * time.Second, RespondAsync: true}},
		{"two headers", []string{"wait=3", "Respond-Async"}, Preferences{Wait: 3 * time.Second, RespondAsync: true}},
		{"quoted, spaces", []string{` wait = "7" `}, Preferences{Wait: 7 * time.Second}},
		{"first wait wins", []string{"wait=2, wait=9"}, Preferences{Wait: 2 * time.Second}},
		{"bad wait ignored", []string{"wait=-1", "wait=abc", "wait=1.5"}, Preferences{}},
		{"unknown ignored", []string{"return=minimal; foo=bar, handling=strict"}, Preferences{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.headers {
				h.Add("Prefer", v)
			}
			if got := ParsePrefer(h); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParsePrefer(f *testing.F) {
	for _, s := range []string{"wait=5", "respond-async, wait=10", "wait=99999999999", ";;,,=", "wait=\"3\"; x=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := ParsePrefer(http.Header{"Prefer": {s}})
		if p.Wait < 0 {
			t.Fatalf("negative wait from %q", s)
		}
	})
}

// TestStores runs one body on every Store: memory, and Redis (miniredis,
// and the real server when it answers; required in CI).
func TestStores(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testStore(t, NewMemoryStore(time.Hour, 0)) })
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			c := srv.Client()
			defer c.Close()
			testStore(t, NewRedisStore(c, time.Hour, srv.Prefix))
		})
	}
}

// TestStoresConcurrentApply: outcomes of one takedown applied at once (by
// several nodes' consumers) are all folded in; none overwrites another.
// On Redis this is the compare-and-set retried.
func TestStoresConcurrentApply(t *testing.T) {
	run := func(t *testing.T, s Store) {
		ctx := t.Context()
		rec := &Record{CorrelationID: "cc", ItemID: "item-1", Status: StatusPending, CreatedAt: time.Now()}
		if _, err := s.Reserve(ctx, rec); err != nil {
			t.Fatal(err)
		}
		const n = 8
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if err := s.Apply(ctx, outcomeEvent(TypeRemoved, "cc", fmt.Sprintf(`{"item_id":"item-1","container_id":"g%d"}`, i))); err != nil {
					t.Error(err)
				}
			})
			// Readers meanwhile (held calls) read what Get gave them
			// without the store's lock (-race checks it).
			wg.Go(func() {
				if got, err := s.Get(ctx, "cc"); err != nil || len(got.RemovedFrom) > n || got.Published && got.Status == "" {
					t.Errorf("%+v %v", got, err)
				}
			})
		}
		wg.Wait()
		got, err := s.Get(ctx, "cc")
		if err != nil || len(got.RemovedFrom) != n || !got.Published {
			t.Fatalf("%+v %v: want %d containers and published", got, err, n)
		}
		if claimed, _ := s.ClaimUnpublished(ctx, time.Now().Add(time.Hour), 10); len(claimed) != 0 {
			t.Fatalf("an applied takedown is still publishing: %+v", claimed)
		}
	}
	t.Run("memory", func(t *testing.T) { run(t, NewMemoryStore(time.Hour, 0)) })
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			c := srv.Client()
			defer c.Close()
			run(t, NewRedisStore(c, time.Hour, srv.Prefix))
		})
	}
}

type ownerStore interface {
	Store
	Owner(ctx context.Context, id string) (string, bool)
}

func testStore(t *testing.T, s ownerStore) {
	ctx := t.Context()
	rec := &Record{CorrelationID: "c1", Principal: "p", IdempotencyKey: "k", BodyHash: "h", ItemID: "item-1", Status: StatusPending, CreatedAt: time.Now()}
	if ex, err := s.Reserve(ctx, rec); err != nil || ex != nil {
		t.Fatalf("first reserve: %v %v", ex, err)
	}
	// Same principal and key: the existing record comes back, nothing new.
	again := *rec
	again.CorrelationID = "c2"
	ex, err := s.Reserve(ctx, &again)
	if err != nil || ex == nil || ex.CorrelationID != "c1" {
		t.Fatalf("second reserve: %+v %v", ex, err)
	}
	if _, err := s.Get(ctx, "c2"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a joined request made a record")
	}
	// Another principal's same key is its own.
	other := *rec
	other.CorrelationID, other.Principal = "c3", "q"
	if ex, _ := s.Reserve(ctx, &other); ex != nil {
		t.Fatal("idempotency keys leak across principals")
	}
	if owner, ok := s.Owner(ctx, "c1"); !ok || owner != "p" {
		t.Fatalf("owner %q %v", owner, ok)
	}

	// A record Get gave stays as it was when the takedown moves on (the
	// memory store shares its own, and changes a copy).
	before, err := s.Get(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	s.Apply(ctx, outcomeEvent(TypeRemoved, "c1", `{"item_id":"item-1","container_id":"g1"}`))
	s.Apply(ctx, outcomeEvent(TypeRemoved, "c1", `{"item_id":"item-1","container_id":"g1"}`))
	s.Apply(ctx, outcomeEvent(TypeRemoved, "c1", `{"item_id":"item-1","container_id":"g2"}`))
	got, _ := s.Get(ctx, "c1")
	if got.Status != StatusPending || fmt.Sprint(got.RemovedFrom) != "[g1 g2]" {
		t.Fatalf("progress %+v", got)
	}
	if before.Published || len(before.RemovedFrom) != 0 {
		t.Fatalf("a record Get gave changed with the store: %+v", before)
	}
	s.Apply(ctx, outcomeEvent(TypeConfirmed, "c1", `{"item_id":"item-1","removed_from":["g1","g2"],"confirmed_at":"2026-01-01T00:00:00Z"}`))
	s.Apply(ctx, outcomeEvent(TypeRejected, "c1", `{"item_id":"item-1","reason":"late"}`))
	got, _ = s.Get(ctx, "c1")
	if !got.Final() || got.Status != StatusConfirmed || got.ConfirmedAt == "" || len(got.Event) == 0 {
		t.Fatalf("final %+v", got)
	}

	// An outcome for an unknown correlation ID, or about another item,
	// changes nothing and makes no record.
	var ue *UntrustedError
	if err := s.Apply(ctx, outcomeEvent(TypeRejected, "c9", `{"item_id":"x","reason":"not_found"}`)); !errors.As(err, &ue) || ue.Reason != ReasonUnknown {
		t.Fatalf("unknown correlation: %v", err)
	}
	if _, err := s.Get(ctx, "c9"); !errors.Is(err, ErrNotFound) {
		t.Fatal("an outcome for an unknown correlation ID made a record")
	}
	if err := s.Apply(ctx, outcomeEvent(TypeRejected, "c3", `{"item_id":"item-2","reason":"x"}`)); !errors.As(err, &ue) || ue.Reason != ReasonItem {
		t.Fatalf("another item: %v", err)
	}
	if got, _ := s.Get(ctx, "c3"); got.Final() {
		t.Fatal("an outcome about another item decided a takedown")
	}

	// The outbox: c3 is publishing until marked; a claim takes it once
	// per publish wait.
	claimed, err := s.ClaimUnpublished(ctx, time.Now().Add(time.Second), 10)
	if err != nil || len(claimed) != 1 || claimed[0].CorrelationID != "c3" {
		t.Fatalf("claim: %+v %v (c1 is final, c3 publishing)", claimed, err)
	}
	if again, _ := s.ClaimUnpublished(ctx, time.Now().Add(-time.Second), 10); len(again) != 0 {
		t.Fatalf("claimed twice within the wait: %+v", again)
	}
	if err := s.MarkPublished(ctx, "c3"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "c3"); !got.Published {
		t.Fatal("not marked published")
	}
	if again, _ := s.ClaimUnpublished(ctx, time.Now().Add(time.Hour), 10); len(again) != 0 {
		t.Fatalf("a published takedown was claimed: %+v", again)
	}
	s.Release(ctx, &other)
	if _, err := s.Get(ctx, "c3"); err != nil {
		t.Fatal("a published takedown was released: its command is on the topic")
	}
	other.CorrelationID, other.IdempotencyKey, other.Published = "c4", "k4", false
	if ex, err := s.Reserve(ctx, &other); ex != nil || err != nil {
		t.Fatalf("reserve c4: %+v %v", ex, err)
	}

	// Release forgets an unpublished reservation and its key, not a final one.
	s.Release(ctx, &other)
	if _, err := s.Get(ctx, "c4"); !errors.Is(err, ErrNotFound) {
		t.Fatal("released record still there")
	}
	if ex, _ := s.Reserve(ctx, &other); ex != nil {
		t.Fatal("released key still taken")
	}
	s.Release(ctx, rec)
	if _, err := s.Get(ctx, "c1"); err != nil {
		t.Fatal("a final record was released")
	}
}

func TestMemoryStoreExpiry(t *testing.T) {
	now := time.Now()
	s := NewMemoryStore(time.Minute, 0)
	s.now = func() time.Time { return now }
	ctx := t.Context()
	s.Reserve(ctx, &Record{CorrelationID: "c1", Principal: "p", IdempotencyKey: "k", CreatedAt: now})
	now = now.Add(2 * time.Minute)
	if _, err := s.Get(ctx, "c1"); !errors.Is(err, ErrNotFound) {
		t.Fatal("expired record still readable")
	}
	if ex, _ := s.Reserve(ctx, &Record{CorrelationID: "c2", Principal: "p", IdempotencyKey: "k", CreatedAt: now}); ex != nil {
		t.Fatal("expired key still names the old record")
	}
}

// TestMemoryStoreMaxRecords: past its maximum the store forgets its
// oldest decided records first, with their idempotency keys; a record
// still waiting for its outcome stays however old.
func TestMemoryStoreMaxRecords(t *testing.T) {
	ctx := t.Context()
	s := NewMemoryStore(time.Hour, 3)
	reserve := func(id string) {
		t.Helper()
		rec := &Record{CorrelationID: id, Principal: "p", IdempotencyKey: "k-" + id, ItemID: "item-1", Status: StatusPending, CreatedAt: time.Now()}
		if ex, err := s.Reserve(ctx, rec); err != nil || ex != nil {
			t.Fatalf("reserve %s: %v %v", id, ex, err)
		}
	}
	confirm := func(id string) {
		t.Helper()
		if err := s.Apply(ctx, outcomeEvent(TypeConfirmed, id, `{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}`)); err != nil {
			t.Fatalf("confirm %s: %v", id, err)
		}
	}
	reserve("waiting") // the oldest, never decided
	reserve("c1")
	confirm("c1")
	reserve("c2")
	confirm("c2")
	for i := 3; i <= 10; i++ {
		id := fmt.Sprintf("c%d", i)
		reserve(id)
		confirm(id)
		if n := s.Len(); n > 3 {
			t.Fatalf("after %s: %d records, bound 3", id, n)
		}
	}
	if _, err := s.Get(ctx, "waiting"); err != nil {
		t.Fatalf("the record waiting for its outcome was forgotten: %v", err)
	}
	for _, id := range []string{"c9", "c10"} {
		if _, err := s.Get(ctx, id); err != nil {
			t.Fatalf("%s, among the newest, was forgotten: %v", id, err)
		}
	}
	if _, err := s.Get(ctx, "c1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("c1, the oldest decided, is still there: %v", err)
	}
	if got := s.Evicted(); got != 8 {
		t.Fatalf("evicted %d, want 8 (c1 … c8)", got)
	}
	// c1's key went with it: the same key is a new takedown.
	again := &Record{CorrelationID: "c1-again", Principal: "p", IdempotencyKey: "k-c1", ItemID: "item-1", Status: StatusPending, CreatedAt: time.Now()}
	if ex, err := s.Reserve(ctx, again); err != nil || ex != nil {
		t.Fatalf("the key of a forgotten record still names it: %+v %v", ex, err)
	}
	// c10's key still joins c10.
	join := &Record{CorrelationID: "c10-again", Principal: "p", IdempotencyKey: "k-c10", ItemID: "item-1", Status: StatusPending, CreatedAt: time.Now()}
	if ex, err := s.Reserve(ctx, join); err != nil || ex == nil || ex.CorrelationID != "c10" {
		t.Fatalf("c10's key: %+v %v", ex, err)
	}
}

// TestMemoryStoreKeyRaceOneCommand: requests with one Idempotency-Key at
// once on the single-node store: exactly one reserves, every other joins
// it, and only it is left for the sweep to publish.
func TestMemoryStoreKeyRaceOneCommand(t *testing.T) {
	ctx := t.Context()
	s := NewMemoryStore(time.Hour, 0)
	owners := map[string]bool{}
	for round := range 200 {
		var k keyRound
		var wg sync.WaitGroup
		for i := range 20 {
			rec := &Record{CorrelationID: fmt.Sprintf("mk-%d-%d", round, i), ItemID: "item-1", Status: StatusPending, CreatedAt: time.Now(),
				Principal: "p", IdempotencyKey: fmt.Sprintf("mk-key-%d", round)}
			wg.Go(func() { k.reserve(ctx, t, s, rec) })
		}
		wg.Wait()
		owners[k.owner(t, round)] = true
	}
	sweepPublishesOwners(ctx, t, s, owners)
}

// keyRound is one round of a key race: the requests that reserved, and
// the records the others joined.
type keyRound struct {
	mu            sync.Mutex
	owned, joined []string
}

// reserve reserves rec in s and notes whether it took the key or joined.
func (k *keyRound) reserve(ctx context.Context, t *testing.T, s Store, rec *Record) {
	ex, err := s.Reserve(ctx, rec)
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case err != nil:
		t.Errorf("%s: %v", rec.CorrelationID, err)
	case ex == nil:
		k.owned = append(k.owned, rec.CorrelationID)
	default:
		k.joined = append(k.joined, ex.CorrelationID)
	}
}

// owner is oneOwner of the round.
func (k *keyRound) owner(t *testing.T, round int) string {
	t.Helper()
	return oneOwner(t, round, k.owned, k.joined)
}

// oneOwner fails t unless exactly one request of a round owns the key and
// every other joined it, and returns the owner's correlation ID.
func oneOwner(t *testing.T, round int, owned, joined []string) string {
	t.Helper()
	if len(owned) != 1 {
		t.Fatalf("round %d: reserved by %v: want exactly one", round, owned)
	}
	for _, id := range joined {
		if id != owned[0] {
			t.Fatalf("round %d: joined %v, want all %s", round, joined, owned[0])
		}
	}
	return owned[0]
}

// sweepPublishesOwners fails t unless the sweep of s would publish exactly
// the takedowns of owners (by correlation ID).
func sweepPublishesOwners(ctx context.Context, t *testing.T, s Store, owners map[string]bool) {
	t.Helper()
	claimed, err := s.ClaimUnpublished(ctx, time.Now().Add(time.Hour), 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range claimed {
		if !owners[r.CorrelationID] {
			t.Fatalf("the sweep would publish %s, which did not reserve", r.CorrelationID)
		}
		delete(owners, r.CorrelationID)
	}
	if len(owners) != 0 {
		t.Fatalf("the sweep would not publish %v", owners)
	}
}
