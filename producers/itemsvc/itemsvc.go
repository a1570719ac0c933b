package itemsvc

import (
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkagroup"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/tracing"
)

// Defaults that New applies to zero fields of Config.
const (
	// DefaultGroupID is the item service's own consumer group, so
	// it reads every command whatever the hub's group does.
	DefaultGroupID = "switchboard-itemsvc"
	// DefaultCommandsTopic carries takedown.requested (SPEC §1).
	DefaultCommandsTopic = producers.DefaultCommandsTopic
	// DefaultEventsTopic carries the service's answers.
	DefaultEventsTopic = producers.DefaultEventsTopic
	// DefaultMaxInFlight bounds the commands waiting out their
	// latency or being answered at once. A command in flight costs a
	// goroutine and a timer; at the 50 ms default latency this allows
	// about 20 000 commands/s, above what one publisher sustains, and 1000
	// concurrent takedowns are all answered after one latency.
	DefaultMaxInFlight = 1024
	// DefaultRemember is how many answered commands, by their
	// CloudEvents source and id, the service remembers, so that a command
	// published again (the sync adapter republishes one it is not sure was
	// written) has one effect. The oldest is forgotten first; a command
	// costs about 50 bytes, so a full memory is about 5 MB, and at 1000
	// takedowns a second it covers the last 100 s.
	DefaultRemember = 100_000
	// DefaultCommitEvery is the least time between two commits of the
	// commands reader: each is a broker round trip, and under load a
	// command finishes every few hundred µs. A crash re-reads at most
	// this much more (answered again, as any command answered but not yet
	// committed is).
	DefaultCommitEvery = 100 * time.Millisecond
	// DefaultSessionTimeout, DefaultHeartbeatInterval
	// and DefaultRebalanceTimeout are the consumer group timing
	// of the service's reader, the same as the hub consumer's: with
	// kafka-go's own (30 s session) the commands of a member that lost its
	// connection stayed unread for about 30 s, three times
	// takedown.timeout.
	DefaultSessionTimeout    = kafkagroup.DefaultSessionTimeout
	DefaultHeartbeatInterval = kafkagroup.DefaultHeartbeatInterval
	DefaultRebalanceTimeout  = kafkagroup.DefaultRebalanceTimeout
	// DefaultLatency is the latency a node gives the service when
	// itemsvc.latency is not set, so answers feel like a real service's.
	// New does not apply it: a zero Latency means answer at once.
	DefaultLatency = 50 * time.Millisecond
)

// What the item service answers, besides the event types of producers.
const (
	// RejectNotFound is the reason of a takedown of an item the catalogue
	// does not know.
	RejectNotFound = "not_found"
)

const (
	// itemSvcDrainTimeout bounds how long Run waits, after its context
	// ends, for answers that are being published.
	itemSvcDrainTimeout = 5 * time.Second
	// itemSvcPublishRetryMax caps the pause between attempts to publish an
	// answer, so a broker that is back is used within a second.
	itemSvcPublishRetryMax = time.Second
	// itemSvcCommitRetry is the pause before a failed commit is tried
	// again, when no finished command asks for a commit before.
	itemSvcCommitRetry = 500 * time.Millisecond
	// workerIdle is how long a worker waits for another command before it
	// ends.
	workerIdle = 10 * time.Second
)

// answerNamespace is the UUID namespace of the ids of the service's
// answers (see answerID).
var answerNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:switchboard:itemsvc:answer"))

// ItemRemoved is the data of an item.removed event.
type ItemRemoved struct {
	ItemID        string `json:"item_id"`
	ContainerID   string `json:"container_id"`
	ContainerKind string `json:"container_kind"`
}

// TakedownConfirmed is the data of a takedown.confirmed event.
type TakedownConfirmed struct {
	ItemID      string   `json:"item_id"`
	RemovedFrom []string `json:"removed_from"`
	ConfirmedAt string   `json:"confirmed_at"`
}

// TakedownRejected is the data of a takedown.rejected event.
type TakedownRejected struct {
	ItemID string `json:"item_id"`
	Reason string `json:"reason"`
}

