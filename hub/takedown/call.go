package takedown

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
	"github.com/switchboard/switchboard/tracing"
)

// call is one takedown request in flight. Its protocol is the one POST
// /v1/takedowns, the held GET and the WebSocket takedown frame share:
//
//	begin    reserve the takedown, or join the one its idempotency key names
//	listen   register the wait on corr:<id>, before anything is published
//	read     read the store, so an outcome already in is never missed
//	publish  send the command unless it is known to be on the topic
//	follow   what the listener does once the command is out (a WebSocket
//	         subscribes, which queues the ack and then the corr: events)
//	wait     until the store holds an outcome, or the deadline
//	answer   once, through the door's callback
//
// An event on corr: only says when to read the store: outcomes are believed
// from the store alone, which only trusted outcomes change (Recorder).
// Every declared command (SPEC §5.1) runs it: its Command gives the
// topic, type, trust, outcomes and timeout; the takedown is the built-in
// declaration.
type call struct {
	a         *Adapter
	cmd       *Command
	id, item  string // the call's correlation ID and key (the takedown's item); fixed
	fresh     bool   // reserved by this call, not joined
	publishes bool   // a GET follows a takedown without publishing it
	ctx       context.Context
	log       slog.Logger // a copy: LoggerFrom's points into the request's context
	l         listener
	// kick, when set, takes the call's wake-ups to a goroutine that
	// reads the store itself (a held HTTP request's); otherwise a wake-up
	// starts a read of its own. c.mu's once the listener runs.
	kick chan struct{}
	// answer gets the takedown's state once: final, or as the store holds
	// it at the deadline (deadline true), or pending when the wait is 0.
	answer answerer

	mu      sync.Mutex
	rec     *Record
	reading bool // a store read is in flight
	reread  bool // woken again while it was
	over    bool // answered or closed
	timer   *time.Timer
	due     time.Time  // the deadline, once armed
	waiting trace.Span // the wait's span, from the deadline's arming to the answer
	prop    propagated // the request's trace context, as begin propagated it

	nextWaiting *call // the next call waiting on the same ID (Adapter.waiting's)
}

// An answerer takes a call's answer (call.answer). A held request's
// handoff is one itself: no func value made per call for its method.
type answerer interface {
	answer(rec *Record, deadline bool)
}

// answerFunc is a func as an answerer.
type answerFunc func(rec *Record, deadline bool)

func (f answerFunc) answer(rec *Record, deadline bool) { f(rec, deadline) }

// A listener is how a call hears of its corr: channel: a hub watch for
// HTTP, the connection's own subscription for a WebSocket. It calls
// c.hear with each event, and with nil for a gap.
type listener interface {
	// listen registers the wait; it runs before the command is published.
	listen(ctx context.Context, c *call) error
	// follow runs once the command is out. reread asks the call to read
	// the store again afterwards.
	follow(ctx context.Context, c *call) (reread bool, err error)
	// stop ends what listen and follow started.
	stop()
}

