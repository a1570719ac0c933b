package itemsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/producers"
)

const (
	isvcCommands = producers.DefaultCommandsTopic
	isvcEvents   = producers.DefaultEventsTopic
)

func TestDemoCatalogue(t *testing.T) {
	c := DemoCatalogue()
	if c.Len() != producers.DemoItems {
		t.Fatalf("Len = %d, want %d", c.Len(), producers.DemoItems)
	}
	sizes := map[int]int{}
	kinds := map[string]int{}
	for n := 1; n <= producers.DemoItems; n++ {
		id := fmt.Sprintf("item-%d", n)
		cs, ok := c.Containers(id)
		if !ok {
			t.Fatalf("%s unknown", id)
		}
		if len(cs) < 1 || len(cs) > 3 {
			t.Errorf("%s has %d containers, want 1 to 3", id, len(cs))
		}
		sizes[len(cs)]++
		seen := map[string]bool{}
		for _, x := range cs {
			kinds[x.Kind]++
			if seen[x.ID] {
				t.Errorf("%s: container %s twice", id, x.ID)
			}
			seen[x.ID] = true
			var num int
			switch x.Kind {
			case ContainerGroup:
				if _, err := fmt.Sscanf(x.ID, "group-%d", &num); err != nil || num < 1 {
					t.Errorf("%s: group ID %q", id, x.ID)
				}
			case ContainerFollowers:
				if _, err := fmt.Sscanf(x.ID, "followers-user-%d", &num); err != nil || num < 1 {
					t.Errorf("%s: followers ID %q", id, x.ID)
				}
			default:
				t.Errorf("%s: kind %q", id, x.Kind)
			}
		}
		// Derived from the number alone: a fresh derivation agrees.
		if again := demoContainers(uint64(n)); !slices.Equal(cs, again) {
			t.Errorf("%s: %v, then %v", id, cs, again)
		}
	}
	for _, k := range []int{1, 2, 3} {
		if sizes[k] == 0 {
			t.Errorf("no item with %d containers: %v", k, sizes)
		}
	}
	if kinds[ContainerGroup] == 0 || kinds[ContainerFollowers] == 0 {
		t.Errorf("kinds %v: want both", kinds)
	}

	// Every node and every run, and every version, must agree: pin a few.
	golden := map[string][]Container{
		"item-1":    {{"followers-user-1960", ContainerFollowers}, {"followers-user-1402", ContainerFollowers}, {"group-32", ContainerGroup}},
		"item-2":    {{"group-11", ContainerGroup}, {"followers-user-1031", ContainerFollowers}},
		"item-3":    {{"followers-user-1411", ContainerFollowers}},
		"item-1000": {{"group-43", ContainerGroup}, {"group-8", ContainerGroup}},
	}
	for id, want := range golden {
		if got, _ := c.Containers(id); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", id, got, want)
		}
	}

	for _, id := range []string{"", "item-0", "item-1001", "item-01", "item-1x", "ITEM-1", " item-1", "item--1", "group-1"} {
		if cs, ok := c.Containers(id); ok || cs != nil {
			t.Errorf("Containers(%q) = %v, %v; want unknown", id, cs, ok)
		}
	}

	cs, _ := c.Containers("item-1")
	cs[0].ID = "changed"
	if again, _ := c.Containers("item-1"); again[0].ID == "changed" {
		t.Error("Containers returned the catalogue's own slice")
	}
	if DemoCatalogue() != c {
		t.Error("DemoCatalogue built twice")
	}
	if items := c.Items(); len(items) != producers.DemoItems || !slices.IsSorted(items) {
		t.Errorf("Items: %d, sorted %v", len(items), slices.IsSorted(items))
	}
}

