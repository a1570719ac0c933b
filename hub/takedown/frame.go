package takedown

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/auth"
)

// frame is the WebSocket takedown frame.
type frame struct {
	Type           string          `json:"type"`
	ID             json.RawMessage `json:"id,omitempty"`
	ItemID         string          `json:"item_id"`
	Reason         string          `json:"reason"`
	AuthorityRef   string          `json:"authority_ref,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

type ackFrame struct {
	Type          string          `json:"type"`
	ID            json.RawMessage `json:"id,omitempty"`
	CorrelationID string          `json:"correlation_id"`
}

type resultFrame struct {
	Type          string          `json:"type"`
	ID            json.RawMessage `json:"id,omitempty"`
	CorrelationID string          `json:"correlation_id"`
	Status        string          `json:"status"`
	Event         json.RawMessage `json:"event,omitempty"`
}

// Frame is the hub.FrameHandler of the WebSocket "takedown" frame: the
// connection is subscribed to the takedown's corr: channel (so it receives
// the item.removed progress as event frames), gets an ack with the
// correlation ID, and then one result frame: confirmed, rejected, or timeout
// after takedown.timeout.
func (a *Adapter) Frame(ctx context.Context, s *hub.Session, raw []byte) {
	var f frame
	if err := hub.DecodeStrict(raw, &f); err != nil {
		s.SendError(idOf(raw), hub.CodeBadRequest, err.Error()+": a takedown frame has type, id, item_id, reason, authority_ref and idempotency_key")
		return
	}
	p := auth.FromContext(s.Ctx)
	if p == nil || (p.Role != auth.RolePartner && p.Role != auth.RoleModerator) {
		s.SendError(f.ID, hub.CodeForbidden, "only partners and moderators request takedowns over WebSocket")
		return
	}
	req := Request{ItemID: f.ItemID, Reason: f.Reason, AuthorityRef: f.AuthorityRef}
	if err := req.validate(); err != nil {
		s.SendError(f.ID, hub.CodeBadRequest, err.Error())
		return
	}
	if len(f.IdempotencyKey) > 256 {
		s.SendError(f.ID, hub.CodeBadRequest, "the idempotency_key is over 256 characters")
		return
	}
	if err := a.limit.AllowTakedown(p); err != nil {
		s.SendError(f.ID, hub.CodeRateLimited, err.Error())
		return
	}
	start := time.Now()
	c, err := a.begin(ctx, p, &req, f.IdempotencyKey)
	if err != nil {
		if errors.Is(err, errKeyReused) {
			s.SendError(f.ID, hub.CodeBadRequest, err.Error())
			return
		}
		a.observe("unavailable", start)
		s.SendError(f.ID, hub.CodeUnavailable, "the takedown could not be accepted: retry")
		return
	}
	id := c.id
	ack := func(hub.SubscribeResult) []byte {
		b, _ := json.Marshal(ackFrame{Type: "ack", ID: f.ID, CorrelationID: id})
		return b
	}
	// The result follows the outcome's event frame: the call reads the
	// store when the subscription has queued that event. At the deadline
	// the result is timeout, whatever the store holds by then.
	result := func(rec *Record, deadline bool) {
		status, reason, ev := string(rec.Status), rec.RejectReason, rec.Event
		if deadline {
			status, reason, ev = "timeout", "", nil
		}
		outcome := status
		if status == string(StatusRejected) && reason == "not_found" {
			outcome = "not_found"
		}
		a.observe(outcome, start)
		b, _ := json.Marshal(resultFrame{Type: "result", ID: f.ID, CorrelationID: id, Status: status, Event: ev})
		s.Client.Send(b) // to a connection that has gone, it is dropped
	}
	err = c.run(ctx, &session{client: s.Client, ack: ack}, a.cfg.Timeout, result)
	var fl *failure
	switch {
	case err == nil:
	case errors.As(err, &fl) && fl.stage == following:
		if !errors.Is(err, hub.ErrClosed) {
			// Published: the takedown goes on, and GET /v1/takedowns/{id}
			// tells its outcome.
			s.SendError(f.ID, hub.CodeUnavailable, "the takedown "+id+" was published but could not be followed: read its status")
		}
	case errors.As(err, &fl) && fl.stage == publishing:
		a.observe("unavailable", start)
		s.SendError(f.ID, hub.CodeUnavailable, "Kafka did not acknowledge takedown "+id+
			" in time; it is kept and published again until it is: retry with the same idempotency_key to follow it")
	default:
		a.observe("unavailable", start)
		s.SendError(f.ID, hub.CodeUnavailable, "the takedown could not be accepted: retry")
	}
}

// idOf returns a frame's id for an error answer, when the frame is an
// object whose "id" can be read; nil otherwise.
func idOf(raw []byte) json.RawMessage {
	var f struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(raw, &f) != nil || len(f.ID) > 128 {
		return nil
	}
	return f.ID
}
