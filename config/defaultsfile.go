package config

import (
	"fmt"
	"io"
	"reflect"
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
		fmt.Fprintf(b, "%s# %s\n", indent, comment)
		if def == nil {
			// Set in any source, it overrides the choice Load makes.
			fmt.Fprintf(b, "%s# %s: true\n", indent, name)
			continue
		}
		if secretKeys[key] {
			def = ""
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
