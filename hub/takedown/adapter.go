package takedown

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/tracing"
)

// Defaults for Config.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultMaxWait      = 55 * time.Second
	DefaultMaxBodyBytes = 64 << 10
	DefaultPublishWait  = 2 * time.Second
	DefaultBodyTimeout  = 10 * time.Second
	// DefaultHandOffAfter: most takedowns are answered well within it,
	// on a connection that stays open for the client's next request.
	DefaultHandOffAfter = 250 * time.Millisecond
	// Source is the CloudEvents source of the commands the adapter sends.
	Source = "/switchboard/takedowns"
	// storePoll is how often a waiter whose hub subscription ended (node
	// shutting down) reads the store instead.
	storePoll = 100 * time.Millisecond
)

// Config configures the adapter.
type Config struct {
	// Commands are the declared commands (SPEC §5.1), each with its own
	// topics, trust and timeout. Nil means the built-in takedown alone,
	// on CommandsTopic, trusted as Trust says, waiting Timeout.
	Commands *Commands
	// CommandsTopic is where takedown.requested commands go when Commands
	// is nil.
	CommandsTopic string
	// Timeout is the default wait; MaxWait caps a client's Prefer: wait.
	Timeout, MaxWait time.Duration
	// MaxBodyBytes caps a request body (413 beyond).
	MaxBodyBytes int64
	// PublishWait bounds publishing a command: past it the request is
	// answered 503 and nothing is accepted.
	PublishWait time.Duration
	// BodyTimeout bounds reading a request body, so a client sending it
	// slowly cannot hold a request (the held answer is not bounded by it).
	BodyTimeout time.Duration
	// Trust says where trusted outcomes come from (topic and sources);
	// Sources defaults to DefaultOutcomeSources.
	Trust Trust
	// HandOffAfter is how long a held request waits in its handler before
	// it is handed off from net/http (its goroutine and buffers freed, the
	// answer written from the outcome, with Connection: close); 0 means
	// DefaultHandOffAfter, a negative value hands off at once.
	HandOffAfter time.Duration
	// SweepInterval is how often Run looks for takedowns whose command is
	// not known to be on the topic; 0 means half of PublishWait.
	SweepInterval time.Duration
	// Observe, if set, is told each answer of every command: the
	// command's name, its outcome ("confirmed", "not_found", "rejected",
	// "timeout", "accepted", "unavailable") and how long the request took.
	// Metrics hook in here.
	Observe func(command, outcome string, d time.Duration)
}

// outcomeOf names the answer a record gets.
func outcomeOf(rec *Record, async bool) string {
	switch {
	case rec.Status == StatusConfirmed:
		return "confirmed"
	case rec.Status == StatusRejected && rec.RejectReason == "not_found":
		return "not_found"
	case rec.Status == StatusRejected:
		return "rejected"
	case async:
		return "accepted"
	default:
		return "timeout"
	}
}

// Commander publishes commands to Kafka; *producers.Producer is one.
type Commander interface {
	Publish(ctx context.Context, topic, key string, ev producers.CloudEvent) error
}

// Limiter bounds what a principal may do; *auth.Auth is one.
type Limiter interface {
	// AllowTakedown spends one of the principal's takedown requests.
	AllowTakedown(p *auth.Principal) error
	// AllowWait spends one of its held reads (GET with Prefer: wait).
	AllowWait(p *auth.Principal) error
	// Hold takes one of its connection slots for a held request; the
	// error wraps hub.ErrTooManyConnections when none is free.
	Hold(p *auth.Principal) (release func(), err error)
}

// Adapter serves every declared command: POST /v1/<name>, GET
// /v1/<name>/{id} and the WebSocket call frame, and for the built-in
// takedown POST /v1/takedowns, GET /v1/takedowns/{id} and the WebSocket
// takedown frame.
type Adapter struct {
	cfg   Config
	cmds  *Commands
	td    *Command // the built-in takedown, nil if not declared
	hub   *hub.Hub
	store Store
	cmd   Commander
	limit Limiter
	log   *slog.Logger
	held  atomic.Int64

	handoffs handoffs
	waiting  waiting // held HTTP requests by correlation ID (Wake)

	republished, republishErrors atomic.Uint64
}