func TestNewCatalogueCopies(t *testing.T) {
	in := map[string][]Container{"x": {{"group-1", ContainerGroup}}}
	c := NewCatalogue(in)
	in["x"][0].ID = "changed"
	in["y"] = nil
	if got, ok := c.Containers("x"); !ok || got[0].ID != "group-1" {
		t.Errorf("Containers(x) = %v, %v", got, ok)
	}
	if _, ok := c.Containers("y"); ok || c.Len() != 1 {
		t.Error("catalogue changed with its input")
	}
}

func TestNewItemService(t *testing.T) {
	pub := &isvcFlaky{}
	ok := Config{Brokers: []string{"127.0.0.1:1"}, Decode: decode}
	tests := []struct {
		name  string
		cfg   func(Config) Config
		pub   producers.Publisher
		match string
	}{
		{"no brokers", func(c Config) Config { c.Brokers = []string{" "}; return c }, pub, "no brokers"},
		{"no publisher", func(c Config) Config { return c }, nil, "no publisher"},
		{"no decoder", func(c Config) Config { c.Decode = nil; return c }, pub, "no decoder"},
		{"negative latency", func(c Config) Config { c.Latency = -time.Millisecond; return c }, pub, "latency"},
		{"negative in flight", func(c Config) Config { c.MaxInFlight = -1; return c }, pub, "max in flight"},
		{"negative remember", func(c Config) Config { c.Remember = -1; return c }, pub, "remember"},
		{"negative commit interval", func(c Config) Config { c.CommitEvery = -time.Millisecond; return c }, pub, "commit interval"},
		{"heartbeat not below session", func(c Config) Config {
			c.SessionTimeout, c.HeartbeatInterval = 6*time.Second, 6*time.Second
			return c
		}, pub, "heartbeat interval 6s must be below the session timeout 6s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg(ok), tt.pub, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "itemsvc: ") || !strings.Contains(err.Error(), tt.match) {
				t.Errorf("error %q: want prefix %q and %q in it", err, "itemsvc: ", tt.match)
			}
		})
	}

	s, err := New(ok, pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.GroupID != DefaultGroupID || s.cfg.CommandsTopic != DefaultCommandsTopic ||
		s.cfg.EventsTopic != DefaultEventsTopic || s.cfg.MaxInFlight != DefaultMaxInFlight ||
		s.cfg.Catalogue != DemoCatalogue() || s.cfg.Latency != 0 || s.cfg.Remember != DefaultRemember {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
	// The group timing reaches the reader: kafka-go's defaults (30 s
	// session) would leave the commands of a member that lost its
	// connection unread for 30 s.
	if rc := s.readerConfig(); rc.SessionTimeout != DefaultSessionTimeout ||
		rc.HeartbeatInterval != DefaultHeartbeatInterval || rc.RebalanceTimeout != DefaultRebalanceTimeout {
		t.Errorf("reader config %+v: want the default group timing", rc)
	}
	ok.SessionTimeout, ok.HeartbeatInterval, ok.RebalanceTimeout = 10*time.Second, 2*time.Second, 20*time.Second
	if s, err = New(ok, pub, nil); err != nil {
		t.Fatal(err)
	}
	if rc := s.readerConfig(); rc.SessionTimeout != 10*time.Second || rc.HeartbeatInterval != 2*time.Second || rc.RebalanceTimeout != 20*time.Second {
		t.Errorf("reader config %+v: want the configured group timing", rc)
	}
}

func TestOffsetTracker(t *testing.T) {
	msg := func(p int, off int64) kafka.Message { return kafka.Message{Topic: "t", Partition: p, Offset: off} }
	tr := newOffsetTracker()
	for off := int64(10); off < 15; off++ {
		tr.add(msg(0, off))
	}
	tr.add(msg(1, 3))

	// commits maps partition to the next offset to read, as kafka-go
	// commits it (Offset+1).
	commits := func() map[int]int64 {
		out := map[int]int64{}
		msgs := tr.ready()
		for _, m := range msgs {
			out[m.Partition] = m.Offset + 1
		}
		tr.committed(msgs)
		return out
	}
	steps := []struct {
		name string
		done []kafka.Message
		want map[int]int64
	}{
		{"nothing answered", nil, map[int]int64{}},
		{"later ones answered first", []kafka.Message{msg(0, 12), msg(0, 13)}, map[int]int64{}},
		{"the oldest answered", []kafka.Message{msg(0, 10)}, map[int]int64{0: 11}},
		{"the gap filled", []kafka.Message{msg(0, 11)}, map[int]int64{0: 14}},
		{"no change, no commit", nil, map[int]int64{}},
		{"both partitions", []kafka.Message{msg(0, 14), msg(1, 3)}, map[int]int64{0: 15, 1: 4}},
	}
	for _, st := range steps {
		for _, m := range st.done {
			tr.done(m)
		}
		if got := commits(); fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Errorf("%s: commits %v, want %v", st.name, got, st.want)
		}
	}
	// A rebalance makes the reader fetch from the committed offset again;
	// commits never go back.
	tr.add(msg(0, 15))
	tr.add(msg(0, 16))
	tr.done(msg(0, 16))
	if got := commits(); len(got) != 0 {
		t.Errorf("after a refetch: commits %v, want none until 15 is answered", got)
	}
	tr.done(msg(0, 15))
	if got := commits(); got[0] != 17 {
		t.Errorf("commits %v, want 0:17", got)
	}
}

