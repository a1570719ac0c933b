package config

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// configDoc is the configuration reference, relative to this package.
const configDoc = "../docs/configuration.md"

// docRow is one row of a reference table of configDoc: | Key | Default |
// Environment variable | Flag | Meaning |.
type docRow struct {
	line                       int
	key, def, env, flag, means string
}

var (
	backticked = regexp.MustCompile("`([^`]*)`")
	docKeyRe   = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
)

// readConfigDoc parses the rows of every table of configDoc whose header's
// first cell is "Key". The first cell of a row must be one backticked key.
func readConfigDoc(t *testing.T) []docRow {
	t.Helper()
	f, err := os.Open(configDoc)
	if err != nil {
		t.Fatalf("open the configuration reference: %v", err)
	}
	defer f.Close()

	var rows []docRow
	inTable := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := splitRow(line)
		if len(cells) > 0 && strings.EqualFold(cells[0], "Key") {
			inTable = true
			if len(cells) != 5 {
				t.Errorf("%s:%d: a reference table needs 5 columns (Key, Default, Environment variable, Flag, Meaning), has %d", configDoc, n, len(cells))
			}
			continue
		}
		if !inTable || isSeparator(cells) {
			continue
		}
		if len(cells) != 5 {
			t.Errorf("%s:%d: want 5 cells, got %d: %s", configDoc, n, len(cells), line)
			continue
		}
		m := backticked.FindAllStringSubmatch(cells[0], -1)
		if len(m) != 1 || m[0][0] != cells[0] || !docKeyRe.MatchString(m[0][1]) {
			t.Errorf("%s:%d: the first cell must be one backticked key like `hub.history.size`, got %q", configDoc, n, cells[0])
			continue
		}
		rows = append(rows, docRow{line: n, key: m[0][1], def: cells[1], env: cells[2], flag: cells[3], means: cells[4]})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", configDoc, err)
	}
	return rows
}

// splitRow splits a Markdown table row into trimmed cells. The reference
// has no escaped pipes.
func splitRow(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	cells := strings.Split(line, "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

func isSeparator(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, ":-") != "" {
			return false
		}
	}
	return true
}

// TestConfigurationDocKeys fails when a key exists in the code but not in
// docs/configuration.md, or the other way round, or is documented twice.
func TestConfigurationDocKeys(t *testing.T) {
	rows := readConfigDoc(t)
	if len(rows) == 0 {
		t.Fatalf("%s has no reference table rows", configDoc)
	}
	documented := map[string]int{}
	for _, r := range rows {
		if prev, dup := documented[r.key]; dup {
			t.Errorf("%s:%d: `%s` is documented twice (also line %d)", configDoc, r.line, r.key, prev)
		}
		documented[r.key] = r.line
	}
	keys := Keys()
	for _, k := range keys {
		if _, ok := documented[k]; !ok {
			t.Errorf("key %q is in config.Keys() but not documented in %s", k, configDoc)
		}
	}
	for _, r := range rows {
		if !slices.Contains(keys, r.key) {
			t.Errorf("%s:%d: `%s` is documented but is not in config.Keys()", configDoc, r.line, r.key)
		}
	}
}

// TestConfigurationDocDefaults checks each documented default against
// Defaults(). The documented form is: one backticked value for a scalar
// (durations in the short form of shortDuration, like `1h` or `50ms`), the
// backticked items of a non-empty list, and no backticked value ("none")
// for an empty string or list. itemsvc.enabled, whose default is decided in
// Load, is documented in words.
func TestConfigurationDocDefaults(t *testing.T) {
	defs := Defaults()
	for _, r := range readConfigDoc(t) {
		d, ok := defs[r.key]
		if !ok {
			continue // reported by TestConfigurationDocKeys
		}
		if err := checkDocDefault(d, r.def); err != nil {
			t.Errorf("%s:%d: `%s` default %q: %v", configDoc, r.line, r.key, r.def, err)
		}
		if r.means == "" {
			t.Errorf("%s:%d: `%s` has no meaning", configDoc, r.line, r.key)
		}
	}
}

