package producers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

// metaOnly is a transport that answers metadata requests with partitions
// partitions for every topic and nothing else: the tests' writers send
// their produce requests to a stub.
type metaOnly struct{ partitions int }

func (m metaOnly) RoundTrip(_ context.Context, _ net.Addr, req protocol.Message) (protocol.Message, error) {
	r, ok := req.(*metadataAPI.Request)
	if !ok {
		return nil, fmt.Errorf("metaOnly: %T", req)
	}
	res := &metadataAPI.Response{}
	for _, t := range r.TopicNames {
		res.Topics = append(res.Topics, metadataAPI.ResponseTopic{Name: t, Partitions: make([]metadataAPI.ResponsePartition, m.partitions)})
	}
	return res, nil
}

// produced is one produce request a stub received.
type produced struct {
	partition int
	keys      []string
	at        time.Time
	answer    chan error // the stub returns what is sent here
}

// stubWriter returns a writer whose produce requests arrive on the channel
// it returns and wait for their answer.
func stubWriter(partitions int) (*writer, chan produced) {
	w := newWriter(metaOnly{partitions}, kafka.TCP("stub:9092"), kafka.RequireAll, time.Minute, 3)
	reqs := make(chan produced)
	w.produce = func(ctx context.Context, req *kafka.ProduceRequest) (*kafka.ProduceResponse, error) {
		p := produced{partition: req.Partition, at: time.Now(), answer: make(chan error)}
		for {
			r, err := req.Records.ReadRecord()
			if err != nil {
				break
			}
			k, _ := io.ReadAll(r.Key)
			p.keys = append(p.keys, string(k))
		}
		reqs <- p
		if err := <-p.answer; err != nil {
			return nil, err
		}
		return &kafka.ProduceResponse{}, nil
	}
	return w, reqs
}

func msg(key string) kafka.Message {
	return kafka.Message{Topic: "t", Key: []byte(key), Value: []byte("v")}
}

// TestWriterSendsALoneRecordAtOnce: in a bubble whose clock moves only when
// every goroutine waits, a lone record reaches the broker at the instant it
// was written: nothing in the writer waits on a timer.
func TestWriterSendsALoneRecordAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, reqs := stubWriter(3)
		defer w.close()
		for i := range 3 { // idle again after each answer
			start := time.Now()
			errc := make(chan error, 1)
			go func() { errc <- w.write(t.Context(), msg("k"+strconv.Itoa(i))) }()
			p := <-reqs
			if !p.at.Equal(start) {
				t.Fatalf("record %d sent %v after it was written", i, p.at.Sub(start))
			}
			if len(p.keys) != 1 {
				t.Fatalf("request %d has %d records, want 1", i, len(p.keys))
			}
			p.answer <- nil
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestWriterGathersWhileInFlight: the records written while a request is in
// flight go out together in the next one, once the first is answered, and
// in the order they were written.
func TestWriterGathersWhileInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, reqs := stubWriter(1)
		defer w.close()
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := w.write(t.Context(), msg("first")); err != nil {
				t.Error(err)
			}
		})
		first := <-reqs
		const n = 10
		for i := range n {
			wg.Go(func() {
				if err := w.write(t.Context(), msg("k"+strconv.Itoa(i))); err != nil {
					t.Error(err)
				}
			})
			synctest.Wait() // queued: the next one queues behind it
		}
		select {
		case p := <-reqs:
			t.Fatalf("a second request (%v) while the first is in flight", p.keys)
		default:
		}
		first.answer <- nil
		second := <-reqs
		want := make([]string, n)
		for i := range want {
			want[i] = "k" + strconv.Itoa(i)
		}
		if !slices.Equal(second.keys, want) {
			t.Errorf("second request carries %v, want %v", second.keys, want)
		}
		second.answer <- nil
		wg.Wait()
	})
}