// New returns an adapter.
func New(cfg Config, h *hub.Hub, store Store, cmd Commander, limit Limiter, log *slog.Logger) (*Adapter, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.PublishWait <= 0 {
		cfg.PublishWait = DefaultPublishWait
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = cfg.PublishWait / 2
	}
	if cfg.HandOffAfter == 0 {
		cfg.HandOffAfter = DefaultHandOffAfter
	}
	if cfg.Trust.Sources == nil {
		cfg.Trust.Sources = DefaultOutcomeSources
	}
	cmds := cfg.Commands
	if cmds == nil {
		if cfg.CommandsTopic == "" {
			return nil, errors.New("takedown: no commands topic")
		}
		td := Takedowns()
		td.Topic, td.OutcomeTopic, td.OutcomeSources, td.Timeout = cfg.CommandsTopic, cfg.Trust.Topic, cfg.Trust.Sources, cfg.Timeout
		if td.OutcomeTopic == "" {
			td.OutcomeTopic = "-" // the zero Trust: no topic is the outcome topic
		}
		var err error
		if cmds, err = NewCommands([]Command{td}); err != nil {
			return nil, fmt.Errorf("takedown: %w", err)
		}
		cmds.list[0].trust = cfg.Trust
	}
	if h == nil || store == nil || cmd == nil || limit == nil {
		return nil, errors.New("takedown: hub, store, commander and limiter are required")
	}
	if log == nil {
		log = slog.Default()
	}
	a := &Adapter{cfg: cfg, cmds: cmds, hub: h, store: store, cmd: cmd, limit: limit, log: log}
	if td := cmds.Lookup(TakedownsName); td != nil && td.builtin {
		a.td = td
	}
	return a, nil
}

// Commands returns the adapter's commands.
func (a *Adapter) Commands() *Commands { return a.cmds }

// Held returns how many requests are held open now.
func (a *Adapter) Held() int64 { return a.held.Load() }

// heldPoll is how often WaitHeld looks at Held.
const heldPoll = 10 * time.Millisecond

// WaitHeld returns once no request is held, or with ctx's error when ctx
// ends first. A node that stops calls it after its hub's Shutdown (held
// requests then read the store themselves) and before DropHeld, while its
// consumers still record outcomes, so the held requests are answered.
func (a *Adapter) WaitHeld(ctx context.Context) error {
	t := time.NewTicker(heldPoll)
	defer t.Stop()
	for a.held.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Request is the body of POST /v1/takedowns.
type Request struct {
	ItemID       string `json:"item_id"`
	Reason       string `json:"reason"`
	AuthorityRef string `json:"authority_ref,omitempty"`
}

// validate checks a request; item IDs must fit a channel key.
func (r *Request) validate() error {
	if r.ItemID == "" {
		return errors.New(`"item_id" is required`)
	}
	if err := hub.ValidateChannel("item:" + r.ItemID); err != nil {
		return fmt.Errorf(`"item_id" must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ -`)
	}
	if strings.TrimSpace(r.Reason) == "" {
		return errors.New(`"reason" is required: it goes to the item service and the audit trail`)
	}
	if len(r.Reason) > 2000 || len(r.AuthorityRef) > 256 {
		return errors.New(`"reason" (2000) or "authority_ref" (256) is too long`)
	}
	return nil
}

func (r *Request) hash() string {
	var buf [256]byte
	b := append(append(append(append(append(buf[:0], r.ItemID...), 0), r.Reason...), 0), r.AuthorityRef...)
	h := sha256.Sum256(b)
	// hex.EncodeToString's bytes and string are two allocations; one here.
	var x [2 * sha256.Size]byte
	hex.Encode(x[:], h[:])
	return string(x[:])
}

// twoUUIDs returns two random (version 4) UUIDs, as uuid.NewString
// writes them, from one read of randomness and in one string.
func twoUUIDs() (string, string) {
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand)
	var b [72]byte
	for i := range 2 {
		u := uuid.UUID(raw[16*i : 16*i+16])
		u[6] = (u[6] & 0x0f) | 0x40 // version 4
		u[8] = (u[8] & 0x3f) | 0x80 // variant RFC 4122
		hexUUID(b[36*i:36*i+36], &u)
	}
	s := string(b[:])
	return s[:36], s[36:]
}

