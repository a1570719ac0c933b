package kafkaconn

import "errors"

// What Check found wrong, tested with errors.Is. Each error of Check wraps
// exactly one of them.
var (
	// ErrUnreachable: no connection to the broker (refused, no route, the
	// dial timed out), or a connection that closed or stayed silent before
	// the broker said anything, as a listener does that expects another
	// protocol (TLS, SASL) than the one configured.
	ErrUnreachable = errors.New("unreachable")
	// ErrTLSVerification: a certificate was refused, the broker's by us
	// (unknown authority, wrong name, expired) or ours by the broker.
	ErrTLSVerification = errors.New("TLS verification failed")
	// ErrTLSHandshake: the TLS handshake failed for another reason,
	// usually a listener that does not speak TLS.
	ErrTLSHandshake = errors.New("TLS handshake failed")
	// ErrAuthRefused: the broker refused the SASL authentication: a wrong
	// username or password, or a mechanism it does not offer.
	ErrAuthRefused = errors.New("authentication refused")
)
