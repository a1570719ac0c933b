// Package kafkaconntest starts an embedded Kafka-protocol broker (kfake)
// that requires TLS, a client certificate or SASL, with a certificate
// authority made for the test, so that tests connect real clients
// (kafka-go through kafkaconn, kcat) the way they connect to a managed
// Kafka.
package kafkaconntest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchboard/switchboard/consumers/kafkaconn"
)

// The SASL user every broker of Start knows, for each mechanism.
const (
	Username = "switchboard"
	Password = "correct horse battery staple"
)

// CA is a certificate authority made for one test. Its files live in the
// test's temporary directory.
type CA struct {
	// File is the CA certificate in PEM: kafkaconn.TLS.CAFile, or kcat's
	// ssl.ca.location.
	File string

	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA valid for an hour.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: t.Name() + " CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("kafkaconntest: make CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("kafkaconntest: parse CA: %v", err)
	}
	dir := t.TempDir()
	ca := &CA{File: filepath.Join(dir, "ca.pem"), dir: dir, cert: cert, key: key}
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

// Pool is a pool holding the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Issue makes a certificate signed by the CA for name, a server
// certificate for 127.0.0.1 and localhost or a client certificate, writes
// it and its key as PEM files and returns their paths with the loaded
// pair.
func (ca *CA) Issue(t testing.TB, name string, server bool) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("kafkaconntest: issue %s: %v", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("kafkaconntest: marshal key of %s: %v", name, err)
	}
	certFile = filepath.Join(ca.dir, name+".pem")
	keyFile = filepath.Join(ca.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	pair, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("kafkaconntest: load %s: %v", name, err)
	}
	return certFile, keyFile, pair
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("kafkaconntest: key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("kafkaconntest: serial: %v", err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("kafkaconntest: write %s: %v", path, err)
	}
}

// Options say what a broker of Start requires.
type Options struct {
	// TLS makes the listener TLS, with a certificate of the broker's CA
	// for 127.0.0.1 and localhost.
	TLS bool
	// ClientCert requires a client certificate signed by the CA (mTLS);
	// it implies TLS.
	ClientCert bool
	// SASL requires authentication as Username with Password, by PLAIN,
	// SCRAM-SHA-256 or SCRAM-SHA-512.
	SASL bool
	// AdvertiseSASLHandshakeV0 makes the broker list SaslHandshake from
	// version 0, as Kafka brokers do (KIP-896 kept it in Kafka 4), though
	// kfake serves only version 1. librdkafka (so kcat) decides that a
	// broker does SASL only if it lists version 0, and then sends version
	// 1 (confluentinc/librdkafka#4983).
	AdvertiseSASLHandshakeV0 bool
	// Partitions of each topic; zero means one.
	Partitions int32
	// Topics to create.
	Topics []string
}

// Broker is a one-broker kfake cluster on 127.0.0.1.
type Broker struct {
	// Addr is the broker's host:port, also in its metadata.
	Addr string
	// CA signed the broker's certificate, and the client certificate.
	CA *CA
	// ClientCertFile and ClientKeyFile are a client certificate the broker
	// accepts (set with Options.ClientCert).
	ClientCertFile, ClientKeyFile string
	// Cluster is the kfake cluster.
	Cluster *kfake.Cluster

	opts Options
}

// Start starts a broker as opts say; it is closed when the test ends.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	opts.TLS = opts.TLS || opts.ClientCert
	if opts.Partitions == 0 {
		opts.Partitions = 1
	}
	b := &Broker{CA: NewCA(t), opts: opts}
	kopts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(opts.Partitions, opts.Topics...)}
	if opts.TLS {
		_, _, pair := b.CA.Issue(t, "broker", true)
		tc := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
		if opts.ClientCert {
			tc.ClientAuth = tls.RequireAndVerifyClientCert
			tc.ClientCAs = b.CA.Pool()
			b.ClientCertFile, b.ClientKeyFile, _ = b.CA.Issue(t, "client", false)
		}
		kopts = append(kopts, kfake.TLS(tc))
	}
	if opts.SASL {
		kopts = append(kopts, kfake.EnableSASL(),
			kfake.Superuser("PLAIN", Username, Password),
			kfake.Superuser("SCRAM-SHA-256", Username, Password),
			kfake.Superuser("SCRAM-SHA-512", Username, Password))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		t.Fatalf("kafkaconntest: start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	b.Cluster = c
	b.Addr = c.ListenAddrs()[0]
	if opts.AdvertiseSASLHandshakeV0 {
		b.advertiseSASLHandshakeV0(t)
	}
	return b
}

// advertiseSASLHandshakeV0 answers every ApiVersions request with the
// versions the broker serves, SaslHandshake from version 0.
func (b *Broker) advertiseSASLHandshakeV0(t testing.TB) {
	t.Helper()
	d := &kafka.Dialer{Timeout: 10 * time.Second}
	if b.opts.TLS {
		// The client certificate is not needed to ask: the broker may
		// require one, though.
		d.TLS = &tls.Config{RootCAs: b.CA.Pool(), MinVersion: tls.VersionTLS12}
		if b.opts.ClientCert {
			pair, err := tls.LoadX509KeyPair(b.ClientCertFile, b.ClientKeyFile)
			if err != nil {
				t.Fatalf("kafkaconntest: load the client certificate: %v", err)
			}
			d.TLS.Certificates = []tls.Certificate{pair}
		}
	}
	conn, err := d.DialContext(context.Background(), "tcp", b.Addr)
	if err != nil {
		t.Fatalf("kafkaconntest: ask the broker's versions: %v", err)
	}
	versions, err := conn.ApiVersions()
	conn.Close()
	if err != nil {
		t.Fatalf("kafkaconntest: ask the broker's versions: %v", err)
	}
	b.Cluster.ControlKey(int16(kmsg.ApiVersions), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster.KeepControl()
		resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
		for _, v := range versions {
			k := kmsg.NewApiVersionsResponseApiKey()
			k.ApiKey, k.MinVersion, k.MaxVersion = v.ApiKey, v.MinVersion, v.MaxVersion
			if k.ApiKey == int16(kmsg.SASLHandshake) {
				k.MinVersion = 0
			}
			resp.ApiKeys = append(resp.ApiKeys, k)
		}
		return resp, nil, true
	})
}

// Brokers is Addr as a broker list.
func (b *Broker) Brokers() []string { return []string{b.Addr} }

// Config returns client settings the broker accepts: TLS with its CA
// (and the client certificate) when it requires TLS, and SASL with
// mechanism (one of kafkaconn.Mechanisms) as Username when it requires
// SASL.
func (b *Broker) Config(mechanism string) kafkaconn.Config {
	var c kafkaconn.Config
	if b.opts.TLS {
		c.TLS = kafkaconn.TLS{Enabled: true, CAFile: b.CA.File, CertFile: b.ClientCertFile, KeyFile: b.ClientKeyFile}
	}
	if b.opts.SASL {
		c.SASL = kafkaconn.SASL{Mechanism: mechanism, Username: Username, Password: Password}
	}
	return c
}

// ClosedAddr returns a 127.0.0.1 address nothing listens on.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kafkaconntest: listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// StartSilent listens on 127.0.0.1, accepts connections and never writes
// to them, like a broker that hangs; it returns the address. Its
// connections are closed when the test ends.
func StartSilent(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kafkaconntest: listen: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}
