package takedown

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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
	Command       string          `json:"command,omitempty"`
	CorrelationID string          `json:"correlation_id"`
	Status        string          `json:"status"`
	Code          int             `json:"code,omitempty"`
	Event         json.RawMessage `json:"event,omitempty"`
}

// callFrame is the WebSocket call frame of any declared command.
type callFrame struct {
	Type           string          `json:"type"`
	ID             json.RawMessage `json:"id,omitempty"`
	Command        string          `json:"command"`
	Data           json.RawMessage `json:"data"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

// Frame is the hub.FrameHandler of the WebSocket "takedown" frame: the
// connection is subscribed to the takedown's corr: channel (so it receives
// the item.removed progress as event frames), gets an ack with the
// correlation ID, and then one result frame: confirmed, rejected, or timeout
// after takedown.timeout. It is the call frame of the built-in takedown,
// in its v1 shape.
func (a *Adapter) Frame(ctx context.Context, s *hub.Session, raw []byte) {
	var f frame
	if err := hub.DecodeStrict(raw, &f); err != nil {
		s.SendError(idOf(raw), hub.CodeBadRequest, err.Error()+": a takedown frame has type, id, item_id, reason, authority_ref and idempotency_key")
		return
	}
	cmd := a.td
	if cmd == nil {
		s.SendError(f.ID, hub.CodeNotFound, "takedowns are not a declared command here")
		return
	}
	p := auth.FromContext(s.Ctx)
	if !cmd.allows(p, true) {
		s.SendError(f.ID, hub.CodeForbidden, "only partners and moderators request takedowns over WebSocket")
		return
	}
	in, err := takedownInput(cmd, &Request{ItemID: f.ItemID, Reason: f.Reason, AuthorityRef: f.AuthorityRef})
	if err != nil {
		s.SendError(f.ID, hub.CodeBadRequest, err.Error())
		return
	}
	a.frameCall(ctx, s, p, f.ID, in, f.IdempotencyKey, false)
}

// Call is the hub.FrameHandler of the WebSocket "call" frame (SPEC §5.1):
// {"type":"call","id":"7","command":"<name>","data":{...},"idempotency_key":"..."}.
// It is answered as the takedown frame is: an ack with the correlation ID
// once the command is published, the corr: events, then one result frame
// with the command's name and the outcome's code (504 at the deadline).
func (a *Adapter) Call(ctx context.Context, s *hub.Session, raw []byte) {
	var f callFrame
	if err := hub.DecodeStrict(raw, &f); err != nil {
		s.SendError(idOf(raw), hub.CodeBadRequest, err.Error()+": a call frame has type, id, command, data and idempotency_key")
		return
	}
	cmd := a.cmds.Lookup(f.Command)
	if cmd == nil {
		s.SendError(f.ID, hub.CodeNotFound, fmt.Sprintf("no command %q is declared", hub.Clip(f.Command, 64)))
		return
	}
	p := auth.FromContext(s.Ctx)
	if !cmd.allows(p, true) {
		role := auth.Role("")
		if p != nil {
			role = p.Role
		}
		s.SendError(f.ID, hub.CodeForbidden, fmt.Sprintf("role %s may not call %s over WebSocket", role, cmd.Name))
		return
	}
	if len(f.Data) == 0 {
		s.SendError(f.ID, hub.CodeBadRequest, `"data" is required: the command's members, as a JSON object`)
		return
	}
	in, err := cmd.read(f.Data)
	if err != nil {
		s.SendError(f.ID, hub.CodeBadRequest, "data: "+err.Error())
		return
	}
	a.frameCall(ctx, s, p, f.ID, in, f.IdempotencyKey, true)
}

// frameCall runs a call for a WebSocket frame. named frames (call) name
// the command and the code in their result.
func (a *Adapter) frameCall(ctx context.Context, s *hub.Session, p *auth.Principal, fid json.RawMessage, in *input, key string, named bool) {
	cmd := in.cmd
	noun := cmd.noun()
	if len(key) > 256 {
		s.SendError(fid, hub.CodeBadRequest, "the idempotency_key is over 256 characters")
		return
	}
	if err := a.limit.AllowTakedown(p); err != nil {
		s.SendError(fid, hub.CodeRateLimited, err.Error())
		return
	}
	start := time.Now()
	c, err := a.begin(ctx, p, in, key)
	if err != nil {
		if errors.Is(err, errKeyReused) {
			s.SendError(fid, hub.CodeBadRequest, err.Error())
			return
		}
		a.observeCmd(cmd, "unavailable", start)
		s.SendError(fid, hub.CodeUnavailable, "the "+noun+" could not be accepted: retry")
		return
	}
	id := c.id
	ack := func(hub.SubscribeResult) []byte {
		b, _ := json.Marshal(ackFrame{Type: "ack", ID: fid, CorrelationID: id})
		return b
	}
	name := ""
	if named {
		name = cmd.Name
	}
	// The result follows the outcome's event frame: the call reads the
	// store when the subscription has queued that event. At the deadline
	// the result is timeout, whatever the store holds by then.
	result := func(rec *Record, deadline bool) {
		status, reason, ev, code := string(rec.Status), rec.RejectReason, rec.Event, 0
		if deadline {
			status, reason, ev, code = "timeout", "", nil, http.StatusGatewayTimeout
		} else if rec.Final() {
			code = rec.code()
		}
		outcome := status
		if status == string(StatusRejected) && reason == "not_found" {
			outcome = "not_found"
		}
		a.observeCmd(cmd, outcome, start)
		if !named {
			code = 0
		}
		b, _ := json.Marshal(resultFrame{Type: "result", ID: fid, Command: name, CorrelationID: id, Status: status, Code: code, Event: ev})
		s.Client.Send(b) // to a connection that has gone, it is dropped
	}
	err = c.run(ctx, &session{client: s.Client, ack: ack}, cmd.timeout(a.cfg.Timeout), answerFunc(result))
	var fl *failure
	switch {
	case err == nil:
	case errors.As(err, &fl) && fl.stage == following:
		if !errors.Is(err, hub.ErrClosed) {
			// Published: the call goes on, and GET /v1/<name>/{id} tells
			// its outcome.
			s.SendError(fid, hub.CodeUnavailable, "the "+noun+" "+id+" was published but could not be followed: read its status")
		}
	case errors.As(err, &fl) && fl.stage == publishing:
		a.observeCmd(cmd, "unavailable", start)
		s.SendError(fid, hub.CodeUnavailable, "Kafka did not acknowledge "+noun+" "+id+
			" in time; it is kept and published again until it is: retry with the same idempotency_key to follow it")
	default:
		a.observeCmd(cmd, "unavailable", start)
		s.SendError(fid, hub.CodeUnavailable, "the "+noun+" could not be accepted: retry")
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
