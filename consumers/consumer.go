package consumers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkagroup"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/producers"
)

// Defaults that New applies to zero fields of Config.
const (
	// DefaultGroupID is the consumer group every Switchboard node joins.
	DefaultGroupID = "switchboard"
	// DefaultReportsTopic, DefaultCommandsTopic, DefaultEventsTopic and
	// DefaultDLQTopic are the producers package's: the topic names are
	// stated there once.
	DefaultReportsTopic  = producers.DefaultReportsTopic
	DefaultCommandsTopic = producers.DefaultCommandsTopic
	DefaultEventsTopic   = producers.DefaultEventsTopic
	DefaultDLQTopic      = producers.DefaultDLQTopic
	// DefaultMaxWait bounds how long a fetch waits for new records; short,
	// so events reach the hub at once.
	DefaultMaxWait = 250 * time.Millisecond
	// DefaultCommitInterval is how often accepted offsets are committed.
	// Commits are batched, but an offset is only queued for commit after
	// its record was accepted by the hub or dead-lettered.
	DefaultCommitInterval = 500 * time.Millisecond
	// DefaultRetryMin is the first pause before a failed hand-off to the hub
	// or to the dead-letter topic is tried again; pauses double from there.
	DefaultRetryMin = 100 * time.Millisecond
	// DefaultRetryMax caps the pause between retries.
	DefaultRetryMax = 5 * time.Second
	// DefaultReadyTimeout bounds Ready when its context has no deadline.
	DefaultReadyTimeout = 2 * time.Second
	// DefaultSessionTimeout is how long the group coordinator waits
	// without a heartbeat before it drops a member and moves its
	// partitions: a node that died, or that lost its connection and
	// rejoined as a new member. 6 s is the lowest Kafka and the embedded
	// broker accept by default (group.min.session.timeout.ms), so a dead
	// node's partitions move in about 7 s, within takedown.timeout.
	DefaultSessionTimeout = kafkagroup.DefaultSessionTimeout
	// DefaultHeartbeatInterval is how often a member heartbeats, and so
	// how soon it notices a rebalance.
	DefaultHeartbeatInterval = kafkagroup.DefaultHeartbeatInterval
	// DefaultRebalanceTimeout is how long the coordinator waits for the
	// members to rejoin during a rebalance.
	DefaultRebalanceTimeout = kafkagroup.DefaultRebalanceTimeout
)

// Dead-letter headers of the contract.
const (
	// HeaderError says why a record was dead-lettered.
	HeaderError = "switchboard-error"
	// HeaderSource names the record's origin as topic/partition/offset.
	HeaderSource = "switchboard-source"
)

// Publisher accepts an event into the history of its channels (and the
// shared backplane, when scaled out). A nil error means accepted: the
// consumer then commits the record's offset. *hub.Hub satisfies it.
type Publisher interface {
	Publish(ctx context.Context, channels []string, ev *hub.Event) error
}

// DeadLetterWriter writes records, each to its own Topic, and returns once
// they are stored. *producers.Producer satisfies it.
type DeadLetterWriter interface {
	PublishRaw(ctx context.Context, msgs ...kafka.Message) error
}

// Config configures a Consumer. Zero fields take the Default... values.
type Config struct {
	// Brokers are the bootstrap addresses, host:port. Required.
	Brokers []string
	// Conn says how every connection to the brokers is made (the group
	// reader's, Ready's and Lag's): TLS, SASL and the dial timeout. The
	// zero value is plaintext without authentication.
	Conn kafkaconn.Config
	// GroupID is the consumer group; every node of a deployment shares it.
	GroupID string
	// Routes say which topics to read and where their events go; nil means
	// DefaultRoutes over the default topics.
	Routes []Route
	// DLQTopic receives the records that are not valid CloudEvents.
	DLQTopic string
	// MaxWait bounds how long a fetch waits for records.
	MaxWait time.Duration
	// CommitInterval is how often accepted offsets are committed.
	CommitInterval time.Duration
	// RetryMin and RetryMax bound the pauses between retries of a failed
	// hand-off to the hub or the dead-letter topic.
	RetryMin, RetryMax time.Duration
	// ReadyTimeout bounds Ready when its context has no deadline.
	ReadyTimeout time.Duration
	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are the
	// consumer group timing (see the Default... values). The heartbeat
	// interval must be below the session timeout, and the session timeout
	// within the broker's group.min.session.timeout.ms and
	// group.max.session.timeout.ms.
	SessionTimeout, HeartbeatInterval, RebalanceTimeout time.Duration
}