// hexUUID writes u in its canonical form, 36 bytes, into dst.
func hexUUID(dst []byte, u *uuid.UUID) {
	hex.Encode(dst, u[:4])
	dst[8] = '-'
	hex.Encode(dst[9:13], u[4:6])
	dst[13] = '-'
	hex.Encode(dst[14:18], u[6:8])
	dst[18] = '-'
	hex.Encode(dst[19:23], u[8:10])
	dst[23] = '-'
	hex.Encode(dst[24:], u[10:])
}

// StatusURL is where a takedown's state is read.
func StatusURL(id string) string { return "/v1/takedowns/" + id }

// newRecord is a new call of in for principal, publishing.
func newRecord(principal string, in *input, key string) *Record {
	corr, event := twoUUIDs()
	rec := &Record{
		CorrelationID:  corr,
		Principal:      principal,
		IdempotencyKey: key,
		ItemID:         in.key,
		Status:         StatusPending,
		RemovedFrom:    []string{},
		CreatedAt:      time.Now(),
		EventID:        event,
	}
	if key != "" {
		// Only a request under the same key is compared with it: without
		// one, no hash is worked out or kept.
		rec.BodyHash = in.bodyHash()
	}
	if in.req != nil {
		rec.Reason, rec.AuthorityRef = in.req.Reason, in.req.AuthorityRef
	}
	if in.cmd.Name != TakedownsName {
		rec.Command, rec.Data, rec.RemovedFrom = in.cmd.Name, in.data, nil
	}
	return rec
}

var (
	errKeyReused   = errors.New("the Idempotency-Key was used with a different request")
	errUnavailable = errors.New("takedown: unavailable")
)

// command is the command event of rec, a call of cmd. It is made from the
// record alone, so every publish of one call, on any node, carries the
// same correlation ID, CloudEvents id, time and data: the request's
// members and requested_by.
func command(cmd *Command, rec *Record) producers.CloudEvent {
	var data any = &takedownData{AuthorityRef: rec.AuthorityRef, ItemID: rec.ItemID, Reason: rec.Reason, RequestedBy: rec.Principal}
	if len(rec.Data) > 0 {
		var m map[string]string
		if _ = json.Unmarshal(rec.Data, &m); m != nil { // written by newRecord
			m["requested_by"] = rec.Principal
			data = m
		}
	}
	source := Source
	if rec.Command != "" {
		source = "/switchboard/" + rec.Command
	}
	return producers.CloudEvent{
		ID:            rec.EventID,
		Source:        source,
		Type:          cmd.Type,
		Subject:       rec.ItemID,
		Time:          rec.CreatedAt.UTC().Format(time.RFC3339Nano),
		CorrelationID: rec.CorrelationID,
		Data:          data,
	}
}

// takedownData is the data of a takedown.requested command: its JSON is
// that of the map of its members (sorted, authority_ref only when set),
// without building one.
type takedownData struct {
	AuthorityRef string `json:"authority_ref,omitempty"`
	ItemID       string `json:"item_id"`
	Reason       string `json:"reason"`
	RequestedBy  string `json:"requested_by"`
}

// publish sends rec's command and, on the broker's ack, marks it published.
// When the ack does not come within PublishWait the record stays
// publishing: the write may still happen (kafka-go keeps a message it was
// given), so the command is never released; a retry of its key, or the
// sweep of any node, publishes the same command again, and its consumers
// apply it once.
func (a *Adapter) publish(ctx context.Context, rec *Record) error {
	_, err := a.publishRead(ctx, rec, nil)
	return err
}

// markReader is a Store whose mark of a published command reads the
// record too (the Redis store: the compare-and-set hands it back).
type markReader interface {
	markPublished(ctx context.Context, id string) (*Record, error)
}

