package consumers

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
	"github.com/switchboard/switchboard/producers"
)

// TestConsumerOverTLSAndSASL: against a broker that requires TLS and
// SCRAM-SHA-512, as a managed Kafka does, the consumer group reader
// delivers an event the producer wrote, dead-letters a broken record
// through the producer, and Ready and Lag answer; with a wrong password
// Ready says the broker refused it.
func TestConsumerOverTLSAndSASL(t *testing.T) {
	b := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Partitions: 3,
		Topics: []string{topicReports, topicCommands, topicEvents, topicDLQ}})
	conn := b.Config(kafkaconn.MechanismSCRAMSHA512)

	p, err := producers.New(producers.Config{Brokers: b.Brokers(), Conn: conn}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	h := newFakeHub()
	cfg := testConfig(b.Brokers(), "secure")
	cfg.Conn = conn
	c, _ := start(t, cfg, h, p)

	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	ev := producers.NewEvent("/test", "item.reported", "item-7", "", map[string]string{"item_id": "item-7"})
	if err := p.Publish(ctx, topicReports, "item-7", ev); err != nil {
		t.Fatalf("publish over TLS and SASL: %v", err)
	}
	broken := kafka.Message{Topic: topicReports, Key: []byte("item-8"), Value: []byte("not a CloudEvent")}
	if err := p.PublishRaw(ctx, broken); err != nil {
		t.Fatalf("publish a broken record: %v", err)
	}
	waitFor(t, "the event to reach the hub", func() bool { return slices.Contains(h.ids(), ev.ID) })
	waitFor(t, "the broken record to be dead-lettered", func() bool { return c.Stats().DeadLettered == 1 })

	s, err := kafkaconn.New(conn)
	if err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.Brokers(), GroupID: "dlq-reader", Topic: topicDLQ,
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond, Dialer: s.Dialer()})
	defer r.Close()
	m, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatalf("read the dead-letter topic: %v", err)
	}
	if string(m.Value) != "not a CloudEvent" {
		t.Errorf("dead letter = %q, want the broken record", m.Value)
	}

	if err := c.Ready(ctx); err != nil {
		t.Errorf("Ready = %v, want nil", err)
	}
	lag, err := c.Lag(ctx)
	if err != nil {
		t.Fatalf("Lag = %v, want the partitions' lag", err)
	}
	if len(lag) != 9 {
		t.Errorf("Lag has %d partitions, want 3 topics × 3", len(lag))
	}

	wrong := cfg
	wrong.Conn.SASL.Password = "not the password"
	wc, err := New(wrong, newFakeHub(), p, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	err = wc.Ready(ctx)
	if !errors.Is(err, kafka.SASLAuthenticationFailed) {
		t.Errorf("Ready with a wrong password = %v, want %v", err, kafka.SASLAuthenticationFailed)
	}
	if err != nil && strings.Contains(err.Error(), "not the password") {
		t.Errorf("Ready's error shows the password: %v", err)
	}
}

// TestConsumerNewRefusesBadConn: New checks the connection settings.
func TestConsumerNewRefusesBadConn(t *testing.T) {
	cfg := testConfig([]string{"127.0.0.1:9092"}, "g")
	cfg.Conn.SASL = kafkaconn.SASL{Mechanism: "scram-sha-1", Username: "u", Password: "p"}
	_, err := New(cfg, newFakeHub(), &flakyDLQ{}, quietLog())
	if err == nil || !strings.HasPrefix(err.Error(), "consumers: ") || !strings.Contains(err.Error(), "scram-sha-1") {
		t.Fatalf("New = %v, want a consumers: error naming the mechanism", err)
	}
}
