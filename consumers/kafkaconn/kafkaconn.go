// Package kafkaconn is how Switchboard connects to Kafka: TLS, SASL and the
// dial timeout, built once from a Config into the kafka-go Dialer and
// Transport that every Kafka client of the process uses (the hub's
// consumer group reader, its readiness probe and lag calls, the producer
// and the item service's reader), and Check, which says at start whether a
// broker accepts them, and if not, why: unreachable, TLS verification
// failed, or authentication refused.
//
// TLS is crypto/tls with certificates read by crypto/x509; SASL is
// kafka-go's own sasl/plain and sasl/scram.
package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// DefaultDialTimeout bounds opening one connection to a broker: TCP, the
// TLS handshake and the SASL exchange together. It is kafka-go's own
// default for a Dialer; a broker that takes longer is as good as down.
const DefaultDialTimeout = 10 * time.Second

// SASL mechanisms, as a Config names them.
const (
	// MechanismPlain sends the username and password as they are; it is
	// only accepted over TLS.
	MechanismPlain = "plain"
	// MechanismSCRAMSHA256 proves the password without sending it
	// (RFC 5802, RFC 7677).
	MechanismSCRAMSHA256 = "scram-sha-256"
	// MechanismSCRAMSHA512 is SCRAM with SHA-512.
	MechanismSCRAMSHA512 = "scram-sha-512"
)

// Mechanisms returns the SASL mechanisms a Config may name.
func Mechanisms() []string {
	return []string{MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512}
}

// Config says how to connect to the brokers. The zero value is plaintext
// without authentication and the default dial timeout: what the embedded
// broker needs.
type Config struct {
	TLS  TLS
	SASL SASL
	// DialTimeout bounds opening one connection (TCP, TLS and SASL); zero
	// means DefaultDialTimeout.
	DialTimeout time.Duration
}

// TLS configures TLS to the brokers. Every field but Enabled needs
// Enabled: a CA file given for a connection that stays plaintext is a
// mistake, and New refuses it.
type TLS struct {
	// Enabled turns TLS on.
	Enabled bool
	// CAFile is a PEM file of the certificate authorities that may sign
	// the brokers' certificates; none means the system's.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and its key, for
	// brokers that require one (mTLS). Both or neither.
	CertFile, KeyFile string
	// ServerName is the name the brokers' certificates must carry; none
	// means the host of each broker address.
	ServerName string
	// InsecureSkipVerify accepts any certificate: anyone on the path can
	// pose as the broker. For a test cluster only.
	InsecureSkipVerify bool
}

// SASL configures SASL authentication. A zero Mechanism means none.
type SASL struct {
	// Mechanism is one of Mechanisms(), in any case.
	Mechanism string
	Username  string
	// Password is never logged or printed: String, GoString and LogValue
	// leave it out.
	Password string
}

const redacted = "[redacted]"

// String describes s without its password.
func (s SASL) String() string {
	pw := ""
	if s.Password != "" {
		pw = redacted
	}
	return fmt.Sprintf("{Mechanism:%s Username:%s Password:%s}", s.Mechanism, s.Username, pw)
}

// GoString is String, so %#v leaves the password out too.
func (s SASL) GoString() string { return "kafkaconn.SASL" + s.String() }

// LogValue logs s without its password.
func (s SASL) LogValue() slog.Value {
	if s.Mechanism == "" {
		return slog.StringValue("none")
	}
	return slog.GroupValue(slog.String("mechanism", s.Mechanism), slog.String("username", s.Username))
}

// LogValue logs what c connects with: TLS on or off, with a client
// certificate or not, and the SASL mechanism and user. Never the password.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Bool("tls", c.TLS.Enabled)}
	if c.TLS.CertFile != "" {
		attrs = append(attrs, slog.Bool("client_cert", true))
	}
	if c.TLS.InsecureSkipVerify {
		attrs = append(attrs, slog.Bool("insecure_skip_verify", true))
	}
	attrs = append(attrs, slog.Any("sasl", c.SASL))
	return slog.GroupValue(attrs...)
}

// Settings is a Config with its files read and checked: the TLS
// configuration and SASL mechanism that every connection uses. Make it
// with New. It is safe for concurrent use and never changes.
type Settings struct {
	tls       *tls.Config // nil: plaintext
	mech      sasl.Mechanism
	mechName  string // as the broker knows it, e.g. SCRAM-SHA-256
	user      string
	timeout   time.Duration
	insecure  bool
	clientCrt bool
}

// New checks cfg, reads its certificate files and returns the Settings
// every Kafka client is built from. Errors read "kafkaconn: ...", name
// the field and never hold the password.
func New(cfg Config) (*Settings, error) {
	if cfg.DialTimeout < 0 {
		return nil, fmt.Errorf("kafkaconn: dial timeout must not be negative, got %s", cfg.DialTimeout)
	}
	s := &Settings{timeout: cfg.DialTimeout}
	if s.timeout == 0 {
		s.timeout = DefaultDialTimeout
	}
	var err error
	if s.tls, err = TLSConfig(cfg.TLS); err != nil {
		return nil, err
	}
	s.insecure = cfg.TLS.Enabled && cfg.TLS.InsecureSkipVerify
	s.clientCrt = cfg.TLS.Enabled && cfg.TLS.CertFile != ""
	if s.mech, err = Mechanism(cfg.SASL); err != nil {
		return nil, err
	}
	if s.mech != nil {
		if normalize(cfg.SASL.Mechanism) == MechanismPlain && s.tls == nil {
			return nil, errors.New("kafkaconn: SASL plain sends the password as it is: it needs TLS")
		}
		s.mechName, s.user = s.mech.Name(), cfg.SASL.Username
	}
	return s, nil
}