// publishRead is publish, and returns the record as the store holds it
// once marked published, when the store says (a markReader), else nil.
// rec itself is not changed (it may be the store's own). known, if not
// nil, is the trace context the request already propagated.
func (a *Adapter) publishRead(ctx context.Context, rec *Record, known *propagated) (*Record, error) {
	cmd := a.cmds.ofRecord(rec)
	if cmd == nil {
		return nil, fmt.Errorf("%w: the command %q is not declared", errUnavailable, rec.Command)
	}
	// The command carries the trace context (SPEC §10): the producer
	// span's, which continues the request's, or the record's on a republish.
	var name string
	if tracing.Enabled() { // no span name built for nothing
		name = "publish " + cmd.Topic
	}
	ctx, span := tracing.Start(tracing.Continue(ctx, rec.TraceParent, rec.TraceState), name, trace.SpanKindProducer)
	ev := command(cmd, rec)
	ev.TraceParent, ev.TraceState = known.of(ctx)
	kept := context.WithoutCancel(ctx)
	pctx, cancel := context.WithTimeout(kept, a.cfg.PublishWait)
	defer cancel()
	err := a.cmd.Publish(pctx, cmd.Topic, rec.ItemID, ev)
	tracing.End(span, err)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	var stored *Record
	if mr, ok := a.store.(markReader); ok {
		stored, err = mr.markPublished(kept, rec.CorrelationID)
	} else {
		err = a.store.MarkPublished(kept, rec.CorrelationID)
	}
	log := hub.LoggerFrom(ctx, a.log)
	if err != nil {
		// The sweep will publish it again: same identity, one effect.
		log.Warn("takedown published but not marked so", "correlation_id", rec.CorrelationID, "err", err)
	}
	if log.Enabled(ctx, slog.LevelInfo) {
		log.LogAttrs(ctx, slog.LevelInfo, cmd.noun()+" requested", slog.String("correlation_id", rec.CorrelationID),
			slog.String(cmd.Key, rec.ItemID), slog.String("principal", rec.Principal))
	}
	return stored, nil
}

// sweepBatch bounds the takedowns one sweep republishes.
const sweepBatch = 100

// Run republishes, until ctx ends, every takedown whose command is still
// not known to be on the topic PublishWait after its last attempt: one
// whose request got a 503, or whose node died between reserving and the
// broker's ack. Every node runs it; a claim in the store keeps two nodes
// from taking the same takedown at once (and if they did, it would be the
// same command).
func (a *Adapter) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.sweep(ctx)
		}
	}
}

// sweep republishes what is stuck in publishing. It stops at the first
// failure: the broker is likely down, and what it claimed is tried again
// after PublishWait.
func (a *Adapter) sweep(ctx context.Context) {
	recs, err := a.store.ClaimUnpublished(ctx, time.Now().Add(-a.cfg.PublishWait), sweepBatch)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("takedown sweep: reading the outcome store", "err", err)
		}
		return
	}
	for _, rec := range recs {
		if err := a.publish(ctx, rec); err != nil {
			a.republishErrors.Add(1)
			a.log.Warn("takedown sweep: command still not published; trying again later", "correlation_id", rec.CorrelationID, "err", err)
			return
		}
		a.republished.Add(1)
		a.log.Info("takedown sweep: command published again", "correlation_id", rec.CorrelationID)
	}
}

// Republished returns how many commands the sweep published again, and how
// many of its attempts failed.
func (a *Adapter) Republished() (ok, failed uint64) {
	return a.republished.Load(), a.republishErrors.Load()
}

// Post serves POST /v1/takedowns (wrap it in auth.Require).
func (a *Adapter) Post(w http.ResponseWriter, r *http.Request) { a.post(a.td, w, r) }

// PostHandler serves POST /v1/<name> of the declared command name (wrap
// it in auth.Require with its HTTPRoles); nil if there is none.
func (a *Adapter) PostHandler(name string) http.Handler {
	cmd := a.cmds.Lookup(name)
	if cmd == nil {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.post(cmd, w, r) })
}

// GetHandler serves GET /v1/<name>/{correlation_id} of the declared
// command name (wrap it in auth.Require); nil if there is none.
func (a *Adapter) GetHandler(name string) http.Handler {
	cmd := a.cmds.Lookup(name)
	if cmd == nil {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.get(cmd, w, r) })
}

