package consumers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/switchboard/switchboard/consumers/kafkatest"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/producers"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kafkatest.IgnoreBrokerGoroutines()...)
}

// waitLong bounds every wait on the broker. Tests wait for conditions; this
// only decides how long a broken test hangs before it fails.
const waitLong = 30 * time.Second

const (
	topicReports  = "items.reported"
	topicCommands = "takedown.commands"
	topicEvents   = "takedown.events"
	topicDLQ      = "switchboard.dlq"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newCluster starts an embedded broker with the default topics, three
// partitions each.
func newCluster(t testing.TB) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.SeedTopics(3, topicReports, topicCommands, topicEvents, topicDLQ))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// firstPartition puts every record on one partition, so tests can reason
// about the order of records of different keys.
type firstPartition struct{}

func (firstPartition) Balance(_ kafka.Message, partitions ...int) int { return partitions[0] }

// newWriter is a plain kafka-go writer, as the platform's services use.
func newWriter(t testing.TB, brokers []string, b kafka.Balancer) *kafka.Writer {
	t.Helper()
	tr := &kafka.Transport{}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Balancer: b, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll, Transport: tr}
	t.Cleanup(func() {
		_ = w.Close()
		tr.CloseIdleConnections()
	})
	return w
}

func write(t testing.TB, w *kafka.Writer, msgs ...kafka.Message) {
	t.Helper()
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// binaryRecord is a valid binary-mode record keyed by its subject.
func binaryRecord(topic, id, typ, subject, corr, data string) kafka.Message {
	h := hdrs("ce_specversion", "1.0", "ce_id", id, "ce_source", "/test", "ce_type", typ, "content-type", "application/json")
	if subject != "" {
		h = append(h, kafka.Header{Key: "ce_subject", Value: []byte(subject)})
	}
	if corr != "" {
		h = append(h, kafka.Header{Key: "ce_correlationid", Value: []byte(corr)})
	}
	return kafka.Message{Topic: topic, Key: []byte(subject), Headers: h, Value: []byte(data)}
}

// delivery is one accepted Publish call.
type delivery struct {
	channels []string
	ev       *hub.Event
}

// fakeHub is a Publisher that records what it accepts and can refuse.
type fakeHub struct {
	mu        sync.Mutex
	accepted  []delivery
	attempts  map[string]int // by event ID
	refuse    map[string]int // event ID → refusals before accepting; -1 = always
	refuseErr error
}

func newFakeHub() *fakeHub {
	return &fakeHub{attempts: map[string]int{}, refuse: map[string]int{}, refuseErr: errors.New("backplane down")}
}

func (h *fakeHub) Publish(ctx context.Context, channels []string, ev *hub.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts[ev.ID]++
	if n := h.refuse[ev.ID]; n < 0 || h.attempts[ev.ID] <= n {
		return h.refuseErr
	}
	h.accepted = append(h.accepted, delivery{channels: slices.Clone(channels), ev: ev})
	return nil
}

func (h *fakeHub) attemptsOf(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts[id]
}

// byID returns the accepted deliveries of event id.
func (h *fakeHub) byID(id string) []delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []delivery
	for _, d := range h.accepted {
		if d.ev.ID == id {
			out = append(out, d)
		}
	}
	return out
}

func (h *fakeHub) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(h.accepted))
	for i, d := range h.accepted {
		out[i] = d.ev.ID
	}
	return out
}

// waitFor polls cond until it holds or waitLong passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testConfig is a consumer config with fast retries.
func testConfig(brokers []string, group string) Config {
	return Config{
		Brokers:  brokers,
		GroupID:  group,
		Routes:   DefaultRoutes(topicReports, topicCommands, topicEvents),
		DLQTopic: topicDLQ,
		RetryMin: 5 * time.Millisecond,
		RetryMax: 50 * time.Millisecond,
	}
}