// ItemRestored is the data of an item.restored event: the item is back
// in every container it was posted to.
type ItemRestored struct {
	ItemID     string   `json:"item_id"`
	RestoredTo []string `json:"restored_to"`
	// WasRemoved says whether a takedown had removed it.
	WasRemoved bool   `json:"was_removed"`
	RestoredAt string `json:"restored_at"`
}

// ItemRestoreRejected is the data of an item.restore_rejected event.
type ItemRestoreRejected struct {
	ItemID string `json:"item_id"`
	Reason string `json:"reason"`
}

// Config configures a Service. Zero fields take the
// Default... values, except Latency, where zero means answer at
// once.
type Config struct {
	// Brokers are the bootstrap addresses, host:port. Required.
	Brokers []string
	// Conn says how the commands reader connects to the brokers: TLS,
	// SASL and the dial timeout; the zero value is plaintext without
	// authentication. The answers go out through the Publisher, which
	// has its own.
	Conn kafkaconn.Config
	// GroupID is the consumer group the commands are read with.
	GroupID string
	// CommandsTopic is read for takedown.requested commands.
	CommandsTopic string
	// EventsTopic receives item.removed, takedown.confirmed and
	// takedown.rejected.
	EventsTopic string
	// RestoreTopic, when set, is read for item.restore commands (the demo
	// restores command, SPEC §5.1) too; RestoreEventsTopic receives their
	// answers, item.restored and item.restore_rejected
	// (producers.DemoItemEventsTopic when empty).
	RestoreTopic, RestoreEventsTopic string
	// Latency is how long after a command is read its answer is published,
	// to make the simulation feel like a real service. Must not be negative.
	Latency time.Duration
	// Catalogue is what the service knows; nil means DemoCatalogue().
	Catalogue *Catalogue
	// MaxInFlight bounds the commands handled at once.
	MaxInFlight int
	// Remember is how many answered commands are remembered to skip a
	// repeat of one.
	Remember int
	// CommitEvery is the least time between two commits of answered
	// commands' offsets (the first is made at once); on a stop, what was
	// answered is committed before Run returns.
	CommitEvery time.Duration
	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are the
	// consumer group timing of the commands reader. The heartbeat interval
	// must be below the session timeout.
	SessionTimeout, HeartbeatInterval, RebalanceTimeout time.Duration
	// Decode turns a record into a Command, refusing what is not a valid
	// CloudEvent. Required. It is injected so that this package needs
	// neither the consumers' decoder nor the hub's event type; the node
	// passes one built on consumers.Decode.
	Decode func(kafka.Message) (Command, error)
}

// Command is what the service reads of a CloudEvent on the commands
// topic: its attributes, and the whole event as structured JSON (for the
// item ID in its data).
type Command struct {
	ID, Source, Type, Subject, CorrelationID string
	// TraceParent and TraceState are the command's distributed-tracing
	// extension (SPEC §10), copied onto every answer; empty when it has
	// none.
	TraceParent, TraceState string
	// JSON is the event in the CloudEvents structured JSON format.
	JSON []byte
	// ItemID is the string data.item_id, when the decoder read it
	// (consumers.DataItemID); empty, the Service reads it from JSON.
	ItemID string
}

// Stats counts what a Service did since it was made.
type Stats struct {
	// Commands is the commands (takedown.requested, and item.restore when
	// RestoreTopic is set) taken into work.
	Commands int64
	// Confirmed is the takedown.confirmed events published.
	Confirmed int64
	// Rejected is the takedown.rejected events published.
	Rejected int64
	// Removed is the item.removed events published.
	Removed int64
	// Restored and RestoreRejected are the item.restored and
	// item.restore_rejected events published.
	Restored, RestoreRejected int64
	// Skipped is the records that were not a usable command: not a
	// CloudEvent, another type, or no item ID. They are committed unanswered.
	Skipped int64
	// Duplicates is the commands (counted in Commands) that repeated the
	// CloudEvents source and id of one already answered. They are
	// committed unanswered: the first answer stands.
	Duplicates int64
	// FetchErrors is the errors the Kafka reader returned instead of a
	// command; each is retried.
	FetchErrors int64
}