func (a *Adapter) post(cmd *Command, w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	if p == nil {
		hub.WriteRefusal(w, hub.ErrUnauthenticated)
		return
	}
	if cmd == nil {
		problem(w, hub.ProblemNotFound, "no such command is declared", nil)
		return
	}
	if !cmd.allows(p, false) {
		hub.WriteRefusal(w, fmt.Errorf("%w: role %s may not call %s", hub.ErrForbidden, p.Role, cmd.Name))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			problem(w, hub.ProblemUnsupportedMediaType, "send the request as application/json", nil)
			return
		}
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	in, err := cmd.read(body)
	if err != nil {
		problem(w, hub.ProblemBadRequest, err.Error(), nil)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 256 {
		problem(w, hub.ProblemBadRequest, "the Idempotency-Key is over 256 characters", nil)
		return
	}
	if err := a.limit.AllowTakedown(p); err != nil {
		rateLimited(w, err)
		return
	}
	prefs := ParsePrefer(r.Header)
	wait := cmd.timeout(a.cfg.Timeout)
	if prefs.Wait > 0 {
		wait = min(prefs.Wait, a.cfg.MaxWait)
	}
	if prefs.RespondAsync && prefs.Wait == 0 {
		wait = 0
	}

	// A held request takes one of the principal's connection slots, like
	// a WebSocket or an SSE stream: waits cannot pile up without bound.
	// The slot is freed once the answer is written or the client is gone,
	// also when the request was handed off from net/http.
	release := func() {}
	if wait > 0 {
		if release, err = a.limit.Hold(p); err != nil {
			hub.WriteRefusal(w, err)
			return
		}
	}

	start := time.Now()
	log := hub.LoggerFrom(r.Context(), a.log)
	c, err := a.begin(r.Context(), p, in, key)
	if err != nil {
		release()
		if !errors.Is(err, errKeyReused) {
			a.observeCmd(cmd, "unavailable", start)
		}
		a.refuse(cmd, w, err)
		return
	}
	if prefs.Wait > 0 {
		prefs.Wait = wait // report the wait applied, after the cap
	}
	d := &postDoor{a: a, cmd: cmd, c: c, prefs: prefs, start: start, log: *log}
	rec, handedOff, err := a.hold(w, r, c, wait, release, d)
	switch {
	case err != nil:
		a.observeCmd(cmd, "unavailable", start)
		a.refuse(cmd, w, err)
	case handedOff: // the answer is written on the connection
	case rec == nil:
		d.gone() // the takedown goes on, readable later
	default:
		d.respond(w, rec)
	}
}

// postDoor answers a POST of a command (a door of hold).
type postDoor struct {
	a     *Adapter
	cmd   *Command
	c     *call
	prefs Preferences
	start time.Time
	// log is the request's logger, copied: LoggerFrom's points into the
	// request's context, which a handed-off request must not keep.
	log slog.Logger
}

func (d *postDoor) respond(w http.ResponseWriter, rec *Record) {
	a, cmd, log, start := d.a, d.cmd, d.log, d.start
	outcome := outcomeOf(rec, d.prefs.RespondAsync)
	a.observeCmd(cmd, outcome, start)
	if ctx := context.Background(); log.Enabled(ctx, slog.LevelInfo) {
		log.LogAttrs(ctx, slog.LevelInfo, cmd.noun()+" answered", slog.String("correlation_id", rec.CorrelationID),
			slog.String("outcome", outcome), slog.Duration("duration", time.Since(start)))
	}
	a.respond(cmd, w, rec, d.prefs)
}

func (d *postDoor) gone() {
	d.log.Info(d.cmd.noun()+" client hung up; the "+d.cmd.noun()+" goes on", "correlation_id", d.c.id)
}

// readBody reads r's body, at most MaxBodyBytes within BodyTimeout; it
// answers the request itself when it cannot. A body the HTTP guard has
// read already (hub.ReadBody) is taken as it is.
func (a *Adapter) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if body, ok := hub.ReadBody(r); ok && int64(len(body)) <= a.cfg.MaxBodyBytes {
		return body, true
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(a.cfg.BodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		// The deadline stays: net/http may still read the rest of a
		// refused body, and must not wait for it.
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			problem(w, hub.ProblemTooLarge, fmt.Sprintf("the body is over %d bytes", a.cfg.MaxBodyBytes), nil)
			return nil, false
		}
		problem(w, hub.ProblemBadRequest, "could not read the body", nil)
		return nil, false
	}
	_ = rc.SetReadDeadline(time.Time{})
	return body, true
}

// plausible reports whether ev may be an outcome of the takedown id of
// item worth reading the store for: an outcome type from a trusted source
// whose subject, if any, is that item. It spares the store a read for most
// forgeries without decoding the event's data; the store decides.
func (a *Adapter) plausible(cmd *Command, ev *hub.Event, id, item string) bool {
	return cmd.moves(ev.Type) && ev.CorrelationID == id && (ev.Subject == "" || ev.Subject == item) &&
		cmd.trust.check(ev, false) == nil
}

