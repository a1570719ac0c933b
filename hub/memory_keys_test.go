package hub

import (
	"context"
	"testing"
)

// TestMemoryKeyCollision: a log indexes its events by the hash of their
// key; when two keys share a hash (forced here: the map says another
// entry holds evA's hash), a republished event is still found and not
// appended again, and an event the ring does not hold is still appended.
func TestMemoryKeyCollision(t *testing.T) {
	m := NewMemory(MemoryConfig{HistorySize: 100})
	defer m.Close()
	ctx := context.Background()
	evs := make([]*Event, smallLog+4)
	for i := range evs {
		evs[i] = testEvent(i, "item.reported", "item-1", "")
		if err := m.Publish(ctx, []string{"reports"}, evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	l := m.log("reports", false)
	if l.keys == nil {
		t.Fatal("no key map past smallLog entries")
	}
	top := l.top
	// evs[2]'s hash now names the newest entry, as if evs[last] shared it.
	l.keys[evs[2].keyHash()] = top
	if err := m.Publish(ctx, []string{"reports"}, evs[2]); err != nil {
		t.Fatal(err)
	}
	if l.top != top {
		t.Fatalf("a held event was appended again: top %d, want %d", l.top, top)
	}
	fresh := testEvent(1000, "item.reported", "item-1", "")
	l.keys[fresh.keyHash()] = 3 // a hash hit on an entry of another key
	if err := m.Publish(ctx, []string{"reports"}, fresh); err != nil {
		t.Fatal(err)
	}
	if l.top != top+1 {
		t.Fatalf("a new event was not appended: top %d, want %d", l.top, top+1)
	}
	rep, err := m.Read(ctx, "reports", &Oldest)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rep.Entries); n != len(evs)+1 || rep.Entries[n-1].Event != fresh {
		t.Fatalf("%d entries, the last %v; want %d, the new event last", n, rep.Entries[n-1].Event.ID, len(evs)+1)
	}
}
