package takedown

import (
	"context"
	"fmt"

	"github.com/switchboard/switchboard/hub"
)

// Publisher is where the Recorder passes events on: the hub.
type Publisher interface {
	Publish(ctx context.Context, channels []string, ev *hub.Event) error
}

// Recorder sits between the Kafka consumer and the hub: it folds every
// takedown event into the outcome store before the hub sees it, so a waiter
// woken by the event, or a retry on any node, finds the store up to date.
// The consumer commits only after both succeeded.
type Recorder struct {
	Store Store
	Next  Publisher
}

// Publish implements the consumer's Publisher.
func (r *Recorder) Publish(ctx context.Context, channels []string, ev *hub.Event) error {
	if ev.CorrelationID != "" && IsOutcome(ev.Type) {
		if err := r.Store.Apply(ctx, ev); err != nil {
			return fmt.Errorf("takedown: outcome store: %w", err)
		}
	}
	return r.Next.Publish(ctx, channels, ev)
}