func checkDocDefault(def any, cell string) error {
	var vals []string
	for _, m := range backticked.FindAllStringSubmatch(cell, -1) {
		vals = append(vals, m[1])
	}
	one := func() (string, error) {
		if len(vals) != 1 {
			return "", fmt.Errorf("want exactly one backticked value, found %d", len(vals))
		}
		return vals[0], nil
	}
	switch d := def.(type) {
	case nil:
		if len(vals) != 0 || cell == "" {
			return fmt.Errorf("a default decided at load time is described in words, without a backticked value")
		}
	case []string:
		if len(d) == 0 {
			if len(vals) != 0 || cell == "" {
				return fmt.Errorf(`an empty list is documented as "none", without a backticked value`)
			}
			return nil
		}
		if !slices.Equal(vals, d) {
			return fmt.Errorf("want the backticked items %q, got %q", d, vals)
		}
	case []any:
		if len(d) != 0 {
			return fmt.Errorf("non-empty default %v cannot be checked", d)
		}
		if len(vals) != 0 || cell == "" {
			return fmt.Errorf(`an empty list is documented as "none", without a backticked value`)
		}
	case string:
		if d == "" {
			if len(vals) != 0 || cell == "" {
				return fmt.Errorf(`an empty string is documented as "none", without a backticked value`)
			}
			return nil
		}
		v, err := one()
		if err != nil {
			return err
		}
		if v != d {
			return fmt.Errorf("want `%s`", d)
		}
	case time.Duration:
		v, err := one()
		if err != nil {
			return err
		}
		if want := shortDuration(d); v != want {
			return fmt.Errorf("want `%s`", want)
		}
	case int, int64:
		v, err := one()
		if err != nil {
			return err
		}
		if want := fmt.Sprint(d); v != want {
			return fmt.Errorf("want `%s`", want)
		}
	case float64:
		v, err := one()
		if err != nil {
			return err
		}
		if f, err := strconv.ParseFloat(v, 64); err != nil || f != d {
			return fmt.Errorf("want `%s`", strconv.FormatFloat(d, 'g', -1, 64))
		}
	case bool:
		v, err := one()
		if err != nil {
			return err
		}
		if want := strconv.FormatBool(d); v != want {
			return fmt.Errorf("want `%s`", want)
		}
	case []TopicRoute:
		// The table names the topics; a section shows the whole list.
		var names []string
		for _, r := range d {
			names = append(names, r.Name)
		}
		if !slices.Equal(vals, names) {
			return fmt.Errorf("want the backticked topic names %q, got %q", names, vals)
		}
	case []Command:
		var names []string
		for _, c := range d {
			names = append(names, c.Name)
		}
		if !slices.Equal(vals, names) {
			return fmt.Errorf("want the backticked command names %q, got %q", names, vals)
		}
	default:
		return fmt.Errorf("no rule to document a default of type %T", def)
	}
	return nil
}

// shortDuration is time.Duration.String without zero trailing units, so
// 1h0m0s is 1h and 1m0s is 1m; 1h30m0s is 1h30m, 50ms stays 50ms. It is the
// form the configuration reference uses, and time.ParseDuration reads it.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour:                    "1h",
		24 * time.Hour:               "24h",
		time.Minute:                  "1m",
		90 * time.Minute:             "1h30m",
		time.Hour + 5*time.Second:    "1h0m5s",
		15 * time.Second:             "15s",
		50 * time.Millisecond:        "50ms",
		time.Minute + 30*time.Second: "1m30s",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(want); err != nil || back != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", want, back, err, d)
		}
	}
}

// TestConfigurationDocEnvAndFlags checks each row's environment variable
// and flag against envName and BindFlags' flags.
func TestConfigurationDocEnvAndFlags(t *testing.T) {
	flagOf := map[string]string{}
	for name, key := range flagKeys {
		flagOf[key] = "--" + name
	}
	for _, r := range readConfigDoc(t) {
		var env []string
		for _, m := range backticked.FindAllStringSubmatch(r.env, -1) {
			env = append(env, m[1])
		}
		switch {
		case r.key == "auth.principals":
			// A list of maps cannot be one environment variable; Load
			// refuses SWITCHBOARD_AUTH_PRINCIPALS.
			if len(env) != 0 {
				t.Errorf("%s:%d: `%s` is read from the file only; document no environment variable", configDoc, r.line, r.key)
			}
		case len(env) != 1 || env[0] != envName(r.key):
			t.Errorf("%s:%d: `%s` environment variable: want `%s`, got %q", configDoc, r.line, r.key, envName(r.key), r.env)
		}

		var flags []string
		for _, m := range backticked.FindAllStringSubmatch(r.flag, -1) {
			flags = append(flags, m[1])
		}
		if want, ok := flagOf[r.key]; ok {
			if len(flags) != 1 || flags[0] != want {
				t.Errorf("%s:%d: `%s` flag: want `%s`, got %q", configDoc, r.line, r.key, want, r.flag)
			}
		} else if len(flags) != 0 {
			t.Errorf("%s:%d: `%s` has no flag, but the reference names %q", configDoc, r.line, r.key, flags)
		}
	}
}