// isvcHarness is an embedded broker with the command and event topics, a
// producers.Producer for the service's answers and a writer for commands.
type isvcHarness struct {
	t       testing.TB
	brokers []string
	pub     *producers.Producer
	w       *kafka.Writer
	tr      *kafka.Transport
}

func newIsvcHarness(t testing.TB) *isvcHarness {
	t.Helper()
	brokers := newCluster(t, isvcCommands, isvcEvents)
	h := &isvcHarness{t: t, brokers: brokers, pub: newProducer(t, brokers), tr: &kafka.Transport{}}
	h.w = &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Balancer:     &kafka.Hash{},
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		Transport:    h.tr,
	}
	t.Cleanup(func() {
		_ = h.w.Close()
		h.tr.CloseIdleConnections()
	})
	return h
}

// isvcRunning is a Service running in its own goroutine.
type isvcRunning struct {
	*Service
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs an item service; zero fields of cfg get the harness's values.
// It is stopped at cleanup, and Run must have returned nil.
func (h *isvcHarness) start(cfg Config) *isvcRunning {
	h.t.Helper()
	cfg.Brokers = h.brokers
	if cfg.CommandsTopic == "" {
		cfg.CommandsTopic = isvcCommands
	}
	if cfg.EventsTopic == "" {
		cfg.EventsTopic = isvcEvents
	}
	if cfg.Decode == nil {
		cfg.Decode = decode
	}
	s, err := New(cfg, h.pub, quietLog())
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rs := &isvcRunning{Service: s, cancel: cancel, done: make(chan error, 1)}
	go func() { rs.done <- s.Run(ctx) }()
	h.t.Cleanup(func() {
		if err := rs.stop(); err != nil {
			h.t.Errorf("Run = %v, want nil", err)
		}
	})
	return rs
}

// stop cancels Run and returns its result; it fails the test if Run does
// not return.
func (rs *isvcRunning) stop() error {
	rs.once.Do(func() {
		rs.cancel()
		select {
		case rs.err = <-rs.done:
		case <-time.After(waitLong):
			rs.err = errors.New("Run did not return after cancel")
		}
	})
	return rs.err
}

// command is a takedown.requested record in the binary mode.
func (h *isvcHarness) command(itemID, corrID string) kafka.Message {
	h.t.Helper()
	m, err := producers.Message(isvcCommands, itemID, producers.NewEvent("/test", producers.TypeTakedownRequested, itemID, corrID,
		map[string]string{"item_id": itemID, "reason": "court order", "requested_by": "test"}))
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *isvcHarness) send(msgs ...kafka.Message) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := h.w.WriteMessages(ctx, msgs...); err != nil {
		h.t.Fatalf("write %d commands: %v", len(msgs), err)
	}
}

