package takedown

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/switchboard/switchboard/hub"
)

// Publisher is where the Recorder passes events on: the hub.
type Publisher interface {
	Publish(ctx context.Context, channels []string, ev *hub.Event) error
}

// Recorder sits between the Kafka consumer and the hub: it folds every
// trusted outcome event into the outcome store before the hub sees it, so a
// waiter woken by the event, or a retry on any node, finds the store up to
// date. The consumer commits only after both succeeded.
//
// An outcome is trusted when Trust accepts its topic and source and the
// store knows its correlation ID and item (SPEC §1.1). An untrusted one is
// still fanned out where it is routed, but changes no takedown; it is
// counted by reason.
type Recorder struct {
	Store Store
	Next  Publisher
	// Commands are the declared commands whose outcomes are recorded,
	// each trusted from its own outcome topic and sources; nil means the
	// built-in takedown alone, trusted as Trust says.
	Commands *Commands
	Trust    Trust
	// Wake, when set, is told of each trusted outcome once the store
	// holds it, before the event goes on to Next: the adapter's calls
	// waiting on this node read the store then (local.go).
	Wake Waker

	once      sync.Once
	cmds      *Commands
	judge     judgeFunc // cmds.judge, made once: a method value per event costs an allocation
	untrusted untrustedCounts
}

func (r *Recorder) commands() *Commands {
	r.once.Do(func() {
		r.cmds = r.Commands
		if r.cmds == nil {
			cs, _ := NewCommands([]Command{Takedowns()}) // the built-in is valid
			cs.list[0].trust = r.Trust                   // as given: the zero Trust accepts nothing
			r.cmds = cs
		}
		r.judge = r.cmds.judge
	})
	return r.cmds
}

// judgeOf returns the judge of the recorded commands' records.
func (r *Recorder) judgeOf() judgeFunc {
	r.commands()
	return r.judge
}

// Publish implements the consumer's Publisher.
func (r *Recorder) Publish(ctx context.Context, channels []string, ev *hub.Event) error {
	if err := r.record(ctx, ev); err != nil {
		return err
	}
	return r.Next.Publish(ctx, channels, ev)
}

var _ hub.BatchPublisher = (*Recorder)(nil)

// PublishBatch implements hub.BatchPublisher: every outcome of the batch is
// folded into the store before any event of the batch is passed on, so a
// waiter woken by one finds the store up to date (a store that can, the
// Redis one, folds them in one round trip); then the batch goes on in one
// call when Next takes batches. A failure leaves the batch to be published
// again whole: folding an outcome in twice changes the record once.
func (r *Recorder) PublishBatch(ctx context.Context, batch []hub.Publication) error {
	ba, ok := r.Store.(batchApplier)
	var evs []*hub.Event
	for _, p := range batch {
		switch err := r.trusted(p.Event); {
		case err != nil:
			if err := r.outcome(err); err != nil {
				return err
			}
		case p.Event.CorrelationID == "" || len(r.commands().byType[p.Event.Type]) == 0:
		case ok:
			evs = append(evs, p.Event)
		default:
			err := r.Store.apply(ctx, p.Event, r.judgeOf())
			if err := r.outcome(err); err != nil {
				return err
			}
			if err == nil {
				r.wake(p.Event)
			}
		}
	}
	if len(evs) > 0 {
		errs := ba.applyAll(ctx, evs, r.judgeOf())
		for _, err := range errs {
			if err := r.outcome(err); err != nil {
				return err
			}
		}
		for i, err := range errs {
			if err == nil {
				r.wake(evs[i])
			}
		}
	}
	if nb, ok := r.Next.(hub.BatchPublisher); ok {
		return nb.PublishBatch(ctx, batch)
	}
	for _, p := range batch {
		if err := r.Next.Publish(ctx, p.Channels, p.Event); err != nil {
			return err
		}
	}
	return nil
}

// batchApplier is a Store that folds several outcomes in at once.
type batchApplier interface {
	applyAll(ctx context.Context, evs []*hub.Event, judge judgeFunc) []error
}

// record folds ev into the store when it is an outcome the store may
// trust; an untrusted one is counted, and changes nothing.
func (r *Recorder) record(ctx context.Context, ev *hub.Event) error {
	if ev.CorrelationID == "" || len(r.commands().byType[ev.Type]) == 0 {
		return nil
	}
	err := r.trusted(ev)
	if err == nil {
		err = r.Store.apply(ctx, ev, r.judgeOf())
	}
	if err == nil {
		r.wake(ev)
	}
	return r.outcome(err)
}

// wake tells Wake of ev, an outcome the store now holds, when its type
// ends a command (an event that only moves one answers no call).
func (r *Recorder) wake(ev *hub.Event) {
	if r.Wake == nil {
		return
	}
	for _, c := range r.commands().byType[ev.Type] {
		if c.terminal(ev.Type) {
			r.Wake.Wake(ev.CorrelationID)
			return
		}
	}
}

// trusted checks an outcome's topic and source: one of the commands its
// type may move must trust them (the store then checks the record's own).
// Nil for an event that is no outcome.
func (r *Recorder) trusted(ev *hub.Event) error {
	if ev.CorrelationID == "" {
		return nil
	}
	var err error
	for _, c := range r.commands().byType[ev.Type] {
		if err = c.trust.check(ev, true); err == nil {
			return nil
		}
	}
	return err
}

// outcome counts an untrusted outcome (nil), or says the store failed.
func (r *Recorder) outcome(err error) error {
	if err == nil {
		return nil // before ue, which errors.As moves to the heap
	}
	var ue *UntrustedError
	switch {
	case errors.As(err, &ue):
		r.untrusted.add(ue.Reason)
	case err != nil:
		return fmt.Errorf("takedown: outcome store: %w", err)
	}
	return nil
}

// Untrusted returns how many outcome events were not trusted, by reason.
func (r *Recorder) Untrusted() map[string]uint64 { return r.untrusted.snapshot() }