// Stats counts what a Consumer did, for metrics and tests.
type Stats struct {
	// Fetched is the number of records read from Kafka.
	Fetched uint64
	// Published is the number of events the hub accepted.
	Published uint64
	// Unrouted is the number of valid events no channel carries (those
	// of a type the route filters out among them); they are committed
	// without reaching the hub.
	Unrouted uint64
	// DeadLettered is the number of records written to the dead-letter topic.
	DeadLettered uint64
	// PublishErrors is the number of failed hand-offs to the hub (each is
	// retried).
	PublishErrors uint64
	// DeadLetterErrors is the number of failed dead-letter writes (each is
	// retried).
	DeadLetterErrors uint64
	// CommitErrors is the number of offsets that could not be queued for
	// commit; their records will be delivered again.
	CommitErrors uint64
	// FetchErrors is the number of errors the Kafka reader returned
	// instead of a record (each is retried).
	FetchErrors uint64
}

// Consumer reads the routed topics in a consumer group and hands each event
// to the hub. Create it with New and run it with Run.
type Consumer struct {
	cfg    Config
	router *Router
	pub    Publisher
	dlq    DeadLetterWriter
	log    *slog.Logger
	conn   *kafkaconn.Settings

	fetched, published, unrouted, deadLettered           atomic.Uint64
	publishErrors, deadLetterErrors, commitErr, fetchErr atomic.Uint64
	byTopic                                              map[string]*topicCounts // fixed at New

	// streak follows the reader's broker errors: it paces the retries and
	// answers Healthy.
	streak *kafkagroup.Streak
}

type topicCounts struct{ consumed, deadLettered atomic.Uint64 }

// TopicStats counts one routed topic's records.
type TopicStats struct {
	// Consumed is the number of records handled (accepted by the hub,
	// unrouted, or dead-lettered) and committed.
	Consumed uint64
	// DeadLettered is the number of its records sent to the dead-letter topic.
	DeadLettered uint64
}

// TopicStats returns the counts per routed topic.
func (c *Consumer) TopicStats() map[string]TopicStats {
	out := make(map[string]TopicStats, len(c.byTopic))
	for t, n := range c.byTopic {
		out[t] = TopicStats{Consumed: n.consumed.Load(), DeadLettered: n.deadLettered.Load()}
	}
	return out
}

// RouteStats returns, per routed topic, the events and channel templates
// routing left out: filtered by type, missing a placeholder's value, or
// making an invalid channel name.
func (c *Consumer) RouteStats() map[string]RouteStats { return c.router.Stats() }

