package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
)

// kafkaSecret is a password that no output may show.
const kafkaSecret = "pa55-never-shown"

// TestLoadKafkaConn: the TLS and SASL keys from the file, the password
// from SWITCHBOARD_KAFKA_SASL_PASSWORD, reach kafkaconn.Config; without
// them the connection is plaintext with the default dial timeout.
func TestLoadKafkaConn(t *testing.T) {
	ca := kafkaconntest.NewCA(t)
	cert, key, _ := ca.Issue(t, "client", false)

	t.Run("defaults", func(t *testing.T) {
		clearEnv(t)
		c, err := Load("", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.KafkaConn(), (kafkaconn.Config{DialTimeout: kafkaconn.DefaultDialTimeout}); got != want {
			t.Errorf("KafkaConn = %+v, want %+v", got, want)
		}
	})
	t.Run("file and environment", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("SWITCHBOARD_KAFKA_SASL_PASSWORD", kafkaSecret)
		t.Setenv("SWITCHBOARD_KAFKA_DIAL_TIMEOUT", "3s")
		c, err := Load(writeFile(t, fmt.Sprintf(`
kafka:
  brokers: ["kafka-1.example.com:9096"]
  tls:
    enabled: true
    ca_file: %q
    cert_file: %q
    key_file: %q
    server_name: kafka.example.com
  sasl:
    mechanism: SCRAM-SHA-512
    username: switchboard
`, ca.File, cert, key)), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := kafkaconn.Config{
			TLS:         kafkaconn.TLS{Enabled: true, CAFile: ca.File, CertFile: cert, KeyFile: key, ServerName: "kafka.example.com"},
			SASL:        kafkaconn.SASL{Mechanism: "SCRAM-SHA-512", Username: "switchboard", Password: kafkaSecret},
			DialTimeout: 3 * time.Second,
		}
		if got := c.KafkaConn(); got != want {
			t.Errorf("KafkaConn = %+v, want %+v", got, want)
		}
		if _, err := kafkaconn.New(c.KafkaConn()); err != nil {
			t.Errorf("kafkaconn.New(KafkaConn()) = %v", err)
		}
		for _, verb := range []string{"%v", "%+v", "%#v"} {
			if out := fmt.Sprintf(verb, c); strings.Contains(out, kafkaSecret) {
				t.Errorf("Sprintf(%q, config) shows the password", verb)
			}
		}
	})
}

// TestValidateKafkaConn: each mistake in the TLS and SASL keys stops the
// start with a message that names its key, and never shows the password.
func TestValidateKafkaConn(t *testing.T) {
	ca := kafkaconntest.NewCA(t)
	cert, key, _ := ca.Issue(t, "client", false)
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("no certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	external := func(c *Config) { c.Kafka.Brokers = []string{"kafka:9093"} }
	scram := func(c *Config) {
		c.Kafka.SASL = KafkaSASL{Mechanism: "scram-sha-256", Username: "svc", Password: kafkaSecret}
	}
	tlsOn := func(c *Config) { c.Kafka.TLS.Enabled = true }

	tests := []struct {
		name    string
		change  []func(*Config)
		wantKey string // "" means valid
		wantMsg string
	}{
		{"scram over tls with a client certificate", []func(*Config){external, tlsOn, scram, func(c *Config) {
			c.Kafka.TLS.CAFile, c.Kafka.TLS.CertFile, c.Kafka.TLS.KeyFile = ca.File, cert, key
		}}, "", ""},
		{"scram without tls", []func(*Config){external, scram}, "", ""},
		{"plain over tls", []func(*Config){external, tlsOn, scram, func(c *Config) { c.Kafka.SASL.Mechanism = "PLAIN" }}, "", ""},

		{"tls with the embedded broker", []func(*Config){tlsOn}, "kafka.tls.enabled", "the embedded broker is plaintext"},
		{"sasl with the embedded broker", []func(*Config){scram}, "kafka.sasl.password", "kafka.brokers is not set"},
		{"a CA file without tls", []func(*Config){external, func(c *Config) { c.Kafka.TLS.CAFile = ca.File }}, "kafka.tls.ca_file", "kafka.tls.enabled is false"},
		{"an unreadable CA file", []func(*Config){external, tlsOn, func(c *Config) { c.Kafka.TLS.CAFile = missing }}, "kafka.tls.ca_file", "no such file"},
		{"a CA file without a certificate", []func(*Config){external, tlsOn, func(c *Config) { c.Kafka.TLS.CAFile = notPEM }}, "kafka.tls.ca_file", "no PEM certificate"},
		{"a certificate without its key", []func(*Config){external, tlsOn, func(c *Config) { c.Kafka.TLS.CertFile = cert }}, "kafka.tls.key_file", "needed with kafka.tls.cert_file"},
		{"a key without its certificate", []func(*Config){external, tlsOn, func(c *Config) { c.Kafka.TLS.KeyFile = key }}, "kafka.tls.cert_file", "needed with kafka.tls.key_file"},
		{"a key of another certificate", []func(*Config){external, tlsOn, func(c *Config) { c.Kafka.TLS.CertFile, c.Kafka.TLS.KeyFile = cert, ca.File }}, "kafka.tls.cert_file", "client certificate"},
		{"insecure with a CA file", []func(*Config){external, tlsOn, func(c *Config) {
			c.Kafka.TLS.CAFile, c.Kafka.TLS.InsecureSkipVerify = ca.File, true
		}}, "kafka.tls.insecure_skip_verify", "would be ignored"},
		{"an unknown mechanism", []func(*Config){external, scram, func(c *Config) { c.Kafka.SASL.Mechanism = "gssapi" }}, "kafka.sasl.mechanism", `"gssapi" is not one of plain, scram-sha-256, scram-sha-512`},
		{"a mechanism without a username", []func(*Config){external, scram, func(c *Config) { c.Kafka.SASL.Username = "" }}, "kafka.sasl.username", "needed with kafka.sasl.mechanism"},
		{"a mechanism without a password", []func(*Config){external, scram, func(c *Config) { c.Kafka.SASL.Password = "" }}, "kafka.sasl.password", "SWITCHBOARD_KAFKA_SASL_PASSWORD"},
		{"a username without a mechanism", []func(*Config){external, scram, func(c *Config) { c.Kafka.SASL.Mechanism = "" }}, "kafka.sasl.mechanism", "needed with kafka.sasl.username"},
		{"a password without a mechanism", []func(*Config){external, func(c *Config) { c.Kafka.SASL.Password = kafkaSecret }}, "kafka.sasl.mechanism", "needed with kafka.sasl.password"},
		{"plain without tls", []func(*Config){external, scram, func(c *Config) { c.Kafka.SASL.Mechanism = "plain" }}, "kafka.sasl.mechanism", "plain sends the password as it is"},
		{"a username SCRAM can not carry", []func(*Config){external, scram, func(c *Config) { c.Kafka.SASL.Username = "svc\u0007" }}, "kafka.sasl", "SCRAM does not allow"},
		{"no dial timeout", []func(*Config){func(c *Config) { c.Kafka.DialTimeout = 0 }}, "kafka.dial_timeout", "must be > 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := wantDefaults()
			for _, f := range tt.change {
				f(&c)
			}
			err := c.Validate()
			if tt.wantKey == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			prefix := "config: " + tt.wantKey + ": "
			found := false
			for line := range strings.SplitSeq(fmt.Sprint(err), "\n") {
				found = found || strings.HasPrefix(line, prefix) && strings.Contains(line, tt.wantMsg)
			}
			if !found {
				t.Errorf("Validate = %v, want a line starting %q with %q", err, prefix, tt.wantMsg)
			}
			if err != nil && strings.Contains(err.Error(), kafkaSecret) {
				t.Errorf("Validate shows the password: %v", err)
			}
		})
	}
}

// TestLoadKafkaSASLMustBeStrings: a password that YAML reads as a number
// or a boolean is refused, naming the key and not the value, rather than
// changed (0123 would be 123).
func TestLoadKafkaSASLMustBeStrings(t *testing.T) {
	for _, pw := range []string{"0123", "1e3", "true", "0x1F"} {
		t.Run(pw, func(t *testing.T) {
			clearEnv(t)
			_, err := Load(writeFile(t, `
kafka:
  brokers: ["kafka:9093"]
  sasl:
    mechanism: scram-sha-256
    username: svc
    password: `+pw+"\n"), nil)
			if err == nil || !strings.Contains(err.Error(), "config: kafka.sasl.password: must be a string") {
				t.Fatalf("Load = %v, want kafka.sasl.password: must be a string", err)
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}