// TLSConfig returns the client TLS configuration of c: nil when TLS is
// off, else TLS 1.2 or later with c's certificate authorities, client
// certificate and server name.
func TLSConfig(c TLS) (*tls.Config, error) {
	if !c.Enabled {
		var set []string
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"CA file", c.CAFile != ""}, {"certificate file", c.CertFile != ""}, {"key file", c.KeyFile != ""},
			{"server name", c.ServerName != ""}, {"insecure skip verify", c.InsecureSkipVerify},
		} {
			if f.set {
				set = append(set, f.name)
			}
		}
		if len(set) > 0 {
			return nil, fmt.Errorf("kafkaconn: TLS %s given, but TLS is not enabled", strings.Join(set, ", "))
		}
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify}
	if c.CAFile != "" {
		pool, err := ReadCA(c.CAFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		crt, err := ReadKeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{crt}
	}
	return tc, nil
}

// ReadCA reads a PEM file of one or more CA certificates.
func ReadCA(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kafkaconn: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("kafkaconn: CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// ReadKeyPair reads a PEM client certificate and its private key; both
// paths are needed, and the key must match the certificate.
func ReadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	switch {
	case certFile == "":
		return tls.Certificate{}, errors.New("kafkaconn: a client key file needs its certificate file")
	case keyFile == "":
		return tls.Certificate{}, errors.New("kafkaconn: a client certificate file needs its key file")
	}
	// tls.LoadX509KeyPair's errors name neither file, nor hold key material.
	crt, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kafkaconn: client certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return crt, nil
}

// Mechanism returns kafka-go's SASL mechanism for s, nil when s names
// none. A username and a password are needed; the errors never hold the
// password.
func Mechanism(s SASL) (sasl.Mechanism, error) {
	name := normalize(s.Mechanism)
	if name == "" {
		if s.Username != "" || s.Password != "" {
			return nil, errors.New("kafkaconn: a SASL username or password is given, but no SASL mechanism")
		}
		return nil, nil
	}
	known := false
	for _, m := range Mechanisms() {
		known = known || m == name
	}
	switch {
	case !known:
		return nil, fmt.Errorf("kafkaconn: SASL mechanism %q is not one of %s", s.Mechanism, strings.Join(Mechanisms(), ", "))
	case s.Username == "":
		return nil, fmt.Errorf("kafkaconn: SASL %s needs a username", name)
	case s.Password == "":
		return nil, fmt.Errorf("kafkaconn: SASL %s needs a password", name)
	}
	switch name {
	case MechanismPlain:
		return plain.Mechanism{Username: s.Username, Password: s.Password}, nil
	case MechanismSCRAMSHA256:
		return scramMechanism(scram.SHA256, s)
	default:
		return scramMechanism(scram.SHA512, s)
	}
}

// normalize is a mechanism name as Mechanisms lists it.
func normalize(mechanism string) string { return strings.ToLower(strings.TrimSpace(mechanism)) }

func scramMechanism(algo scram.Algorithm, s SASL) (sasl.Mechanism, error) {
	m, err := scram.Mechanism(algo, s.Username, s.Password)
	if err != nil {
		// SASLprep refused the username or password; say which without
		// repeating either.
		return nil, fmt.Errorf("kafkaconn: SASL %s: the username or password holds characters SCRAM does not allow", algo.Name())
	}
	return m, nil
}

// Dialer returns a kafka-go Dialer with these settings, for a Reader and
// for single connections.
func (s *Settings) Dialer() *kafka.Dialer {
	return &kafka.Dialer{
		Timeout:       s.timeout,
		DualStack:     true, // as kafka.DefaultDialer
		TLS:           s.tls.Clone(),
		SASLMechanism: s.mech,
	}
}

// Transport returns a new kafka-go Transport with these settings, for a
// Writer or a Client. Each client gets its own, so that closing it
// releases only its connections.
func (s *Settings) Transport() *kafka.Transport {
	return &kafka.Transport{
		DialTimeout: s.timeout,
		TLS:         s.tls.Clone(),
		SASL:        s.mech,
	}
}

// DialTimeout is the bound on opening one connection.
func (s *Settings) DialTimeout() time.Duration { return s.timeout }

// InsecureSkipVerify reports whether the brokers' certificates go
// unchecked, so the caller can warn about it.
func (s *Settings) InsecureSkipVerify() bool { return s.insecure }

// String describes the settings without the password, as in a log line:
// "tls, sasl SCRAM-SHA-256 as \"svc\"" or "plaintext".
func (s *Settings) String() string {
	var parts []string
	switch {
	case s.tls == nil:
		parts = append(parts, "plaintext")
	case s.clientCrt:
		parts = append(parts, "tls with a client certificate")
	default:
		parts = append(parts, "tls")
	}
	if s.insecure {
		parts = append(parts, "certificates not verified")
	}
	if s.mech != nil {
		parts = append(parts, fmt.Sprintf("sasl %s as %q", s.mechName, s.user))
	}
	return strings.Join(parts, ", ")
}

// GoString is String, so %#v does not print the mechanism's password.
func (s *Settings) GoString() string { return "kafkaconn.Settings{" + s.String() + "}" }

// LogValue is String.
func (s *Settings) LogValue() slog.Value { return slog.StringValue(s.String()) }