// Service is the simulated item service of SPEC §6. It reads takedown
// commands with its own consumer group and answers each on the events
// topic, keyed by the item ID so one item's events stay ordered: for a
// known item one item.removed per container, then takedown.confirmed; for
// an unknown one takedown.rejected. Every answer carries the command's
// correlationid. Commands are handled concurrently, up to MaxInFlight.
//
// It applies a command once per CloudEvents (source, id): a command
// published again is skipped (Stats.Duplicates), as long as it is among
// the last Remember answered. The ids of its answers are derived from the
// command's source and id, so an answer given again, after a restart that
// forgot the command, carries the ids of the first one, and the hub, which
// keeps one event per source and id, drops it.
//
// It is idempotent on repeated takedowns of an item too: an item it
// already removed is confirmed again, with the same removed_from and
// confirmed_at, without a second item.removed. Which items are removed is
// kept in memory, at most one entry per catalogue item. Commands for one
// item must reach one instance for this to hold across nodes; the command
// key (the item ID) sees to that within one consumer group.
//
// Broker errors never stop it: reads, commits and publishes are retried
// until they work or Run's context ends, and Healthy says whether they
// are failing.
type Service struct {
	cfg  Config
	pub  producers.Publisher
	log  *slog.Logger
	conn *kafkaconn.Settings

	locks    itemLocks
	answered *answeredSet

	// mu guards removed. Lock order: an item's lock (locks), then mu.
	mu      sync.Mutex
	removed map[string]itemRemoval

	commands, confirmed, rejected, removedN, skipped, duplicates, fetchErrors atomic.Int64
	restored, restoreRejected                                                 atomic.Int64

	// streak follows the errors against the broker: it paces the read
	// retries and answers Healthy.
	streak *kafkagroup.Streak

	started atomic.Bool

	commandsSpan string // the span name of a command (spanName)
}

// itemRemoval records a finished takedown of a known item.
type itemRemoval struct {
	removedFrom []string
	confirmedAt string
}

// New returns a Service that publishes through pub. It
// does not contact the brokers: Run does.
func New(cfg Config, pub producers.Publisher, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	brokers := kafkaconn.Brokers(cfg.Brokers)
	switch {
	case len(brokers) == 0:
		return nil, errors.New("itemsvc: no brokers configured")
	case pub == nil:
		return nil, errors.New("itemsvc: no publisher")
	case cfg.Decode == nil:
		return nil, errors.New("itemsvc: no decoder (pass consumers.Decode)")
	case cfg.Latency < 0:
		return nil, fmt.Errorf("itemsvc: latency must not be negative, got %s", cfg.Latency)
	case cfg.MaxInFlight < 0:
		return nil, fmt.Errorf("itemsvc: max in flight must not be negative, got %d", cfg.MaxInFlight)
	case cfg.Remember < 0:
		return nil, fmt.Errorf("itemsvc: remember must not be negative, got %d", cfg.Remember)
	case cfg.CommitEvery < 0:
		return nil, fmt.Errorf("itemsvc: commit interval must not be negative, got %s", cfg.CommitEvery)
	}
	timing := kafkagroup.Timing{SessionTimeout: cfg.SessionTimeout, HeartbeatInterval: cfg.HeartbeatInterval, RebalanceTimeout: cfg.RebalanceTimeout}
	if err := timing.Check(); err != nil {
		return nil, fmt.Errorf("itemsvc: %w", err)
	}
	timing = timing.WithDefaults()
	cfg.SessionTimeout, cfg.HeartbeatInterval, cfg.RebalanceTimeout = timing.SessionTimeout, timing.HeartbeatInterval, timing.RebalanceTimeout
	cfg.Brokers = brokers
	conn, err := kafkaconn.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("itemsvc: %w", err)
	}
	if cfg.GroupID == "" {
		cfg.GroupID = DefaultGroupID
	}
	if cfg.CommandsTopic == "" {
		cfg.CommandsTopic = DefaultCommandsTopic
	}
	if cfg.EventsTopic == "" {
		cfg.EventsTopic = DefaultEventsTopic
	}
	if cfg.RestoreTopic != "" && cfg.RestoreEventsTopic == "" {
		cfg.RestoreEventsTopic = producers.DemoItemEventsTopic
	}
	if cfg.Catalogue == nil {
		cfg.Catalogue = DemoCatalogue()
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Remember == 0 {
		cfg.Remember = DefaultRemember
	}
	if cfg.CommitEvery == 0 {
		cfg.CommitEvery = DefaultCommitEvery
	}
	log = log.With("component", "itemsvc")
	return &Service{
		cfg:      cfg,
		pub:      pub,
		log:      log,
		conn:     conn,
		locks:    itemLocks{m: make(map[string]*itemLock)},
		answered: newAnsweredSet(cfg.Remember),
		removed:  make(map[string]itemRemoval),
		streak:   kafkagroup.NewStreak(log, "item service: kafka"),

		commandsSpan: "process " + cfg.CommandsTopic,
	}, nil
}

