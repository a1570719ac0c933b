package config

import (
	"errors"
	"fmt"
)

// ErrUnknownKey means a configuration source named a key that Switchboard does
// not know, usually a typo; it is refused rather than silently ignored.
var ErrUnknownKey = errors.New("unknown key")

// KeyError reports a problem with one configuration key, so the message at
// start-up says which key to fix. Load and Validate return KeyErrors, joined
// with errors.Join when there are several.
type KeyError struct {
	// Key is the full dotted key, e.g. "hub.history.ttl" or
	// "auth.principals[1].role".
	Key string
	// Err says what is wrong with it; ErrUnknownKey for an unknown key.
	Err error
}

// Error reads `config: unknown key "k"` or `config: k: reason`.
func (e *KeyError) Error() string {
	if errors.Is(e.Err, ErrUnknownKey) {
		return fmt.Sprintf("config: unknown key %q", e.Key)
	}
	return fmt.Sprintf("config: %s: %v", e.Key, e.Err)
}

// Unwrap returns the underlying reason, so errors.Is(err, ErrUnknownKey) works.
func (e *KeyError) Unwrap() error { return e.Err }

func keyErr(key, format string, args ...any) *KeyError {
	return &KeyError{Key: key, Err: fmt.Errorf(format, args...)}
}
