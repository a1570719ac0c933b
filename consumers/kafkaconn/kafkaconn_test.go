package kafkaconn_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/switchboard/switchboard/consumers/kafkatest"

	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kafkatest.IgnoreBrokerGoroutines()...)
}

// waitLong bounds a wait on the broker; it only decides how long a broken
// test hangs.
const waitLong = 30 * time.Second

const secret = "hunter2-never-printed"

func TestNew(t *testing.T) {
	ca := kafkaconntest.NewCA(t)
	certFile, keyFile, _ := ca.Issue(t, "client", false)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	on := func(tl kafkaconn.TLS) kafkaconn.TLS { tl.Enabled = true; return tl }
	scram := kafkaconn.SASL{Mechanism: "scram-sha-256", Username: "u", Password: secret}

	tests := []struct {
		name    string
		cfg     kafkaconn.Config
		wantErr string // "" means accepted
	}{
		{"zero: plaintext", kafkaconn.Config{}, ""},
		{"tls with the system roots", kafkaconn.Config{TLS: on(kafkaconn.TLS{})}, ""},
		{"tls with a CA and a client certificate", kafkaconn.Config{TLS: on(kafkaconn.TLS{CAFile: ca.File, CertFile: certFile, KeyFile: keyFile})}, ""},
		{"scram without tls", kafkaconn.Config{SASL: scram}, ""},
		{"mechanism in upper case", kafkaconn.Config{SASL: kafkaconn.SASL{Mechanism: "SCRAM-SHA-512", Username: "u", Password: secret}}, ""},
		{"plain over tls", kafkaconn.Config{TLS: on(kafkaconn.TLS{}), SASL: kafkaconn.SASL{Mechanism: "plain", Username: "u", Password: secret}}, ""},

		{"plain without tls", kafkaconn.Config{SASL: kafkaconn.SASL{Mechanism: "plain", Username: "u", Password: secret}}, "needs TLS"},
		{"unknown mechanism", kafkaconn.Config{SASL: kafkaconn.SASL{Mechanism: "gssapi", Username: "u", Password: secret}}, `"gssapi" is not one of plain, scram-sha-256, scram-sha-512`},
		{"no username", kafkaconn.Config{SASL: kafkaconn.SASL{Mechanism: "scram-sha-256", Password: secret}}, "needs a username"},
		{"no password", kafkaconn.Config{SASL: kafkaconn.SASL{Mechanism: "scram-sha-256", Username: "u"}}, "needs a password"},
		{"password without mechanism", kafkaconn.Config{SASL: kafkaconn.SASL{Password: secret}}, "no SASL mechanism"},
		{"certificate without key", kafkaconn.Config{TLS: on(kafkaconn.TLS{CertFile: certFile})}, "needs its key file"},
		{"key without certificate", kafkaconn.Config{TLS: on(kafkaconn.TLS{KeyFile: keyFile})}, "needs its certificate file"},
		{"key of another certificate", kafkaconn.Config{TLS: on(kafkaconn.TLS{CertFile: certFile, KeyFile: ca.File})}, "client certificate"},
		{"unreadable CA file", kafkaconn.Config{TLS: on(kafkaconn.TLS{CAFile: missing})}, "no such file"},
		{"CA file without a certificate", kafkaconn.Config{TLS: on(kafkaconn.TLS{CAFile: notPEM})}, "no PEM certificate"},
		{"tls settings without tls", kafkaconn.Config{TLS: kafkaconn.TLS{CAFile: ca.File, InsecureSkipVerify: true}}, "TLS CA file, insecure skip verify given, but TLS is not enabled"},
		{"negative dial timeout", kafkaconn.Config{DialTimeout: -time.Second}, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := kafkaconn.New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New = %v, want nil", err)
				}
				if d := s.Dialer(); d.Timeout != kafkaconn.DefaultDialTimeout || (d.TLS != nil) != tt.cfg.TLS.Enabled || (d.SASLMechanism != nil) != (tt.cfg.SASL.Mechanism != "") {
					t.Errorf("Dialer = timeout %s, tls %v, sasl %v; want %s, %v, %v", d.Timeout, d.TLS != nil, d.SASLMechanism,
						kafkaconn.DefaultDialTimeout, tt.cfg.TLS.Enabled, tt.cfg.SASL.Mechanism)
				}
				if tr := s.Transport(); (tr.TLS != nil) != tt.cfg.TLS.Enabled || (tr.SASL != nil) != (tt.cfg.SASL.Mechanism != "") || tr.DialTimeout != kafkaconn.DefaultDialTimeout {
					t.Errorf("Transport = tls %v, sasl %v, timeout %s", tr.TLS != nil, tr.SASL, tr.DialTimeout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "kafkaconn: ") {
				t.Fatalf("New = %v, want an error starting kafkaconn: and holding %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// TestPasswordNeverPrinted: printing or logging the configuration, in
// any verb or handler, never shows the password.
func TestPasswordNeverPrinted(t *testing.T) {
	cfg := kafkaconn.Config{SASL: kafkaconn.SASL{Mechanism: "scram-sha-256", Username: "svc", Password: secret}}
	s, err := kafkaconn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, v := range []any{cfg, &cfg, cfg.SASL, s} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
	}
	slog.New(slog.NewJSONHandler(&out, nil)).Info("x", "cfg", cfg, "sasl", cfg.SASL, "settings", s)
	slog.New(slog.NewTextHandler(&out, nil)).Info("x", "cfg", cfg, "sasl", cfg.SASL, "settings", s)
	if strings.Contains(out.String(), secret) {
		t.Fatalf("the password is printed:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "svc") || !strings.Contains(out.String(), "SCRAM-SHA-256") {
		t.Errorf("the user and mechanism should be printed:\n%s", out.String())
	}
}

// secureTopic is the topic of the secure brokers.
const secureTopic = "secure.topic"

// TestCheck runs Check against real brokers that require TLS, a client
// certificate or SASL, with right and wrong settings.
func TestCheck(t *testing.T) {
	plainBroker := kafkaconntest.Start(t, kafkaconntest.Options{Topics: []string{secureTopic}})
	tlsBroker := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, Topics: []string{secureTopic}})
	mtlsBroker := kafkaconntest.Start(t, kafkaconntest.Options{ClientCert: true, Topics: []string{secureTopic}})
	saslBroker := kafkaconntest.Start(t, kafkaconntest.Options{SASL: true, Topics: []string{secureTopic}})
	saslTLSBroker := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Topics: []string{secureTopic}})
	otherCA := kafkaconntest.NewCA(t)
	otherCert, otherKey, _ := otherCA.Issue(t, "stranger", false)
	closed := kafkaconntest.ClosedAddr(t)

	with := func(c kafkaconn.Config, f func(*kafkaconn.Config)) kafkaconn.Config { f(&c); return c }
	wrongPassword := func(c *kafkaconn.Config) { c.SASL.Password = secret }

	tests := []struct {
		name    string
		brokers []string
		cfg     kafkaconn.Config
		want    error // nil: the check passes
	}{
		{"plaintext", plainBroker.Brokers(), kafkaconn.Config{}, nil},
		{"tls", tlsBroker.Brokers(), tlsBroker.Config(""), nil},
		{"mtls", mtlsBroker.Brokers(), mtlsBroker.Config(""), nil},
		{"scram-sha-256 without tls", saslBroker.Brokers(), saslBroker.Config(kafkaconn.MechanismSCRAMSHA256), nil},
		{"plain over tls", saslTLSBroker.Brokers(), saslTLSBroker.Config(kafkaconn.MechanismPlain), nil},
		{"scram-sha-256 over tls", saslTLSBroker.Brokers(), saslTLSBroker.Config(kafkaconn.MechanismSCRAMSHA256), nil},
		{"scram-sha-512 over tls", saslTLSBroker.Brokers(), saslTLSBroker.Config(kafkaconn.MechanismSCRAMSHA512), nil},
		{"first broker down, second up", []string{closed, saslTLSBroker.Addr}, saslTLSBroker.Config(kafkaconn.MechanismSCRAMSHA512), nil},

		{"plain: wrong password", saslTLSBroker.Brokers(), with(saslTLSBroker.Config(kafkaconn.MechanismPlain), wrongPassword), kafkaconn.ErrAuthRefused},
		{"scram-sha-256: wrong password", saslTLSBroker.Brokers(), with(saslTLSBroker.Config(kafkaconn.MechanismSCRAMSHA256), wrongPassword), kafkaconn.ErrAuthRefused},
		{"scram-sha-512: wrong password", saslTLSBroker.Brokers(), with(saslTLSBroker.Config(kafkaconn.MechanismSCRAMSHA512), wrongPassword), kafkaconn.ErrAuthRefused},
		{"scram-sha-256: unknown user", saslBroker.Brokers(), with(saslBroker.Config(kafkaconn.MechanismSCRAMSHA256), func(c *kafkaconn.Config) { c.SASL.Username = "nobody" }), kafkaconn.ErrAuthRefused},
		{"no sasl to a sasl broker", saslBroker.Brokers(), kafkaconn.Config{}, kafkaconn.ErrUnreachable},

		{"tls: wrong CA", tlsBroker.Brokers(), with(tlsBroker.Config(""), func(c *kafkaconn.Config) { c.TLS.CAFile = otherCA.File }), kafkaconn.ErrTLSVerification},
		{"tls: the system roots", tlsBroker.Brokers(), with(tlsBroker.Config(""), func(c *kafkaconn.Config) { c.TLS.CAFile = "" }), kafkaconn.ErrTLSVerification},
		{"tls: wrong server name", tlsBroker.Brokers(), with(tlsBroker.Config(""), func(c *kafkaconn.Config) { c.TLS.ServerName = "kafka.example.com" }), kafkaconn.ErrTLSVerification},
		{"sasl over tls: wrong CA", saslTLSBroker.Brokers(), with(saslTLSBroker.Config(kafkaconn.MechanismSCRAMSHA256), func(c *kafkaconn.Config) { c.TLS.CAFile = otherCA.File }), kafkaconn.ErrTLSVerification},
		{"mtls: no client certificate", mtlsBroker.Brokers(), with(mtlsBroker.Config(""), func(c *kafkaconn.Config) { c.TLS.CertFile, c.TLS.KeyFile = "", "" }), kafkaconn.ErrTLSVerification},
		{"mtls: a certificate of another CA", mtlsBroker.Brokers(), with(mtlsBroker.Config(""), func(c *kafkaconn.Config) { c.TLS.CertFile, c.TLS.KeyFile = otherCert, otherKey }), kafkaconn.ErrTLSVerification},
		// The broker waits for the rest of what it takes for a request.
		{"tls to a plaintext broker", plainBroker.Brokers(), with(tlsBroker.Config(""), func(c *kafkaconn.Config) { c.DialTimeout = 500 * time.Millisecond }), kafkaconn.ErrTLSHandshake},
		{"plaintext to a tls broker", tlsBroker.Brokers(), kafkaconn.Config{}, kafkaconn.ErrUnreachable},
		{"scram plaintext to a sasl-over-tls broker", saslTLSBroker.Brokers(), saslBroker.Config(kafkaconn.MechanismSCRAMSHA256), kafkaconn.ErrUnreachable},

		{"closed port", []string{closed}, kafkaconn.Config{}, kafkaconn.ErrUnreachable},
		{"closed port, with tls and sasl", []string{closed}, saslTLSBroker.Config(kafkaconn.MechanismSCRAMSHA256), kafkaconn.ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), waitLong)
			defer cancel()
			err := kafkaconn.Check(ctx, tt.cfg, tt.brokers)
			t.Logf("Check = %v", err)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
			for _, other := range []error{kafkaconn.ErrUnreachable, kafkaconn.ErrTLSVerification, kafkaconn.ErrTLSHandshake, kafkaconn.ErrAuthRefused} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("Check = %v: it is %v, and also %v", err, tt.want, other)
				}
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want.Error()) || !strings.HasPrefix(msg, "kafkaconn: broker ") || strings.Contains(msg, secret) {
				t.Errorf("Check = %q: want it to start with kafkaconn: broker, say %q and not show the password", msg, tt.want)
			}
		})
	}
}