// eventReader reads the events topic with a fresh consumer group.
func (h *isvcHarness) eventReader() *kafka.Reader {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     h.brokers,
		GroupID:     fmt.Sprintf("test-events-%d", time.Now().UnixNano()),
		Topic:       isvcEvents,
		StartOffset: kafka.FirstOffset,
		MaxWait:     100 * time.Millisecond,
	})
	h.t.Cleanup(func() { _ = r.Close() })
	return r
}

// isvcAnswer is one event the item service published, as a consumer sees it.
type isvcAnswer struct {
	ID, Type, Subject, CorrID, Source, Key string
	TraceParent, TraceState                string
	Partition                              int
	Offset                                 int64
	Data                                   json.RawMessage
}

// next reads n events, decoding each with the consumers' decoder.
func isvcNext(t testing.TB, r *kafka.Reader, n int) []isvcAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	out := make([]isvcAnswer, 0, n)
	for len(out) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read events: got %d of %d: %v", len(out), n, err)
		}
		ev, err := decode(m)
		if err != nil {
			t.Fatalf("event at %d/%d does not decode: %v", m.Partition, m.Offset, err)
		}
		var whole struct{ Data json.RawMessage }
		if err := json.Unmarshal(ev.JSON, &whole); err != nil {
			t.Fatal(err)
		}
		out = append(out, isvcAnswer{ID: ev.ID, Type: ev.Type, Subject: ev.Subject, CorrID: ev.CorrelationID, Source: ev.Source,
			Key: string(m.Key), TraceParent: ev.TraceParent, TraceState: ev.TraceState,
			Partition: m.Partition, Offset: m.Offset, Data: whole.Data})
	}
	return out
}

func isvcByCorr(as []isvcAnswer) map[string][]isvcAnswer {
	out := map[string][]isvcAnswer{}
	for _, a := range as {
		out[a.CorrID] = append(out[a.CorrID], a)
	}
	return out
}

// isvcExpected is how many events a takedown of each item yields the
// first time.
func isvcExpected(c *Catalogue, items ...string) int {
	n := 0
	for _, id := range items {
		cs, _ := c.Containers(id)
		n += len(cs) + 1
	}
	return n
}

