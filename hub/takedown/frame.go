package takedown

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
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
	rec, fresh, err := a.begin(ctx, p, &req, f.IdempotencyKey)
	if err != nil {
		if errors.Is(err, errKeyReused) {
			s.SendError(f.ID, hub.CodeBadRequest, err.Error())
		} else {
			s.SendError(f.ID, hub.CodeUnavailable, "the takedown could not be accepted: retry")
		}
		return
	}
	id := rec.CorrelationID
	start := time.Now()
	var done atomic.Bool
	result := func(status, reason string, ev json.RawMessage) []byte {
		if !done.CompareAndSwap(false, true) {
			return nil
		}
		outcome := status
		if status == string(StatusRejected) && reason == "not_found" {
			outcome = "not_found"
		}
		a.observe(outcome, start)
		b, _ := json.Marshal(resultFrame{Type: "result", ID: f.ID, CorrelationID: id, Status: status, Event: ev})
		return b
	}
	// A terminal event that may be this takedown's outcome sends the store
	// a look (the watch must not block); the store, which only trusted
	// outcomes change, says whether the takedown is decided. The result
	// frame then follows the event frame.
	settle := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.PublishWait)
		defer cancel()
		if cur, err := a.store.Get(sctx, id); err == nil && cur.Final() {
			if b := result(string(cur.Status), cur.RejectReason, cur.Event); b != nil {
				s.Client.Send(b)
			}
		}
	}
	watch := func(ev *hub.Event) {
		if ev == nil { // a gap: the outcome may be among what was missed
			if !done.Load() {
				go settle()
			}
			return
		}
		if (ev.Type == TypeConfirmed || ev.Type == TypeRejected) && !done.Load() && a.plausible(ev, rec) {
			go settle()
		}
	}
	ack := func(hub.SubscribeResult) []byte {
		b, _ := json.Marshal(ackFrame{Type: "ack", ID: f.ID, CorrelationID: id})
		return b
	}
	ch := "corr:" + id
	// The command goes out first, so the ack means "accepted and
	// published". The subscription then resumes from where corr:<id> stood
	// before publishing: every event of the takedown comes after the ack,
	// and none is missed. A joined takedown replays what it has had so far.
	from := &hub.Oldest
	if fresh {
		top, err := a.hub.Top(ctx, ch)
		if err != nil {
			a.store.Release(context.WithoutCancel(ctx), rec)
			a.observe("unavailable", start)
			s.SendError(f.ID, hub.CodeUnavailable, "the takedown could not be accepted: retry")
			return
		}
		from = &top
	}
	if rec.needsPublish() {
		if err := a.publish(ctx, rec); err != nil {
			a.observe("unavailable", start)
			s.SendError(f.ID, hub.CodeUnavailable, "Kafka did not acknowledge takedown "+id+
				" in time; it is kept and published again until it is: retry with the same idempotency_key to follow it")
			return
		}
	}
	if _, err := s.Client.Subscribe(ctx, ch, hub.SubscribeOptions{After: from, Ack: ack, OnEvent: watch}); err != nil {
		if !errors.Is(err, hub.ErrClosed) {
			// Published: the takedown goes on, and GET /v1/takedowns/{id}
			// tells its outcome.
			s.SendError(f.ID, hub.CodeUnavailable, "the takedown "+id+" was published but could not be followed: read its status")
		}
		return
	}
	if cur, err := a.store.Get(ctx, id); err == nil && cur.Final() {
		if b := result(string(cur.Status), cur.RejectReason, cur.Event); b != nil {
			s.Client.Send(b)
		}
		return
	}
	// After the timeout, a result frame says so; sent to a connection that
	// has gone, it is dropped.
	time.AfterFunc(a.cfg.Timeout, func() {
		if b := result("timeout", "", nil); b != nil {
			s.Client.Send(b)
		}
	})
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
