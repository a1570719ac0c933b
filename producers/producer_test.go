package producers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/switchboard/switchboard/consumers/kafkatest"
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

func newProducer(t testing.TB, brokers []string) *Producer {
	t.Helper()
	p, err := New(Config{Brokers: brokers}, quietLog())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// readN reads n records of topic with a fresh consumer group, from the start.
func readN(t testing.TB, brokers []string, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     brokers,
		GroupID:     fmt.Sprintf("test-%s-%d", topic, time.Now().UnixNano()),
		GroupTopics: []string{topic},
		StartOffset: kafka.FirstOffset,
		MaxWait:     100 * time.Millisecond,
	})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read %s: got %d of %d records: %v", topic, len(out), n, err)
		}
		out = append(out, m)
	}
	return out
}

func headerMap(t testing.TB, m kafka.Message) map[string]string {
	t.Helper()
	h := make(map[string]string, len(m.Headers))
	for _, x := range m.Headers {
		if _, dup := h[x.Key]; dup {
			t.Errorf("duplicate header %q", x.Key)
		}
		h[x.Key] = string(x.Value)
	}
	return h
}

func TestPublishBinaryMode(t *testing.T) {
	const topic = "items.reported"
	brokers := newCluster(t, topic)
	p := newProducer(t, brokers)

	tests := []struct {
		name        string
		key         string
		ev          CloudEvent
		wantHeaders map[string]string
		wantValue   string
	}{
		{
			name: "all attributes",
			key:  "item-7",
			ev: CloudEvent{ID: "e-1", Source: "/test", Type: "item.reported", Subject: "item-7",
				Time: "2026-01-02T03:04:05Z", CorrelationID: "c-1",
				Data: map[string]string{"item_id": "item-7", "reason": "spam"}},
			wantHeaders: map[string]string{
				"ce_specversion": "1.0", "ce_id": "e-1", "ce_source": "/test", "ce_type": "item.reported",
				"ce_subject": "item-7", "ce_time": "2026-01-02T03:04:05Z", "ce_correlationid": "c-1",
				"content-type": "application/json",
			},
			wantValue: `{"item_id":"item-7","reason":"spam"}`,
		},
		{
			name: "trace context",
			key:  "item-10",
			ev: CloudEvent{ID: "e-4", Source: "/test", Type: "takedown.requested",
				TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "congo=t61rcWkgMzE"},
			wantHeaders: map[string]string{
				"ce_specversion": "1.0", "ce_id": "e-4", "ce_source": "/test", "ce_type": "takedown.requested",
				"ce_traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "ce_tracestate": "congo=t61rcWkgMzE",
				"content-type": "application/json",
			},
			wantValue: ``,
		},
		{
			name: "optional attributes left out",
			key:  "item-8",
			ev:   CloudEvent{ID: "e-2", Source: "/test", Type: "takedown.rejected", Data: json.RawMessage(`{"item_id": "item-8"}`)},
			wantHeaders: map[string]string{
				"ce_specversion": "1.0", "ce_id": "e-2", "ce_source": "/test", "ce_type": "takedown.rejected",
				"content-type": "application/json",
			},
			wantValue: `{"item_id":"item-8"}`,
		},
		{
			name: "no data",
			key:  "item-9",
			ev:   CloudEvent{ID: "e-3", Source: "/test", Type: "ping"},
			wantHeaders: map[string]string{
				"ce_specversion": "1.0", "ce_id": "e-3", "ce_source": "/test", "ce_type": "ping",
				"content-type": "application/json",
			},
			wantValue: ``,
		},
	}
	for _, tt := range tests {
		if err := p.Publish(t.Context(), topic, tt.key, tt.ev); err != nil {
			t.Fatalf("%s: Publish: %v", tt.name, err)
		}
	}
	byID := make(map[string]kafka.Message)
	for _, m := range readN(t, brokers, topic, len(tests)) {
		byID[headerMap(t, m)["ce_id"]] = m
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := byID[tt.ev.ID]
			if !ok {
				t.Fatalf("record %s not read back", tt.ev.ID)
			}
			if string(m.Key) != tt.key {
				t.Errorf("key = %q, want %q", m.Key, tt.key)
			}
			got := headerMap(t, m)
			if len(got) != len(tt.wantHeaders) {
				t.Errorf("headers = %v, want %v", got, tt.wantHeaders)
			}
			for k, v := range tt.wantHeaders {
				if got[k] != v {
					t.Errorf("header %q = %q, want %q", k, got[k], v)
				}
			}
			if string(m.Value) != tt.wantValue {
				t.Errorf("value = %q, want %q", m.Value, tt.wantValue)
			}
		})
	}
}

