package takedown

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/hub"
)

// batchNext is a Recorder's Next that takes batches and notes, for each
// event it gets, the state of the event's takedown in the store then.
type batchNext struct {
	store   Store
	batched bool

	mu    sync.Mutex
	calls []string // one per call: the events, with the store's state of each
}

func (n *batchNext) seen(ctx context.Context, evs []*hub.Event) {
	var out []string
	for _, ev := range evs {
		st := "-"
		if ev.CorrelationID != "" {
			if r, err := n.store.Get(ctx, ev.CorrelationID); err == nil {
				st = string(r.Status)
			}
		}
		out = append(out, ev.ID+"@"+st)
	}
	n.mu.Lock()
	n.calls = append(n.calls, fmt.Sprint(out))
	n.mu.Unlock()
}

func (n *batchNext) Publish(ctx context.Context, _ []string, ev *hub.Event) error {
	n.seen(ctx, []*hub.Event{ev})
	return nil
}

// batchOnly takes batches too.
type batchOnly struct{ *batchNext }

func (n batchOnly) PublishBatch(ctx context.Context, batch []hub.Publication) error {
	evs := make([]*hub.Event, len(batch))
	for i, p := range batch {
		evs[i] = p.Event
	}
	n.seen(ctx, evs)
	return nil
}

// TestRecorderPublishBatch: the Recorder folds every trusted outcome of a
// batch into the store before it passes any event of the batch on, so a
// waiter woken by one finds its outcome stored; then the batch goes on in
// one call, in order (or one event after another to a Next that does not
// take batches); an untrusted outcome in it is counted and changes nothing.
func TestRecorderPublishBatch(t *testing.T) {
	for _, batched := range []bool{true, false} {
		t.Run(fmt.Sprint("batches=", batched), func(t *testing.T) {
			ctx := t.Context()
			store := NewMemoryStore(time.Hour, 0)
			for _, id := range []string{"c1", "c2", "c3"} {
				rec := &Record{CorrelationID: id, ItemID: "item-1", Status: StatusPending, CreatedAt: time.Now(), EventID: "ev-" + id}
				if _, err := store.Reserve(ctx, rec); err != nil {
					t.Fatal(err)
				}
				if err := store.MarkPublished(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			bn := &batchNext{store: store}
			var next Publisher = bn
			if batched {
				next = batchOnly{bn}
			}
			r := &Recorder{Store: store, Next: next, Trust: testTrust}
			confirmed := func(id, corr, source string) *hub.Event {
				js := `{"specversion":"1.0","id":"` + id + `","source":"` + source + `","type":"takedown.confirmed","correlationid":"` + corr + `","data":{"item_id":"item-1","removed_from":["g1"],"confirmed_at":"2026-01-01T00:00:00Z"}}`
				return &hub.Event{ID: id, Source: source, Type: TypeConfirmed, Subject: "item-1", CorrelationID: corr, Topic: "takedown.events", JSON: []byte(js)}
			}
			batch := []hub.Publication{
				{Channels: []string{"corr:c1"}, Event: confirmed("o1", "c1", "/itemsvc")},
				{Channels: []string{"reports"}, Event: &hub.Event{ID: "r1", Source: "/t", Type: "item.reported", JSON: []byte(`{}`)}},
				{Channels: []string{"corr:c3"}, Event: confirmed("o3", "c3", "/forger")},
				{Channels: []string{"corr:c2"}, Event: confirmed("o2", "c2", "/itemsvc")},
			}
			if err := r.PublishBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			want := []string{"[o1@confirmed r1@- o3@pending o2@confirmed]"}
			if !batched {
				want = []string{"[o1@confirmed]", "[r1@-]", "[o3@pending]", "[o2@confirmed]"}
			}
			bn.mu.Lock()
			got := fmt.Sprint(bn.calls)
			bn.mu.Unlock()
			if got != fmt.Sprint(want) {
				t.Fatalf("Next got %s, want %v", got, want)
			}
			if u := r.Untrusted(); u[ReasonSource] != 1 {
				t.Fatalf("untrusted %v, want one by source", u)
			}
		})
	}
}