func newDLQ(t testing.TB, brokers []string) *producers.Producer {
	t.Helper()
	p, err := producers.New(producers.Config{Brokers: brokers}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// start runs a consumer until the returned stop is called (or the test
// ends) and checks that Run returns nil.
func start(t testing.TB, cfg Config, pub Publisher, dlq DeadLetterWriter) (c *Consumer, stop func()) {
	t.Helper()
	c, err := New(cfg, pub, dlq, quietLog())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil after cancel", err)
				}
			case <-time.After(waitLong):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

func TestConsumerRoutesEvents(t *testing.T) {
	brokers := newCluster(t)
	w := newWriter(t, brokers, &kafka.Hash{})
	h := newFakeHub()
	_, _ = start(t, testConfig(brokers, "routes"), h, newDLQ(t, brokers))

	tests := []struct {
		name string
		msg  kafka.Message
		id   string
		want []string
	}{
		{
			name: "binary report",
			msg:  binaryRecord(topicReports, "r-1", "item.reported", "item-1", "", `{"item_id":"item-1","reason":"spam"}`),
			id:   "r-1",
			want: []string{"reports", "item:item-1"},
		},
		{
			name: "binary command with correlation",
			msg:  binaryRecord(topicCommands, "c-1", "takedown.requested", "item-2", "corr-2", `{"item_id":"item-2"}`),
			id:   "c-1",
			want: []string{"takedowns", "item:item-2", "corr:corr-2"},
		},
		{
			name: "structured confirmation",
			msg: kafka.Message{Topic: topicEvents, Key: []byte("item-3"), Headers: hdrs("content-type", "application/cloudevents+json"),
				Value: []byte(`{"specversion":"1.0","id":"e-1","source":"/items","type":"takedown.confirmed","subject":"item-3","correlationid":"corr-3","data":{"item_id":"item-3","removed_from":["g-1"]}}`)},
			id:   "e-1",
			want: []string{"takedowns", "item:item-3", "corr:corr-3"},
		},
		{
			name: "binary event routed by data item_id",
			msg:  binaryRecord(topicEvents, "e-2", "item.removed", "", "corr-4", `{"item_id":"item-4","container_id":"g-2","container_kind":"group"}`),
			id:   "e-2",
			want: []string{"takedowns", "item:item-4", "corr:corr-4"},
		},
	}
	for _, tt := range tests {
		write(t, w, tt.msg)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			waitFor(t, tt.id, func() bool { return len(h.byID(tt.id)) > 0 })
			d := h.byID(tt.id)[0]
			if !slices.Equal(d.channels, tt.want) {
				t.Errorf("channels = %q, want %q", d.channels, tt.want)
			}
			checkEventJSON(t, d.ev)
		})
	}
}

func TestConsumerKeepsOrderPerItem(t *testing.T) {
	brokers := newCluster(t)
	w := newWriter(t, brokers, &kafka.Hash{})
	h := newFakeHub()
	// Some refusals along the way must not reorder anything.
	h.refuse["item-2/3"] = 2
	h.refuse["item-5/7"] = 1
	_, _ = start(t, testConfig(brokers, "order"), h, newDLQ(t, brokers))

	const items, perItem = 6, 15
	var msgs []kafka.Message
	for i := range perItem {
		for it := 1; it <= items; it++ {
			item := "item-" + strconv.Itoa(it)
			msgs = append(msgs, binaryRecord(topicEvents, fmt.Sprintf("%s/%d", item, i), "item.removed", item, "", `{}`))
		}
	}
	write(t, w, msgs...)
	waitFor(t, "every event", func() bool { return len(h.ids()) >= len(msgs) })

	next := map[string]int{}
	for _, id := range h.ids() {
		item, seq, _ := strings.Cut(id, "/")
		n, _ := strconv.Atoi(seq)
		if n != next[item] {
			t.Fatalf("%s: got event %d, want %d; order %v", item, n, next[item], h.ids())
		}
		next[item]++
	}
	if got := len(h.ids()); got != len(msgs) {
		t.Errorf("%d deliveries, want %d", got, len(msgs))
	}
}

