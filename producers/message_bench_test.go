package producers

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// confirmation is the item service's takedown.confirmed of an item in
// two containers, with its trace context, as the takedown benchmark sends
// it.
func confirmation() CloudEvent {
	ev := NewEvent(ItemServiceSource, TypeTakedownConfirmed, "item-17", "0b6c3f52-6d0e-4f7a-9c55-1f2e3d4c5b6a", struct {
		ItemID      string   `json:"item_id"`
		RemovedFrom []string `json:"removed_from"`
		ConfirmedAt string   `json:"confirmed_at"`
	}{"item-17", []string{"group-3", "followers-user-12"}, "2026-12-02T01:02:03Z"})
	ev.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	return ev
}

// BenchmarkMessage encodes one event as a record in the binary mode.
func BenchmarkMessage(b *testing.B) {
	ev := confirmation()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Message(DefaultEventsTopic, "item-17", ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishNoBroker is one Publish through the Producer's writer, without a
// broker: the produce request is answered at once. allocs/op is the
// producer's own, kafka-go's request encoding aside.
func BenchmarkPublishNoBroker(b *testing.B) {
	w := newWriter(metaOnly{3}, kafka.TCP("localhost:9092"), kafka.RequireAll, time.Second, 1)
	w.produce = func(context.Context, *kafka.ProduceRequest) (*kafka.ProduceResponse, error) {
		return &kafka.ProduceResponse{}, nil
	}
	p := &Producer{w: w, tr: &kafka.Transport{}}
	defer p.Close()
	ev := confirmation()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Publish(ctx, DefaultEventsTopic, "item-17", ev); err != nil {
			b.Fatal(err)
		}
	}
}
