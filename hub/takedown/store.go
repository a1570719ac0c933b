// Package takedown is the sync adapter: it turns a takedown request (police
// HTTP, partner WebSocket frame, moderator page) into a takedown.requested
// command on Kafka and answers from the hub subscription on the request's
// corr: channel. Every declared sync command (SPEC §5.1, Command) runs the
// same protocol; the takedown is the built-in one (Takedowns). The hub
// itself knows nothing of takedowns.
package takedown

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/internal/ring"
	"github.com/switchboard/switchboard/producers"
)

// Status is a takedown's state.
type Status string

// The states of a takedown.
const (
	StatusPending   Status = "pending"
	StatusConfirmed Status = "confirmed"
	StatusRejected  Status = "rejected"
)

// Event types the adapter reads and writes (the contract's, named once in
// producers).
const (
	TypeRequested = producers.TypeTakedownRequested
	TypeRemoved   = producers.TypeItemRemoved
	TypeConfirmed = producers.TypeTakedownConfirmed
	TypeRejected  = producers.TypeTakedownRejected
)

// Record is one takedown as the outcome store keeps it.
type Record struct {
	CorrelationID string `json:"correlation_id"`
	// Command names the declared command; empty for the takedown.
	Command        string    `json:"command,omitempty"`
	Principal      string    `json:"principal,omitempty"`
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	BodyHash       string    `json:"body_hash,omitempty"`
	ItemID         string    `json:"item_id"`
	Reason         string    `json:"reason,omitempty"`
	AuthorityRef   string    `json:"authority_ref,omitempty"`
	Status         Status    `json:"status"`
	RemovedFrom    []string  `json:"removed_from"`
	ConfirmedAt    string    `json:"confirmed_at,omitempty"`
	RejectReason   string    `json:"reject_reason,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	// EventID is the CloudEvents id of the takedown.requested command. Every
	// publish of this takedown carries it (and the correlation ID), so the
	// item service and the hub apply the command once however often it is
	// written.
	EventID string `json:"event_id,omitempty"`
	// TraceParent and TraceState are the trace context of the request
	// that made the call (SPEC §10), for a republish without it.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
	// Published is set once a broker acknowledged the command. Until then
	// the takedown is "publishing": a retry of its key, or a node's sweep,
	// publishes the same command again.
	Published bool `json:"published,omitempty"`
	// Event is the terminal event (structured CloudEvents JSON), once final.
	Event json.RawMessage `json:"event,omitempty"`
	// Code is the HTTP status of the outcome rule the terminal event
	// matched, once final.
	Code int `json:"code,omitempty"`
	// Data is a declared command's request members, a JSON object (the
	// takedown keeps ItemID, Reason and AuthorityRef).
	Data json.RawMessage `json:"data,omitempty"`
	// Progress are a declared command's progress events so far: each
	// {"type","id","data"}, at most maxProgress (the takedown keeps
	// RemovedFrom).
	Progress []json.RawMessage `json:"progress,omitempty"`
}

// maxProgress bounds the progress events a record keeps.
const maxProgress = 64

// needsPublish reports whether the command is not known to be on the topic.
func (r *Record) needsPublish() bool { return !r.Published && !r.Final() }

// Final reports whether the takedown has its outcome.
func (r *Record) Final() bool { return r.Status == StatusConfirmed || r.Status == StatusRejected }

// ErrNotFound: no takedown has that correlation ID (or it expired).
var ErrNotFound = errors.New("takedown: not found")

// Store is the outcome store: each takedown's state, progress and outcome
// for takedown.result_ttl, and the idempotency keys that name them. It is
// the outbox of the commands too: a takedown is stored as publishing before
// its command is sent, and marked published on the broker's ack. It is
// written by whichever node consumes an event, so any node can answer.
type Store interface {
	// Reserve stores rec as publishing, unless rec's principal already used
	// rec.IdempotencyKey: then it stores nothing and returns that record.
	// The store may keep rec itself (MemoryStore): the caller must not
	// change it afterwards.
	Reserve(ctx context.Context, rec *Record) (existing *Record, err error)
	// Release forgets a reservation whose command was never handed to the
	// producer.
	Release(ctx context.Context, rec *Record) error
	// MarkPublished records that a broker acknowledged the command.
	MarkPublished(ctx context.Context, correlationID string) error
	// ClaimUnpublished returns up to max takedowns still publishing whose
	// last attempt began before before, and moves their attempt to now, so
	// nodes sweeping at the same time take different ones.
	ClaimUnpublished(ctx context.Context, before time.Time, max int) ([]*Record, error)
	// Get returns the takedown of correlationID, or ErrNotFound. The
	// record may be the store's own (MemoryStore): the caller must not
	// change it (clone it first).
	Get(ctx context.Context, correlationID string) (*Record, error)
	// Apply folds an outcome event (item.removed, takedown.confirmed,
	// takedown.rejected) into the takedown it names. An event for a
	// correlation ID this deployment did not publish, or about another item,
	// changes nothing and is an *UntrustedError. The caller checks topic
	// and source first (Trust).
	Apply(ctx context.Context, ev *hub.Event) error
	// apply is Apply for any declared command: judge names the record's
	// command if ev may move it, or says why not.
	apply(ctx context.Context, ev *hub.Event, judge judgeFunc) error
}

// judgeFunc decides whether ev may move rec, and by which command.
type judgeFunc func(rec *Record, ev *hub.Event) (*Command, error)

// Outcome is what a takedown event says.
type Outcome struct {
	Type string
	// Subject is the event's subject; ItemID is its data's item_id.
	Subject     string
	ItemID      string
	ContainerID string
	RemovedFrom []string
	ConfirmedAt string
	Reason      string
}

// ParseOutcome reads a takedown event's data. The event is read with a
// scanner of its members (outcomeScan) when it can give exactly what
// encoding/json gives; anything it cannot (escapes, a member named twice,
// wrong types, invalid JSON) is read by encoding/json, which decides the
// outcome or the error.
func ParseOutcome(ev *hub.Event) (Outcome, error) {
	if o, ok := outcomeScan(ev); ok {
		return o, nil
	}
	return parseOutcomeJSON(ev)
}

// parseOutcomeJSON is ParseOutcome by encoding/json alone.
func parseOutcomeJSON(ev *hub.Event) (Outcome, error) {
	var body struct {
		Data struct {
			ItemID      string   `json:"item_id"`
			ContainerID string   `json:"container_id"`
			RemovedFrom []string `json:"removed_from"`
			ConfirmedAt string   `json:"confirmed_at"`
			Reason      string   `json:"reason"`
		} `json:"data"`
	}
	if err := json.Unmarshal(ev.JSON, &body); err != nil {
		return Outcome{}, err
	}
	d := body.Data
	return Outcome{Type: ev.Type, Subject: ev.Subject, ItemID: d.ItemID, ContainerID: d.ContainerID, RemovedFrom: d.RemovedFrom, ConfirmedAt: d.ConfirmedAt, Reason: d.Reason}, nil
}

// IsOutcome reports whether an event of type typ moves a takedown.
func IsOutcome(typ string) bool {
	return typ == TypeRemoved || typ == TypeConfirmed || typ == TypeRejected
}

// fold applies an event of cmd to rec: progress is kept, the first
// outcome rule the event matches makes rec final (confirmed for a 2xx
// status, rejected otherwise); a terminal type no rule matches leaves rec
// pending. A final record stays as it is. An event implies the command
// was on the topic. It returns an *UntrustedError when the event cannot be
// read or names another key than rec's.
func fold(rec *Record, cmd *Command, ev *hub.Event) error {
	if cmd.builtin {
		o, err := ParseOutcome(ev)
		if err != nil {
			return &UntrustedError{Reason: ReasonMalformed}
		}
		if err := o.about(rec.ItemID); err != nil {
			return err
		}
		if rec.Final() {
			return nil
		}
		rec.Published = true
		if !cmd.terminal(o.Type) {
			if slices.Contains(cmd.Progress, o.Type) && o.ContainerID != "" && !slices.Contains(rec.RemovedFrom, o.ContainerID) {
				rec.RemovedFrom = append(rec.RemovedFrom, o.ContainerID)
			}
			return nil
		}
		r := cmd.rule(o.Type, o.member)
		if r == nil {
			return nil
		}
		rec.Code, rec.Event = r.Status, slices.Clone(ev.JSON)
		if r.Status < 300 {
			rec.Status = StatusConfirmed
			if o.RemovedFrom != nil {
				rec.RemovedFrom = o.RemovedFrom
			}
			rec.ConfirmedAt = o.ConfirmedAt
		} else {
			rec.Status = StatusRejected
			rec.RejectReason = o.Reason
		}
		return nil
	}
	data, err := eventData(ev.JSON)
	if err != nil {
		return &UntrustedError{Reason: ReasonMalformed}
	}
	key := stringMember(data, cmd.Key)
	if key == "" {
		key = ev.Subject
	}
	if key != rec.ItemID || (ev.Subject != "" && ev.Subject != rec.ItemID) {
		return &UntrustedError{Reason: ReasonItem}
	}
	if rec.Final() {
		return nil
	}
	rec.Published = true
	if !cmd.terminal(ev.Type) {
		if len(rec.Progress) < maxProgress {
			p, _ := json.Marshal(struct {
				Type string          `json:"type"`
				ID   string          `json:"id"`
				Data json.RawMessage `json:"data,omitempty"`
			}{ev.Type, ev.ID, data.raw})
			if !slices.ContainsFunc(rec.Progress, func(q json.RawMessage) bool { return string(q) == string(p) }) {
				rec.Progress = append(rec.Progress, p)
			}
		}
		return nil
	}
	r := cmd.rule(ev.Type, func(k string) string { return stringMember(data, k) })
	if r == nil {
		return nil
	}
	rec.Code, rec.Event = r.Status, slices.Clone(ev.JSON)
	if r.Status < 300 {
		rec.Status = StatusConfirmed
	} else {
		rec.Status = StatusRejected
		rec.RejectReason = stringMember(data, "reason")
	}
	return nil
}

// member is an outcome rule's view of a takedown event's data.
func (o Outcome) member(k string) string {
	switch k {
	case "reason":
		return o.Reason
	case "item_id":
		return o.ItemID
	case "container_id":
		return o.ContainerID
	case "confirmed_at":
		return o.ConfirmedAt
	}
	return ""
}

// dataMembers is an event's data: its members, and the whole object.
type dataMembers struct {
	m   map[string]json.RawMessage
	raw json.RawMessage
}

// eventData reads the data of a structured JSON event: an object, or
// none.
func eventData(event []byte) (dataMembers, error) {
	var body struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(event, &body); err != nil {
		return dataMembers{}, err
	}
	d := dataMembers{raw: body.Data}
	if len(body.Data) == 0 || string(body.Data) == "null" {
		d.raw = nil
		return d, nil
	}
	if err := json.Unmarshal(body.Data, &d.m); err != nil {
		return dataMembers{}, err
	}
	return d, nil
}

// stringMember is data's member k when it is a string, else "".
func stringMember(d dataMembers, k string) string {
	raw, ok := d.m[k]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// DefaultMaxRecords bounds the records a MemoryStore keeps.
const DefaultMaxRecords = 250_000

// MemoryStore is the single-node Store. A record it holds is never
// changed: a change stores a changed copy, so Get gives the record itself,
// which a held call keeps while it waits (no copy of its own).
//
// It keeps records for its TTL, and at most max of them: past that, the
// oldest final records are forgotten first (with their idempotency keys);
// a record still waiting for its outcome is never forgotten early.
type MemoryStore struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu         sync.Mutex
	recs       map[string]*Record
	keys       map[string]string    // idemKey(record) -> correlation ID
	publishing map[string]time.Time // correlation ID -> start of the last publish attempt
	// order is the correlation IDs reserved, oldest first; an ID may have
	// left recs since (released), which whoever pops it sees.
	order   ring.Queue[string]
	swept   time.Time
	evicted int64
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns a store that keeps records for ttl, and at most
// maxRecords of them (0 means DefaultMaxRecords).
func NewMemoryStore(ttl time.Duration, maxRecords int) *MemoryStore {
	if maxRecords <= 0 {
		maxRecords = DefaultMaxRecords
	}
	return &MemoryStore{ttl: ttl, max: maxRecords, now: time.Now, recs: map[string]*Record{}, keys: map[string]string{}, publishing: map[string]time.Time{}}
}

// Evicted is how many final records the store forgot before their TTL
// because it held its maximum.
func (m *MemoryStore) Evicted() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.evicted
}

// Len is how many records the store holds.
func (m *MemoryStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.recs)
}

// idemKey scopes an idempotency key to its principal and command.
func idemKey(r *Record) string {
	if r.Command == "" {
		return r.Principal + "\x00" + r.IdempotencyKey
	}
	return r.Principal + "\x01" + r.Command + "\x00" + r.IdempotencyKey
}

// sweepLocked drops expired records, at most once a minute, from the
// oldest on (order).
func (m *MemoryStore) sweepLocked() {
	now := m.now()
	if now.Sub(m.swept) >= time.Minute {
		m.swept = now
		for {
			id, ok := m.order.Peek()
			if !ok {
				break
			}
			r := m.recs[id]
			if r != nil && now.Sub(r.CreatedAt) <= m.ttl {
				break
			}
			m.order.Pop()
			if r != nil {
				m.forgetLocked(r)
				delete(m.recs, id)
			}
		}
	}
}

// trimLocked forgets the oldest final records while the store holds more
// than max (called on every Reserve, so about one at a time). A record
// still waiting for its outcome goes back to the end of the queue
// instead: it is never forgotten early.
func (m *MemoryStore) trimLocked() {
	now := m.now()
	// At most 64 steps a call: records waiting for their outcome at the
	// front of the queue cost each call a few steps, never a walk of it.
	for tries := min(m.order.Len(), 64); len(m.recs) > m.max && tries > 0; tries-- {
		id, _ := m.order.Pop()
		r := m.recs[id]
		switch {
		case r == nil: // released
		case r.Final() || now.Sub(r.CreatedAt) > m.ttl:
			m.forgetLocked(r)
			delete(m.recs, id)
			if r.Final() {
				m.evicted++
			}
		default:
			m.order.Push(id)
		}
	}
}

func (m *MemoryStore) forgetLocked(r *Record) {
	delete(m.publishing, r.CorrelationID)
	if r.IdempotencyKey != "" && m.keys[idemKey(r)] == r.CorrelationID {
		delete(m.keys, idemKey(r))
	}
}

func (m *MemoryStore) live(r *Record) bool { return r != nil && m.now().Sub(r.CreatedAt) <= m.ttl }

// Reserve implements Store.
func (m *MemoryStore) Reserve(_ context.Context, rec *Record) (*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked()
	if rec.IdempotencyKey != "" {
		if id, ok := m.keys[idemKey(rec)]; ok {
			if r := m.recs[id]; m.live(r) {
				return clone(r), nil
			}
		}
		m.keys[idemKey(rec)] = rec.CorrelationID
	}
	m.recs[rec.CorrelationID] = rec // never changed: Reserve's contract
	m.order.Push(rec.CorrelationID)
	if rec.needsPublish() {
		m.publishing[rec.CorrelationID] = m.now()
	}
	m.trimLocked()
	return nil, nil
}

// Release implements Store.
func (m *MemoryStore) Release(_ context.Context, rec *Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.recs[rec.CorrelationID]; ok && r.needsPublish() {
		m.forgetLocked(r)
		delete(m.recs, rec.CorrelationID)
	}
	return nil
}

// MarkPublished implements Store.
func (m *MemoryStore) MarkPublished(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.publishing, id)
	if r := m.recs[id]; r != nil && !r.Published {
		c := clone(r)
		c.Published = true
		m.recs[id] = c
	}
	return nil
}

// ClaimUnpublished implements Store.
func (m *MemoryStore) ClaimUnpublished(_ context.Context, before time.Time, max int) ([]*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Record
	for id, at := range m.publishing {
		if len(out) >= max {
			break
		}
		r := m.recs[id]
		if !m.live(r) || !r.needsPublish() {
			delete(m.publishing, id)
			continue
		}
		if at.Before(before) {
			m.publishing[id] = m.now()
			out = append(out, clone(r))
		}
	}
	return out, nil
}

// Get implements Store.
func (m *MemoryStore) Get(_ context.Context, id string) (*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recs[id]
	if !m.live(r) {
		return nil, ErrNotFound
	}
	return r, nil
}

// Apply implements Store.
func (m *MemoryStore) Apply(ctx context.Context, ev *hub.Event) error {
	return m.apply(ctx, ev, applyTakedown)
}

func (m *MemoryStore) apply(_ context.Context, ev *hub.Event, judge judgeFunc) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recs[ev.CorrelationID]
	if !m.live(r) {
		return &UntrustedError{Reason: ReasonUnknown}
	}
	cmd, err := judge(r, ev)
	if err != nil {
		return err
	}
	c := clone(r)
	if err := fold(c, cmd, ev); err != nil {
		return err
	}
	m.recs[r.CorrelationID] = c
	delete(m.publishing, r.CorrelationID)
	return nil
}

// Owner implements auth.Owners: who asked for a takedown.
func (m *MemoryStore) Owner(_ context.Context, id string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recs[id]
	if !m.live(r) || r.Principal == "" {
		return "", false
	}
	return r.Principal, true
}

func clone(r *Record) *Record {
	c := *r
	c.RemovedFrom = slices.Clone(r.RemovedFrom)
	c.Progress = slices.Clone(r.Progress)
	return &c
}
