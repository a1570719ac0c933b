// Package sdk is the Go client of Switchboard's WebSocket protocol
// (subprotocol switchboard.v1) for partners: subscribe to channels with
// cursors, survive disconnections without losing or repeating an event,
// and call declared commands such as takedowns.
//
// # Connecting
//
// [Dial] opens a connection with a static token ([Options.Token]) or a
// function that returns a fresh one ([Options.TokenFunc]), which is called
// on every connection and reconnection, so a rotated token is picked up.
// Dial returns once the server has admitted the connection; a refused
// token is an error wrapping [ErrUnauthorized].
//
// # Subscribing and resuming
//
// [Client.Subscribe] subscribes to a channel, live, after a cursor, or
// from the oldest event history holds ([Oldest]). Its [Subscription]
// delivers [Event] values in order on [Subscription.Events]; an [Event]
// with Gap set says history could not cover a resume, and live events
// follow. The client remembers the cursor of the last event it queued for
// each subscription.
//
// # Reconnecting
//
// When the connection ends with close code 1001 (the node is going away),
// 4000 (slow consumer), 1011, 1012, 1013, or abnormally (1006, a network
// error, a protocol ping not answered within [Options.PingInterval]), the
// client reconnects after an exponential backoff with full
// jitter ([Options.MinBackoff], [Options.MaxBackoff]) and resubscribes
// every subscription after its last cursor: each event arrives exactly
// once, in order, as long as the channel's history still holds what was
// missed (otherwise a gap is delivered). Close code 1008 (not authorised,
// or a credential that expired) is retried only when the token function
// returns a token other than the refused one; any other close code ends
// the client, and [Client.Err] tells why.
//
// # Calls
//
// [Client.Call] runs a declared command (docs/commands.md) such as "takedowns":
// the server acknowledges it with a correlation ID, sends the command's
// progress events on its corr: channel and then one result. A call carries
// an idempotency key (made up when none is given), so a call in flight
// when the connection drops is sent again on the next connection and
// joins the same command: it runs once.
//
// # Bounds
//
// Every buffer is bounded. Each subscription queues at most
// [Options.QueueSize] events (default [DefaultQueueSize]); while a queue is
// full the client stops reading the connection, so a subscriber that does
// not keep up is in time disconnected by the server as a slow consumer
// (4000) and resumed from its cursor: events are delayed, never lost or
// repeated. At most [Options.MaxPendingCalls] calls are in flight (default
// [DefaultMaxPendingCalls]); one more fails at once with
// [ErrTooManyCalls]. A server message over [Options.MaxMessageBytes]
// (default [DefaultMaxMessageBytes]) ends the client with
// [ErrMessageTooBig]: resuming would meet the same message again.
package sdk
