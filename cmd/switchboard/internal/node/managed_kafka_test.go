package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/consumers/kafkaconn/kafkaconntest"
	"github.com/switchboard/switchboard/producers"
)

// managedKafka starts a broker that requires TLS and SCRAM-SHA-512, with
// the default topics, and returns a config mutation that points a node at it.
func managedKafka(t *testing.T) (*kafkaconntest.Broker, func(*config.Config)) {
	t.Helper()
	return managedKafkaWith(t, kafkaconn.MechanismSCRAMSHA512, false)
}

// managedKafkaWith starts a broker that requires TLS (a CA made for the
// test) and SASL, with the default topics, and returns a config mutation
// that points a node at it with mechanism. With mechanism mtls the broker
// requires a client certificate instead of SASL. kcat makes the broker
// list SaslHandshake version 0, as Kafka does (see kafkaconntest.Options).
func managedKafkaWith(t *testing.T, mechanism string, kcat bool) (*kafkaconntest.Broker, func(*config.Config)) {
	t.Helper()
	mtls := mechanism == mechanismMTLS
	b := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: !mtls, ClientCert: mtls, Partitions: 3, AdvertiseSASLHandshakeV0: kcat,
		Topics: []string{"items.reported", "takedown.commands", "takedown.events", "switchboard.dlq"}})
	return b, func(c *config.Config) {
		c.Kafka.Brokers = b.Brokers()
		c.Kafka.TLS = config.KafkaTLS{Enabled: true, CAFile: b.CA.File}
		if mtls {
			c.Kafka.TLS.CertFile, c.Kafka.TLS.KeyFile = b.ClientCertFile, b.ClientKeyFile
		} else {
			c.Kafka.SASL = config.KafkaSASL{Mechanism: mechanism, Username: kafkaconntest.Username, Password: kafkaconntest.Password}
		}
		c.ItemSvc.Enabled = true
	}
}

// mechanismMTLS stands, for managedKafkaWith, for a client certificate
// in place of SASL.
const mechanismMTLS = "mtls"

// TestManagedKafka: a node against a broker that requires TLS and each
// SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), or a client
// certificate (mTLS), becomes ready and answers a takedown: the producer
// writes the command, the item service reads and answers it, the consumer
// brings the answer.
func TestManagedKafka(t *testing.T) {
	for _, mech := range append(kafkaconn.Mechanisms(), mechanismMTLS) {
		t.Run(mech, func(t *testing.T) {
			_, managed := managedKafkaWith(t, mech, false)
			a := startTestApp(t, managed)
			waitReady(t, a)
			ctx, cancel := context.WithTimeout(t.Context(), waitFor)
			defer cancel()
			status, body, err := postTakedownAs(ctx, a.base(), "item-3", policeToken)
			if err != nil || status != http.StatusOK || !strings.Contains(string(body), `"confirmed"`) {
				t.Fatalf("takedown = %d %s, %v; want 200 confirmed", status, body, err)
			}
		})
	}
}

// TestManagedKafkaKcat: kcat, a Kafka client nobody here wrote, reads
// over SASL_SSL (SCRAM-SHA-256, the test CA) the takedown command the node
// published and the outcome its item service answered, through the broker
// the node used.
func TestManagedKafkaKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("SWITCHBOARD_CI") != "" {
			t.Fatal("kcat is required in CI: apt-get install kcat")
		}
		t.Skip("kcat not installed")
	}
	b, managed := managedKafkaWith(t, kafkaconn.MechanismSCRAMSHA256, true)
	a := startTestApp(t, managed)
	waitReady(t, a)
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	status, body, err := postTakedownAs(ctx, a.base(), "item-7", policeToken)
	if err != nil || status != http.StatusOK || !strings.Contains(string(body), `"confirmed"`) {
		t.Fatalf("takedown = %d %s, %v; want 200 confirmed", status, body, err)
	}
	var answer struct {
		CorrelationID string `json:"correlation_id"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.CorrelationID == "" {
		t.Fatalf("takedown answer %s: no correlation_id (%v)", body, err)
	}

	// Every record of topic, as kcat prints it: key, headers, value.
	read := func(topic string) []string {
		t.Helper()
		out, err := exec.CommandContext(ctx, kcat, "-b", b.Addr,
			"-X", "security.protocol=SASL_SSL",
			"-X", "sasl.mechanisms=SCRAM-SHA-256",
			"-X", "sasl.username="+kafkaconntest.Username,
			"-X", "sasl.password="+kafkaconntest.Password,
			"-X", "ssl.ca.location="+b.CA.File,
			"-C", "-t", topic, "-o", "beginning", "-e", "-q",
			"-f", "%k\t%h\t%s\n").CombinedOutput()
		if err != nil {
			t.Fatalf("kcat -C -t %s over SASL_SSL: %v\n%s", topic, err, out)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	// holding finds the record keyed key whose headers hold every one of
	// headers, and returns its value.
	holding := func(topic, key string, headers ...string) string {
		t.Helper()
		lines := read(topic)
		for _, l := range lines {
			k, rest, _ := strings.Cut(l, "\t")
			h, value, _ := strings.Cut(rest, "\t")
			if k != key {
				continue
			}
			found := true
			for _, w := range headers {
				found = found && strings.Contains(h, w)
			}
			if found {
				return value
			}
		}
		t.Fatalf("kcat read no record keyed %s with %v on %s:\n%s", key, headers, topic, strings.Join(lines, "\n"))
		return ""
	}
	cmd := holding("takedown.commands", "item-7", "ce_type="+producers.TypeTakedownRequested, "ce_correlationid="+answer.CorrelationID)
	if !strings.Contains(cmd, `"item_id":"item-7"`) || !strings.Contains(cmd, `"MK-1"`) {
		t.Errorf("the takedown command kcat read: %s", cmd)
	}
	holding("takedown.events", "item-7", "ce_type="+producers.TypeTakedownConfirmed, "ce_correlationid="+answer.CorrelationID)
}

// TestManagedKafkaItemService: `switchboard itemsvc` (RunItemService)
// runs alone against a broker that requires TLS and SCRAM, and answers
// the takedowns of a node that runs none.
func TestManagedKafkaItemService(t *testing.T) {
	_, managed := managedKafka(t)
	a := startTestApp(t, func(c *config.Config) {
		managed(c)
		c.ItemSvc.Enabled = false
	})
	cfg := a.cfg
	cfg.Log.Level = "error"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunItemService(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("itemsvc: %v", err)
		}
	})
	waitReady(t, a)
	rctx, rcancel := context.WithTimeout(t.Context(), waitFor)
	defer rcancel()
	status, body, err := postTakedownAs(rctx, a.base(), "item-4", policeToken)
	if err != nil || status != http.StatusOK || !strings.Contains(string(body), `"confirmed"`) {
		t.Fatalf("takedown = %d %s, %v; want 200 confirmed from switchboard itemsvc", status, body, err)
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