// begin reserves a takedown for p: a new record, or the one p's
// idempotency key already names. A different request under the same key
// is errKeyReused.
func (a *Adapter) begin(ctx context.Context, p *auth.Principal, in *input, key string) (*call, error) {
	rec := newRecord(p.Name, in, key)
	rec.TraceParent, rec.TraceState = tracing.Propagated(ctx)
	prop := propagated{sc: trace.SpanContextFromContext(ctx), parent: rec.TraceParent, state: rec.TraceState}
	existing, err := a.store.Reserve(ctx, rec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	fresh := existing == nil
	if !fresh {
		if existing.BodyHash != rec.BodyHash {
			return nil, errKeyReused
		}
		rec = existing
	}
	c := a.follow(ctx, in.cmd, rec)
	c.fresh, c.publishes, c.prop = fresh, true, prop
	return c, nil
}

// propagated is what tracing.Propagated gives for the span context sc,
// kept so that it is not written twice for one request.
type propagated struct {
	sc            trace.SpanContext
	parent, state string
}

// of returns what tracing.Propagated(ctx) returns, from p when ctx holds
// p's span context: that is all it depends on.
func (p *propagated) of(ctx context.Context) (traceparent, tracestate string) {
	if p != nil && p.sc.IsValid() && trace.SpanContextFromContext(ctx).Equal(p.sc) {
		return p.parent, p.state
	}
	return tracing.Propagated(ctx)
}

// follow makes a call that waits for an existing takedown and publishes
// nothing (GET with Prefer: wait).
func (a *Adapter) follow(ctx context.Context, cmd *Command, rec *Record) *call {
	// A held GET's spans join the takedown's trace. While tracing is off
	// the call starts no span, so its context needs no span context (the
	// record keeps the request's traceparent for the command): nothing
	// to make, and nothing to keep while it waits.
	cctx := context.Background()
	if tracing.Enabled() {
		cctx = tracing.Continue(detached(ctx), rec.TraceParent, rec.TraceState)
	}
	return &call{a: a, cmd: cmd, id: rec.CorrelationID, item: rec.ItemID, rec: rec,
		ctx: cctx, log: *hub.LoggerFrom(ctx, a.log)}
}

// detached is a context that carries ctx's span context and nothing else
// of ctx: the call outlives its request (a held request handed off from
// net/http), and must not keep the request's contexts, their values and
// the connection's alive while it waits; its spans still continue the
// request's.
func detached(ctx context.Context) context.Context {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return trace.ContextWithSpanContext(context.Background(), sc)
	}
	return context.Background()
}

func (c *call) channel() string { return "corr:" + c.id }

// failure says where run stopped. kept is the takedown left to be
// published again (by a retry of its key or the sweep), if any.
type failure struct {
	stage stage
	kept  *Record
	err   error
}

// stage is a step of run that can fail.
type stage int

const (
	listening  stage = iota // nothing published by this call
	publishing              // the command is kept, to publish again
	following               // the command is out; following it failed
)

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// run carries the call out from its reservation: listen, read, publish,
// follow, wait. Unless it fails, or the call is closed, the answer comes
// once through answer: at once when the store already holds the outcome
// or d is 0, otherwise when a trusted outcome is stored or d has passed.
// A failure is a *failure; what it reserved is released only when no
// command can have been handed to the producer.
func (c *call) run(ctx context.Context, l listener, d time.Duration, answer answerer) error {
	c.l, c.answer = l, answer
	rec := c.rec // nothing else runs yet: the listener is not registered
	if err := l.listen(ctx, c); err != nil {
		l.stop()
		var kept *Record
		if c.fresh {
			c.a.store.Release(c.ctx, rec)
		} else if rec.needsPublish() {
			kept = rec // still to publish: the sweep sees to it
		}
		return &failure{stage: listening, kept: kept, err: fmt.Errorf("%w: %v", errUnavailable, err)}
	}
	// From here the listener may wake the call: c.rec is c.mu's. The
	// store's record may be its own (never changed, MemoryStore): the call
	// publishes from a copy.
	//
	// The store is read now, so an outcome already in is never missed.
	// A takedown this call reserved is the exception on a store whose mark
	// of the published command reads the record (markReader): its command
	// is published at once (a retry of its key, or the sweep, may have
	// published it meanwhile: the same command, applied once), and the
	// mark's read, after registering too, stands for this one.
	_, markReads := c.a.store.(markReader)
	readLater := c.fresh && c.publishes && markReads && rec.needsPublish()
	if !readLater {
		if cur, err := c.a.store.Get(ctx, c.id); err == nil {
			rec = cur
		}
	}
	if c.publishes && rec.needsPublish() {
		// A new takedown, or a retry of one not known to be on the topic:
		// the same command either way. The store knows it is published
		// once publish returns; the call needs only the record's state.
		stored, err := c.a.publishRead(ctx, rec, &c.prop)
		if err != nil {
			l.stop()
			c.log.Warn(c.cmd.noun()+" command not confirmed by Kafka; kept to publish again", "correlation_id", c.id, "err", err)
			return &failure{stage: publishing, kept: rec, err: err}
		}
		var cur *Record
		switch m, ok := c.a.store.(*MemoryStore); {
		case ok:
			// Its record, now published, is shared and costs no read:
			// the call keeps it instead of a copy of its own.
			cur, _ = m.Get(ctx, c.id)
		case stored != nil:
			cur = stored // the mark's read
		case readLater:
			// The mark failed, or found no record: read it as usual.
			cur, _ = c.a.store.Get(ctx, c.id)
		}
		if cur == nil {
			cur = clone(rec) // rec may be the store's: changed on a copy
			cur.Published = true
		}
		rec = cur
	}
	c.mu.Lock()
	if !c.rec.Final() {
		c.rec = rec
	}
	c.mu.Unlock()
	reread, err := l.follow(ctx, c)
	if err != nil {
		l.stop()
		return &failure{stage: following, err: err}
	}
	c.wait(d)
	if reread {
		c.wake()
	}
	return nil
}

