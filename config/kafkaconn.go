package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/viper"

	"github.com/switchboard/switchboard/consumers/kafkaconn"
)

// KafkaTLS configures TLS to an external cluster (keys kafka.tls.*).
type KafkaTLS struct {
	// Enabled turns TLS on; the other keys need it.
	Enabled bool `mapstructure:"enabled"`
	// CAFile is a PEM file of the CAs that sign the brokers' certificates;
	// empty means the system's.
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// brokers that require one (mTLS).
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// ServerName is the name the brokers' certificates must carry; empty
	// means the host of each broker address.
	ServerName string `mapstructure:"server_name"`
	// InsecureSkipVerify accepts any broker certificate. Test clusters only.
	InsecureSkipVerify bool `mapstructure:"insecure_skip_verify"`
}

// KafkaSASL configures SASL authentication to an external cluster (keys
// kafka.sasl.*).
type KafkaSASL struct {
	// Mechanism is plain, scram-sha-256 or scram-sha-512; empty means no
	// SASL.
	Mechanism string `mapstructure:"mechanism"`
	Username  string `mapstructure:"username"`
	// Password is best set in SWITCHBOARD_KAFKA_SASL_PASSWORD. String and
	// GoString leave it out.
	Password string `mapstructure:"password"`
}

// String describes s without its password, so a Config can be printed.
func (s KafkaSASL) String() string {
	pw := ""
	if s.Password != "" {
		pw = "[redacted]"
	}
	return fmt.Sprintf("{Mechanism:%s Username:%s Password:%s}", s.Mechanism, s.Username, pw)
}

// GoString is String, so %#v leaves the password out too.
func (s KafkaSASL) GoString() string { return "config.KafkaSASL" + s.String() }

// KafkaConn returns how every Kafka client connects to the brokers: the
// kafka.tls.*, kafka.sasl.* and kafka.dial_timeout keys, for the Conn of
// consumers.Config, producers.Config and itemsvc.Config,
// and for kafkaconn.Check.
func (c Config) KafkaConn() kafkaconn.Config {
	t, s := c.Kafka.TLS, c.Kafka.SASL
	return kafkaconn.Config{
		TLS: kafkaconn.TLS{
			Enabled: t.Enabled, CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
			ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify,
		},
		SASL:        kafkaconn.SASL{Mechanism: s.Mechanism, Username: s.Username, Password: s.Password},
		DialTimeout: c.Kafka.DialTimeout,
	}
}

// secretKeysOfKafka are the keys whose value must be a string in the file:
// YAML reads password: 0123 as a number, and the password would change
// without a word.
var secretKeysOfKafka = []string{"kafka.sasl.username", "kafka.sasl.password", "redis.sentinel.password", "redis.cluster.password"}

// secretsAreStrings refuses a non-string username or password, without
// repeating it.
func secretsAreStrings(v *viper.Viper) error {
	var errs validator
	for _, k := range secretKeysOfKafka {
		switch v.Get(k).(type) {
		case string, nil:
		default:
			errs.fail(k, "must be a string: quote it in the file")
		}
	}
	return errors.Join(errs.errs...)
}

// kafkaConn checks kafka.dial_timeout, kafka.tls.* and kafka.sasl.*: TLS
// and SASL only with kafka.brokers (the embedded broker is plaintext on
// loopback), TLS keys only with kafka.tls.enabled, readable certificate
// files, a known mechanism with a username and a password, and plain only
// over TLS. No message holds the password.
func (v *validator) kafkaConn(c Config) {
	k := c.Kafka
	v.duration("kafka.dial_timeout", k.DialTimeout)
	type setKey struct {
		key string
		set bool
	}
	tlsKeys := []setKey{
		{"kafka.tls.enabled", k.TLS.Enabled},
		{"kafka.tls.ca_file", k.TLS.CAFile != ""},
		{"kafka.tls.cert_file", k.TLS.CertFile != ""},
		{"kafka.tls.key_file", k.TLS.KeyFile != ""},
		{"kafka.tls.server_name", k.TLS.ServerName != ""},
		{"kafka.tls.insecure_skip_verify", k.TLS.InsecureSkipVerify},
	}
	saslKeys := []setKey{
		{"kafka.sasl.mechanism", k.SASL.Mechanism != ""},
		{"kafka.sasl.username", k.SASL.Username != ""},
		{"kafka.sasl.password", k.SASL.Password != ""},
	}
	if c.Embedded() {
		for _, s := range append(tlsKeys, saslKeys...) {
			if s.set {
				v.fail(s.key, "is for an external cluster, and kafka.brokers is not set: the embedded broker is plaintext on loopback")
			}
		}
		return
	}
	before := len(v.errs)

	t := k.TLS
	if !t.Enabled {
		for _, s := range tlsKeys[1:] {
			if s.set {
				v.fail(s.key, "is set, but kafka.tls.enabled is false: the connection would be plaintext")
			}
		}
	} else {
		if t.CAFile != "" {
			if _, err := kafkaconn.ReadCA(t.CAFile); err != nil {
				v.fail("kafka.tls.ca_file", "%s", bare(err))
			}
		}
		switch {
		case t.CertFile != "" && t.KeyFile == "":
			v.fail("kafka.tls.key_file", "is needed with kafka.tls.cert_file")
		case t.KeyFile != "" && t.CertFile == "":
			v.fail("kafka.tls.cert_file", "is needed with kafka.tls.key_file")
		case t.CertFile != "":
			if _, err := kafkaconn.ReadKeyPair(t.CertFile, t.KeyFile); err != nil {
				v.fail("kafka.tls.cert_file", "%s", bare(err))
			}
		}
		if t.InsecureSkipVerify && (t.CAFile != "" || t.ServerName != "") {
			v.fail("kafka.tls.insecure_skip_verify", "is true, so kafka.tls.ca_file and kafka.tls.server_name would be ignored: unset one or the other")
		}
	}

	s := k.SASL
	mech := strings.ToLower(strings.TrimSpace(s.Mechanism))
	switch {
	case mech == "" && s.Username != "":
		v.fail("kafka.sasl.mechanism", "is needed with kafka.sasl.username: %s", strings.Join(kafkaconn.Mechanisms(), ", "))
	case mech == "" && s.Password != "":
		v.fail("kafka.sasl.mechanism", "is needed with kafka.sasl.password: %s", strings.Join(kafkaconn.Mechanisms(), ", "))
	case mech == "":
	case !slices.Contains(kafkaconn.Mechanisms(), mech):
		v.fail("kafka.sasl.mechanism", "%q is not one of %s", s.Mechanism, strings.Join(kafkaconn.Mechanisms(), ", "))
	default:
		if s.Username == "" {
			v.fail("kafka.sasl.username", "is needed with kafka.sasl.mechanism %s", mech)
		}
		if s.Password == "" {
			v.fail("kafka.sasl.password", "is needed with kafka.sasl.mechanism %s; set %s rather than the file", mech, envName("kafka.sasl.password"))
		}
		if mech == kafkaconn.MechanismPlain && !t.Enabled {
			v.fail("kafka.sasl.mechanism", "plain sends the password as it is: set kafka.tls.enabled, or use scram-sha-256 or scram-sha-512")
		}
	}

	// What the keys do not show, such as a username SCRAM can not carry.
	if len(v.errs) == before {
		if _, err := kafkaconn.New(c.KafkaConn()); err != nil {
			v.fail("kafka.sasl", "%s", bare(err))
		}
	}
}

// bare is a kafkaconn error without the package prefix, for a KeyError.
func bare(err error) string { return strings.TrimPrefix(err.Error(), "kafkaconn: ") }