// readAll reads records of topic with a fresh group until it has n.
func readAll(t testing.TB, brokers []string, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, GroupID: "reader-" + strconv.FormatInt(time.Now().UnixNano(), 36), GroupTopics: []string{topic},
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond,
	})
	defer r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read %s: %d of %d records: %v", topic, len(out), n, err)
		}
		out = append(out, m)
	}
	return out
}

func TestConsumerDeadLetters(t *testing.T) {
	brokers := newCluster(t)
	// One partition for everything: the valid records share the poison
	// records' partition.
	w := newWriter(t, brokers, firstPartition{})
	h := newFakeHub()
	c, _ := start(t, testConfig(brokers, "dlq"), h, newDLQ(t, brokers))

	poison := []struct {
		name string
		msg  kafka.Message
		why  string
	}{
		{"bad JSON", kafka.Message{Key: []byte("item-1"), Headers: hdrs("ce_specversion", "1.0", "ce_id", "x1", "ce_source", "/s", "ce_type", "t", "content-type", "application/json", "trace", "abc"),
			Value: []byte(`{"item_id":"item-1",`)}, "value is not valid JSON"},
		{"missing type", kafka.Message{Key: []byte("item-2"), Headers: hdrs("ce_specversion", "1.0", "ce_id", "x2", "ce_source", "/s"),
			Value: []byte(`{"item_id":"item-2"}`)}, `missing "type"`},
		{"wrong specversion", kafka.Message{Key: []byte("item-3"), Headers: hdrs("content-type", "application/cloudevents+json"),
			Value: []byte(`{"specversion":"0.3","id":"x3","source":"/s","type":"t"}`)}, `specversion "0.3" is not 1.0`},
	}
	for i, p := range poison {
		p.msg.Topic = topicReports
		write(t, w, p.msg)
		write(t, w, binaryRecord(topicReports, "ok-"+strconv.Itoa(i), "item.reported", "item-9", "", `{}`))
	}
	for i := range poison {
		waitFor(t, "the valid record after a poison one", func() bool { return len(h.byID("ok-"+strconv.Itoa(i))) == 1 })
	}

	dead := readAll(t, brokers, topicDLQ, len(poison))
	slices.SortFunc(dead, func(a, b kafka.Message) int { return strings.Compare(string(a.Key), string(b.Key)) })
	for i, p := range poison {
		t.Run(p.name, func(t *testing.T) {
			d := dead[i]
			if string(d.Key) != string(p.msg.Key) || string(d.Value) != string(p.msg.Value) {
				t.Errorf("dead letter key %q value %q, want %q %q", d.Key, d.Value, p.msg.Key, p.msg.Value)
			}
			if len(d.Headers) != len(p.msg.Headers)+2 {
				t.Fatalf("dead letter headers %v: want the %d originals and 2 more", d.Headers, len(p.msg.Headers))
			}
			for j, hd := range p.msg.Headers {
				if d.Headers[j].Key != hd.Key || string(d.Headers[j].Value) != string(hd.Value) {
					t.Errorf("header %d = %s=%q, want %s=%q", j, d.Headers[j].Key, d.Headers[j].Value, hd.Key, hd.Value)
				}
			}
			got := map[string]string{}
			for _, hd := range d.Headers[len(p.msg.Headers):] {
				got[hd.Key] = string(hd.Value)
			}
			if !strings.Contains(got[HeaderError], p.why) {
				t.Errorf("%s = %q, want %q in it", HeaderError, got[HeaderError], p.why)
			}
			// Poison i is record 2i of partition 0.
			if want := fmt.Sprintf("%s/0/%d", topicReports, 2*i); got[HeaderSource] != want {
				t.Errorf("%s = %q, want %q", HeaderSource, got[HeaderSource], want)
			}
		})
	}
	if s := c.Stats(); s.DeadLettered != uint64(len(poison)) || s.Published != uint64(len(poison)) {
		t.Errorf("stats %+v: want %d dead-lettered and %d published", s, len(poison), len(poison))
	}
}