// wait arms the deadline, or answers at once.
func (c *call) wait(d time.Duration) {
	c.mu.Lock()
	if c.over {
		c.mu.Unlock()
		return
	}
	rec := c.rec
	if !rec.Final() && d > 0 {
		if tracing.Enabled() { // no span name built for nothing
			_, c.waiting = tracing.Start(c.ctx, c.cmd.Name+" wait", trace.SpanKindInternal)
		}
		c.due = time.Now().Add(d)
		if c.kick == nil {
			c.timer = time.AfterFunc(d, c.expire)
		} // else the goroutine that takes the wake-ups keeps the deadline, until unkick
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.finish(rec, false)
}

// hear is the listener's hook, run under its lock: it must not block. A
// terminal event that may be this takedown's outcome, or a gap (the outcome
// may be among what was missed), sends the store a look.
func (c *call) hear(ev *hub.Event) {
	if ev == nil || (c.cmd.terminal(ev.Type) && c.a.plausible(c.cmd, ev, c.id, c.item)) {
		c.wake()
	}
}

// wake has the store read, by the kick's reader or in the background, one
// read at a time; a final state answers the call. It never blocks.
func (c *call) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kick != nil {
		select {
		case c.kick <- struct{}{}:
		default: // a read is due already
		}
		return
	}
	if c.over {
		return
	}
	if c.reading {
		c.reread = true
		return
	}
	c.reading = true
	go c.settle()
}

// unkick has wake-ups read the store in the background from now on, and
// the deadline, if any, kept by a timer of its own: the goroutine that
// took them no longer waits (a held request handed off from net/http). A
// wake-up it had not taken yet is passed on.
func (c *call) unkick() {
	c.mu.Lock()
	k := c.kick
	c.kick = nil
	if !c.over && !c.due.IsZero() && c.timer == nil {
		c.timer = time.AfterFunc(time.Until(c.due), c.expire)
	}
	c.mu.Unlock()
	select {
	case <-k:
		c.wake()
	default:
	}
}

func (c *call) settle() {
	for {
		c.check()
		c.mu.Lock()
		if !c.reread || c.over {
			c.reading = false
			c.mu.Unlock()
			return
		}
		c.reread = false
		c.mu.Unlock()
	}
}

// check reads the store once; a final state answers the call.
func (c *call) check() {
	cur, err := c.get()
	if err != nil {
		return
	}
	c.mu.Lock()
	if !c.over {
		c.rec = cur
	}
	c.mu.Unlock()
	if cur.Final() {
		c.finish(cur, false)
	}
}

// expire answers at the deadline with the store's state then.
func (c *call) expire() {
	cur, err := c.get()
	if err != nil {
		c.mu.Lock()
		cur = c.rec
		c.mu.Unlock()
	}
	c.finish(cur, true)
}

func (c *call) get() (*Record, error) {
	if m, ok := c.a.store.(*MemoryStore); ok {
		return m.Get(c.ctx, c.id) // never waits
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.a.cfg.PublishWait)
	defer cancel()
	return c.a.store.Get(ctx, c.id)
}

