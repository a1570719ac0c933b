package consumers

import (
	"context"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/producers"
)

// takedownRecords are the records of one takedown as they cross Kafka:
// the command, an item.removed and the confirmation, each in the binary
// mode the producers write.
func takedownRecords(tb testing.TB) map[string]kafka.Message {
	tb.Helper()
	const item, corr = "item-7f3a9c", "0b6c3f52-6d0e-4f7a-9c55-1f2e3d4c5b6a"
	evs := map[string]struct {
		topic string
		ev    producers.CloudEvent
	}{
		"requested": {DefaultCommandsTopic, producers.NewEvent("/switchboard/takedowns", producers.TypeTakedownRequested, item, corr,
			map[string]string{"item_id": item, "reason": "court order 2026/113", "requested_by": "officer-12"})},
		"removed": {DefaultEventsTopic, producers.NewEvent(producers.ItemServiceSource, producers.TypeItemRemoved, item, corr,
			map[string]string{"item_id": item, "container_id": "listing-42", "container_kind": "listing"})},
		"confirmed": {DefaultEventsTopic, producers.NewEvent(producers.ItemServiceSource, producers.TypeTakedownConfirmed, item, corr,
			map[string]any{"item_id": item, "removed_from": []string{"listing-42", "feed-7"}, "confirmed_at": "2026-12-02T01:02:03Z"})},
	}
	out := map[string]kafka.Message{}
	for name, e := range evs {
		m, err := producers.Message(e.topic, item, e.ev)
		if err != nil {
			tb.Fatal(err)
		}
		out[name] = m
	}
	return out
}

// BenchmarkDecodeTakedown decodes the records of a takedown: allocs/op is what
// the hub's consumer (and the item service, for the command) pays per
// record.
func BenchmarkDecodeTakedown(b *testing.B) {
	for _, name := range []string{"requested", "removed", "confirmed"} {
		m := takedownRecords(b)[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPrepare is Decode and the default routes' channels of a
// takedown's records: what the consumer does for each before the hub;
// handle is the whole of it, up to a hub that takes the event at once.
func BenchmarkPrepare(b *testing.B) {
	c, err := New(Config{Brokers: []string{"localhost:9092"}}, discardPublisher{}, discardDLQ{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"requested", "confirmed"} {
		m := takedownRecords(b)[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := c.prepare(m)
				if err != nil || len(p.Channels) != 3 {
					b.Fatal(p.Channels, err)
				}
			}
		})
	}
	m := takedownRecords(b)["confirmed"]
	b.Run("handle", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !c.handle(b.Context(), m) {
				b.Fatal("not handled")
			}
		}
	})
}

type discardPublisher struct{}

func (discardPublisher) Publish(context.Context, []string, *hub.Event) error { return nil }

type discardDLQ struct{}

func (discardDLQ) PublishRaw(context.Context, ...kafka.Message) error { return nil }
