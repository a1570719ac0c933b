package node

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
)

// managedKafka starts a broker that requires TLS and SCRAM-SHA-512, with
// the default topics, and returns a config mutation that points a node at it.
func managedKafka(t *testing.T) (*kafkaconntest.Broker, func(*config.Config)) {
	t.Helper()
	b := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Partitions: 3,
		Topics: []string{"items.reported", "takedown.commands", "takedown.events", "switchboard.dlq"}})
	return b, func(c *config.Config) {
		c.Kafka.Brokers = b.Brokers()
		c.Kafka.TLS = config.KafkaTLS{Enabled: true, CAFile: b.CA.File}
		c.Kafka.SASL = config.KafkaSASL{Mechanism: kafkaconn.MechanismSCRAMSHA512, Username: kafkaconntest.Username, Password: kafkaconntest.Password}
		c.ItemSvc.Enabled = true
	}
}

// TestManagedKafka: a node against a broker that requires TLS and SCRAM
// becomes ready and answers a takedown: the producer writes the command,
// the item service reads and answers it, the consumer brings the answer.
func TestManagedKafka(t *testing.T) {
	_, managed := managedKafka(t)
	a := startTestApp(t, managed)
	waitReady(t, a)
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	status, body, err := postTakedownAs(ctx, a.base(), "item-3", policeToken)
	if err != nil || status != http.StatusOK || !strings.Contains(string(body), `"confirmed"`) {
		t.Fatalf("takedown = %d %s, %v; want 200 confirmed", status, body, err)
	}
}

// TestManagedKafkaRefusesToStart: a wrong password, a wrong CA and a closed
// port each stop the start with a message that says which.
func TestManagedKafkaRefusesToStart(t *testing.T) {
	b, managed := managedKafka(t)
	other := kafkaconntest.NewCA(t)
	closed := kafkaconntest.ClosedAddr(t)
	tests := []struct {
		name   string
		change func(*config.Config)
		want   string
	}{
		{"wrong password", func(c *config.Config) { c.Kafka.SASL.Password = "wrong" }, "kafka.brokers: kafkaconn: broker " + b.Addr + ": authentication refused"},
		{"wrong CA", func(c *config.Config) { c.Kafka.TLS.CAFile = other.File }, "kafka.brokers: kafkaconn: broker " + b.Addr + ": TLS verification failed"},
		{"closed port", func(c *config.Config) { c.Kafka.Brokers = []string{closed} }, "kafka.brokers: kafkaconn: broker " + closed + ": unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Load("", nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg.HTTP.Addr = "127.0.0.1:0"
			cfg.Auth.Principals = testPrincipals
			managed(&cfg)
			tt.change(&cfg)
			a, err := Start(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				a.Shutdown(context.Background())
				t.Fatal("the node started")
			}
			if !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "wrong") && tt.name == "wrong password" {
				t.Fatalf("start = %v, want %q…", err, tt.want)
			}
		})
	}
}

// postTakedownAs sends POST /v1/takedowns for item with token.
func postTakedownAs(ctx context.Context, base, item, token string) (int, []byte, error) {
	body := `{"item_id":"` + item + `","reason":"court order","authority_ref":"MK-1"}`
	resp, b, err := call(ctx, nil, http.MethodPost, base+"/v1/takedowns", jsonHeader(token), body)
	if resp == nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, err
}
