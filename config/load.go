package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix is the prefix of environment variables: key hub.history.ttl is
// read from SWITCHBOARD_HUB_HISTORY_TTL.
const EnvPrefix = "SWITCHBOARD"

// Load reads the configuration: defaults, then the YAML file at path (if path
// is not empty), then SWITCHBOARD_* environment variables, then the flags of
// BindFlags that were set on the command line, each overriding the one
// before. If path is empty and flags has a --config that was set, that file
// is read. List values given as one string (environment, flags) are split on
// commas.
//
// Unknown keys and values of the wrong type are errors that name the key, and
// a SWITCHBOARD_* variable that is no key's (nor one of HarnessEnv) is an
// *EnvError; the result is then checked with Validate. The errors are
// *KeyError and *EnvError values, joined with errors.Join when there are
// several.
func Load(path string, flags *pflag.FlagSet) (Config, error) {
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, cloneDefault(d))
	}

	if path == "" && flags != nil && flags.Changed(flagConfig) {
		p, err := flags.GetString(flagConfig)
		if err != nil {
			return Config{}, fmt.Errorf("config: --%s: %w", flagConfig, err)
		}
		path = p
	}
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("config: read %s: %w", path, err)
		}
	}

	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()

	if flags != nil {
		for name, key := range flagKeys {
			f := flags.Lookup(name)
			if f == nil || !f.Changed {
				continue
			}
			if err := v.BindPFlag(key, f); err != nil {
				return Config{}, fmt.Errorf("config: --%s: %w", name, err)
			}
		}
	}

	envErr := unknownEnv(os.Environ())
	if err := envSections(); err != nil {
		return Config{}, errors.Join(envErr, err)
	}
	if err := v1KeysInFile(v); err != nil {
		return Config{}, errors.Join(envErr, err)
	}

	var c Config
	err := v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		listHook,
		durationHook,
		stringSliceHook,
		intHook,
	)))
	if err != nil {
		return Config{}, errors.Join(envErr, decodeErrors(err))
	}
	if envErr != nil {
		return Config{}, envErr
	}

	if err := secretsAreStrings(v); err != nil {
		return Config{}, err
	}

	if path != "" && v.InConfig("commands") && os.Getenv(envName("commands")) == "" {
		if err := restoreWhenCase(path, c.Commands); err != nil {
			return Config{}, err
		}
	}

	// itemsvc.enabled defaults to nil, so Get returns nil unless a source set it.
	if v.Get("itemsvc.enabled") == nil {
		c.ItemSvc.Enabled = c.Embedded()
	}

	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// envSections refuses an environment variable named after a section, such
// as SWITCHBOARD_HUB_HISTORY: viper lets it hide every key below it, which
// would then read as zero.
func envSections() error {
	var errs []error
	seen := map[string]bool{}
	for _, k := range Keys() {
		parts := strings.Split(k, ".")
		for i := 1; i < len(parts); i++ {
			section := strings.Join(parts[:i], ".")
			if seen[section] {
				continue
			}
			seen[section] = true
			name := envName(section)
			if val, ok := os.LookupEnv(name); ok && val != "" {
				errs = append(errs, keyErr(section, "is a section, not a value; unset %s", name))
			}
		}
	}
	return errors.Join(errs...)
}

// envName returns the environment variable of a key.
func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

var durationType = reflect.TypeFor[time.Duration]()

// durationHook parses strings with time.ParseDuration, keeping the value in the
// error (mapstructure's own hook drops it), and refuses bare numbers, which
// mapstructure would otherwise take as nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType || from == durationType {
		return data, nil
	}
	switch from.Kind() {
	case reflect.String:
		return time.ParseDuration(data.(string))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		// "time: missing unit in duration" for anything but 0.
		return time.ParseDuration(fmt.Sprint(data))
	}
	return data, nil
}

// intHook refuses a fraction or an out-of-range number for an integer; YAML
// reads a big number as a float, which mapstructure would truncate or wrap.
func intHook(from, to reflect.Type, data any) (any, error) {
	if to.Kind() != reflect.Int && to.Kind() != reflect.Int64 {
		return data, nil
	}
	if from.Kind() != reflect.Float32 && from.Kind() != reflect.Float64 {
		return data, nil
	}
	f := reflect.ValueOf(data).Float()
	if f != math.Trunc(f) {
		return nil, fmt.Errorf("%v is not a whole number", data)
	}
	if f < math.MinInt64 || f >= math.MaxInt64 {
		return nil, fmt.Errorf("%v is out of range", data)
	}
	return int64(f), nil
}

