package itemsvc

import (
	"log/slog"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/switchboard/switchboard/consumers/kafkatest"

	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/producers"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kafkatest.IgnoreBrokerGoroutines()...)
}

// waitLong bounds every wait for the broker; tests wait for conditions, not
// for time, so this only decides how long a broken test hangs.
const waitLong = 30 * time.Second

// newCluster starts an embedded broker with topics of three partitions.
func newCluster(t testing.TB, topics ...string) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.SeedTopics(3, topics...))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newProducer(t testing.TB, brokers []string) *producers.Producer {
	t.Helper()
	p, err := producers.New(producers.Config{Brokers: brokers}, quietLog())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// decode is the Decode the node passes: decode, as a Command.
func decode(m kafka.Message) (Command, error) {
	ev, err := consumers.Decode(m)
	if err != nil {
		return Command{}, err
	}
	tp, ts := consumers.TraceContext(ev)
	return Command{ID: ev.ID, Source: ev.Source, Type: ev.Type, Subject: ev.Subject, CorrelationID: ev.CorrelationID,
		TraceParent: tp, TraceState: ts, JSON: ev.JSON, ItemID: consumers.DataItemID(ev)}, nil
}