func TestPublishKeepsOrderPerKey(t *testing.T) {
	const topic = "takedown.events"
	brokers := newCluster(t, topic)
	p := newProducer(t, brokers)

	keys := []string{"item-1", "item-2", "item-3", "item-4", "item-5"}
	const perKey = 20
	// Publish from one goroutine per key, so the writer batches records of
	// different keys together; each key's own records go in order.
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	for _, k := range keys {
		wg.Go(func() {
			for i := range perKey {
				ev := NewEvent("/test", "item.removed", k, "", map[string]int{"seq": i})
				if err := p.Publish(t.Context(), topic, k, ev); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}

	partitionOf := make(map[string]int)
	last := make(map[string]int)
	lastOffset := make(map[int]int64)
	for _, m := range readN(t, brokers, topic, len(keys)*perKey) {
		k := string(m.Key)
		if p, ok := partitionOf[k]; ok && p != m.Partition {
			t.Errorf("key %s on partitions %d and %d", k, p, m.Partition)
		}
		partitionOf[k] = m.Partition
		if off, ok := lastOffset[m.Partition]; ok && m.Offset <= off {
			t.Fatalf("partition %d read out of offset order", m.Partition)
		}
		lastOffset[m.Partition] = m.Offset
		var d struct{ Seq int }
		if err := json.Unmarshal(m.Value, &d); err != nil {
			t.Fatalf("value %q: %v", m.Value, err)
		}
		if prev, ok := last[k]; ok && d.Seq != prev+1 {
			t.Errorf("key %s: seq %d after %d", k, d.Seq, prev)
		} else if !ok && d.Seq != 0 {
			t.Errorf("key %s: first seq %d, want 0", k, d.Seq)
		}
		last[k] = d.Seq
	}
	for _, k := range keys {
		if last[k] != perKey-1 {
			t.Errorf("key %s: last seq %d, want %d", k, last[k], perKey-1)
		}
	}
}

func TestPublishRaw(t *testing.T) {
	const topic = "switchboard.dlq"
	brokers := newCluster(t, topic)
	p := newProducer(t, brokers)

	in := kafka.Message{
		Topic: topic, Partition: 2, Offset: 41, // as read from elsewhere; must be ignored
		Key: []byte("item-3"), Value: []byte("not json {"),
		Headers: []kafka.Header{{Key: "x", Value: []byte("1")}, {Key: "switchboard-error", Value: []byte("why")}},
	}
	if err := p.PublishRaw(t.Context(), in); err != nil {
		t.Fatalf("PublishRaw: %v", err)
	}
	got := readN(t, brokers, topic, 1)[0]
	if string(got.Key) != "item-3" || string(got.Value) != "not json {" {
		t.Errorf("record = key %q value %q", got.Key, got.Value)
	}
	if h := headerMap(t, got); h["x"] != "1" || h["switchboard-error"] != "why" || len(h) != 2 {
		t.Errorf("headers = %v", h)
	}
}

func TestPublishErrors(t *testing.T) {
	const topic = "items.reported"
	brokers := newCluster(t, topic)
	p := newProducer(t, brokers)
	ok := CloudEvent{ID: "1", Source: "/s", Type: "t"}

	tests := []struct {
		name  string
		call  func(ctx context.Context) error
		match string
	}{
		{"no topic", func(ctx context.Context) error { return p.Publish(ctx, "", "k", ok) }, "no topic"},
		{"no id", func(ctx context.Context) error {
			return p.Publish(ctx, topic, "k", CloudEvent{Source: "/s", Type: "t"})
		}, `no "id"`},
		{"no source", func(ctx context.Context) error { return p.Publish(ctx, topic, "k", CloudEvent{ID: "1", Type: "t"}) }, `no "source"`},
		{"no type", func(ctx context.Context) error { return p.Publish(ctx, topic, "k", CloudEvent{ID: "1", Source: "/s"}) }, `no "type"`},
		{"data not marshallable", func(ctx context.Context) error {
			ev := ok
			ev.Data = func() {}
			return p.Publish(ctx, topic, "k", ev)
		}, "encode data"},
		{"unknown topic is not created", func(ctx context.Context) error { return p.Publish(ctx, "no.such.topic", "k", ok) }, `"no.such.topic"`},
		{"raw without topic", func(ctx context.Context) error { return p.PublishRaw(ctx, kafka.Message{Value: []byte("x")}) }, "no topic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(t.Context())
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "producers: ") || !strings.Contains(err.Error(), tt.match) {
				t.Errorf("error %q: want prefix %q and %q in it", err, "producers: ", tt.match)
			}
		})
	}
}

func TestNewAndClose(t *testing.T) {
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New without brokers: no error")
	}
	if _, err := New(Config{Brokers: []string{" "}}, nil); err == nil {
		t.Error("New with blank broker: no error")
	}
	if _, err := New(Config{Brokers: []string{"x:1"}, MaxQueuedBytes: -1}, nil); err == nil {
		t.Error("New with negative timeout: no error")
	}
	p, err := New(Config{Brokers: []string{"127.0.0.1:1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.w.maxQueue != DefaultMaxQueuedBytes || p.w.attempts != DefaultMaxAttempts || p.w.acks != kafka.RequireAll || p.w.timeout != DefaultWriteTimeout {
		t.Errorf("writer not configured from defaults: %+v", p.w)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	err = p.Publish(t.Context(), "t", "k", CloudEvent{ID: "1", Source: "/s", Type: "t"})
	if err == nil {
		t.Fatal("Publish after Close: no error")
	}
}

func TestNewEvent(t *testing.T) {
	a := NewEvent("/s", "t", "item-1", "c", nil)
	b := NewEvent("/s", "t", "item-1", "c", nil)
	if a.ID == "" || a.ID == b.ID {
		t.Errorf("IDs %q and %q: want distinct and non-empty", a.ID, b.ID)
	}
	ts, err := time.Parse(time.RFC3339, a.Time)
	if err != nil {
		t.Fatalf("Time %q: %v", a.Time, err)
	}
	if _, off := ts.Zone(); off != 0 {
		t.Errorf("Time %q not UTC", a.Time)
	}
	if a.Source != "/s" || a.Type != "t" || a.Subject != "item-1" || a.CorrelationID != "c" {
		t.Errorf("attributes not kept: %+v", a)
	}
}

// recorder is a Publisher that records what it is given and can fail.
type recorder struct {
	mu   sync.Mutex
	evs  []CloudEvent
	keys []string
	fail error
	seen chan struct{}
}

func (r *recorder) Publish(_ context.Context, topic, key string, ev CloudEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.evs = append(r.evs, ev)
	r.keys = append(r.keys, key)
	select {
	case r.seen <- struct{}{}:
	default:
	}
	return nil
}

func TestDemo(t *testing.T) {
	const topic = "items.reported"
	brokers := newCluster(t, topic)
	p := newProducer(t, brokers)

	const n = 5
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- NewDemo(p, topic, 200, quietLog()).Run(ctx) }()

	msgs := readN(t, brokers, topic, n)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Run did not return after cancel")
	}
	for _, m := range msgs {
		h := headerMap(t, m)
		if h["ce_source"] != DemoSource || h["ce_type"] != TypeItemReported || h["ce_specversion"] != "1.0" || h["ce_id"] == "" {
			t.Errorf("headers %v", h)
		}
		var d ItemReported
		if err := json.Unmarshal(m.Value, &d); err != nil {
			t.Fatalf("value %q: %v", m.Value, err)
		}
		var num int
		if _, err := fmt.Sscanf(d.ItemID, "item-%d", &num); err != nil || num < 1 || num > DemoItems {
			t.Errorf("item_id %q out of the catalogue", d.ItemID)
		}
		if h["ce_subject"] != d.ItemID || string(m.Key) != d.ItemID {
			t.Errorf("subject %q, key %q, item_id %q: want all equal", h["ce_subject"], m.Key, d.ItemID)
		}
		if d.ReporterID == "" || d.Reason == "" {
			t.Errorf("data %+v incomplete", d)
		}
		if _, err := time.Parse(time.RFC3339, d.ReportedAt); err != nil {
			t.Errorf("reported_at %q: %v", d.ReportedAt, err)
		}
	}
}

func TestDemoKeepsGoingAfterFailure(t *testing.T) {
	rec := &recorder{fail: errors.New("broker down"), seen: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- NewDemo(rec, "t", 1000, quietLog()).Run(ctx) }()
	// Let it fail for a while, then recover: the demo must still be running.
	time.Sleep(20 * time.Millisecond)
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	select {
	case <-rec.seen:
	case <-time.After(waitLong):
		t.Fatal("no report after the publisher recovered")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.keys[0] != rec.evs[0].Subject {
		t.Errorf("key %q, subject %q: want equal", rec.keys[0], rec.evs[0].Subject)
	}
}

func TestDemoNeedsPublisherAndTopic(t *testing.T) {
	if err := NewDemo(nil, "t", 1, nil).Run(t.Context()); err == nil {
		t.Error("no publisher: no error")
	}
	if err := NewDemo(&recorder{}, "", 1, nil).Run(t.Context()); err == nil {
		t.Error("no topic: no error")
	}
}

func BenchmarkPublish(b *testing.B) {
	const topic = "bench"
	brokers := newCluster(b, topic)
	p := newProducer(b, brokers)
	data := ItemReported{ItemID: "item-1", ReporterID: "user-1", Reason: "spam", ReportedAt: "2026-01-02T03:04:05Z"}

	b.Run("sync", func(b *testing.B) {
		ctx := b.Context()
		i := 0
		for b.Loop() {
			i++
			key := fmt.Sprintf("item-%d", i%1000)
			if err := p.Publish(ctx, topic, key, NewEvent("/bench", TypeItemReported, key, "", data)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("parallel", func(b *testing.B) {
		ctx := b.Context()
		b.SetParallelism(16)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				key := fmt.Sprintf("item-%d", i%1000)
				if err := p.Publish(ctx, topic, key, NewEvent("/bench", TypeItemReported, key, "", data)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	})
}

// TestHealthy: a producer is unhealthy after a failed write, and healthy
// again after the next success.
func TestHealthy(t *testing.T) {
	brokers := newCluster(t, "t")
	p := newProducer(t, brokers)
	if err := p.Healthy(t.Context()); err != nil {
		t.Fatalf("before any write: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // a write that cannot finish
	if err := p.Publish(ctx, "t", "k", NewEvent("/s", "x", "k", "", nil)); err == nil {
		t.Fatal("a write with an ended context succeeded")
	}
	if err := p.Healthy(t.Context()); err == nil {
		t.Fatal("healthy after a failed write")
	}
	if err := p.Publish(t.Context(), "t", "k", NewEvent("/s", "x", "k", "", nil)); err != nil {
		t.Fatal(err)
	}
	if err := p.Healthy(t.Context()); err != nil {
		t.Fatalf("after a success: %v", err)
	}
}

// TestDemoPosts: WithPosts adds, after each report, one item.posted per
// place of a demo item, to the posts topic, through a real broker.
func TestDemoPosts(t *testing.T) {
	const reports, posts = "items.reported", "items.posted"
	brokers := newCluster(t, reports, posts)
	p := newProducer(t, brokers)
	places := func(item string) []DemoPlace {
		return []DemoPlace{{GroupID: "group-" + item, AuthorID: "user-1"}, {AuthorID: "user-1"}}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- NewDemo(p, reports, 200, quietLog()).WithPosts(posts, places).Run(ctx) }()

	msgs := readN(t, brokers, posts, 4)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	var groups, feeds int
	for _, m := range msgs {
		h := headerMap(t, m)
		if h["ce_source"] != DemoSource || h["ce_type"] != TypeItemPosted {
			t.Errorf("headers %v", h)
		}
		var d map[string]any
		if err := json.Unmarshal(m.Value, &d); err != nil {
			t.Fatalf("value %q: %v", m.Value, err)
		}
		item, _ := d["item_id"].(string)
		if h["ce_subject"] != item || string(m.Key) != item || d["author_id"] != "user-1" || d["title"] == "" {
			t.Errorf("post %s: subject %q, key %q", m.Value, h["ce_subject"], m.Key)
		}
		if _, err := time.Parse(time.RFC3339, fmt.Sprint(d["posted_at"])); err != nil {
			t.Errorf("posted_at: %v", err)
		}
		switch g, ok := d["group_id"]; {
		case !ok:
			feeds++ // a feed post has no group_id member at all
		case g == "group-"+item:
			groups++
		default:
			t.Errorf("group_id %v, want group-%s", g, item)
		}
	}
	if groups == 0 || feeds == 0 {
		t.Errorf("%d group posts and %d feed posts, want both", groups, feeds)
	}
}
