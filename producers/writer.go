package producers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// Defaults of the writer's bounds.
const (
	// DefaultMaxBatchBytes caps the records of one produce request to one
	// partition, like kafka.Writer's BatchBytes.
	DefaultMaxBatchBytes = 1 << 20
	// DefaultMaxQueuedBytes caps the records waiting for one partition
	// (gathering and in flight); a write beyond it waits for room.
	DefaultMaxQueuedBytes = 16 << 20

	writeBackoffMin = 100 * time.Millisecond
	writeBackoffMax = time.Second

	// partitionsTTL is how long the writer keeps a topic's partition
	// count before it asks the transport again, whose own metadata
	// cache is refreshed every few seconds: asking it on every write cost a
	// context, a request and a filtered copy of the metadata per record.
	partitionsTTL = time.Second
)

// errWriterClosed is what a write to a closed writer returns.
var errWriterClosed = errors.New("producers: writer closed")

// writer is a group-commit Kafka writer on kafka-go's Client.Produce: one
// produce request in flight per partition, and the records that arrive
// while it is in flight gather into the next request, which goes out as
// soon as the one in flight is answered. A record that finds its partition
// idle goes out at once: there is no batch timer. One request at a time per
// partition keeps the order of one key through retries.
type writer struct {
	tr       kafka.RoundTripper
	addr     net.Addr
	balancer kafka.Balancer
	acks     kafka.RequiredAcks
	timeout  time.Duration // one produce or metadata request
	attempts int
	maxBatch int64
	maxQueue int64
	// produce sends one request; tests replace it to count requests.
	produce func(ctx context.Context, req *kafka.ProduceRequest) (*kafka.ProduceResponse, error)
	// sleep waits between attempts; it returns early when ctx ends.
	sleep func(ctx context.Context, d time.Duration)

	mu     sync.Mutex
	parts  map[topicPartition]*partWriter
	counts map[string]partitionCount // by topic, for partitionsTTL
	closed bool
	wg     sync.WaitGroup
}

// topicCount is a topic's partition count within one write.
type topicCount struct {
	topic string
	n     int
}

// partitionCount is a topic's partition count as the transport gave it.
type partitionCount struct {
	n  int
	at time.Time
}

type topicPartition struct {
	topic     string
	partition int
}

func newWriter(tr kafka.RoundTripper, addr net.Addr, acks kafka.RequiredAcks, timeout time.Duration, attempts int) *writer {
	w := &writer{
		tr:       tr,
		addr:     addr,
		balancer: &kafka.Hash{},
		acks:     acks,
		timeout:  timeout,
		attempts: attempts,
		maxBatch: DefaultMaxBatchBytes,
		maxQueue: DefaultMaxQueuedBytes,
		parts:    map[topicPartition]*partWriter{},
		counts:   map[string]partitionCount{},
		sleep:    sleepCtx,
	}
	client := &kafka.Client{Addr: addr, Transport: tr}
	w.produce = client.Produce
	return w
}

// batch is the records of one produce request and, once done is closed,
// its outcome.
type batch struct {
	msgs  []kafka.Message
	first [1]kafka.Message // msgs' array while it holds one record
	bytes int64
	done  chan struct{}
	err   error
}

// partWriter is the queue of one partition and the goroutine that sends it.
type partWriter struct {
	w   *writer
	key topicPartition

	mu     sync.Mutex
	queue  []*batch // gathering, oldest first; queue[len-1] takes new records
	queued int64    // bytes queued or in flight
	closed bool
	wake   chan struct{} // cap 1: the queue has a batch, or the writer closes
	room   chan struct{} // closed and replaced when bytes leave the queue

	// recs and bytes are the partition goroutine's (sendOnce).
	recs  []kafka.Record
	bytes []recordBytes
}

