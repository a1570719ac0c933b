package consumers

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/hub"
)

// partitionOf puts a record on the partition its key names ("0", "1"…).
type partitionOf struct{}

func (partitionOf) Balance(m kafka.Message, partitions ...int) int {
	p, _ := strconv.Atoi(string(m.Key))
	return partitions[p%len(partitions)]
}

// stuckHub holds the publish of event "stuck" until release is closed and
// accepts everything else at once.
type stuckHub struct {
	*fakeHub
	release chan struct{}
	once    sync.Once
	held    chan struct{}
}

func (h *stuckHub) Publish(ctx context.Context, channels []string, ev *hub.Event) error {
	if ev.ID == "stuck" {
		h.once.Do(func() { close(h.held) })
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.fakeHub.Publish(ctx, channels, ev)
}

// TestConsumerPartitionsSideBySide: while the hub holds a record of one
// partition, the records of the other partitions still reach it, and the
// held partition's later records wait behind it, in order.
func TestConsumerPartitionsSideBySide(t *testing.T) {
	brokers := newCluster(t)
	w := newWriter(t, brokers, partitionOf{})
	h := &stuckHub{fakeHub: newFakeHub(), release: make(chan struct{}), held: make(chan struct{})}
	_, _ = start(t, testConfig(brokers, "lanes"), h, newDLQ(t, brokers))

	rec := func(id, key string) kafka.Message {
		m := binaryRecord(topicEvents, id, "item.removed", "item-"+key, "", `{}`)
		m.Key = []byte(key)
		return m
	}
	write(t, w, rec("stuck", "0"))
	waitFor(t, "the hub to hold the first record", func() bool {
		select {
		case <-h.held:
			return true
		default:
			return false
		}
	})
	write(t, w, rec("after-stuck", "0"), rec("other-1", "1"), rec("other-2", "2"), rec("other-1b", "1"))
	waitFor(t, "the other partitions' records", func() bool {
		return len(h.byID("other-1")) == 1 && len(h.byID("other-2")) == 1 && len(h.byID("other-1b")) == 1
	})
	if n := len(h.byID("after-stuck")); n != 0 {
		t.Fatalf("a record behind the held one reached the hub first (%d)", n)
	}
	close(h.release)
	waitFor(t, "the held partition", func() bool { return len(h.byID("after-stuck")) == 1 })
	ids := h.ids()
	pos := map[string]int{}
	for i, id := range ids {
		pos[id] = i
	}
	if pos["stuck"] > pos["after-stuck"] || pos["other-1"] > pos["other-1b"] {
		t.Fatalf("order within a partition broken: %v", ids)
	}
}