// Stats returns the service's counters.
func (s *Service) Stats() Stats {
	return Stats{
		Commands:        s.commands.Load(),
		Confirmed:       s.confirmed.Load(),
		Rejected:        s.rejected.Load(),
		Removed:         s.removedN.Load(),
		Restored:        s.restored.Load(),
		RestoreRejected: s.restoreRejected.Load(),
		Skipped:         s.skipped.Load(),
		Duplicates:      s.duplicates.Load(),
		FetchErrors:     s.fetchErrors.Load(),
	}
}

// Healthy returns nil while the service reads, commits and publishes, and
// an error when every attempt has failed for longer than a couple of
// seconds. It does not contact the brokers; the context is for the
// readiness check's signature.
func (s *Service) Healthy(context.Context) error {
	if err := s.streak.Err(); err != nil {
		return fmt.Errorf("itemsvc: kafka: %w", err)
	}
	return nil
}

// Run reads and answers commands until ctx is done, then returns nil after
// its goroutines have ended, the answered commands are committed and the
// reader is closed. Answers being published get a few seconds to finish;
// commands still waiting out their latency are dropped uncommitted, so the
// group reads them again. Run may be called once. A broker error does not
// end it: reads are retried after a pause that starts at 10 ms and grows
// to 1 s while the errors go on (kafkagroup.Streak), commits and
// publishes after at most a second.
//
// Offsets: kafka-go's Reader.CommitMessages, with synchronous commits,
// sends what it is given, so committing offset 5 and then offset 3 moves
// the group back to 3, and committing 5 while 3 is still waiting would
// lose 3 in a crash. Commands finish out of order, so Run tracks them per
// partition and one goroutine commits, for each partition, the offset
// below the oldest command still in flight: every offset under a commit
// has been answered, and commits never go backwards. It commits at most
// once per CommitEvery (100 ms by default), not once per command.
func (s *Service) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("itemsvc: Run called twice")
	}
	r := kafka.NewReader(s.readerConfig())
	s.log.Info("item service started", "commands", s.cfg.CommandsTopic, "events", s.cfg.EventsTopic,
		"group", s.cfg.GroupID, "latency", s.cfg.Latency, "items", s.cfg.Catalogue.Len(), "kafka", s.conn)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		s.streak.Watch(ctx, r)
	}()
	// Answers already being published get itemSvcDrainTimeout past the end
	// of ctx to finish, so a stop does not leave a takedown half answered.
	pubCtx, pubCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer pubCancel()

	tr := newOffsetTracker()
	kick := make(chan struct{}, 1)
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		// retry fires after a failed commit, in case no finished command
		// kicks the committer before.
		var retry <-chan time.Time
		// next is when the next commit may go: CommitEvery after the last
		// one that succeeded. A failed one is retried after
		// itemSvcCommitRetry, not held back further.
		var next time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			case <-retry:
			}
			retry = nil
			// The kicks of the commands finished meanwhile are taken by
			// this commit.
			if wait := time.Until(next); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			switch n, ok := s.commit(ctx, r, tr); {
			case !ok:
				retry = time.After(itemSvcCommitRetry)
			case n > 0:
				next = time.Now().Add(s.cfg.CommitEvery)
			}
		}
	}()
	finished := func(m kafka.Message) {
		tr.done(m)
		select {
		case kick <- struct{}{}:
		default:
		}
	}

	// Commands are handled by workers that stay for the next command
	// (up to MaxInFlight of them, each leaving after workerIdle without
	// one): a goroutine per command paid for growing its stack and, while
	// the GC marks, for its first allocation's assist, every time.
	type job struct {
		m      kafka.Message
		readAt time.Time
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, s.cfg.MaxInFlight)
	work := make(chan job)
	do := func(j job) {
		defer func() { <-sem }()
		if s.handle(ctx, pubCtx, j.m, j.readAt) {
			finished(j.m)
		}
	}
	worker := func(j job) {
		do(j)
		idle := time.NewTimer(workerIdle)
		defer idle.Stop()
		for {
			select {
			case j := <-work:
				do(j)
				idle.Reset(workerIdle)
			case <-idle.C:
				return
			case <-ctx.Done():
				return
			}
		}
	}
