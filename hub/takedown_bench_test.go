package hub

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkTakedownChannels is the hub's share of one takedown on the
// memory backplane: a watch on a new corr: channel, the command and its
// two answers (item.removed, takedown.confirmed) each published to
// takedowns, item:<id> and the corr: channel, then the watch stopped.
// allocs/op counts 5 allocations of the benchmark's own: the id, the
// channel names and the three events.
func BenchmarkTakedownChannels(b *testing.B) {
	h := newMemoryHub(b)
	ctx := context.Background()
	js := []byte(`{"specversion":"1.0","id":"x","source":"/switchboard/takedowns","type":"takedown.requested","data":{"item_id":"item-1"}}`)
	sources := [3]string{"/switchboard/takedowns", "/platform/items", "/platform/items/confirm"}
	types := [3]string{"takedown.requested", "item.removed", "takedown.confirmed"}
	heard := 0
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		id := strconv.Itoa(n)
		chans := []string{"takedowns", "item:item-1", "corr:" + id}
		stop, _, err := h.Watch(ctx, chans[2], func(ev *Event) {
			if ev != nil {
				heard++
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		evs := new([3]Event)
		for i := range evs {
			evs[i] = Event{ID: id, Source: sources[i], Type: types[i], Subject: "item-1", CorrelationID: id, JSON: js}
			if err := h.Publish(ctx, chans, &evs[i]); err != nil {
				b.Fatal(err)
			}
		}
		stop()
	}
	if heard != 3*n {
		b.Fatalf("the watch heard %d events, want %d", heard, 3*n)
	}
}
