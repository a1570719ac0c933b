package itemsvc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
	"github.com/switchboard/switchboard/producers"
)

// startSecure starts a broker that requires TLS and SASL, with the item
// service's topics, and a Producer that connects with mechanism.
func startSecure(t *testing.T, mechanism string) (*kafkaconntest.Broker, kafkaconn.Config, *producers.Producer) {
	t.Helper()
	b := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Partitions: 3, AdvertiseSASLHandshakeV0: true,
		Topics: []string{isvcCommands, isvcEvents, producers.DefaultReportsTopic}})
	conn := b.Config(mechanism)
	p, err := producers.New(producers.Config{Brokers: b.Brokers(), Conn: conn}, quietLog())
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
	s, err := New(Config{
		Brokers: b.Brokers(), Conn: conn, CommandsTopic: isvcCommands, EventsTopic: isvcEvents, Decode: decode,
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
	cmd := producers.NewEvent("/test", producers.TypeTakedownRequested, "item-1", "corr-secure", map[string]string{"item_id": "item-1", "reason": "court order"})
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
		if ev.Type == producers.TypeTakedownConfirmed {
			break
		}
	}
}

// TestNewRefusesBadConn: New checks the connection settings of the
// commands reader; a configuration error is not a refusal.
func TestNewRefusesBadConn(t *testing.T) {
	_, err := New(Config{Brokers: []string{"127.0.0.1:9092"}, Decode: decode, Conn: kafkaconn.Config{
		TLS: kafkaconn.TLS{CertFile: "client.pem"},
	}}, &isvcFlaky{}, quietLog())
	if err == nil || !strings.HasPrefix(err.Error(), "itemsvc: ") {
		t.Fatalf("New = %v, want an itemsvc: error", err)
	}
	if errors.Is(err, kafkaconn.ErrAuthRefused) {
		t.Errorf("a configuration error is not a refusal: %v", err)
	}
}
