package hub

import (
	"fmt"
	"testing"
	"time"
)

// heldCost is the cost of what m's logs hold, summed entry by entry.
func heldCost(m *Memory) int64 {
	var sum int64
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for _, l := range s.logs {
			l.mu.Lock()
			for j := 0; j < l.n; j++ {
				sum += l.ring[(l.head+j)%len(l.ring)].cost()
			}
			l.mu.Unlock()
		}
		s.mu.Unlock()
	}
	return sum
}

// TestMemoryMaxBytes: past MaxBytes the oldest entries of all channels
// leave first; a channel left with nothing and no listener is forgotten,
// so a cursor of it is a gap on a new epoch; one with a listener keeps
// its log and its epoch. The count stays what the logs hold.
func TestMemoryMaxBytes(t *testing.T) {
	ev := func(n int) *Event { return testEvent(n, "takedown.confirmed", "item-1", fmt.Sprintf("c-%d", n)) }
	// Room for ten entries of events published to three channels.
	per := EntryCost(ev(1000), 3)
	m := NewMemory(MemoryConfig{HistorySize: 100, MaxBytes: 10 * per})
	defer m.Close()
	ctx := t.Context()

	// corr:c-1 has a listener throughout; corr:c-2 none.
	var heard int
	stop, err := m.Listen(ctx, "corr:c-1", func(Entry) { heard++ })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	first := map[string]Position{}
	for n := 1000; n < 1020; n++ {
		corr := fmt.Sprintf("corr:c-%d", n-999)
		if err := m.Publish(ctx, []string{"takedowns", "item:item-1", corr}, ev(n)); err != nil {
			t.Fatal(err)
		}
		if n < 1002 {
			r, _ := m.Read(ctx, corr, nil)
			first[corr] = Position{Epoch: r.Top.Epoch, Offset: 0}
		}
		if got := m.HistoryBytes(); got > m.cfg.MaxBytes {
			t.Fatalf("after event %d: %d bytes held, bound %d", n, got, m.cfg.MaxBytes)
		}
	}
	if got, want := m.HistoryBytes(), heldCost(m); got != want {
		t.Errorf("HistoryBytes %d, the logs hold %d", got, want)
	}
	if m.Evicted() == 0 {
		t.Fatal("nothing evicted past MaxBytes")
	}

	// The newest events are all there, in each of their channels.
	r, _ := m.Read(ctx, "takedowns", &Oldest)
	if len(r.Entries) == 0 || r.Entries[len(r.Entries)-1].Event.ID != "ev-1019" {
		t.Fatalf("takedowns lost its newest event: %d entries", len(r.Entries))
	}
	if r, _ := m.Read(ctx, "corr:c-20", &Oldest); len(r.Entries) != 1 {
		t.Fatalf("corr:c-20 holds %d entries, want its event", len(r.Entries))
	}
	// takedowns kept fewer than 20: its oldest left.
	if len(r.Entries) >= 20 || r.Entries[0].Event.ID == "ev-1000" {
		t.Fatalf("takedowns kept %d entries from %s", len(r.Entries), r.Entries[0].Event.ID)
	}

	// corr:c-2 (no listener) was forgotten: its cursor is a gap, on a new
	// epoch.
	after := first["corr:c-2"]
	r2, _ := m.Read(ctx, "corr:c-2", &after)
	if !r2.Gap || r2.Top.Epoch == after.Epoch {
		t.Fatalf("corr:c-2: want a gap on a new epoch, got %+v (was %s)", r2, after.Epoch)
	}
	// corr:c-1 (a listener) kept its log and epoch, and says the event
	// left.
	after = first["corr:c-1"]
	r1, _ := m.Read(ctx, "corr:c-1", &after)
	if !r1.Gap || r1.Top.Epoch != after.Epoch || r1.Top.Offset != 1 {
		t.Fatalf("corr:c-1: want a gap on the same epoch at offset 1, got %+v", r1)
	}
	if heard != 1 {
		t.Fatalf("the listener heard %d entries, want 1", heard)
	}
}

// TestMemoryBytesFollowTheLogs: entries replaced in a full ring and
// entries expired leave the count with them, and the eviction queue
// stays within MaxBytes/entryOverhead names however many entries a hot
// channel replaces.
func TestMemoryBytesFollowTheLogs(t *testing.T) {
	m := NewMemory(MemoryConfig{HistorySize: 3, HistoryTTL: time.Minute, MaxBytes: 100 * entryOverhead})
	defer m.Close()
	now := time.Now()
	m.now = func() time.Time { return now }
	ctx := t.Context()
	for n := range 1000 {
		if err := m.Publish(ctx, []string{"reports", fmt.Sprintf("item:%d", n%5)}, testEvent(n, "item.reported", "", "")); err != nil {
			t.Fatal(err)
		}
		if got, want := m.HistoryBytes(), heldCost(m); got != want {
			t.Fatalf("after event %d: HistoryBytes %d, the logs hold %d", n, got, want)
		}
	}
	if m.queue.Len() > 100 {
		t.Fatalf("the eviction queue names %d entries, bound 100", m.queue.Len())
	}
	// The rings are not over the bound: nothing left early.
	if m.Evicted() != 0 {
		t.Fatalf("%d entries evicted under MaxBytes", m.Evicted())
	}
	r, _ := m.Read(ctx, "reports", &Oldest)
	if len(r.Entries) != 3 || r.Entries[2].Event.ID != "ev-999" {
		t.Fatalf("reports holds %d entries", len(r.Entries))
	}

	now = now.Add(2 * time.Minute)
	m.sweepOnce()
	if got := m.HistoryBytes(); got != 0 {
		t.Fatalf("%d bytes counted after every entry expired", got)
	}
	// The queue let go of the names of what expired, and with them of the
	// logs the sweep forgot.
	if n := m.queue.Len(); n != 0 {
		t.Fatalf("the eviction queue still names %d entries after every entry expired", n)
	}
}

// TestMemoryTinyMaxBytes: a bound below one entry keeps nothing, and does
// not fail: every resume is a gap, live delivery goes on.
func TestMemoryTinyMaxBytes(t *testing.T) {
	m := NewMemory(MemoryConfig{MaxBytes: 1})
	defer m.Close()
	ctx := t.Context()
	heard := 0
	stop, err := m.Listen(ctx, "reports", func(Entry) { heard++ })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for n := range 10 {
		if err := m.Publish(ctx, []string{"reports", "item:1"}, testEvent(n, "item.reported", "", "")); err != nil {
			t.Fatal(err)
		}
	}
	if heard != 10 {
		t.Fatalf("the listener heard %d events, want 10", heard)
	}
	if got := m.HistoryBytes(); got != 0 {
		t.Fatalf("%d bytes held under a 1-byte bound", got)
	}
	r, _ := m.Read(ctx, "reports", &Oldest)
	if len(r.Entries) != 0 {
		t.Fatalf("%d entries held under a 1-byte bound", len(r.Entries))
	}
}
