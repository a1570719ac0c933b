package producers

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
)

// startSecure starts a broker that requires TLS and SASL, with the
// reports topic, and a Producer that connects with mechanism.
func startSecure(t *testing.T, mechanism string) (*kafkaconntest.Broker, kafkaconn.Config, *Producer) {
	t.Helper()
	b := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Partitions: 3, AdvertiseSASLHandshakeV0: true,
		Topics: []string{DefaultReportsTopic}})
	conn := b.Config(mechanism)
	p, err := New(Config{Brokers: b.Brokers(), Conn: conn}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return b, conn, p
}

// TestKcatReadsOverSASLSSL: kcat, a Kafka client nobody here wrote,
// reads over SASL_SSL with SCRAM-SHA-256 and the test CA a report the
// demo generator wrote through the producer.
func TestKcatReadsOverSASLSSL(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("SWITCHBOARD_CI") != "" {
			t.Fatal("kcat is required in CI: apt-get install kcat")
		}
		t.Skip("kcat not installed")
	}
	b, _, p := startSecure(t, kafkaconn.MechanismSCRAMSHA256)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- NewDemo(p, "items.reported", 20, quietLog()).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	kctx, kcancel := context.WithTimeout(t.Context(), waitLong)
	defer kcancel()
	read := func(password string) ([]byte, error) {
		return exec.CommandContext(kctx, kcat, "-b", b.Addr,
			"-X", "security.protocol=SASL_SSL",
			"-X", "sasl.mechanisms=SCRAM-SHA-256",
			"-X", "sasl.username="+kafkaconntest.Username,
			"-X", "sasl.password="+password,
			"-X", "ssl.ca.location="+b.CA.File,
			"-C", "-t", "items.reported", "-o", "beginning", "-c", "1", "-e",
			"-f", "%k\t%h\t%s\n").CombinedOutput()
	}
	out, err := read(kafkaconntest.Password)
	if err != nil {
		t.Fatalf("kcat over SASL_SSL: %v\n%s", err, out)
	}
	var line string
	for l := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(l, "item-") {
			line = l
		}
	}
	key, rest, _ := strings.Cut(line, "\t")
	headers, value, _ := strings.Cut(rest, "\t")
	var data ItemReported
	if err := json.Unmarshal([]byte(value), &data); err != nil || data.ItemID != key {
		t.Fatalf("kcat read %q: want a report keyed by its item (%v)\n%s", line, err, out)
	}
	for _, h := range []string{"ce_type=" + TypeItemReported, "ce_source=" + DemoSource, "ce_specversion=1.0"} {
		if !strings.Contains(headers, h) {
			t.Errorf("kcat read headers %q, want %s", headers, h)
		}
	}

	// The broker holds kcat to the credentials too.
	out, err = read("not the password")
	if err == nil || !strings.Contains(string(out), "SASL authentication error") {
		t.Errorf("kcat with a wrong password: %v, want a SASL authentication error\n%s", err, out)
	}
}

// TestProducerNewRefusesBadConn: New checks the connection settings, and
// its error does not show the password.
func TestProducerNewRefusesBadConn(t *testing.T) {
	_, err := New(Config{Brokers: []string{"127.0.0.1:9092"}, Conn: kafkaconn.Config{
		SASL: kafkaconn.SASL{Mechanism: "plain", Username: "u", Password: "p4ssw0rd"},
	}}, quietLog())
	if err == nil || !strings.HasPrefix(err.Error(), "producers: ") || strings.Contains(err.Error(), "p4ssw0rd") {
		t.Fatalf("New = %v, want a producers: error without the password", err)
	}
	if errors.Is(err, kafkaconn.ErrAuthRefused) {
		t.Errorf("a configuration error is not a refusal: %v", err)
	}
}