// isvcCheck checks the events of one correlation ID: for a known item
// an item.removed per container (or none, when removed is false), then
// takedown.confirmed; for an unknown one takedown.rejected not_found. All
// on one partition in order, keyed and subjected by the item, carrying the
// correlation ID. It returns the confirmation.
func isvcCheck(t testing.TB, c *Catalogue, itemID, corrID string, evs []isvcAnswer, removed bool) TakedownConfirmed {
	t.Helper()
	for i, a := range evs {
		if a.CorrID != corrID || a.Subject != itemID || a.Key != itemID || a.Source != producers.ItemServiceSource {
			t.Errorf("%s event %d: corr %q subject %q key %q source %q", corrID, i, a.CorrID, a.Subject, a.Key, a.Source)
		}
		if i > 0 && (a.Partition != evs[0].Partition || a.Offset <= evs[i-1].Offset) {
			t.Errorf("%s event %d at %d/%d: not after %d/%d", corrID, i, a.Partition, a.Offset, evs[i-1].Partition, evs[i-1].Offset)
		}
	}
	containers, known := c.Containers(itemID)
	if !known {
		if len(evs) != 1 || evs[0].Type != producers.TypeTakedownRejected {
			t.Fatalf("%s (unknown %s): events %v, want one %s", corrID, itemID, evs, producers.TypeTakedownRejected)
		}
		var d TakedownRejected
		if err := json.Unmarshal(evs[0].Data, &d); err != nil || d != (TakedownRejected{ItemID: itemID, Reason: RejectNotFound}) {
			t.Errorf("%s: rejected data %s (%v)", corrID, evs[0].Data, err)
		}
		return TakedownConfirmed{}
	}
	want := 1
	if removed {
		want += len(containers)
	}
	if len(evs) != want {
		t.Fatalf("%s (%s): %d events %v, want %d", corrID, itemID, len(evs), evs, want)
	}
	var ids []string
	for i, c := range containers {
		ids = append(ids, c.ID)
		if !removed {
			continue
		}
		var d ItemRemoved
		if evs[i].Type != producers.TypeItemRemoved {
			t.Errorf("%s event %d: type %s, want %s", corrID, i, evs[i].Type, producers.TypeItemRemoved)
		}
		if err := json.Unmarshal(evs[i].Data, &d); err != nil || d != (ItemRemoved{itemID, c.ID, c.Kind}) {
			t.Errorf("%s event %d: data %s (%v), want container %v", corrID, i, evs[i].Data, err, c)
		}
	}
	last := evs[len(evs)-1]
	if last.Type != producers.TypeTakedownConfirmed {
		t.Fatalf("%s: last event %s, want %s", corrID, last.Type, producers.TypeTakedownConfirmed)
	}
	var d TakedownConfirmed
	if err := json.Unmarshal(last.Data, &d); err != nil {
		t.Fatalf("%s: confirmed data %s: %v", corrID, last.Data, err)
	}
	if d.ItemID != itemID || !slices.Equal(d.RemovedFrom, ids) {
		t.Errorf("%s: confirmed %+v, want removed_from %v", corrID, d, ids)
	}
	if _, err := time.Parse(time.RFC3339, d.ConfirmedAt); err != nil {
		t.Errorf("%s: confirmed_at %q: %v", corrID, d.ConfirmedAt, err)
	}
	return d
}

// committedOffsets returns the group's committed offset and the end offset
// of each partition of the commands topic.
func (h *isvcHarness) committedOffsets(group string) (committed, end map[int]int64) {
	h.t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(h.brokers...), Transport: tr, Timeout: waitLong}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	parts := []int{0, 1, 2}
	of, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{isvcCommands: parts}})
	if err != nil || of.Error != nil {
		h.t.Fatalf("offset fetch: %v %v", err, of.Error)
	}
	committed = map[int]int64{}
	for _, p := range of.Topics[isvcCommands] {
		committed[p.Partition] = p.CommittedOffset
	}
	var reqs []kafka.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{isvcCommands: reqs}})
	if err != nil {
		h.t.Fatalf("list offsets: %v", err)
	}
	end = map[int]int64{}
	for _, p := range lo.Topics[isvcCommands] {
		end[p.Partition] = p.LastOffset
	}
	return committed, end
}

// committedCount is how many command records the group committed, over
// all partitions.
func (h *isvcHarness) committedCount(group string) int64 {
	h.t.Helper()
	committed, _ := h.committedOffsets(group)
	n := int64(0)
	for _, off := range committed {
		n += max(off, 0)
	}
	return n
}

// checkAllCommitted checks that the group committed every command record.
func (h *isvcHarness) checkAllCommitted(group string) {
	h.t.Helper()
	committed, end := h.committedOffsets(group)
	for p, e := range end {
		if e > 0 && committed[p] != e {
			h.t.Errorf("partition %d: committed %d, end %d", p, committed[p], e)
		}
	}
}

func isvcWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// isvcWaitStats waits until s's counters are want.
func isvcWaitStats(t testing.TB, s *Service, want Stats) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		got := s.Stats()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats = %+v, want %+v", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestItemServiceAnswers(t *testing.T) {
	h := newIsvcHarness(t)
	svc := h.start(Config{})
	cat := DemoCatalogue()

	// The structured mode, naming the item in subject only.
	structured := kafka.Message{
		Topic: isvcCommands, Key: []byte("item-3"),
		Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}},
		Value: []byte(`{"specversion":"1.0","id":"s-1","source":"/test","type":"takedown.requested",` +
			`"subject":"item-3","correlationid":"c-structured","data":{"reason":"spam"}}`),
	}
	tests := []struct {
		name, item, corr string
		msg              kafka.Message
	}{
		{name: "known item, three containers", item: "item-1", corr: "c-known"},
		{name: "known item, one container, structured mode", item: "item-3", corr: "c-structured", msg: structured},
		{name: "unknown item", item: "item-1001", corr: "c-unknown"},
	}
	var msgs []kafka.Message
	var items []string
	for _, tt := range tests {
		m := tt.msg
		if m.Topic == "" {
			m = h.command(tt.item, tt.corr)
		}
		msgs = append(msgs, m)
		items = append(items, tt.item)
	}
	h.send(msgs...)

	got := isvcByCorr(isvcNext(t, h.eventReader(), isvcExpected(cat, items...)))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isvcCheck(t, cat, tt.item, tt.corr, got[tt.corr], true)
		})
	}
	// A consumer may see an event before Publish returns to the service.
	isvcWaitStats(t, svc.Service, Stats{Commands: 3, Confirmed: 2, Rejected: 1, Removed: 4})
	if err := svc.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	h.checkAllCommitted(DefaultGroupID)
}

func TestItemServiceIdempotent(t *testing.T) {
	h := newIsvcHarness(t)
	svc := h.start(Config{})
	cat := DemoCatalogue()
	r := h.eventReader()
	const item = "item-1" // three containers
	n, _ := cat.Containers(item)

	h.send(h.command(item, "c-1"))
	first := isvcCheck(t, cat, item, "c-1", isvcNext(t, r, len(n)+1), true)

	// All of the item's events share a partition, so an extra item.removed
	// would be read before the confirmation.
	h.send(h.command(item, "c-1"))
	again := isvcCheck(t, cat, item, "c-1", isvcNext(t, r, 1), false)
	if !slices.Equal(again.RemovedFrom, first.RemovedFrom) || again.ConfirmedAt != first.ConfirmedAt {
		t.Errorf("repeated command: %+v, first %+v", again, first)
	}

	h.send(h.command(item, "c-2"))
	other := isvcCheck(t, cat, item, "c-2", isvcNext(t, r, 1), false)
	if !slices.Equal(other.RemovedFrom, first.RemovedFrom) || other.ConfirmedAt != first.ConfirmedAt {
		t.Errorf("second takedown of a removed item: %+v, first %+v", other, first)
	}

	h.send(h.command("item-0", "c-3"))
	isvcCheck(t, cat, "item-0", "c-3", isvcNext(t, r, 1), true)
	h.send(h.command("item-0", "c-3"))
	isvcCheck(t, cat, "item-0", "c-3", isvcNext(t, r, 1), true)

	isvcWaitStats(t, svc.Service, Stats{Commands: 5, Confirmed: 3, Rejected: 2, Removed: int64(len(n))})
}