// finish answers the call, once.
func (c *call) finish(rec *Record, deadline bool) {
	c.mu.Lock()
	if c.over {
		c.mu.Unlock()
		return
	}
	c.over = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.endWait()
	c.mu.Unlock()
	var name string
	if tracing.Enabled() { // no span name built for nothing
		name = c.cmd.Name + " answer"
	}
	_, span := tracing.Start(c.ctx, name, trace.SpanKindInternal)
	c.answer.answer(rec, deadline)
	span.End()
}

// endWait ends the wait's span, if any; c.mu is held.
func (c *call) endWait() {
	if c.waiting != nil {
		c.waiting.End()
		c.waiting = nil
	}
}

// close ends the call without answering (the client hung up, or it was
// answered) and stops its listener. The takedown goes on.
func (c *call) close() {
	c.mu.Lock()
	c.over = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.endWait()
	c.mu.Unlock()
	if c.l != nil {
		c.l.stop()
	}
}

// follower listens with a hub watch (Hub.Watch): registered before the
// command is published, no client, no queue, no goroutine; an event only
// says when to read the store, and a nil (events may have been missed)
// does too, as does this node's Recorder once it stored an outcome
// (Adapter.Wake, before the event). The request's goroutine, in await,
// reads the store when woken, until the request is handed off from
// net/http (handoff).
type follower struct {
	end  func()
	done <-chan struct{}
	c    *call // once listening: the call in its adapter's waiting
}

func (f *follower) listen(ctx context.Context, c *call) (err error) {
	c.kick = make(chan struct{}, 1)
	f.end, f.done, err = c.a.hub.Watch(ctx, c.channel(), c.hear)
	if err == nil {
		f.c = c
		c.a.waiting.add(c) // woken by this node's Recorder too (Wake)
	}
	return err
}

func (f *follower) follow(context.Context, *call) (bool, error) { return false, nil }

func (f *follower) stop() {
	if f.c != nil {
		f.c.a.waiting.remove(f.c)
	}
	if f.end != nil {
		f.end()
	}
}

// deadline returns the call's deadline, if one is armed.
func (c *call) deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.due, !c.due.IsZero()
}

// await blocks until c answers through answers or ctx ends (false: the
// client hung up), reading the store when the follow wakes it, or until
// until fires (waited). When the follow ends (the node is shutting down),
// it reads the store every storePoll instead.
func (f *follower) await(ctx context.Context, c *call, answers <-chan *Record, until <-chan time.Time) (rec *Record, ok, waited bool) {
	var poll <-chan time.Time
	done := f.done
	for {
		select {
		case rec := <-answers:
			return rec, true, false
		case <-ctx.Done():
			return nil, false, false
		case <-until:
			return nil, false, true
		case <-c.kick:
			c.check()
		case <-done:
			done = nil
			t := time.NewTicker(storePoll)
			defer t.Stop()
			poll = t.C
		case <-poll:
			c.check()
		}
	}
}

// session listens with a WebSocket connection's own subscription, so the
// corr: events reach the client as event frames. listen pins where
// corr:<id> stands before the command is published; follow subscribes
// from there once it is out, so the ack (queued first) means "accepted and
// published", and every event of the takedown follows it. A joined
// takedown replays what history holds of it.
type session struct {
	client *hub.Client
	ack    func(hub.SubscribeResult) []byte
	from   *hub.Position
}

func (s *session) listen(ctx context.Context, c *call) error {
	if !c.fresh {
		s.from = &hub.Oldest
		return nil
	}
	top, err := c.a.hub.Top(ctx, c.channel())
	s.from = &top
	return err
}

// follow subscribes; the store is read again after it, since a joined
// takedown's outcome may be older than what history holds.
func (s *session) follow(ctx context.Context, c *call) (bool, error) {
	_, err := s.client.Subscribe(ctx, c.channel(), hub.SubscribeOptions{After: s.from, Ack: s.ack, OnEvent: c.hear})
	return true, err
}

// stop leaves the subscription: the connection stays on corr:<id>.
func (s *session) stop() {}