// TestWriterRetriesAndReportsErrors: a temporary error is retried up to the
// attempts configured, then returned; a permanent one is returned at once;
// a batch that failed does not stop the next one.
func TestWriterRetriesAndReportsErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, reqs := stubWriter(1)
		defer w.close()
		errc := make(chan error, 1)
		go func() { errc <- w.write(t.Context(), msg("a")) }()
		for range 3 {
			(<-reqs).answer <- kafka.NotLeaderForPartition
		}
		if err := <-errc; !errors.Is(err, kafka.NotLeaderForPartition) {
			t.Fatalf("after three temporary errors: %v", err)
		}
		go func() { errc <- w.write(t.Context(), msg("b")) }()
		(<-reqs).answer <- kafka.InvalidRecord // not temporary: no retry
		if err := <-errc; !errors.Is(err, kafka.InvalidRecord) {
			t.Fatalf("permanent error: %v", err)
		}
		go func() { errc <- w.write(t.Context(), msg("c")) }()
		(<-reqs).answer <- kafka.LeaderNotAvailable
		(<-reqs).answer <- nil // the retry succeeds
		if err := <-errc; err != nil {
			t.Fatalf("recovered write: %v", err)
		}
	})
}

// TestWriterBackpressure: a write that does not fit in the partition's
// queue waits for room, and gives up with its context.
func TestWriterBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, reqs := stubWriter(1)
		w.maxQueue = messageSize(msg("a")) // one record at a time
		defer w.close()
		errc := make(chan error, 2)
		go func() { errc <- w.write(t.Context(), msg("a")) }()
		first := <-reqs
		ctx, cancel := context.WithCancel(t.Context())
		go func() { errc <- w.write(ctx, msg("b")) }()
		synctest.Wait()
		pw := w.parts[topicPartition{"t", 0}]
		pw.mu.Lock()
		n := len(pw.queue)
		pw.mu.Unlock()
		if n != 0 {
			t.Fatalf("%d batches queued past the cap", n)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("waiting for room, cancelled: %v", err)
		}
		go func() { errc <- w.write(t.Context(), msg("c")) }()
		synctest.Wait()
		first.answer <- nil
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		second := <-reqs
		if !slices.Equal(second.keys, []string{"c"}) {
			t.Errorf("after room was made: %v", second.keys)
		}
		second.answer <- nil
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

// TestWriterCloseWaitsAndLeavesNoGoroutine: Close answers the writes in
// flight, refuses new ones and ends every goroutine the writer started.
func TestWriterCloseWaitsAndLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	w, reqs := stubWriter(3)
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := range 6 {
		wg.Go(func() {
			if w.write(t.Context(), msg("k"+strconv.Itoa(i))) == nil {
				ok.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case p := <-reqs:
				p.answer <- nil
			case <-done:
				return
			}
		}
	}()
	wg.Wait()
	w.close()
	close(done)
	if ok.Load() != 6 {
		t.Errorf("%d of 6 writes succeeded", ok.Load())
	}
	if err := w.write(t.Context(), msg("late")); !errors.Is(err, errWriterClosed) {
		t.Errorf("write after close: %v", err)
	}
}

// TestProducerBatchesUnderLoad: against the embedded broker, the records
// published while a request is held in flight go out in one request, and
// every one of them is read back.
func TestProducerBatchesUnderLoad(t *testing.T) {
	const topic = "load"
	brokers := newCluster(t, topic)
	p := newProducer(t, brokers)
	real := p.w.produce
	gate, held := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	p.w.produce = func(ctx context.Context, req *kafka.ProduceRequest) (*kafka.ProduceResponse, error) {
		n := 0
		var recs []kafka.Record
		for {
			r, err := req.Records.ReadRecord()
			if err != nil {
				break
			}
			rec := kafka.Record{Time: r.Time, Headers: r.Headers}
			if r.Key != nil {
				k, _ := io.ReadAll(r.Key)
				rec.Key = kafka.NewBytes(k)
			}
			if r.Value != nil {
				v, _ := io.ReadAll(r.Value)
				rec.Value = kafka.NewBytes(v)
			}
			recs = append(recs, rec)
			n++
		}
		mu.Lock()
		first := len(sizes) == 0
		sizes = append(sizes, n)
		mu.Unlock()
		if first {
			close(held)
			<-gate
		}
		req.Records = kafka.NewRecordReader(recs...)
		return real(ctx, req)
	}
	ev := NewEvent("/s", "x", "same", "", nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := p.Publish(t.Context(), topic, "same", ev); err != nil {
			t.Error(err)
		}
	})
	<-held
	const n = 20
	for range n {
		wg.Go(func() {
			if err := p.Publish(t.Context(), topic, "same", ev); err != nil {
				t.Error(err)
			}
		})
	}
	// Wait until all n are queued behind the held request.
	deadline := time.Now().Add(waitLong)
	for {
		p.w.mu.Lock()
		var queued int
		for _, pw := range p.w.parts {
			pw.mu.Lock()
			for _, b := range pw.queue {
				queued += len(b.msgs)
			}
			pw.mu.Unlock()
		}
		p.w.mu.Unlock()
		if queued == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records queued", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(sizes, []int{1, n}) {
		t.Errorf("records per request %v, want [1 %d]", sizes, n)
	}
	if got := readN(t, brokers, topic, n+1); len(got) != n+1 {
		t.Errorf("read %d records, want %d", len(got), n+1)
	}
}