// New checks cfg, fills its zero fields and returns a Consumer that hands
// events to pub and dead letters to dlq. It does not contact the brokers.
func New(cfg Config, pub Publisher, dlq DeadLetterWriter, log *slog.Logger) (*Consumer, error) {
	if log == nil {
		log = slog.Default()
	}
	if pub == nil {
		return nil, errors.New("consumers: no publisher")
	}
	if dlq == nil {
		return nil, errors.New("consumers: no dead-letter writer")
	}
	brokers := kafkaconn.Brokers(cfg.Brokers)
	if len(brokers) == 0 {
		return nil, errors.New("consumers: no brokers configured")
	}
	cfg.Brokers = brokers
	if cfg.MaxWait < 0 || cfg.CommitInterval < 0 || cfg.RetryMin < 0 || cfg.RetryMax < 0 || cfg.ReadyTimeout < 0 {
		return nil, errors.New("consumers: durations must not be negative")
	}
	conn, err := kafkaconn.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("consumers: %w", err)
	}
	if cfg.GroupID == "" {
		cfg.GroupID = DefaultGroupID
	}
	if cfg.Routes == nil {
		cfg.Routes = DefaultRoutes(DefaultReportsTopic, DefaultCommandsTopic, DefaultEventsTopic)
	}
	if cfg.DLQTopic == "" {
		cfg.DLQTopic = DefaultDLQTopic
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.CommitInterval == 0 {
		cfg.CommitInterval = DefaultCommitInterval
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryMin {
		return nil, fmt.Errorf("consumers: retry max %v is below retry min %v", cfg.RetryMax, cfg.RetryMin)
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	timing := kafkagroup.Timing{SessionTimeout: cfg.SessionTimeout, HeartbeatInterval: cfg.HeartbeatInterval, RebalanceTimeout: cfg.RebalanceTimeout}
	if err := timing.Check(); err != nil {
		return nil, fmt.Errorf("consumers: %w", err)
	}
	timing = timing.WithDefaults()
	cfg.SessionTimeout, cfg.HeartbeatInterval, cfg.RebalanceTimeout = timing.SessionTimeout, timing.HeartbeatInterval, timing.RebalanceTimeout
	router, err := NewRouter(cfg.Routes, log)
	if err != nil {
		return nil, err
	}
	for _, t := range router.Topics() {
		if t == cfg.DLQTopic {
			return nil, fmt.Errorf("consumers: the dead-letter topic %q is also a routed topic", t)
		}
	}
	byTopic := map[string]*topicCounts{}
	for _, t := range router.Topics() {
		byTopic[t] = &topicCounts{}
	}
	log = log.With("component", "consumer")
	return &Consumer{cfg: cfg, router: router, pub: pub, dlq: dlq, log: log, conn: conn, byTopic: byTopic,
		streak: kafkagroup.NewStreak(log, "kafka reader")}, nil
}

// Stats returns the consumer's counters so far.
func (c *Consumer) Stats() Stats {
	return Stats{
		Fetched:          c.fetched.Load(),
		Published:        c.published.Load(),
		Unrouted:         c.unrouted.Load(),
		DeadLettered:     c.deadLettered.Load(),
		PublishErrors:    c.publishErrors.Load(),
		DeadLetterErrors: c.deadLetterErrors.Load(),
		CommitErrors:     c.commitErr.Load(),
		FetchErrors:      c.fetchErr.Load(),
	}
}

// Healthy returns nil while the consumer reads from Kafka, and an error
// wrapping ErrKafkaFailing when every attempt has failed for longer than
// a couple of seconds (a reset connection that kafka-go reopens at once
// does not count). It is meant for a readiness check: a node whose
// consumer is failing still serves its clients, but the events it owns do
// not arrive until Kafka answers again. It does not contact the brokers,
// so it answers at once; the context is for the readiness check's
// signature.
func (c *Consumer) Healthy(context.Context) error {
	if err := c.streak.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrKafkaFailing, err)
	}
	return nil
}

// readerConfig is the kafka-go reader configuration of Run.
func (c *Consumer) readerConfig() kafka.ReaderConfig {
	rc := kafka.ReaderConfig{
		Brokers:        c.cfg.Brokers,
		GroupID:        c.cfg.GroupID,
		GroupTopics:    c.router.Topics(),
		StartOffset:    kafka.FirstOffset,
		MaxWait:        c.cfg.MaxWait,
		CommitInterval: c.cfg.CommitInterval,
		Dialer:         c.conn.Dialer(),
		Logger:         kafkaconn.Logger(c.log, slog.LevelDebug, "kafka reader"),
		// The streak logs what matters once; kafka-go would log every
		// retry of every partition.
		ErrorLogger: c.streak.KafkaLogger(),
	}
	kafkagroup.Timing{
		SessionTimeout:    c.cfg.SessionTimeout,
		HeartbeatInterval: c.cfg.HeartbeatInterval,
		RebalanceTimeout:  c.cfg.RebalanceTimeout,
	}.Apply(&rc)
	return rc
}

// Run joins the consumer group and hands records to the hub until ctx is
// done. Then it leaves the group, commits what was accepted, and returns
// nil. Each partition has a lane of its own (see lanes): a record is
// handled fully (accepted by the hub, or dead-lettered) and its offset
// queued for commit before the next one of its partition, so each
// partition keeps its order, while the partitions' records reach the hub
// side by side. A failing hub is retried without end, and a record it never
// accepted is read again by whichever member owns its partition next.
//
// Broker errors (a reset or refused connection, a timeout) never stop Run:
// kafka-go reconnects and rejoins by itself, and Run goes on fetching
// after a short pause (see kafkagroup.Streak), logging a run of errors
// once rather than each of them.
func (c *Consumer) Run(ctx context.Context) error {
	r := kafka.NewReader(c.readerConfig())
	c.log.Info("consumer started", "group", c.cfg.GroupID, "topics", c.router.Topics(), "dlq", c.cfg.DLQTopic, "kafka", c.conn,
		"session_timeout", c.cfg.SessionTimeout, "heartbeat_interval", c.cfg.HeartbeatInterval)
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		c.streak.Watch(wctx, r)
	}()
	defer func() {
		stopWatch()
		<-watched
		// Close leaves the group and flushes the queued commits.
		if err := r.Close(); err != nil {
			c.log.Warn("closing the kafka reader", "err", err)
		}
		c.log.Info("consumer stopped")
	}()

	lanes := newLanes(ctx, func(lctx context.Context, ms []kafka.Message) bool {
		if !c.handleAll(lctx, ms) {
			return false // ctx ended before the records were handled: not committed
		}
		c.commit(lctx, r, ms...)
		for _, m := range ms {
			if n := c.byTopic[m.Topic]; n != nil {
				n.consumed.Add(1)
			}
		}
		return true
	})
	// Before the reader closes (deferred above): it flushes the commits
	// the lanes queued.
	defer lanes.close()

	for {
		began := time.Now()
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.fetchErr.Add(1)
			if !sleep(ctx, c.streak.Fail(err, time.Since(began))) {
				return nil
			}
			continue
		}
		c.streak.Succeed()
		c.fetched.Add(1)
		if !lanes.add(ctx, m) {
			return nil
		}
	}
}