fetch:
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break fetch
		}
		began := time.Now()
		m, err := r.FetchMessage(ctx)
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				break
			}
			s.fetchErrors.Add(1)
			if !sleep(ctx, s.streak.Fail(fmt.Errorf("read %q: %w", s.cfg.CommandsTopic, err), time.Since(began))) {
				break
			}
			continue
		}
		s.streak.Succeed()
		j := job{m: m, readAt: time.Now()}
		tr.add(m)
		select {
		case work <- j: // an idle worker takes it
		default:
			wg.Go(func() { worker(j) })
		}
	}
	cancel()
	drain := time.AfterFunc(itemSvcDrainTimeout, pubCancel)
	wg.Wait()
	drain.Stop()
	<-committerDone
	<-watched

	// A last commit of what was answered; ctx is done, so it gets its own.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	s.commit(cctx, r, tr)
	ccancel()
	if err := r.Close(); err != nil {
		s.log.Warn("item service: close reader", "err", err)
	}
	s.log.Info("item service stopped", "stats", s.Stats())
	return nil
}

// readerConfig is the kafka-go reader configuration of Run.
func (s *Service) readerConfig() kafka.ReaderConfig {
	rc := kafka.ReaderConfig{
		Brokers:     s.cfg.Brokers,
		GroupID:     s.cfg.GroupID,
		Topic:       s.cfg.CommandsTopic,
		StartOffset: kafka.FirstOffset,
		MaxWait:     100 * time.Millisecond,
		Dialer:      s.conn.Dialer(),
		Logger:      kafkaconn.Logger(s.log, slog.LevelDebug, "item service: kafka reader"),
		// The streak logs what matters once; kafka-go would log every
		// retry.
		ErrorLogger: s.streak.KafkaLogger(),
	}
	if t := s.cfg.RestoreTopic; t != "" && t != s.cfg.CommandsTopic {
		rc.Topic, rc.GroupTopics = "", []string{s.cfg.CommandsTopic, t}
	}
	kafkagroup.Timing{
		SessionTimeout:    s.cfg.SessionTimeout,
		HeartbeatInterval: s.cfg.HeartbeatInterval,
		RebalanceTimeout:  s.cfg.RebalanceTimeout,
	}.Apply(&rc)
	return rc
}

// commit commits every partition whose answered prefix grew, and reports
// how many partitions that was. ok is false when the commit failed; the
// offsets stay ready for the next one.
func (s *Service) commit(ctx context.Context, r *kafka.Reader, tr *offsetTracker) (n int, ok bool) {
	msgs := tr.ready()
	if len(msgs) == 0 {
		return 0, true
	}
	if err := r.CommitMessages(ctx, msgs...); err != nil {
		if ctx.Err() == nil {
			s.streak.Fail(fmt.Errorf("commit offsets: %w", err), itemSvcCommitRetry)
		}
		return 0, false
	}
	s.streak.Succeed()
	tr.committed(msgs)
	return len(msgs), true
}

