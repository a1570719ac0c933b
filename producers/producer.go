// Package producers writes to Kafka on the hub's behalf: takedown commands,
// dead letters, the simulated item service's events and the demo reports.
// Events go out as CloudEvents 1.0 in the Kafka protocol binding's binary
// mode: attributes in ce_* headers, the value is the event's data.
package producers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/consumers/kafkaconn"
)

// Defaults that New applies to zero fields of Config.
const (
	// DefaultWriteTimeout bounds one write to a broker.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxAttempts is how many times the writer tries a batch before
	// Publish fails.
	DefaultMaxAttempts = 3
)

// Config configures a Producer. Zero fields take the Default... values.
type Config struct {
	// Brokers are the bootstrap addresses, host:port. Required.
	Brokers []string
	// Conn says how the connections to the brokers are made: TLS, SASL
	// and the dial timeout. The zero value is plaintext without
	// authentication.
	Conn kafkaconn.Config
	// MaxQueuedBytes caps the records waiting for one partition, gathering
	// or in flight: beyond it Publish waits for room (or for its context).
	MaxQueuedBytes int64
	// WriteTimeout bounds one write to a broker.
	WriteTimeout time.Duration
	// MaxAttempts is how many times a batch is tried before it fails.
	MaxAttempts int
}

// Producer publishes records to Kafka through one writer shared by all
// topics (see writer). Records with the same key land on the same partition, so one
// item's events stay ordered. A Producer is safe for concurrent use.
type Producer struct {
	w   *writer
	tr  *kafka.Transport
	log *slog.Logger

	// lastErr is the newest write's failure, nil after a success.
	lastErr atomic.Pointer[writeFailure]

	closeOnce sync.Once
}

type writeFailure struct {
	err error
	at  time.Time
}

// healthWindow is how long a failed write makes the producer unhealthy.
// Its callers retry within seconds, so a lasting fault keeps it unhealthy,
// and a producer that has nothing more to write does not stay unhealthy
// (and out of a load balancer) after the fault has passed.
const healthWindow = 10 * time.Second

// note records the outcome of a write for Healthy.
func (p *Producer) note(err error) {
	if err == nil {
		if p.lastErr.Load() != nil {
			p.lastErr.Store(nil)
		}
		return
	}
	p.lastErr.Store(&writeFailure{err: err, at: time.Now()})
}

// Healthy reports the error of the newest write if it failed in the last
// ten seconds, and nil if it succeeded, is older, or none was made yet.
func (p *Producer) Healthy(context.Context) error {
	if f := p.lastErr.Load(); f != nil && time.Since(f.at) < healthWindow {
		return f.err
	}
	return nil
}

// New returns a Producer for the brokers of cfg. It does not contact the
// brokers: the first Publish does.
func New(cfg Config, log *slog.Logger) (*Producer, error) {
	if log == nil {
		log = slog.Default()
	}
	brokers := kafkaconn.Brokers(cfg.Brokers)
	if len(brokers) == 0 {
		return nil, errors.New("producers: no brokers configured")
	}
	if cfg.MaxQueuedBytes < 0 || cfg.WriteTimeout < 0 || cfg.MaxAttempts < 0 {
		return nil, errors.New("producers: max queued bytes, write timeout and max attempts must not be negative")
	}
	if cfg.MaxQueuedBytes == 0 {
		cfg.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	conn, err := kafkaconn.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("producers: %w", err)
	}
	log = log.With("component", "producer")
	if conn.InsecureSkipVerify() {
		log.Warn("the brokers' TLS certificates are not verified (insecure skip verify): anyone on the path can pose as the broker")
	}
	// An own transport, so Close can release its connections and goroutines;
	// the package-wide default transport would outlive the Producer.
	tr := conn.Transport()
	// Every in-sync replica acknowledges a record before Publish returns.
	// The writer sends a record at once when its partition is idle and
	// gathers the ones that arrive meanwhile into the next request.
	w := newWriter(tr, kafka.TCP(brokers...), kafka.RequireAll, cfg.WriteTimeout, cfg.MaxAttempts)
	w.maxQueue = max(cfg.MaxQueuedBytes, w.maxBatch)
	return &Producer{w: w, tr: tr, log: log}, nil
}

// Close flushes nothing (Publish is synchronous), waits for writes in flight
// and releases the connections. It is safe to call more than once.
func (p *Producer) Close() error {
	p.closeOnce.Do(func() {
		p.w.close()
		p.tr.CloseIdleConnections()
	})
	return nil
}

// CloudEvent is an event to publish: the CloudEvents 1.0 attributes the
// platform uses, and data, which is marshalled as JSON.
type CloudEvent struct {
	// ID is unique per Source; NewEvent makes a UUID.
	ID string
	// Source is a URI reference naming the producer, like /switchboard/demo.
	Source string
	// Type is the event type, like takedown.requested.
	Type string
	// Subject is the item ID, when the event is about an item.
	Subject string
	// Time is when it happened, RFC 3339.
	Time string
	// CorrelationID is the extension attribute correlationid, which ties a
	// takedown command to its events.
	CorrelationID string
	// TraceParent and TraceState are the CloudEvents distributed-tracing
	// extension (W3C Trace Context): the trace the event belongs to, if
	// any. Empty means none.
	TraceParent, TraceState string
	// Data is marshalled with encoding/json; nil means no data.
	Data any
}

// NewEvent returns a CloudEvent with a fresh UUID as ID and the current UTC
// time.
func NewEvent(source, typ, subject, correlationID string, data any) CloudEvent {
	return CloudEvent{
		ID:            uuid.NewString(),
		Source:        source,
		Type:          typ,
		Subject:       subject,
		Time:          time.Now().UTC().Format(time.RFC3339Nano),
		CorrelationID: correlationID,
		Data:          data,
	}
}