// write sends msgs, each to the partition the balancer picks for its key,
// and returns once all of them are acknowledged, or with the first error.
// When ctx ends first it returns ctx's error; the records may still be
// written.
func (w *writer) write(ctx context.Context, msgs ...kafka.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		return errWriterClosed
	}
	for i := range msgs {
		if size := messageSize(msgs[i]); size > w.maxBatch {
			return kafka.MessageTooLargeError{Message: msgs[i]}
		}
	}
	var one [1]topicCount
	counts := one[:0] // each topic of msgs once
	for _, m := range msgs {
		if slices.ContainsFunc(counts, func(c topicCount) bool { return c.topic == m.Topic }) {
			continue
		}
		n, err := w.partitionsOf(ctx, m.Topic)
		if err != nil {
			return err
		}
		counts = append(counts, topicCount{m.Topic, n})
	}
	partWriterOf := func(m kafka.Message) (*partWriter, error) {
		var n int
		for _, c := range counts {
			if c.topic == m.Topic {
				n = c.n
				break
			}
		}
		return w.partWriter(topicPartition{m.Topic, w.balancer.Balance(m, partitionList(n)...)})
	}
	// Consecutive records of one partition are queued together, so they
	// go out in one request when they fit in one batch.
	batches := make([]*batch, 0, 1)
	for i := 0; i < len(msgs); {
		pw, err := partWriterOf(msgs[i])
		if err != nil {
			return err
		}
		j := i + 1
		for ; j < len(msgs); j++ {
			next, err := partWriterOf(msgs[j])
			if err != nil {
				return err
			}
			if next != pw {
				break
			}
		}
		if batches, err = pw.add(ctx, batches, msgs[i:j]...); err != nil {
			return err
		}
		i = j
	}
	for _, b := range batches {
		select {
		case <-b.done:
			if b.err != nil {
				return b.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// partitionList returns 0 … n-1, as kafka.Writer hands the balancer. The
// balancer only reads it, so up to 256 partitions share one slice.
func partitionList(n int) []int {
	if n <= len(partitionIDs) {
		return partitionIDs[:n:n]
	}
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

var partitionIDs = func() []int {
	out := make([]int, 256)
	for i := range out {
		out[i] = i
	}
	return out
}()

// partitionsOf returns how many partitions topic has: what partitions
// said less than partitionsTTL ago, or else partitions again. A failure is
// not kept.
func (w *writer) partitionsOf(ctx context.Context, topic string) (int, error) {
	now := time.Now()
	w.mu.Lock()
	c, ok := w.counts[topic]
	w.mu.Unlock()
	if ok && now.Sub(c.at) < partitionsTTL {
		return c.n, nil
	}
	n, err := w.partitions(ctx, topic)
	if err != nil {
		return 0, err
	}
	w.mu.Lock()
	w.counts[topic] = partitionCount{n: n, at: now}
	w.mu.Unlock()
	return n, nil
}

// partitions returns how many partitions topic has, from the transport's
// metadata cache, as kafka.Writer does.
func (w *writer) partitions(ctx context.Context, topic string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	r, err := w.tr.RoundTrip(ctx, w.addr, &metadataAPI.Request{TopicNames: []string{topic}})
	if err != nil {
		return 0, err
	}
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name == topic {
			if t.ErrorCode != 0 {
				return 0, kafka.Error(t.ErrorCode)
			}
			if len(t.Partitions) == 0 {
				return 0, kafka.UnknownTopicOrPartition
			}
			return len(t.Partitions), nil
		}
	}
	return 0, kafka.UnknownTopicOrPartition
}

func (w *writer) partWriter(key topicPartition) (*partWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errWriterClosed
	}
	pw := w.parts[key]
	if pw == nil {
		pw = &partWriter{w: w, key: key, wake: make(chan struct{}, 1), room: make(chan struct{})}
		w.parts[key] = pw
		w.wg.Go(pw.run)
	}
	return pw, nil
}

// close stops taking records, waits until every queued batch is answered
// (or has failed) and ends the partitions' goroutines.
func (w *writer) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	parts := make([]*partWriter, 0, len(w.parts))
	for _, pw := range w.parts {
		parts = append(parts, pw)
	}
	w.mu.Unlock()
	for _, pw := range parts {
		pw.mu.Lock()
		pw.closed = true
		pw.mu.Unlock()
		pw.signal()
	}
	w.wg.Wait()
}

func (pw *partWriter) signal() {
	select {
	case pw.wake <- struct{}{}:
	default:
	}
}

// add queues ms, in order, on the gathering batch (and on new ones when
// they do not fit), and appends to bs each batch it used that is not
// already bs's last. It waits for room while the partition's queue is
// full.
func (pw *partWriter) add(ctx context.Context, bs []*batch, ms ...kafka.Message) ([]*batch, error) {
	var size int64
	for _, m := range ms {
		size += messageSize(m)
	}
	pw.mu.Lock()
	for pw.queued > 0 && pw.queued+size > pw.w.maxQueue {
		room := pw.room
		pw.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return bs, ctx.Err()
		}
		pw.mu.Lock()
	}
	if pw.closed {
		pw.mu.Unlock()
		return bs, errWriterClosed
	}
	for _, m := range ms {
		size := messageSize(m)
		var b *batch
		if n := len(pw.queue); n > 0 && pw.queue[n-1].bytes+size <= pw.w.maxBatch {
			b = pw.queue[n-1]
		} else {
			b = &batch{done: make(chan struct{})}
			b.msgs = b.first[:0]
			pw.queue = append(pw.queue, b)
		}
		b.msgs = append(b.msgs, m)
		b.bytes += size
		pw.queued += size
		if len(bs) == 0 || bs[len(bs)-1] != b {
			bs = append(bs, b)
		}
	}
	pw.mu.Unlock()
	pw.signal()
	return bs, nil
}