// TestCheckUnsupportedMechanism: a broker that does not offer the
// mechanism (it answers the SASL handshake UNSUPPORTED_SASL_MECHANISM, as
// Kafka does) refuses the authentication.
func TestCheckUnsupportedMechanism(t *testing.T) {
	b := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Topics: []string{secureTopic}})
	b.Cluster.ControlKey(int16(kmsg.SASLHandshake), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster.KeepControl()
		resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		resp.SupportedMechanisms = []string{"PLAIN"}
		return resp, nil, true
	})
	err := kafkaconn.Check(t.Context(), b.Config(kafkaconn.MechanismSCRAMSHA512), b.Brokers())
	if !errors.Is(err, kafkaconn.ErrAuthRefused) || !errors.Is(err, kafka.UnsupportedSASLMechanism) {
		t.Fatalf("Check = %v, want %v for %v", err, kafkaconn.ErrAuthRefused, kafka.UnsupportedSASLMechanism)
	}
	t.Logf("Check = %v", err)
}

// TestCheckTimesOut: a broker that accepts the connection and never
// answers fails the check within the dial timeout, as unreachable.
func TestCheckTimesOut(t *testing.T) {
	silent := kafkaconntest.StartSilent(t)
	err := kafkaconn.Check(t.Context(), kafkaconn.Config{DialTimeout: 200 * time.Millisecond}, []string{silent})
	if !errors.Is(err, kafkaconn.ErrUnreachable) {
		t.Fatalf("Check = %v, want %v", err, kafkaconn.ErrUnreachable)
	}
}