// flakyDLQ fails its first writes, then passes them on.
type flakyDLQ struct {
	next  DeadLetterWriter
	fails atomic.Int32
	calls atomic.Int32
}

func (f *flakyDLQ) PublishRaw(ctx context.Context, msgs ...kafka.Message) error {
	f.calls.Add(1)
	if f.fails.Add(-1) >= 0 {
		return errors.New("dlq unavailable")
	}
	return f.next.PublishRaw(ctx, msgs...)
}

func TestConsumerRetriesDeadLetters(t *testing.T) {
	brokers := newCluster(t)
	w := newWriter(t, brokers, firstPartition{})
	h := newFakeHub()
	dlq := &flakyDLQ{next: newDLQ(t, brokers)}
	dlq.fails.Store(3)
	c, _ := start(t, testConfig(brokers, "dlq-retry"), h, dlq)

	write(t, w, kafka.Message{Topic: topicEvents, Key: []byte("item-1"), Value: []byte("garbage")},
		binaryRecord(topicEvents, "after", "item.removed", "item-1", "", `{}`))
	waitFor(t, "the record after the poison one", func() bool { return len(h.byID("after")) == 1 })
	if n := dlq.calls.Load(); n != 4 {
		t.Errorf("%d dead-letter writes, want 3 failed and 1 good", n)
	}
	if s := c.Stats(); s.DeadLetterErrors != 3 || s.DeadLettered != 1 {
		t.Errorf("stats %+v: want 3 dead-letter errors, 1 dead-lettered", s)
	}
	if d := readAll(t, brokers, topicDLQ, 1)[0]; string(d.Value) != "garbage" {
		t.Errorf("dead letter value %q", d.Value)
	}
}

// TestConsumerCommitsOnlyAccepted checks at-least-once delivery across a
// restart of a group member: accepted records are not delivered again, a
// record the hub never accepted is.
func TestConsumerCommitsOnlyAccepted(t *testing.T) {
	brokers := newCluster(t)
	w := newWriter(t, brokers, firstPartition{})
	const group = "restart"

	// First run: the hub refuses A three times, then accepts; B follows.
	h1 := newFakeHub()
	h1.refuse["A"] = 3
	c1, stop1 := start(t, testConfig(brokers, group), h1, newDLQ(t, brokers))
	write(t, w, binaryRecord(topicEvents, "A", "item.removed", "item-1", "c-1", `{}`),
		binaryRecord(topicEvents, "B", "item.removed", "item-2", "c-2", `{}`))
	waitFor(t, "A and B", func() bool { return len(h1.ids()) == 2 })
	if got := h1.ids(); !slices.Equal(got, []string{"A", "B"}) {
		t.Errorf("first run delivered %v, want [A B]", got)
	}
	if n := h1.attemptsOf("A"); n != 4 {
		t.Errorf("A tried %d times, want 4", n)
	}
	if s := c1.Stats(); s.PublishErrors != 3 || s.Published != 2 {
		t.Errorf("stats %+v: want 3 publish errors and 2 published", s)
	}
	stop1()

	// Second run: the hub never accepts C.
	h2 := newFakeHub()
	h2.refuse["C"] = -1
	_, stop2 := start(t, testConfig(brokers, group), h2, newDLQ(t, brokers))
	write(t, w, binaryRecord(topicEvents, "C", "takedown.confirmed", "item-3", "c-3", `{}`))
	waitFor(t, "C to be tried", func() bool { return h2.attemptsOf("C") >= 2 })
	stop2()
	if got := h2.ids(); len(got) != 0 {
		t.Errorf("second run delivered %v, want nothing (A, B committed; C refused)", got)
	}

	// Third run: C comes again, A and B do not. D, written after C on the
	// same partition, marks the end of what there is to read.
	h3 := newFakeHub()
	_, _ = start(t, testConfig(brokers, group), h3, newDLQ(t, brokers))
	write(t, w, binaryRecord(topicEvents, "D", "item.removed", "item-4", "c-4", `{}`))
	waitFor(t, "D", func() bool { return len(h3.byID("D")) == 1 })
	if got := h3.ids(); !slices.Equal(got, []string{"C", "D"}) {
		t.Errorf("third run delivered %v, want [C D]", got)
	}
}