// handleAll delivers records of one partition to the hub, in order. A hub
// that takes batches (hub.BatchPublisher) gets the valid ones in one call,
// up to the first invalid record, which is dead-lettered before what
// follows it goes on. It reports false if ctx ended first.
func (c *Consumer) handleAll(ctx context.Context, ms []kafka.Message) bool {
	bp, ok := c.pub.(hub.BatchPublisher)
	if !ok || len(ms) == 1 {
		for _, m := range ms {
			if !c.handle(ctx, m) {
				return false
			}
		}
		return true
	}
	batch := make([]hub.Publication, 0, len(ms))
	publish := func() bool {
		if len(batch) == 0 {
			return true
		}
		return c.retry(ctx, len(batch), func() error { return bp.PublishBatch(ctx, batch) }, func(err error, retryIn time.Duration) {
			c.log.Warn("hub refused a batch of events; retrying", "events", len(batch), "first", batch[0].Event.ID, "err", err, "retry_in", retryIn)
		})
	}
	for _, m := range ms {
		p, err := c.prepare(m)
		if err != nil {
			if !publish() {
				return false
			}
			batch = batch[:0]
			if !c.deadLetter(ctx, m, err) {
				return false
			}
			continue
		}
		if p.Event != nil {
			batch = append(batch, p)
		}
	}
	return publish()
}

// handle delivers one record to the hub, or to the dead-letter topic when
// it is not a valid event. It reports false if ctx ended first.
func (c *Consumer) handle(ctx context.Context, m kafka.Message) bool {
	p, err := c.prepare(m)
	if err != nil {
		return c.deadLetter(ctx, m, err)
	}
	if p.Event == nil {
		return true
	}
	return c.retry(ctx, 1, func() error { return c.pub.Publish(ctx, p.Channels, p.Event) }, func(err error, retryIn time.Duration) {
		c.log.Warn("hub refused an event; retrying", "source", origin(m), "id", p.Event.ID, "err", err, "retry_in", retryIn)
	})
}

// prepare decodes m and names its channels: an error for a record that is
// not a valid event, an empty Publication for an event that no channel
// carries (counted as unrouted).
func (c *Consumer) prepare(m kafka.Message) (hub.Publication, error) {
	ev, err := Decode(m)
	if err != nil {
		return hub.Publication{}, err
	}
	channels := c.router.Channels(m.Topic, ev)
	if len(channels) == 0 {
		c.unrouted.Add(1)
		c.log.Debug("event carried by no channel", "topic", m.Topic, "id", ev.ID, "type", ev.Type)
		return hub.Publication{}, nil
	}
	return hub.Publication{Channels: channels, Event: ev}, nil
}

