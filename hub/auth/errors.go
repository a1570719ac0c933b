package auth

import "errors"

// Sentinel errors of auth. Callers test them with errors.Is.
var (
	// ErrSessionUncheckable means a session cookie could not be checked
	// against the revocation list (its store did not answer). The cookie is
	// refused: a signed-out session must never pass because the store is
	// down. HTTP answers are 503 with Retry-After.
	ErrSessionUncheckable = errors.New("auth: the session cannot be checked now")
)
