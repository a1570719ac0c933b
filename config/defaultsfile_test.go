package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

// writeDefaultsFile writes WriteDefaults' output to a file and returns its
// path and contents.
func writeDefaultsFile(t *testing.T) (string, string) {
	t.Helper()
	var b bytes.Buffer
	if err := WriteDefaults(&b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "defaults.yaml")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b.String()
}

// TestWriteDefaultsRoundTrip: Load reads the file of WriteDefaults as it
// is, to exactly the configuration of no file at all, with the embedded
// broker and with an external cluster (itemsvc.enabled still follows).
func TestWriteDefaultsRoundTrip(t *testing.T) {
	for _, env := range []map[string]string{nil, {"SWITCHBOARD_KAFKA_BROKERS": "k1:9092"}} {
		clearEnv(t)
		for k, v := range env {
			t.Setenv(k, v)
		}
		path, _ := writeDefaultsFile(t)
		got, err := Load(path, nil)
		if err != nil {
			t.Fatalf("env %v: Load of the defaults file: %v", env, err)
		}
		want, err := Load("", nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("env %v: the defaults file loads as\n%+v\nwant\n%+v", env, got, want)
		}
	}
}

// TestWriteDefaultsEveryKey: the file sets every key but itemsvc.enabled
// (commented out), each once, under its one-line comment from
// config/help.go.
func TestWriteDefaultsEveryKey(t *testing.T) {
	_, out := writeDefaultsFile(t)
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(out)); err != nil {
		t.Fatalf("the file is not YAML: %v\n%s", err, out)
	}
	var want []string
	for _, k := range Keys() {
		if k != "itemsvc.enabled" {
			want = append(want, k)
		}
	}
	if got := slices.Sorted(slices.Values(v.AllKeys())); !slices.Equal(got, want) {
		t.Errorf("keys set:\n%v\nwant\n%v", got, want)
	}
	if !strings.Contains(out, "\n  # enabled: true\n") {
		t.Error("itemsvc.enabled is not commented out")
	}
	for _, k := range Keys() {
		if help[k] == "" {
			t.Errorf("key %s has no one-line comment in config/help.go", k)
			continue
		}
		if strings.Contains(help[k], "\n") {
			t.Errorf("the comment of %s is more than one line", k)
		}
		if n := strings.Count(out, "# "+help[k]+"\n"); n != 1 {
			t.Errorf("the comment of %s is in the file %d times, want once", k, n)
		}
	}
	if !strings.Contains(out, "docs/configuration.md") {
		t.Error("the file does not name the configuration reference")
	}
}

// TestWriteDefaultsSecretsEmpty: a secret is written empty even when it has
// a default.
func TestWriteDefaultsSecretsEmpty(t *testing.T) {
	old := defaults["auth.session_secret"]
	defaults["auth.session_secret"] = "s3cret-default"
	t.Cleanup(func() { defaults["auth.session_secret"] = old })
	_, out := writeDefaultsFile(t)
	if strings.Contains(out, "s3cret-default") {
		t.Fatalf("the secret is in the file:\n%s", out)
	}
	if !strings.Contains(out, "\n  session_secret: \"\"\n") {
		t.Errorf("auth.session_secret is not written empty:\n%s", out)
	}
}