// retry calls publish until the hub accepts its n events (publishing is
// idempotent, so a refused call is made again whole) and reports true, or
// until ctx ends (false); each refusal is counted and logged by refused
// (only then are the log line's values made: retry is on every record's
// path).
func (c *Consumer) retry(ctx context.Context, n int, publish func() error, refused func(err error, retryIn time.Duration)) bool {
	backoff := c.newBackoff()
	for {
		err := publish()
		if err == nil {
			c.published.Add(uint64(n))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		c.publishErrors.Add(1)
		refused(err, backoff.next)
		if !backoff.wait(ctx) {
			return false
		}
	}
}

// deadLetter writes m unchanged to the dead-letter topic, with the reason
// and origin in headers, retrying until it is stored or ctx ends.
func (c *Consumer) deadLetter(ctx context.Context, m kafka.Message, reason error) bool {
	headers := make([]kafka.Header, 0, len(m.Headers)+2)
	headers = append(headers, m.Headers...)
	headers = append(headers,
		kafka.Header{Key: HeaderError, Value: []byte(reason.Error())},
		kafka.Header{Key: HeaderSource, Value: []byte(origin(m))},
	)
	dl := kafka.Message{Topic: c.cfg.DLQTopic, Key: m.Key, Value: m.Value, Headers: headers}
	c.log.Warn("record is not a valid CloudEvent; dead-lettering it", "source", origin(m), "reason", reason)
	backoff := c.newBackoff()
	for {
		err := c.dlq.PublishRaw(ctx, dl)
		if err == nil {
			c.deadLettered.Add(1)
			if n := c.byTopic[m.Topic]; n != nil {
				n.deadLettered.Add(1)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		c.deadLetterErrors.Add(1)
		c.log.Error("dead-letter write failed; retrying", "err", err, "source", origin(m), "retry_in", backoff.next)
		if !backoff.wait(ctx) {
			return false
		}
	}
}

// commit queues m's offset for the next batched commit. The record was
// accepted, so it is queued even when ctx has just ended: the reader's
// Close flushes it.
func (c *Consumer) commit(ctx context.Context, r *kafka.Reader, ms ...kafka.Message) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RetryMax)
	defer cancel()
	if err := r.CommitMessages(cctx, ms...); err != nil {
		c.commitErr.Add(1)
		c.log.Warn("offset not committed; the record will be delivered again", "source", origin(ms[len(ms)-1]), "err", err)
	}
}

// origin names a record as topic/partition/offset.
func origin(m kafka.Message) string {
	return m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10)
}

// Ready reports whether a broker answers a metadata request, over TLS and
// SASL as Config.Conn says, within ReadyTimeout when ctx has no deadline
// of its own. The first broker that answers is enough; a broker that
// refuses the credentials is not ready (the error wraps kafka-go's
// SASLAuthenticationFailed).
func (c *Consumer) Ready(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.ReadyTimeout)
		defer cancel()
	}
	var errs []error
	for _, b := range c.cfg.Brokers {
		err := c.probe(ctx, b)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("consumers: no kafka broker reachable: %w", errors.Join(errs...))
}

// probe dials broker, with TLS and SASL as configured, and reads the
// cluster's broker list.
func (c *Consumer) probe(ctx context.Context, broker string) error {
	conn, err := c.conn.Dialer().DialContext(ctx, "tcp", broker)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	_, err = conn.Brokers()
	return err
}

// backoff doubles a pause from RetryMin up to RetryMax.
type backoff struct {
	min, max, next time.Duration
}

func (c *Consumer) newBackoff() backoff {
	return backoff{min: c.cfg.RetryMin, max: c.cfg.RetryMax, next: c.cfg.RetryMin}
}

// wait pauses for the next interval; false means ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next
	b.next = min(2*b.next, b.max)
	return sleep(ctx, d)
}

// sleep pauses for d; false means ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// PartitionLag is how far the group is behind on one partition.
type PartitionLag struct {
	Topic     string
	Partition int
	// Lag is the partition's end offset minus the group's committed offset.
	Lag int64
}

// Lag asks the brokers, over TLS and SASL as Config.Conn says, how far
// the consumer group is behind on every partition of the routed topics.
func (c *Consumer) Lag(ctx context.Context) ([]PartitionLag, error) {
	tr := c.conn.Transport()
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: tr}
	topics := c.router.Topics()
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("consumers: lag: %w", err)
	}
	parts := map[string][]int{}
	ends := map[string][]kafka.OffsetRequest{}
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			parts[t.Name] = append(parts[t.Name], p.ID)
			ends[t.Name] = append(ends[t.Name], kafka.LastOffsetOf(p.ID))
		}
	}
	last, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: ends})
	if err != nil {
		return nil, fmt.Errorf("consumers: lag: %w", err)
	}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: c.cfg.GroupID, Topics: parts})
	if err != nil {
		return nil, fmt.Errorf("consumers: lag: %w", err)
	}
	done := map[string]map[int]int64{}
	for t, ps := range committed.Topics {
		done[t] = map[int]int64{}
		for _, p := range ps {
			done[t][p.Partition] = p.CommittedOffset
		}
	}
	var out []PartitionLag
	for t, ps := range last.Topics {
		for _, p := range ps {
			at := max(done[t][p.Partition], 0) // no commit yet: from the start
			out = append(out, PartitionLag{Topic: t, Partition: p.Partition, Lag: max(p.LastOffset-at, 0)})
		}
	}
	return out, nil
}