func TestItemServiceConcurrentWithLatency(t *testing.T) {
	h := newIsvcHarness(t)
	svc := h.start(Config{Latency: 50 * time.Millisecond})
	cat := DemoCatalogue()

	const known, unknown = 200, 20
	var msgs []kafka.Message
	var items []string
	for i := 1; i <= known+unknown; i++ {
		item := fmt.Sprintf("item-%d", i)
		if i > known {
			item = fmt.Sprintf("gone-%d", i)
		}
		items = append(items, item)
		msgs = append(msgs, h.command(item, fmt.Sprintf("c-%d", i)))
	}
	// Two commands for one item at once: one removes, one only confirms.
	msgs = append(msgs, h.command("item-7", "c-dup"))
	h.send(msgs...)

	got := isvcByCorr(isvcNext(t, h.eventReader(), isvcExpected(cat, items...)+1))
	for i, item := range items {
		corr := fmt.Sprintf("c-%d", i+1)
		// Of the two takedowns of item-7, either may be the one that removes.
		removes := item != "item-7" || len(got[corr]) > 1
		isvcCheck(t, cat, item, corr, got[corr], removes)
	}
	isvcCheck(t, cat, "item-7", "c-dup", got["c-dup"], len(got["c-dup"]) > 1)
	if removals := len(got["c-7"]) + len(got["c-dup"]) - 2; removals != len(isvcContainers(t, cat, "item-7")) {
		t.Errorf("item-7 taken down twice at once: %d item.removed, want %d", removals, len(isvcContainers(t, cat, "item-7")))
	}
	removed := int64(0)
	for _, item := range items[:known] {
		removed += int64(len(isvcContainers(t, cat, item)))
	}
	isvcWaitStats(t, svc.Service, Stats{Commands: known + unknown + 1, Confirmed: known + 1, Rejected: unknown, Removed: removed})
	if err := svc.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	h.checkAllCommitted(DefaultGroupID)
}

func isvcContainers(t testing.TB, c *Catalogue, id string) []Container {
	t.Helper()
	cs, ok := c.Containers(id)
	if !ok {
		t.Fatalf("%s not in the catalogue", id)
	}
	return cs
}

