package consumers

import (
	"context"
	"sync"

	"github.com/segmentio/kafka-go"
)

// laneQueue bounds the records fetched for one partition and not yet
// handled; past it the fetch loop waits, as Kafka's own fetch buffer does.
// laneBatch bounds the records a lane hands on at once.
const (
	laneQueue = 64
	laneBatch = 32
)

// lanes hands each partition's records, in order, to a goroutine of that
// partition: one partition's records are handled one after another, those
// of different partitions side by side. A hub on Redis accepts an event in
// a round trip, so one loop for every partition would be bounded by one
// round trip per record whatever the number of partitions; with lanes it is
// one per record per partition. There is one lane per partition the
// consumer was given, so their number is bounded by the partitions of the
// routed topics.
//
// A lane hands on, in one call, every record that queued up while it
// handled the previous ones (at most laneBatch): a hub that takes batches
// accepts them in one round trip, so the busier a partition, the fewer
// round trips per record.
type lanes struct {
	ctx    context.Context
	handle func(context.Context, []kafka.Message) bool
	byPart map[lanePart]chan kafka.Message
	wg     sync.WaitGroup
}

type lanePart struct {
	topic     string
	partition int
}

// newLanes makes the lanes; handle runs on a partition's goroutine for
// its records, one or more at a time, in order, and returns false when ctx
// ended before they were handled (the lane then stops: the rest is fetched
// again by the partition's next owner).
func newLanes(ctx context.Context, handle func(context.Context, []kafka.Message) bool) *lanes {
	return &lanes{ctx: ctx, handle: handle, byPart: map[lanePart]chan kafka.Message{}}
}

// add queues m on its partition's lane, starting the lane on its first
// record. It waits while the lane is full, and reports false if ctx ended
// first.
func (l *lanes) add(ctx context.Context, m kafka.Message) bool {
	k := lanePart{m.Topic, m.Partition}
	q := l.byPart[k]
	if q == nil {
		q = make(chan kafka.Message, laneQueue)
		l.byPart[k] = q
		l.wg.Go(func() {
			batch := make([]kafka.Message, 0, laneBatch)
			for m := range q {
				batch = append(batch[:0], m)
			more:
				for len(batch) < laneBatch {
					select {
					case m, ok := <-q:
						if !ok {
							break more
						}
						batch = append(batch, m)
					default:
						break more
					}
				}
				if !l.handle(l.ctx, batch) {
					for range q { // nothing more is handled: let add go on
					}
					return
				}
			}
		})
	}
	select {
	case q <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

// close ends every lane once it has handled what it holds (or its context
// ended), and waits for them.
func (l *lanes) close() {
	for _, q := range l.byPart {
		close(q)
	}
	l.wg.Wait()
}
