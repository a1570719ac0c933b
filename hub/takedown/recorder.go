package takedown

import (
	"context"
	"errors"
	"fmt"

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
	Trust Trust

	untrusted untrustedCounts
}

// Publish implements the consumer's Publisher.
func (r *Recorder) Publish(ctx context.Context, channels []string, ev *hub.Event) error {
	if ev.CorrelationID != "" && IsOutcome(ev.Type) {
		err := r.Trust.check(ev, true)
		if err == nil {
			err = r.Store.Apply(ctx, ev)
		}
		var ue *UntrustedError
		switch {
		case errors.As(err, &ue):
			r.untrusted.add(ue.Reason)
		case err != nil:
			return fmt.Errorf("takedown: outcome store: %w", err)
		}
	}
	return r.Next.Publish(ctx, channels, ev)
}

// Untrusted returns how many outcome events were not trusted, by reason.
func (r *Recorder) Untrusted() map[string]uint64 { return r.untrusted.snapshot() }