// respond answers from a call's state, per the contract's table.
func (a *Adapter) respond(cmd *Command, w http.ResponseWriter, rec *Record, prefs Preferences) {
	if !cmd.builtin {
		a.respondCommand(cmd, w, rec, prefs)
		return
	}
	id := rec.CorrelationID
	switch {
	case rec.Status == StatusConfirmed:
		writeJSON(w, http.StatusOK, &confirmedBody{ConfirmedAt: rec.ConfirmedAt, CorrelationID: id, ItemID: rec.ItemID,
			RemovedFrom: nonNil(rec.RemovedFrom), Status: StatusConfirmed})
	case rec.Status == StatusRejected && rec.RejectReason == "not_found":
		problem(w, ProblemItemNotFound, fmt.Sprintf("item %s is not known to the item service", rec.ItemID),
			map[string]any{"correlation_id": id, "item_id": rec.ItemID, "reason": rec.RejectReason})
	case rec.Status == StatusRejected:
		problem(w, ProblemRejected, "the item service rejected the takedown: "+rec.RejectReason,
			map[string]any{"correlation_id": id, "item_id": rec.ItemID, "reason": rec.RejectReason})
	case prefs.RespondAsync:
		w.Header().Set("Location", StatusURL(id))
		w.Header().Set("Retry-After", "1")
		applied := "respond-async"
		if prefs.Wait > 0 {
			applied += ", wait=" + strconv.Itoa(int(prefs.Wait.Round(time.Second).Seconds()))
		}
		w.Header().Set("Preference-Applied", applied)
		writeJSON(w, http.StatusAccepted, map[string]any{
			"correlation_id": id, "item_id": rec.ItemID, "status": StatusPending,
			"removed_from": nonNil(rec.RemovedFrom), "status_url": StatusURL(id),
		})
	default:
		w.Header().Set("Location", StatusURL(id))
		problem(w, ProblemNotConfirmed,
			"no outcome yet; the takedown goes on: read status_url, or retry with the same Idempotency-Key",
			map[string]any{"correlation_id": id, "item_id": rec.ItemID, "status_url": StatusURL(id)})
	}
}

// confirmedBody is the 200 answer of a confirmed takedown: its members
// in the order a map of them is written (sorted), so the bytes are those
// of the map.
type confirmedBody struct {
	ConfirmedAt   string   `json:"confirmed_at"`
	CorrelationID string   `json:"correlation_id"`
	ItemID        string   `json:"item_id"`
	RemovedFrom   []string `json:"removed_from"`
	Status        Status   `json:"status"`
}

// refuse answers a request that could not be carried out: a *failure
// may name the takedown kept to be published again.
func (a *Adapter) refuse(cmd *Command, w http.ResponseWriter, err error) {
	// The takedown keeps its v1 wording.
	what, follow := cmd.Name, "it"
	if cmd.builtin {
		what, follow = "takedown", "this takedown"
	}
	var rec *Record
	var f *failure
	if errors.As(err, &f) {
		rec = f.kept
	}
	switch {
	case errors.Is(err, errKeyReused):
		problem(w, ProblemKeyReused, err.Error(), nil)
	case rec != nil:
		// The command may still reach Kafka: it is kept, and published
		// again until a broker acknowledges it, always as this one call.
		w.Header().Set("Retry-After", "2")
		problem(w, hub.ProblemUnavailable,
			"Kafka did not acknowledge the "+what+" command in time; it is kept and published again until it is: retry with the same Idempotency-Key to follow "+follow,
			map[string]any{"correlation_id": rec.CorrelationID, "status_url": cmd.StatusURL(rec.CorrelationID)})
	default:
		w.Header().Set("Retry-After", "2")
		problem(w, hub.ProblemUnavailable, "the "+cmd.noun()+" could not be accepted; nothing was recorded: retry", nil)
	}
}

// Get serves GET /v1/takedowns/{correlation_id} (wrap it in auth.Require):
// the current state; with Prefer: wait=N it holds until the state is final.
func (a *Adapter) Get(w http.ResponseWriter, r *http.Request) { a.get(a.td, w, r) }

