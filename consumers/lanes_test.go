package consumers

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// batchHub takes batches (hub.BatchPublisher): it holds the first batch
// that holds event "stuck" until release is closed, refuses the first
// batch that holds event "refused", and records the size of each batch it
// accepts.
type batchHub struct {
	*fakeHub
	release chan struct{}
	held    chan struct{}
	once    sync.Once

	mu      sync.Mutex
	batches [][]string // the IDs of each accepted batch
	refused bool
}

func (h *batchHub) Publish(ctx context.Context, channels []string, ev *hub.Event) error {
	return h.PublishBatch(ctx, []hub.Publication{{Channels: channels, Event: ev}})
}

func (h *batchHub) PublishBatch(ctx context.Context, batch []hub.Publication) error {
	for _, p := range batch {
		switch p.Event.ID {
		case "stuck":
			h.once.Do(func() { close(h.held) })
			select {
			case <-h.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		case "refused":
			h.mu.Lock()
			first := !h.refused
			h.refused = true
			h.mu.Unlock()
			if first {
				return errors.New("backplane down")
			}
		}
	}
	for _, p := range batch {
		if err := h.fakeHub.Publish(ctx, p.Channels, p.Event); err != nil { // counts an attempt
			return err
		}
	}
	var ids []string
	for _, p := range batch {
		ids = append(ids, p.Event.ID)
	}
	h.mu.Lock()
	h.batches = append(h.batches, ids)
	h.mu.Unlock()
	return nil
}

// TestConsumerLaneBatches: the records that queue on a partition's lane
// while the hub is busy reach a hub that takes batches in one call, in
// order; an invalid record among them is dead-lettered in its place (what
// came before it is published first, what follows after); a batch the hub
// refuses is handed over again whole, with nothing lost or doubled.
func TestConsumerLaneBatches(t *testing.T) {
	brokers := newCluster(t)
	w := newWriter(t, brokers, partitionOf{})
	h := &batchHub{fakeHub: newFakeHub(), release: make(chan struct{}), held: make(chan struct{})}
	c, _ := start(t, testConfig(brokers, "lane-batches"), h, newDLQ(t, brokers))

	rec := func(id string) kafka.Message {
		m := binaryRecord(topicEvents, id, "item.removed", "item-1", "", `{}`)
		m.Key = []byte("0")
		return m
	}
	write(t, w, rec("stuck"))
	waitFor(t, "the hub to hold the first record", func() bool {
		select {
		case <-h.held:
			return true
		default:
			return false
		}
	})
	queued := []kafka.Message{rec("b-1"), rec("b-2"), rec("refused"), rec("b-3"),
		{Topic: topicEvents, Key: []byte("0"), Value: []byte("garbage")}, rec("b-4"), rec("b-5")}
	write(t, w, queued...)
	waitFor(t, "the lane to queue the records", func() bool { return c.Stats().Fetched == uint64(1+len(queued)) })
	close(h.release)
	want := []string{"stuck", "b-1", "b-2", "refused", "b-3", "b-4", "b-5"}
	waitFor(t, "every valid record", func() bool { return len(h.ids()) == len(want) })
	if got := h.ids(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the hub got %v, want %v (in order, each once)", got, want)
	}
	if d := readAll(t, brokers, topicDLQ, 1)[0]; string(d.Value) != "garbage" {
		t.Fatalf("dead letter value %q", d.Value)
	}
	h.mu.Lock()
	batches := h.batches
	h.mu.Unlock()
	// "stuck" alone; then what queued behind it up to the invalid record,
	// in one batch (refused once, then handed over again whole); then the
	// rest (b-5 may be fetched a moment after b-4 queued: one batch or two).
	if len(batches) < 3 || fmt.Sprint(batches[:2]) != "[[stuck] [b-1 b-2 refused b-3]]" || fmt.Sprint(slices.Concat(batches[2:]...)) != "[b-4 b-5]" {
		t.Fatalf("batches %v, want [stuck], [b-1 b-2 refused b-3], then b-4 and b-5", batches)
	}
	if n := h.attemptsOf("b-1"); n != 1 {
		t.Fatalf("b-1 handed to the hub's store %d times, want 1 (the refused batch failed before it)", n)
	}
	if s := c.Stats(); s.Published != uint64(len(want)) || s.DeadLettered != 1 || s.PublishErrors != 1 {
		t.Fatalf("stats %+v: want %d published, 1 dead-lettered, 1 publish error", s, len(want))
	}
}
