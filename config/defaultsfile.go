package config

import (
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// defaultsHeader starts the file of WriteDefaults.
const defaultsHeader = `# Switchboard configuration: every key, set to its default, under a one-line
# comment. Written by "switchboard config defaults"; check a file with
# "switchboard config check --config FILE". Every key can also be set in the
# environment as SWITCHBOARD_ and the key in upper case with "." as "_"
# (hub.history.ttl: SWITCHBOARD_HUB_HISTORY_TTL), which overrides this file.
# Reference: docs/configuration.md.
`

// WriteDefaults writes a YAML configuration file that sets every key to its
// default from the defaults map, in the order of Config's fields, each under
// its one-line comment. Load accepts the file as it is, so it is a starting
// point to edit. Two keys are not set: itemsvc.enabled, whose default is
// decided at load time, is commented out, and a secret (auth.session_secret,
// kafka.sasl.password) is always written empty.
func WriteDefaults(w io.Writer) error {
	var b strings.Builder
	b.WriteString(defaultsHeader)
	written := map[string]bool{}
	if err := writeSection(&b, reflect.TypeFor[Config](), "", 0, written); err != nil {
		return err
	}
	for _, k := range Keys() {
		if !written[k] {
			return fmt.Errorf("config: key %s is no field of Config", k)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeSection writes the fields of struct t, the section prefix, at depth.
func writeSection(b *strings.Builder, t reflect.Type, prefix string, depth int, written map[string]bool) error {
	indent := strings.Repeat("  ", depth)
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("mapstructure")
		if name == "" || name == "-" {
			continue
		}
		key := joinKey(prefix, name)
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			if depth == 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(b, "%s%s:\n", indent, name)
			if err := writeSection(b, f.Type, key, depth+1, written); err != nil {
				return err
			}
			continue
		}
		def, ok := defaults[key]
		if !ok {
			return fmt.Errorf("config: %s has no default", key)
		}
		comment := help[key]
		if comment == "" { // TestWriteDefaultsEveryKey asks for one
			comment = "See docs/configuration.md."
		}
		written[key] = true
		if depth == 0 {
			b.WriteString("\n") // a top-level key is a section of its own
		}
		fmt.Fprintf(b, "%s# %s\n", indent, comment)
		if def == nil {
			// Set in any source, it overrides the choice Load makes.
			fmt.Fprintf(b, "%s# %s: true\n", indent, name)
			continue
		}
		if secretKeys[key] {
			def = ""
		}
		if rv := reflect.ValueOf(def); rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Struct {
			fmt.Fprintf(b, "%s%s:", indent, name)
			if rv.Len() == 0 {
				b.WriteString(" []\n")
				continue
			}
			b.WriteString("\n")
			if err := writeList(b, rv, indent+"  "); err != nil {
				return fmt.Errorf("config: %s: %w", key, err)
			}
			continue
		}
		v, err := yamlValue(def)
		if err != nil {
			return fmt.Errorf("config: %s: %w", key, err)
		}
		fmt.Fprintf(b, "%s%s: %s\n", indent, name, v)
	}
	return nil
}

// yamlValue writes a default as YAML that Load reads back as the same value.
func yamlValue(v any) (string, error) {
	switch d := v.(type) {
	case string:
		return strconv.Quote(d), nil
	case bool:
		return strconv.FormatBool(d), nil
	case int:
		return strconv.Itoa(d), nil
	case int64:
		return strconv.FormatInt(d, 10), nil
	case float64:
		return strconv.FormatFloat(d, 'g', -1, 64), nil
	case time.Duration:
		return formatDuration(d), nil
	case []string:
		q := make([]string, len(d))
		for i, s := range d {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]", nil
	case []any:
		if len(d) == 0 {
			return "[]", nil
		}
	}
	return "", fmt.Errorf("no YAML form for a default of type %T", v)
}

// writeList writes list, a slice of structs, as a YAML block sequence of
// mappings, one field a line; a field that is itself a list of structs
// is a nested block sequence of flow mappings. Fields whose yaml tag says
// omitempty are left out when empty.
func writeList(b *strings.Builder, list reflect.Value, indent string) error {
	for i := range list.Len() {
		first := true
		err := eachField(list.Index(i), func(name string, f reflect.Value) error {
			lead := indent + "  "
			if first {
				lead, first = indent+"- ", false
			}
			if f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct && f.Len() > 0 {
				fmt.Fprintf(b, "%s%s:\n", lead, name)
				for j := range f.Len() {
					v, err := flowValue(f.Index(j))
					if err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					fmt.Fprintf(b, "%s    - %s\n", indent, v)
				}
				return nil
			}
			v, err := flowValue(f)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			fmt.Fprintf(b, "%s%s: %s\n", lead, name, v)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// eachField calls fn with the yaml name and value of each field of the
// struct s, leaving out the empty omitempty ones.
func eachField(s reflect.Value, fn func(name string, f reflect.Value) error) error {
	t := s.Type()
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			return fmt.Errorf("field %s of %s has no yaml name", t.Field(i).Name, t)
		}
		f := s.Field(i)
		if opts == "omitempty" && f.IsZero() || opts == "omitempty" && (f.Kind() == reflect.Slice || f.Kind() == reflect.Map) && f.Len() == 0 {
			continue
		}
		if err := fn(name, f); err != nil {
			return err
		}
	}
	return nil
}

// flowValue writes v as a YAML flow value that Load reads back as v:
// strings quoted, durations in their short form, lists and maps (sorted)
// and structs in flow style.
func flowValue(v reflect.Value) (string, error) {
	if v.Type() == durationType {
		return formatDuration(time.Duration(v.Int())), nil
	}
	switch v.Kind() {
	case reflect.String:
		return strconv.Quote(v.String()), nil
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	case reflect.Int, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range v.Len() {
			s, err := flowValue(v.Index(i))
			if err != nil {
				return "", err
			}
			items[i] = s
		}
		return "[" + strings.Join(items, ", ") + "]", nil
	case reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		items := make([]string, len(keys))
		for i, k := range keys {
			s, err := flowValue(v.MapIndex(k))
			if err != nil {
				return "", err
			}
			items[i] = strconv.Quote(k.String()) + ": " + s
		}
		return "{" + strings.Join(items, ", ") + "}", nil
	case reflect.Struct:
		var items []string
		err := eachField(v, func(name string, f reflect.Value) error {
			s, err := flowValue(f)
			items = append(items, name+": "+s)
			return err
		})
		return "{" + strings.Join(items, ", ") + "}", err
	}
	return "", fmt.Errorf("no YAML form for %s", v.Type())
}

// formatDuration is time.Duration.String without zero trailing units: 1h,
// 1m, 1h30m, 50ms. time.ParseDuration reads it back.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