func TestItemServiceSkipsWhatIsNotACommand(t *testing.T) {
	h := newIsvcHarness(t)
	svc := h.start(Config{})
	noItem, err := producers.Message(isvcCommands, "", producers.NewEvent("/test", producers.TypeTakedownRequested, "", "c-none", map[string]string{"reason": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	report, err := producers.Message(isvcCommands, "item-2", producers.NewEvent("/test", producers.TypeItemReported, "item-2", "", map[string]string{"item_id": "item-2"}))
	if err != nil {
		t.Fatal(err)
	}
	h.send(
		kafka.Message{Topic: isvcCommands, Key: []byte("item-2"), Value: []byte("not a cloudevent")},
		report,
		noItem,
		h.command("item-2", "c-ok"),
	)
	cat := DemoCatalogue()
	isvcCheck(t, cat, "item-2", "c-ok", isvcNext(t, h.eventReader(), isvcExpected(cat, "item-2")), true)
	isvcWaitStats(t, svc.Service, Stats{Commands: 1, Confirmed: 1, Removed: int64(len(isvcContainers(t, cat, "item-2"))), Skipped: 3})
	if err := svc.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	h.checkAllCommitted(DefaultGroupID)
}

// isvcFlaky fails as many publishes as failures says, then passes them on.
type isvcFlaky struct {
	producers.Publisher
	failures atomic.Int64
}

func (f *isvcFlaky) Publish(ctx context.Context, topic, key string, ev producers.CloudEvent) error {
	if f.failures.Add(-1) >= 0 {
		return errors.New("broker away")
	}
	return f.Publisher.Publish(ctx, topic, key, ev)
}

func TestItemServiceRetriesPublish(t *testing.T) {
	h := newIsvcHarness(t)
	f := &isvcFlaky{Publisher: h.pub}
	f.failures.Store(3)
	s, err := New(Config{Brokers: h.brokers, CommandsTopic: isvcCommands, EventsTopic: isvcEvents, Decode: decode}, f, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	h.send(h.command("item-3", "c-retry"))
	cat := DemoCatalogue()
	isvcCheck(t, cat, "item-3", "c-retry", isvcNext(t, h.eventReader(), isvcExpected(cat, "item-3")), true)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if err := s.Run(t.Context()); err == nil {
		t.Error("second Run: no error")
	}
}

func TestItemServiceStopsOnCancel(t *testing.T) {
	h := newIsvcHarness(t)
	// Commands wait an hour: cancel must not wait for them, nor commit them.
	slow := h.start(Config{Latency: time.Hour})
	var msgs []kafka.Message
	for i := 1; i <= 5; i++ {
		msgs = append(msgs, h.command(fmt.Sprintf("item-%d", i), fmt.Sprintf("c-%d", i)))
	}
	h.send(msgs...)
	isvcWaitFor(t, "five commands in flight", func() bool { return slow.Stats().Commands == 5 })

	start := time.Now()
	if err := slow.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %s to return after cancel", d)
	}
	if st := slow.Stats(); st.Confirmed != 0 || st.Removed != 0 {
		t.Errorf("answered while waiting: %+v", st)
	}
	committed, _ := h.committedOffsets(DefaultGroupID)
	for p, off := range committed {
		if off > 0 {
			t.Errorf("partition %d: offset %d committed for unanswered commands", p, off)
		}
	}

	// The same group reads them again.
	fast := h.start(Config{})
	cat := DemoCatalogue()
	got := isvcByCorr(isvcNext(t, h.eventReader(), isvcExpected(cat, "item-1", "item-2", "item-3", "item-4", "item-5")))
	for i := 1; i <= 5; i++ {
		isvcCheck(t, cat, fmt.Sprintf("item-%d", i), fmt.Sprintf("c-%d", i), got[fmt.Sprintf("c-%d", i)], true)
	}
	if err := fast.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestItemServiceSpacesCommits: the first answered command is committed
// at once, the ones answered within CommitEvery after it wait for the next
// commit, and a stop commits everything answered.
func TestItemServiceSpacesCommits(t *testing.T) {
	h := newIsvcHarness(t)
	svc := h.start(Config{CommitEvery: time.Hour})
	cat := DemoCatalogue()
	h.send(h.command("item-1", "c-1"))
	isvcNext(t, h.eventReader(), isvcExpected(cat, "item-1"))
	isvcWaitFor(t, "the first command committed at once", func() bool { return h.committedCount(DefaultGroupID) == 1 })

	var msgs []kafka.Message
	for i := 2; i <= 6; i++ {
		msgs = append(msgs, h.command(fmt.Sprintf("item-%d", i), fmt.Sprintf("c-%d", i)))
	}
	h.send(msgs...)
	isvcWaitFor(t, "six commands answered", func() bool { return svc.Stats().Confirmed == 6 })
	if n := h.committedCount(DefaultGroupID); n != 1 {
		t.Errorf("%d commands committed within CommitEvery of the first commit, want 1 (the next commit waits)", n)
	}

	if err := svc.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	h.checkAllCommitted(DefaultGroupID)
}

// BenchmarkItemService measures commands answered per second with no
// latency, each command a first takedown of its own item (two containers,
// so three events per command).
func BenchmarkItemService(b *testing.B) {
	h := newIsvcHarness(b)
	items := make(map[string][]Container, b.N)
	msgs := make([]kafka.Message, 0, b.N)
	for i := range b.N {
		id := fmt.Sprintf("bench-%d", i)
		items[id] = []Container{{"group-1", ContainerGroup}, {fmt.Sprintf("followers-user-%d", i), ContainerFollowers}}
		msgs = append(msgs, h.command(id, fmt.Sprintf("c-%d", i)))
	}
	items["warm-up"] = []Container{{"group-1", ContainerGroup}}
	svc := h.start(Config{Catalogue: NewCatalogue(items)})
	// Answer one command first, so joining the group is not measured.
	h.send(h.command("warm-up", "c-warm-up"))
	isvcWaitFor(b, "the warm-up command answered", func() bool { return svc.Stats().Confirmed == 1 })

	b.ResetTimer()
	start := time.Now()
	for batch := range slices.Chunk(msgs, 1000) {
		h.send(batch...)
	}
	isvcWaitFor(b, "all commands answered", func() bool { return svc.Stats().Confirmed == int64(b.N)+1 })
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commands/s")
	b.StopTimer()
}
