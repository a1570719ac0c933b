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

// ErrUnknownEnv means a SWITCHBOARD_* environment variable is neither the
// variable of a key nor one of HarnessEnv, usually a typo; it is refused
// rather than silently ignored.
var ErrUnknownEnv = errors.New("unknown environment variable")

// EnvError reports an environment variable that names no key. Load returns
// one per such variable, joined with the other problems.
type EnvError struct {
	// Name is the variable, e.g. "SWITCHBOARD_HUB_HISTORY_SISE".
	Name string
	// Key is the key it was likely meant for, or "".
	Key string
}

// Error reads `config: unknown environment variable SWITCHBOARD_X`, with
// `; did you mean SWITCHBOARD_Y (key y)?` when one is close.
func (e *EnvError) Error() string {
	msg := fmt.Sprintf("config: %v %s", ErrUnknownEnv, e.Name)
	if e.Key != "" {
		msg += fmt.Sprintf("; did you mean %s (key %s)?", envName(e.Key), e.Key)
	}
	return msg
}

// Unwrap returns ErrUnknownEnv.
func (e *EnvError) Unwrap() error { return ErrUnknownEnv }
