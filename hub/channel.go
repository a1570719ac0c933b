package hub

import (
	"fmt"
	"strings"
)

// Channel name limits of the contract.
const (
	maxNamespace = 64
	maxKey       = 128
)

// clipName is how much of a client's name or cursor an error repeats.
const clipName = 80

// ValidateChannel reports whether name is a valid channel name: a namespace of
// [a-z0-9._-]{1,64}, optionally followed by ':' and a key of
// [A-Za-z0-9._~-]{1,128}. The error wraps ErrBadChannel and says what is wrong.
func ValidateChannel(name string) error {
	ns, key, hasKey := strings.Cut(name, ":")
	if len(ns) == 0 || len(ns) > maxNamespace {
		return fmt.Errorf("%w: %q: the namespace must be 1 to %d characters", ErrBadChannel, Clip(name, clipName), maxNamespace)
	}
	for i := 0; i < len(ns); i++ {
		if c := ns[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q: the namespace may hold only a-z 0-9 . _ -", ErrBadChannel, Clip(name, clipName))
		}
	}
	if !hasKey {
		return nil
	}
	if len(key) == 0 || len(key) > maxKey {
		return fmt.Errorf("%w: %q: the key after ':' must be 1 to %d characters", ErrBadChannel, Clip(name, clipName), maxKey)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return fmt.Errorf("%w: %q: the key may hold only A-Z a-z 0-9 . _ ~ -", ErrBadChannel, Clip(name, clipName))
		}
	}
	return nil
}
