package producers

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
)

// startSecure starts a broker that requires TLS and SASL, with the item
// service's topics, and a Producer that connects with mechanism.
func startSecure(t *testing.T, mechanism string) (*kafkaconntest.Broker, kafkaconn.Config, *Producer) {
	t.Helper()
	b := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Partitions: 3, AdvertiseSASLHandshakeV0: true,
		Topics: []string{isvcCommands, isvcEvents, "items.reported"}})
	conn := b.Config(mechanism)
	p, err := New(Config{Brokers: b.Brokers(), Conn: conn}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return b, conn, p
}

// TestItemServiceOverTLSAndSASL: against a broker that requires TLS and
// SCRAM-SHA-256, the item service reads a command the producer wrote and
// answers it through the producer.
func TestItemServiceOverTLSAndSASL(t *testing.T) {
	b, conn, p := startSecure(t, kafkaconn.MechanismSCRAMSHA256)
	s, err := NewItemService(ItemServiceConfig{
		Brokers: b.Brokers(), Conn: conn, CommandsTopic: isvcCommands, EventsTopic: isvcEvents, Decode: consumers.Decode,
	}, p, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})

	wctx, wcancel := context.WithTimeout(t.Context(), waitLong)
	defer wcancel()
	cmd := NewEvent("/test", itemSvcCommandType, "item-1", "corr-secure", map[string]string{"item_id": "item-1", "reason": "court order"})
	if err := p.Publish(wctx, isvcCommands, "item-1", cmd); err != nil {
		t.Fatalf("publish the command: %v", err)
	}
	settings, err := kafkaconn.New(conn)
	if err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.Brokers(), GroupID: "answers", Topic: isvcEvents,
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond, Dialer: settings.Dialer()})
	defer r.Close()
	for {
		m, err := r.FetchMessage(wctx)
		if err != nil {
			t.Fatalf("no takedown.confirmed for the command: %v", err)
		}
		ev, err := consumers.Decode(m)
		if err != nil {
			t.Fatalf("decode an answer: %v", err)
		}
		if ev.CorrelationID != "corr-secure" {
			t.Errorf("answer %s has correlationid %q, want corr-secure", ev.Type, ev.CorrelationID)
		}
		if ev.Type == TypeTakedownConfirmed {
			break
		}
	}
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
	_, err = NewItemService(ItemServiceConfig{Brokers: []string{"127.0.0.1:9092"}, Decode: consumers.Decode, Conn: kafkaconn.Config{
		TLS: kafkaconn.TLS{CertFile: "client.pem"},
	}}, &isvcFlaky{}, quietLog())
	if err == nil || !strings.HasPrefix(err.Error(), "producers: item service: ") {
		t.Fatalf("NewItemService = %v, want a producers: item service: error", err)
	}
	if errors.Is(err, kafkaconn.ErrAuthRefused) {
		t.Errorf("a configuration error is not a refusal: %v", err)
	}
}