// handle answers one record. It waits out the latency under ctx and
// publishes under pubCtx. It reports whether the record is finished with,
// so its offset may be committed: false only when a context ended first.
func (s *Service) handle(ctx, pubCtx context.Context, m kafka.Message, readAt time.Time) bool {
	ev, err := s.cfg.Decode(m)
	if err != nil {
		s.skipped.Add(1)
		s.log.Warn("item service: skipping a record that is not a CloudEvent", recordAttr(m), "err", err)
		return true
	}
	restore := ev.Type == producers.TypeItemRestore && s.cfg.RestoreTopic != ""
	if ev.Type != producers.TypeTakedownRequested && !restore {
		s.skipped.Add(1)
		s.log.Debug("item service: skipping an event that is not a command", recordAttr(m), "type", ev.Type, "id", ev.ID)
		return true
	}
	itemID := ev.ItemID
	if itemID == "" {
		itemID = dataItemID(ev.JSON)
	}
	if itemID == "" {
		itemID = ev.Subject
	}
	if itemID == "" {
		s.skipped.Add(1)
		s.log.Warn("item service: skipping a command without an item ID", recordAttr(m), "id", ev.ID, "correlationid", ev.CorrelationID)
		return true
	}
	s.commands.Add(1)
	// The answers carry the command's trace context: the command's own
	// traceparent, or, while tracing is on, this span's, its child.
	tctx, span := tracing.Start(tracing.Remote(pubCtx, ev.TraceParent, ev.TraceState), s.spanName(m.Topic), trace.SpanKindConsumer)
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.destination.name", m.Topic),
			attribute.String("messaging.message.id", ev.ID),
			attribute.String("switchboard.correlation_id", ev.CorrelationID),
			attribute.String("switchboard.item_id", itemID))
	}
	ev.TraceParent, ev.TraceState = tracing.Propagated(tctx)

	if d := s.cfg.Latency - time.Since(readAt); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}

	// One command per item at a time, so a second takedown of an item sees
	// the first one's outcome, a repeated command sees that the first was
	// answered, and the item's events do not interleave.
	il := s.locks.lock(itemID)
	defer s.locks.unlock(itemID, il)
	cmd := commandOf(ev.Source, ev.ID)
	if s.answered.has(cmd) {
		s.duplicates.Add(1)
		s.log.Debug("item service: skipping a command already answered", recordAttr(m), "source", ev.Source, "id", ev.ID, "correlationid", ev.CorrelationID)
		return true
	}
	answer := s.answer
	if restore {
		answer = s.restore
	}
	if !answer(tctx, ev, itemID) {
		return false
	}
	s.answered.add(cmd)
	return true
}

// recordAttr names m in a log line.
func recordAttr(m kafka.Message) slog.Attr {
	return slog.Group("record", "partition", m.Partition, "offset", m.Offset)
}

// spanName is the name of the span of a record of topic.
func (s *Service) spanName(topic string) string {
	if topic == s.cfg.CommandsTopic {
		return s.commandsSpan // made once: a record of it is every command
	}
	return "process " + topic
}

// answerEvent is an answer to cmd, with an id derived from cmd's source
// and id, the answer's type and its container (if any), and the current
// UTC time.
func answerEvent(cmd Command, typ, itemID, container string, data any) producers.CloudEvent {
	return producers.CloudEvent{
		ID:            answerID(cmd.Source, cmd.ID, typ, container),
		Source:        producers.ItemServiceSource,
		Type:          typ,
		Subject:       itemID,
		Time:          time.Now().UTC().Format(time.RFC3339Nano),
		CorrelationID: cmd.CorrelationID,
		TraceParent:   cmd.TraceParent,
		TraceState:    cmd.TraceState,
		Data:          data,
	}
}

// answerID is the id of the answer of type typ (for container, if it is
// one per container) to the command with source and id: a name-based
// UUID (version 5, uuid.NewSHA1 in answerNamespace), the same every time
// the command is answered. It is made on the stack: it is on the path of
// every answer.
func answerID(source, id, typ, container string) string {
	var buf [256]byte
	b := append(buf[:0], answerNamespace[:]...)
	for _, part := range [...]string{source, id, typ, container} {
		b = strconv.AppendInt(b, int64(len(part)), 10)
		b = append(b, ':')
		b = append(b, part...)
	}
	sum := sha1.Sum(b)
	var u uuid.UUID
	copy(u[:], sum[:])
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u.String()
}

