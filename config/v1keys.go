package config

import (
	"errors"
	"maps"
	"slices"

	"github.com/spf13/viper"
)

// ErrV1Key means a configuration source set a key of the v1 configuration
// that v2 replaced; the KeyError names the key to use instead.
var ErrV1Key = errors.New("v1 key")

// v1Keys maps each key v2 replaced (SPEC §2.1) to what replaces it.
var v1Keys = map[string]string{
	"kafka.topics.reports":  `kafka.topics, a list of {name, types, channels}: the entry with the "reports" channel`,
	"kafka.topics.commands": `commands[].topic (the "takedowns" command's) and its entry in kafka.topics`,
	"kafka.topics.events":   `commands[].outcome_topic (the "takedowns" command's) and its entry in kafka.topics`,
	"kafka.topics.dlq":      "kafka.dlq",
	"routing.reports":       "kafka.topics[].channels (the entry of items.reported)",
	"routing.commands":      "kafka.topics[].channels (the entry of takedown.commands)",
	"routing.events":        "kafka.topics[].channels (the entry of takedown.events)",
}

// v1Error is the KeyError of v1 key k.
func v1Error(k string) *KeyError {
	return &KeyError{Key: k, Err: &v1KeyError{use: v1Keys[k]}}
}

type v1KeyError struct{ use string }

func (e *v1KeyError) Error() string { return "is a v1 key; v2 replaced it by " + e.use }
func (e *v1KeyError) Unwrap() error { return ErrV1Key }

// v1KeysInFile returns a KeyError for each v1 key the configuration file
// sets, before the file's kafka.topics map fails to decode as a list with
// a message that would not say why.
func v1KeysInFile(v *viper.Viper) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(v1Keys)) {
		if v.InConfig(k) {
			errs = append(errs, v1Error(k))
		}
	}
	return errors.Join(errs...)
}