// run sends the partition's batches one at a time, oldest first, until the
// writer closes and the queue is empty.
func (pw *partWriter) run() {
	for {
		pw.mu.Lock()
		var b *batch
		if len(pw.queue) > 0 {
			b = pw.queue[0]
			pw.queue[0] = nil
			pw.queue = pw.queue[1:]
		}
		closed := pw.closed
		pw.mu.Unlock()
		if b == nil {
			if closed {
				return
			}
			<-pw.wake
			continue
		}
		b.err = pw.send(b)
		pw.mu.Lock()
		pw.queued -= b.bytes
		close(pw.room)
		pw.room = make(chan struct{})
		pw.mu.Unlock()
		close(b.done)
	}
}

// send writes b with retries of temporary errors, as kafka.Writer does.
func (pw *partWriter) send(b *batch) error {
	w := pw.w
	var err error
	for attempt := range w.attempts {
		if attempt > 0 {
			w.sleep(context.Background(), backoff(attempt))
		}
		err = pw.sendOnce(b)
		if err == nil || (!isTemporary(err) && !isTransientNetworkError(err)) {
			break
		}
	}
	return err
}

func (pw *partWriter) sendOnce(b *batch) error {
	w := pw.w
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	// The records and their keys' and values' readers are the partition
	// goroutine's, used again by the next request once this one has been
	// answered; a request that failed in the transport (which may still
	// hold it) leaves them to that request.
	recs := pw.recs[:0]
	bs := pw.bytes[:0]
	for _, m := range b.msgs {
		r := kafka.Record{Time: m.Time, Headers: m.Headers}
		if m.Key != nil {
			bs = append(bs, recordBytes{})
			r.Key = bs[len(bs)-1].reset(m.Key)
		}
		if m.Value != nil {
			bs = append(bs, recordBytes{})
			r.Value = bs[len(bs)-1].reset(m.Value)
		}
		recs = append(recs, r)
	}
	pw.recs, pw.bytes = nil, nil
	res, err := w.produce(ctx, &kafka.ProduceRequest{
		Topic:        pw.key.topic,
		Partition:    pw.key.partition,
		RequiredAcks: w.acks,
		Records:      kafka.NewRecordReader(recs...),
	})
	if err != nil {
		return err
	}
	if cap(recs) <= maxReusedRecords {
		clear(recs)
		clear(bs)
		pw.recs, pw.bytes = recs, bs
	}
	if res != nil {
		if res.Error != nil {
			return res.Error
		}
		for _, e := range res.RecordErrors {
			if e != nil {
				return e
			}
		}
	}
	return nil
}

// maxReusedRecords bounds the records a partition goroutine keeps for its
// next request.
const maxReusedRecords = 1024

// recordBytes is a record's key or value for a produce request: kafka-go's
// own (kafka.NewBytes) is allocated for each.
type recordBytes struct{ bytes.Reader }

// reset points r at b and returns it.
func (r *recordBytes) reset(b []byte) *recordBytes {
	r.Reset(b)
	return r
}

// Close implements kafka.Bytes.
func (*recordBytes) Close() error { return nil }

// messageSize is the bytes a record costs the queue, about its size on the
// wire.
func messageSize(m kafka.Message) int64 {
	n := int64(len(m.Key) + len(m.Value) + 32)
	for _, h := range m.Headers {
		n += int64(len(h.Key) + len(h.Value) + 8)
	}
	return n
}

// backoff is kafka-go's: attempt² × writeBackoffMin, capped at
// writeBackoffMax.
func backoff(attempt int) time.Duration {
	return min(time.Duration(attempt*attempt)*writeBackoffMin, writeBackoffMax)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// isTemporary and isTransientNetworkError are kafka-go's tests of a
// retryable error.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func isTransientNetworkError(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}