// TestProducerOrderPerKeyConcurrent: many keys published at once, each by
// its own goroutine in sequence, are read back in order per key, and each
// key stays on the partition kafka.Hash gives it.
func TestProducerOrderPerKeyConcurrent(t *testing.T) {
	const topic = "order"
	brokers := newCluster(t, topic)
	p := newProducer(t, brokers)
	const keys, perKey = 16, 25
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			key := "key-" + strconv.Itoa(k)
			for i := range perKey {
				if i%5 == 0 { // some calls carry several records of the key
					ms := make([]kafka.Message, 0, 2)
					for j := range 2 {
						ms = append(ms, kafka.Message{Topic: topic, Key: []byte(key), Value: []byte(strconv.Itoa(i*10 + j))})
					}
					if err := p.PublishRaw(t.Context(), ms...); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				if err := p.PublishRaw(t.Context(), kafka.Message{Topic: topic, Key: []byte(key), Value: []byte(strconv.Itoa(i * 10))}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := keys * (perKey + perKey/5)
	got := readN(t, brokers, topic, total)
	last := map[string]int{}
	for _, m := range got {
		k := string(m.Key)
		v, _ := strconv.Atoi(string(m.Value))
		if prev, ok := last[k]; ok && v <= prev {
			t.Errorf("key %s: %d after %d", k, v, prev)
		}
		last[k] = v
		want := (&kafka.Hash{}).Balance(kafka.Message{Key: m.Key}, 0, 1, 2)
		if m.Partition != want {
			t.Errorf("key %s on partition %d, kafka.Hash says %d", k, m.Partition, want)
		}
	}
	if len(last) != keys {
		t.Errorf("%d keys read back, want %d", len(last), keys)
	}
}

// TestProducerBrokerDown: with the broker gone, Publish fails with the
// reason and Healthy reports it; the producer still closes cleanly.
func TestProducerBrokerDown(t *testing.T) {
	c := newClusterHandle(t, "t")
	p := newProducer(t, c.ListenAddrs())
	if err := p.Publish(t.Context(), "t", "k", NewEvent("/s", "x", "k", "", nil)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	err := p.Publish(ctx, "t", "k", NewEvent("/s", "x", "k", "", nil))
	if err == nil {
		t.Fatal("publish to a closed broker succeeded")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish waited for its context instead of failing: %v", err)
	}
	if h := p.Healthy(t.Context()); h == nil {
		t.Error("healthy with the broker gone")
	}
}

// newClusterHandle is newCluster that returns the cluster, for tests that
// stop it.
func newClusterHandle(t testing.TB, topics ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.SeedTopics(3, topics...))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestWriterSendsOneWriteTogether: the records of one write for one
// partition, written to an idle partition, go out in one request, in order
// (the item service's answers to a command: one item.removed per
// container and the confirmation).
func TestWriterSendsOneWriteTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, reqs := stubWriter(1)
		defer w.close()
		errc := make(chan error, 1)
		go func() { errc <- w.write(t.Context(), msg("a"), msg("b"), msg("c")) }()
		p := <-reqs
		if got := strings.Join(p.keys, ","); got != "a,b,c" {
			t.Fatalf("first request has %q, want a,b,c", got)
		}
		p.answer <- nil
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}