// Headers of the CloudEvents Kafka binary mode.
const (
	headerSpecVersion   = "ce_specversion"
	headerID            = "ce_id"
	headerSource        = "ce_source"
	headerType          = "ce_type"
	headerSubject       = "ce_subject"
	headerTime          = "ce_time"
	headerCorrelationID = "ce_correlationid"
	headerTraceParent   = "ce_traceparent"
	headerTraceState    = "ce_tracestate"
	headerContentType   = "content-type"
	contentTypeJSON     = "application/json"
)

// Message encodes ev for topic in the CloudEvents binary mode, keyed by key.
// Publish uses it; it is exported for callers that batch with PublishRaw.
func Message(topic, key string, ev CloudEvent) (kafka.Message, error) {
	if topic == "" {
		return kafka.Message{}, errors.New("producers: no topic")
	}
	switch {
	case ev.ID == "":
		return kafka.Message{}, errors.New(`producers: event has no "id"`)
	case ev.Source == "":
		return kafka.Message{}, errors.New(`producers: event has no "source"`)
	case ev.Type == "":
		return kafka.Message{}, errors.New(`producers: event has no "type"`)
	}
	var value []byte
	if ev.Data != nil {
		b, err := json.Marshal(ev.Data)
		if err != nil {
			return kafka.Message{}, fmt.Errorf("producers: encode data of %s event %s: %w", ev.Type, ev.ID, err)
		}
		value = b
	}
	// The header values and the key share one allocation, the headers
	// another: Message is on the path of every command and answer.
	attrs := [...]struct{ key, value string }{
		{headerSpecVersion, "1.0"},
		{headerID, ev.ID},
		{headerSource, ev.Source},
		{headerType, ev.Type},
		{headerSubject, ev.Subject},
		{headerTime, ev.Time},
		{headerCorrelationID, ev.CorrelationID},
		{headerTraceParent, ev.TraceParent},
		{headerTraceState, ev.TraceState},
		{headerContentType, contentTypeJSON},
	}
	if ev.TraceParent == "" {
		attrs[8].value = "" // a tracestate goes only with a traceparent
	}
	n, size := 0, len(key)
	for _, a := range attrs {
		if a.value != "" {
			n++
			size += len(a.value)
		}
	}
	buf := make([]byte, 0, size)
	h := make([]kafka.Header, 0, n)
	for _, a := range attrs {
		if a.value == "" {
			continue
		}
		start := len(buf)
		buf = append(buf, a.value...)
		h = append(h, kafka.Header{Key: a.key, Value: buf[start:len(buf):len(buf)]})
	}
	m := kafka.Message{Topic: topic, Value: value, Headers: h}
	if key != "" {
		start := len(buf)
		buf = append(buf, key...)
		m.Key = buf[start:len(buf):len(buf)]
	}
	return m, nil
}

// Publish writes ev to topic in the CloudEvents binary mode with key as the
// record key (the item ID, so one item's events stay ordered on one
// partition). It returns once every in-sync replica has the record, or with
// the reason it could not.
func (p *Producer) Publish(ctx context.Context, topic, key string, ev CloudEvent) error {
	m, err := Message(topic, key, ev)
	if err != nil {
		return err
	}
	if err := p.w.write(ctx, m); err != nil {
		err = fmt.Errorf("producers: publish %s event %s to %q: %w", ev.Type, ev.ID, topic, unwrapWriteErrors(err))
		p.note(err)
		return err
	}
	p.note(nil)
	return nil
}

// PublishEvents writes evs to topic in the CloudEvents binary mode, all
// keyed by key and so on one partition, in order, and returns once every
// in-sync replica has all of them, or with the reason it could not. They
// go out together: in one produce request when they fit in one, where
// Publish after Publish waits for each acknowledgement before the next
// record is sent.
func (p *Producer) PublishEvents(ctx context.Context, topic, key string, evs ...CloudEvent) error {
	if len(evs) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(evs))
	for i, ev := range evs {
		m, err := Message(topic, key, ev)
		if err != nil {
			return err
		}
		msgs[i] = m
	}
	if err := p.w.write(ctx, msgs...); err != nil {
		err = fmt.Errorf("producers: publish %d events (%s %s first) to %q: %w", len(evs), evs[0].Type, evs[0].ID, topic, unwrapWriteErrors(err))
		p.note(err)
		return err
	}
	p.note(nil)
	return nil
}

// PublishRaw writes records as they are, each to its own Topic, and returns
// once the brokers acknowledged all of them. The consumer writes dead
// letters with it. Partition and Offset of the messages are ignored.
func (p *Producer) PublishRaw(ctx context.Context, msgs ...kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	out := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		if m.Topic == "" {
			return fmt.Errorf("producers: message %d has no topic", i)
		}
		// kafka-go says Partition must not be set when writing, and a
		// consumed record carries one: keep only what is written.
		out[i] = kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: m.Headers, Time: m.Time}
	}
	if err := p.w.write(ctx, out...); err != nil {
		err = fmt.Errorf("producers: publish %d raw records: %w", len(out), unwrapWriteErrors(err))
		p.note(err)
		return err
	}
	p.note(nil)
	return nil
}

// unwrapWriteErrors turns kafka.WriteErrors, one error per message, into the
// first non-nil one, which reads better in a log line.
func unwrapWriteErrors(err error) error {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil {
				return e
			}
		}
	}
	return err
}