func (a *Adapter) get(cmd *Command, w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	id := r.PathValue("correlation_id")
	rec, err := a.store.Get(r.Context(), id)
	// Another principal's call (or another command's) is answered like one
	// that does not exist: a correlation ID's existence is not told to who
	// may not read it.
	if errors.Is(err, ErrNotFound) || (err == nil && (cmd == nil || a.cmds.ofRecord(rec) != cmd ||
		p == nil || (p.Role != auth.RoleModerator && p.Name != rec.Principal))) {
		noun := "takedown"
		if cmd != nil && !cmd.builtin {
			noun = cmd.Name + " call"
		}
		problem(w, hub.ProblemNotFound, "no "+noun+" of yours has this correlation ID (or it expired)", map[string]any{"correlation_id": id})
		return
	}
	if err != nil {
		w.Header().Set("Retry-After", "2")
		problem(w, hub.ProblemUnavailable, "the outcome store is unavailable", nil)
		return
	}
	if prefs := ParsePrefer(r.Header); prefs.Wait > 0 && !rec.Final() {
		if err := a.limit.AllowWait(p); err != nil {
			rateLimited(w, err)
			return
		}
		release, err := a.limit.Hold(p)
		if err != nil {
			hub.WriteRefusal(w, err)
			return
		}
		cur, handedOff, err := a.hold(w, r, a.follow(r.Context(), cmd, rec), min(prefs.Wait, a.cfg.MaxWait), release, stateDoor{cmd})
		switch {
		case handedOff:
			return // the answer is written on the connection
		case err == nil && cur != nil:
			rec = cur
		}
		if r.Context().Err() != nil {
			return
		}
	}
	writeJSON(w, http.StatusOK, stateBody(cmd, rec))
}

// stateDoor answers a held GET with the call's state (a door of hold); a
// hang-up is not logged. One pointer: it is an interface value without an
// allocation.
type stateDoor struct{ cmd *Command }

func (d stateDoor) respond(w http.ResponseWriter, rec *Record) {
	writeJSON(w, http.StatusOK, stateBody(d.cmd, rec))
}

func (stateDoor) gone() {}

func stateBody(cmd *Command, rec *Record) map[string]any {
	if !cmd.builtin {
		return commandState(cmd, rec)
	}
	body := map[string]any{
		"correlation_id": rec.CorrelationID, "item_id": rec.ItemID, "status": rec.Status,
		"removed_from": nonNil(rec.RemovedFrom),
	}
	if rec.ConfirmedAt != "" {
		body["confirmed_at"] = rec.ConfirmedAt
	}
	if rec.RejectReason != "" {
		body["reason"] = rec.RejectReason
	}
	return body
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	// As Header.Set does with these canonical names, with one slice for
	// both values.
	vs := []string{"application/json", "no-store"}
	h := w.Header()
	h["Content-Type"], h["Cache-Control"] = vs[0:1:1], vs[1:2:2]
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// The problem types of the takedown answers.
var (
	ProblemItemNotFound = hub.ProblemType{Slug: "item-not-found", Title: "Item not found", Status: http.StatusNotFound}
	ProblemRejected     = hub.ProblemType{Slug: "takedown-rejected", Title: "Takedown rejected", Status: http.StatusUnprocessableEntity}
	ProblemNotConfirmed = hub.ProblemType{Slug: "not-confirmed-in-time", Title: "Takedown not confirmed in time", Status: http.StatusGatewayTimeout}
	ProblemKeyReused    = hub.ProblemType{Slug: "idempotency-key-reused", Title: "Idempotency-Key reused", Status: http.StatusUnprocessableEntity}
)

func problem(w http.ResponseWriter, t hub.ProblemType, detail string, extra map[string]any) {
	hub.WriteProblem(w, hub.Problem{Type: t, Detail: detail, Extra: extra})
}

// rateLimited answers 429 for a rate limit's refusal, with Retry-After.
func rateLimited(w http.ResponseWriter, err error) {
	var rl *auth.RateLimitError
	if errors.As(err, &rl) {
		w.Header().Set("Retry-After", strconv.Itoa(int(rl.RetryAfter.Seconds())+1))
	}
	problem(w, hub.ProblemRateLimited, err.Error(), nil)
}