// answer publishes the outcome of cmd, a takedown of itemID. It reports
// whether every event was published.
func (s *Service) answer(ctx context.Context, cmd Command, itemID string) bool {
	containers, known := s.cfg.Catalogue.items[itemID] // read only
	if !known {
		ok := s.publish(ctx, s.cfg.EventsTopic, answerEvent(cmd, producers.TypeTakedownRejected, itemID, "",
			TakedownRejected{ItemID: itemID, Reason: RejectNotFound}))
		if ok {
			s.rejected.Add(1)
		}
		return ok
	}

	s.mu.Lock()
	rm, done := s.removed[itemID]
	s.mu.Unlock()
	bp, together := s.pub.(eventsPublisher)
	var removals []producers.CloudEvent
	if !done {
		rm.removedFrom = make([]string, 0, len(containers))
		for _, c := range containers {
			ev := answerEvent(cmd, producers.TypeItemRemoved, itemID, c.ID,
				ItemRemoved{ItemID: itemID, ContainerID: c.ID, ContainerKind: c.Kind})
			if together {
				removals = append(removals, ev)
			} else {
				if !s.publish(ctx, s.cfg.EventsTopic, ev) {
					return false
				}
				s.removedN.Add(1)
			}
			rm.removedFrom = append(rm.removedFrom, c.ID)
		}
		rm.confirmedAt = time.Now().UTC().Format(time.RFC3339)
	}
	confirmation := answerEvent(cmd, producers.TypeTakedownConfirmed, itemID, "",
		TakedownConfirmed{ItemID: itemID, RemovedFrom: rm.removedFrom, ConfirmedAt: rm.confirmedAt})
	if together {
		// The removals and the confirmation in one write: on one
		// partition (one key), in this order, in one produce request.
		if !s.publishEvents(ctx, bp, s.cfg.EventsTopic, append(removals, confirmation)) {
			return false
		}
		s.removedN.Add(int64(len(removals)))
	} else if !s.publish(ctx, s.cfg.EventsTopic, confirmation) {
		return false
	}
	s.confirmed.Add(1)
	if !done {
		s.mu.Lock()
		s.removed[itemID] = rm
		s.mu.Unlock()
	}
	return true
}

// restore publishes the outcome of cmd, a restore of itemID: an item of
// the catalogue is put back in every container it was posted to (and a
// later takedown removes it again); an unknown one is rejected with
// not_found. It reports whether the answer was published.
func (s *Service) restore(ctx context.Context, cmd Command, itemID string) bool {
	containers, known := s.cfg.Catalogue.Containers(itemID)
	if !known {
		ok := s.publish(ctx, s.cfg.RestoreEventsTopic, answerEvent(cmd, producers.TypeItemRestoreRejected, itemID, "",
			ItemRestoreRejected{ItemID: itemID, Reason: RejectNotFound}))
		if ok {
			s.restoreRejected.Add(1)
		}
		return ok
	}
	s.mu.Lock()
	_, wasRemoved := s.removed[itemID]
	s.mu.Unlock()
	to := make([]string, 0, len(containers))
	for _, c := range containers {
		to = append(to, c.ID)
	}
	ok := s.publish(ctx, s.cfg.RestoreEventsTopic, answerEvent(cmd, producers.TypeItemRestored, itemID, "",
		ItemRestored{ItemID: itemID, RestoredTo: to, WasRemoved: wasRemoved, RestoredAt: time.Now().UTC().Format(time.RFC3339)}))
	if !ok {
		return false
	}
	s.restored.Add(1)
	s.mu.Lock()
	delete(s.removed, itemID)
	s.mu.Unlock()
	return true
}

// publish writes ev to topic, keyed by its subject, retrying
// with backoff (50 ms doubling to 1 s) until it is written or ctx ends.
// Giving up would leave the command's offset uncommitted and hold back
// every later offset of its partition, so a broker outage is waited out
// instead. A retry sends the same event ID, so readers can drop a
// duplicate. Failures count in the service's error streak, which logs
// them.
func (s *Service) publish(ctx context.Context, topic string, ev producers.CloudEvent) bool {
	return s.retry(ctx, func() error { return s.pub.Publish(ctx, topic, ev.Subject, ev) })
}

// retry calls send until it succeeds (true) or ctx ends (false), backing
// off between failures, which count in the service's error streak.
func (s *Service) retry(ctx context.Context, send func() error) bool {
	backoff := 50 * time.Millisecond
	for {
		err := send()
		if err == nil {
			s.streak.Succeed()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.streak.Fail(err, backoff)
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, itemSvcPublishRetryMax)
	}
}