// TestClientsThroughSettings: a kafka-go writer on Settings.Transport and
// a consumer group reader on Settings.Dialer deliver a record through a
// broker that requires TLS and each SASL mechanism, and one that requires
// a client certificate.
func TestClientsThroughSettings(t *testing.T) {
	saslTLS := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Topics: []string{secureTopic}})
	mtls := kafkaconntest.Start(t, kafkaconntest.Options{ClientCert: true, Topics: []string{secureTopic}})
	tests := []struct {
		name string
		b    *kafkaconntest.Broker
		cfg  kafkaconn.Config
	}{
		{"plain over tls", saslTLS, saslTLS.Config(kafkaconn.MechanismPlain)},
		{"scram-sha-256 over tls", saslTLS, saslTLS.Config(kafkaconn.MechanismSCRAMSHA256)},
		{"scram-sha-512 over tls", saslTLS, saslTLS.Config(kafkaconn.MechanismSCRAMSHA512)},
		{"mtls", mtls, mtls.Config("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := kafkaconn.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), waitLong)
			defer cancel()
			tr := s.Transport()
			w := &kafka.Writer{Addr: kafka.TCP(tt.b.Addr), Transport: tr, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
			value := "through " + tt.name
			err = w.WriteMessages(ctx, kafka.Message{Topic: secureTopic, Key: []byte(tt.name), Value: []byte(value)})
			w.Close()
			tr.CloseIdleConnections()
			if err != nil {
				t.Fatalf("write: %v", err)
			}
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers: tt.b.Brokers(), GroupID: "g-" + strings.ReplaceAll(tt.name, " ", "-"), Topic: secureTopic,
				StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond, Dialer: s.Dialer(),
			})
			defer r.Close()
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if string(m.Key) == tt.name {
					if string(m.Value) != value {
						t.Errorf("value = %q, want %q", m.Value, value)
					}
					break
				}
			}
		})
	}
}