var stringSliceType = reflect.TypeFor[[]string]()

// listKeys are the list-of-map keys that may be set from one environment
// variable (or flag) holding a YAML (or JSON) list. auth.principals is not
// one of them: tokens belong in a file.
var listTypes = []reflect.Type{reflect.TypeFor[[]TopicRoute](), reflect.TypeFor[[]Command]()}

// listHook parses a string given for kafka.topics or commands, which only
// the environment can give, as a YAML list (JSON is YAML), so
// SWITCHBOARD_KAFKA_TOPICS='[{name: a, channels: [x]}]' works. The list is
// then decoded like the file's, unknown keys and all.
func listHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || !slices.Contains(listTypes, to) {
		return data, nil
	}
	var out any
	if err := yaml.Unmarshal([]byte(data.(string)), &out); err != nil {
		return nil, fmt.Errorf("not a YAML or JSON list: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if out == nil {
		return []any{}, nil
	}
	if _, ok := out.([]any); !ok {
		return nil, fmt.Errorf("not a YAML or JSON list, but %s", kindName(out))
	}
	return out, nil
}

// stringSliceHook splits a comma-separated string into a []string, trimming
// spaces and dropping empty items, so "a, b," is ["a" "b"].
func stringSliceHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != stringSliceType {
		return data, nil
	}
	out := []string{}
	for s := range strings.SplitSeq(data.(string), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// decodeErrors turns mapstructure's error tree into KeyErrors that name the
// full dotted key. Mapstructure reports an unknown key as
// "'hub.history' has invalid keys: histroy, x", which is hard to read.
func decodeErrors(err error) error {
	var out []error
	for _, e := range leaves(err) {
		var de *mapstructure.DecodeError
		if !errors.As(e, &de) {
			out = append(out, fmt.Errorf("config: %w", e))
			continue
		}
		name, cause := de.Name(), de.Unwrap()
		if name == rootName { // mapstructure v2.5 names the root by its type
			name = ""
		}
		if list, ok := strings.CutPrefix(cause.Error(), "has invalid keys: "); ok {
			for k := range strings.SplitSeq(list, ", ") {
				out = append(out, &KeyError{Key: joinKey(name, k), Err: ErrUnknownKey})
			}
			continue
		}
		out = append(out, &KeyError{Key: name, Err: describe(cause)})
	}
	return errors.Join(out...)
}

// rootName is what mapstructure calls the configuration's root in errors.
var rootName = reflect.TypeFor[Config]().String()

// leaves flattens joined and wrapped errors down to the DecodeErrors, or to
// errors that hold none.
func leaves(err error) []error {
	var de *mapstructure.DecodeError
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	case *mapstructure.DecodeError:
		// A DecodeError may wrap more DecodeErrors, which carry full names.
		if errors.As(u.Unwrap(), &de) {
			return leaves(u.Unwrap())
		}
	case interface{ Unwrap() error }:
		if errors.As(u.Unwrap(), &de) {
			return leaves(u.Unwrap())
		}
	}
	return []error{err}
}

func joinKey(parent, k string) string {
	if parent == "" {
		return k
	}
	return parent + "." + k
}

// describe rewrites mapstructure's type errors to show the offending value.
func describe(err error) error {
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		reason := "invalid syntax"
		var ne *strconv.NumError
		if errors.As(pe.Err, &ne) {
			reason = ne.Err.Error()
		} else if pe.Err != nil {
			reason = pe.Err.Error()
		}
		return fmt.Errorf("cannot parse %q as %s: %s", fmt.Sprint(pe.Value), pe.Expected.Type(), reason)
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return fmt.Errorf("expected %s, got %s", ue.Expected.Type(), kindName(ue.Value))
	}
	return err
}

func kindName(v any) string {
	if v == nil {
		return "nothing"
	}
	switch reflect.TypeOf(v).Kind() {
	case reflect.Map:
		return "a map"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.String:
		return fmt.Sprintf("string %q", v)
	}
	return fmt.Sprintf("%T %v", v, v)
}
