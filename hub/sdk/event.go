package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// CloudEvent is one event as Switchboard delivers it: the CloudEvents
// attributes partners route on, its data, and the whole event as received.
type CloudEvent struct {
	ID            string
	Source        string
	Type          string
	Subject       string
	Time          time.Time // zero when the event has no valid time
	CorrelationID string
	// Data is the event's JSON data, unparsed; empty when it has none.
	Data json.RawMessage
	// Raw is the whole event in CloudEvents structured JSON, as sent.
	Raw json.RawMessage
}

// parseCloudEvent reads a CloudEvent from its structured JSON encoding.
func parseCloudEvent(b []byte) (CloudEvent, error) {
	var w struct {
		ID            string          `json:"id"`
		Source        string          `json:"source"`
		Type          string          `json:"type"`
		Subject       string          `json:"subject"`
		Time          string          `json:"time"`
		CorrelationID string          `json:"correlationid"`
		Data          json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return CloudEvent{}, err
	}
	e := CloudEvent{ID: w.ID, Source: w.Source, Type: w.Type, Subject: w.Subject,
		CorrelationID: w.CorrelationID, Data: w.Data, Raw: append(json.RawMessage(nil), b...)}
	if t, err := time.Parse(time.RFC3339Nano, w.Time); err == nil {
		e.Time = t
	}
	return e, nil
}

// Event is what a subscription delivers: an event of its channel with the
// cursor to resume after it, or, when Gap is set, a notice that history
// could not cover a resume (the CloudEvent and Cursor are then empty, and
// live events follow).
type Event struct {
	Channel string
	Cursor  string
	Gap     bool
	CloudEvent
}

// Result is the outcome of a call.
type Result struct {
	// Status is the outcome the server reports: "confirmed", "rejected" or
	// "timeout" for takedowns, or a declared command's own.
	Status string
	// Code is the outcome's HTTP status for the same command over POST
	// /v1/<command>: 200, 404 (not found), 422 (rejected), 504 (timeout);
	// 0 from a node that predates call frames.
	Code          int
	CorrelationID string
	// Event is the terminal event (nil on timeout).
	Event *CloudEvent
	// Progress are the events of the call's corr: channel that arrived
	// before the result, each once, in order (at most maxProgress).
	Progress []CloudEvent
}

// Reason is the terminal event's data member "reason" (such as
// "not_found" for a rejected takedown of an unknown item), or "".
func (r *Result) Reason() string {
	if r.Event == nil {
		return ""
	}
	var d struct {
		Reason string `json:"reason"`
	}
	json.Unmarshal(r.Event.Data, &d)
	return d.Reason
}

// Errors of the client; test with errors.Is.
var (
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("sdk: client closed")
	// ErrUnauthorized: the server refused the token (close 1008, or 401/403
	// at the handshake) and no other token was to be had.
	ErrUnauthorized = errors.New("sdk: not authorised")
	// ErrTooManyCalls: Options.MaxPendingCalls calls are already in flight.
	ErrTooManyCalls = errors.New("sdk: too many calls in flight")
	// ErrMessageTooBig: the server sent a message over
	// Options.MaxMessageBytes.
	ErrMessageTooBig = errors.New("sdk: server message too big")
	// ErrAlreadySubscribed: the client has a subscription to that channel.
	ErrAlreadySubscribed = errors.New("sdk: already subscribed")
)

// ServerError is the server's error frame answering a request: Code is
// one of bad_request, forbidden, not_found, rate_limited, unavailable.
type ServerError struct {
	Code    string
	Message string
}

func (e *ServerError) Error() string { return fmt.Sprintf("sdk: server: %s: %s", e.Code, e.Message) }

// CloseError is a close of the connection by the server that the client
// does not retry.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("sdk: connection closed with %d %q", e.Code, e.Reason)
}