// eventsPublisher is a Publisher that writes several events of one key
// at once; *producers.Producer is one.
type eventsPublisher interface {
	PublishEvents(ctx context.Context, topic, key string, evs ...producers.CloudEvent) error
}

// publishEvents writes evs, all keyed by the first one's subject, to topic
// as publish writes one event: retried whole until written or ctx ends.
func (s *Service) publishEvents(ctx context.Context, pub eventsPublisher, topic string, evs []producers.CloudEvent) bool {
	return s.retry(ctx, func() error { return pub.PublishEvents(ctx, topic, evs[0].Subject, evs...) })
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

// dataItemID returns the string data.item_id of a structured JSON event,
// or "".
func dataItemID(event []byte) string {
	var ev struct {
		Data struct {
			ItemID string `json:"item_id"`
		} `json:"data"`
	}
	// A data that is not an object (or data_base64) leaves ItemID empty;
	// the error says nothing more useful than that.
	_ = json.Unmarshal(event, &ev)
	return ev.Data.ItemID
}

// itemLocks serialises work per item ID. Entries live only while someone
// holds or waits for them, so the map stays as small as the work in flight.
type itemLocks struct {
	mu sync.Mutex
	m  map[string]*itemLock
}

type itemLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks id and returns its lock, for unlock.
func (l *itemLocks) lock(id string) *itemLock {
	l.mu.Lock()
	il := l.m[id]
	if il == nil {
		il = &itemLock{}
		l.m[id] = il
	}
	il.refs++
	l.mu.Unlock()

	il.mu.Lock()
	return il
}

// unlock unlocks il, id's lock as lock returned it.
func (l *itemLocks) unlock(id string, il *itemLock) {
	il.mu.Unlock()
	l.mu.Lock()
	if il.refs--; il.refs == 0 {
		delete(l.m, id)
	}
	l.mu.Unlock()
}

// offsetTracker knows, per partition, which fetched offsets are still in
// flight, and so the offset up to which everything has been answered.
// Offsets within a partition are fetched in increasing order; after a
// rebalance the reader may fetch lower ones again, which only makes a
// commit wait for them.
type offsetTracker struct {
	mu    sync.Mutex
	parts map[trackedPartition]*partitionProgress
}

type trackedPartition struct {
	topic     string
	partition int
}

type partitionProgress struct {
	// inFlight counts fetches per offset not yet finished (an offset can be
	// fetched twice across a rebalance).
	inFlight map[int64]int
	// next is one past the highest offset fetched.
	next int64
	// committed is the next offset to read, as last committed (or as first
	// fetched, which the group already points at).
	committed int64
}

func newOffsetTracker() *offsetTracker {
	return &offsetTracker{parts: make(map[trackedPartition]*partitionProgress)}
}

// add records that m was fetched and is in flight.
func (t *offsetTracker) add(m kafka.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := trackedPartition{m.Topic, m.Partition}
	p := t.parts[k]
	if p == nil {
		p = &partitionProgress{inFlight: make(map[int64]int), committed: m.Offset}
		t.parts[k] = p
	}
	p.inFlight[m.Offset]++
	p.next = max(p.next, m.Offset+1)
}

// done records that m was answered (or skipped).
func (t *offsetTracker) done(m kafka.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.parts[trackedPartition{m.Topic, m.Partition}]
	if p == nil {
		return
	}
	if p.inFlight[m.Offset]--; p.inFlight[m.Offset] <= 0 {
		delete(p.inFlight, m.Offset)
	}
}

// ready returns, for each partition whose answered prefix passed its last
// commit, a message whose commit (kafka-go commits Offset+1) records that
// prefix.
func (t *offsetTracker) ready() []kafka.Message {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []kafka.Message
	for k, p := range t.parts {
		upTo := p.next // everything fetched is answered
		for off := range p.inFlight {
			upTo = min(upTo, off)
		}
		if upTo > p.committed {
			out = append(out, kafka.Message{Topic: k.topic, Partition: k.partition, Offset: upTo - 1})
		}
	}
	return out
}

// committed records that msgs, as returned by ready, were committed.
func (t *offsetTracker) committed(msgs []kafka.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range msgs {
		if p := t.parts[trackedPartition{m.Topic, m.Partition}]; p != nil {
			p.committed = max(p.committed, m.Offset+1)
		}
	}
}
