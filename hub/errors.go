package hub

import "errors"

// Sentinel errors of the hub. Callers test them with errors.Is.
var (
	// ErrBadChannel means a channel name does not match the grammar of the
	// contract: a namespace of [a-z0-9._-]{1,64}, optionally ':' and a key of
	// [A-Za-z0-9._~-]{1,128}.
	ErrBadChannel = errors.New("hub: bad channel name")
	// ErrBadCursor means a cursor could not be decoded.
	ErrBadCursor = errors.New("hub: bad cursor")
	// ErrSlowConsumer ends a client whose queue overflowed; it resumes with
	// its cursors.
	ErrSlowConsumer = errors.New("hub: slow consumer")
	// ErrShutdown ends every client when the hub closes.
	ErrShutdown = errors.New("hub: shutting down")
	// ErrClosed is returned by operations on a closed client or hub.
	ErrClosed = errors.New("hub: closed")
	// ErrTooManyChannels refuses a subscription over the per-client limit.
	ErrTooManyChannels = errors.New("hub: too many channels for this client")
	// ErrExpired ends a connection whose credential expired (WithExpiry):
	// WebSocket close 1008 "expired", SSE "event: expired" and the end.
	ErrExpired = errors.New("hub: credential expired")
	// ErrSignedOut ends a connection whose session was signed out
	// (Hub.EndSession): WebSocket close 1008 "signed out", SSE "event:
	// expired" with reason "signed_out" and the end.
	ErrSignedOut = errors.New("hub: signed out")
)

// Clip keeps what an error message repeats of a client's input short: s
// cut to n bytes and "…" when it is longer.
func Clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