func TestConsumerNew(t *testing.T) {
	h, dlq := newFakeHub(), &flakyDLQ{}
	ok := Config{Brokers: []string{"127.0.0.1:1"}}
	tests := []struct {
		name string
		cfg  Config
		pub  Publisher
		dlq  DeadLetterWriter
		want string
	}{
		{"no publisher", ok, nil, dlq, "no publisher"},
		{"no dead-letter writer", ok, h, nil, "no dead-letter writer"},
		{"no brokers", Config{Brokers: []string{""}}, h, dlq, "no brokers"},
		{"negative duration", Config{Brokers: ok.Brokers, MaxWait: -1}, h, dlq, "negative"},
		{"retry max below min", Config{Brokers: ok.Brokers, RetryMin: time.Second, RetryMax: time.Millisecond}, h, dlq, "retry max"},
		{"bad route", Config{Brokers: ok.Brokers, Routes: []Route{{Topic: "t", Channels: []string{"x:{nope}"}}}}, h, dlq, "unknown placeholder"},
		{"dlq is routed", Config{Brokers: ok.Brokers, DLQTopic: topicEvents}, h, dlq, "also a routed topic"},
		{"heartbeat not below session", Config{Brokers: ok.Brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: 6 * time.Second}, h, dlq, "heartbeat interval 6s must be below the session timeout 6s"},
		{"negative session timeout", Config{Brokers: ok.Brokers, SessionTimeout: -time.Second}, h, dlq, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, tt.pub, tt.dlq, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "consumers: ") {
				t.Errorf("error %v: want %q", err, tt.want)
			}
		})
	}

	c, err := New(ok, h, dlq, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.GroupID != DefaultGroupID || c.cfg.DLQTopic != DefaultDLQTopic || c.cfg.MaxWait != DefaultMaxWait ||
		c.cfg.CommitInterval != DefaultCommitInterval || c.cfg.RetryMax != DefaultRetryMax {
		t.Errorf("defaults not applied: %+v", c.cfg)
	}
	if got, want := c.router.Topics(), []string{DefaultReportsTopic, DefaultCommandsTopic, DefaultEventsTopic}; !slices.Equal(got, want) {
		t.Errorf("default topics %v, want %v", got, want)
	}
	// The group timing reaches the reader: kafka-go's defaults (30 s
	// session) would leave a dead member's partitions unread for 30 s.
	if rc := c.readerConfig(); rc.SessionTimeout != DefaultSessionTimeout || rc.HeartbeatInterval != DefaultHeartbeatInterval ||
		rc.RebalanceTimeout != DefaultRebalanceTimeout || rc.JoinGroupBackoff == 0 || rc.ReadBackoffMax == 0 {
		t.Errorf("reader config %+v: want the default group timing", rc)
	}
	c, err = New(Config{Brokers: ok.Brokers, SessionTimeout: 10 * time.Second, HeartbeatInterval: 2 * time.Second, RebalanceTimeout: 20 * time.Second}, h, dlq, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rc := c.readerConfig(); rc.SessionTimeout != 10*time.Second || rc.HeartbeatInterval != 2*time.Second || rc.RebalanceTimeout != 20*time.Second {
		t.Errorf("reader config %+v: want the configured group timing", rc)
	}
}

func TestConsumerReady(t *testing.T) {
	brokers := newCluster(t)
	tests := []struct {
		name    string
		brokers []string
		ready   bool
	}{
		{"broker up", brokers, true},
		{"second broker up", []string{"127.0.0.1:1", brokers[0]}, true},
		{"nothing listening", []string{"127.0.0.1:1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Config{Brokers: tt.brokers}, newFakeHub(), &flakyDLQ{}, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			err = c.Ready(t.Context())
			if (err == nil) != tt.ready {
				t.Errorf("Ready = %v, want ready %v", err, tt.ready)
			}
		})
	}
}
