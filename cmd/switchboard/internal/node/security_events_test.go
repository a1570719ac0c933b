package node

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
)

// TestSecurityAttemptsEvents makes the attacks of issue 11 that come in
// through Kafka, against a real node and a real broker: outcomes forged to
// decide a takedown (from the reports topic with the trusted source, from a
// foreign source, about another item, for a correlation ID nobody
// published), and records that are not valid CloudEvents by the contract's
// rules but were accepted and fanned out before (a time of "yesterday", a
// source that is no URI-reference, a numeric subject, an upper-case
// extension name in structured mode, data_base64 "!!!", and formats that
// are not supported). A forgery is fanned out like any event but changes
// nothing; an invalid record reaches no subscriber and goes, unchanged, to
// the dead-letter topic with a reason that names the attribute. The
// controls show the trusted outcome deciding and valid records flowing.
func TestSecurityAttemptsEvents(t *testing.T) {
	n := startSecurityNode(t, func(c *config.Config) { c.ItemSvc.Enabled = false }) // takedowns stay pending
	a := n.a
	waitReady(t, a)
	// The moderator watches every channel the records below are routed to.
	mod := n.openSSE(t, t, "/v1/sse?channel=reports&channel=takedowns&channel=item:item-ce", bearer(modToken))
	modSeen := map[string]bool{}

	// Every invalid record is keyed item-ce: one partition, in order, so a
	// valid record produced behind it is fanned out after it would have been.
	dlq := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{a.kafkaAddr}, Topic: "switchboard.dlq",
		Partition: partitionOf(t, a, "item-ce"), MaxWait: 50 * time.Millisecond})
	t.Cleanup(func() { dlq.Close() })
	sentinels := 0

	src := producers.ItemServiceSource
	var corr string
	outcome := func(topic, id, source, item, corrID string) kafka.Message {
		m := withSource(binaryMsg(topic, id, "takedown.confirmed", item, corrID,
			map[string]any{"item_id": item, "removed_from": []string{"nowhere"}, "confirmed_at": "2000-01-01T00:00:00Z"}), source)
		return withKey(m, "item-1") // the takedown's partition
	}
	// forged produces a forged outcome, waits until it has been fanned out
	// and counted as untrusted for reason, and shows the takedown pending.
	forged := func(t *testing.T, m kafka.Message, reason string) {
		t.Helper()
		before := a.recorder.Untrusted()[reason]
		produce(t, a.kafkaAddr, m)
		secWaitIDs(t, mod, modSeen, string(headerOf(m, "ce_id")))
		waitUntil(t, "the forgery counted as untrusted ("+reason+")", func() bool { return a.recorder.Untrusted()[reason] == before+1 })
		resp, st := get(t, a, policeToken, "/v1/takedowns/"+corr)
		if resp.StatusCode != 200 || st["status"] != "pending" {
			t.Fatalf("after the forgery the takedown is %d %v, want pending", resp.StatusCode, st)
		}
	}
	// deadLettered produces an invalid record and a valid one behind it on
	// the same partition: the valid one must be the first to reach the
	// moderator, and the invalid one must be the dead-letter topic's next
	// record, unchanged, with a reason naming attr.
	deadLettered := func(t *testing.T, m kafka.Message, id, attr string) {
		t.Helper()
		m.Topic, m.Key = "items.reported", []byte("item-ce")
		sentinels++
		ok := binaryMsg("items.reported", fmt.Sprintf("ce-ok-%d", sentinels), "item.reported", "item-ce", "", map[string]any{"item_id": "item-ce"})
		produce(t, a.kafkaAddr, m, ok)
		secWaitIDs(t, mod, modSeen, string(headerOf(ok, "ce_id")))
		if modSeen[id] {
			t.Fatalf("the invalid record %s was fanned out", id)
		}
		ctx, cancel := context.WithTimeout(t.Context(), waitFor)
		defer cancel()
		d, err := dlq.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("no dead letter: %v", err)
		}
		why := string(headerOf(d, "switchboard-error"))
		if !bytes.Equal(d.Value, m.Value) || !strings.Contains(why, attr) || !strings.HasPrefix(string(headerOf(d, "switchboard-source")), "items.reported/") {
			t.Fatalf("dead letter %q with reason %q, want %q with a reason naming %s", d.Value, why, m.Value, attr)
		}
		t.Logf("dead-lettered: %s", why)
	}
	binary := func(id, key, value string) kafka.Message {
		m := binaryMsg("items.reported", id, "item.reported", "item-ce", "", map[string]any{"item_id": "item-ce"})
		for i, h := range m.Headers {
			if h.Key == key {
				m.Headers[i].Value = []byte(value)
				return m
			}
		}
		m.Headers = append(m.Headers, kafka.Header{Key: key, Value: []byte(value)})
		return m
	}
	structured := func(id, members string) kafka.Message {
		return kafka.Message{Value: []byte(`{"specversion":"1.0","id":"` + id + `","source":"/test","type":"item.reported","subject":"item-ce"` + members + `}`),
			Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}}}
	}

	attempts := []attempt{
		// Forged outcomes (the exact-takedown issue's attack, kept here).
		{"police posts a takedown, pending", true, func(t *testing.T) {
			corr = n.postAsync(t, policeToken, "item-1")
			resp, st := get(t, a, policeToken, "/v1/takedowns/"+corr)
			if resp.StatusCode != 200 || st["status"] != "pending" {
				t.Fatalf("%d %v", resp.StatusCode, st)
			}
		}},
		{"a confirmation with the trusted source, from the reports topic", false, func(t *testing.T) {
			forged(t, outcome("items.reported", "forged-topic", src, "item-1", corr), takedown.ReasonTopic)
		}},
		{"a confirmation from a foreign source, on the outcome topic", false, func(t *testing.T) {
			forged(t, outcome("takedown.events", "forged-source", "/forger", "item-1", corr), takedown.ReasonSource)
		}},
		{"a confirmation about another item, with the takedown's correlation ID", false, func(t *testing.T) {
			forged(t, outcome("takedown.events", "forged-item", src, "item-2", corr), takedown.ReasonItem)
		}},
		{"a confirmation for a correlation ID nobody published", false, func(t *testing.T) {
			forged(t, outcome("takedown.events", "forged-unknown", src, "item-1", "never-published"), takedown.ReasonUnknown)
			n.refuse(t, "GET", "/v1/takedowns/never-published", bearer(modToken), "", 404)
		}},
		{"the trusted outcome decides", true, func(t *testing.T) {
			m := outcome("takedown.events", "real-1", src, "item-1", corr)
			produce(t, a.kafkaAddr, m)
			waitUntil(t, "the takedown confirmed", func() bool {
				resp, st := get(t, a, policeToken, "/v1/takedowns/"+corr)
				return resp.StatusCode == 200 && st["status"] == "confirmed"
			})
		}},

		// Invalid CloudEvents: each was accepted and fanned out before.
		{"binary mode, ce_time: yesterday", false, func(t *testing.T) {
			deadLettered(t, binary("ce-time", "ce_time", "yesterday"), "ce-time", `"time"`)
		}},
		{"binary mode, source ::not a uri ::%zz", false, func(t *testing.T) {
			deadLettered(t, binary("ce-source-b", "ce_source", "::not a uri ::%zz"), "ce-source-b", `"source"`)
		}},
		{`structured mode, "source":"::not a uri ::%zz"`, false, func(t *testing.T) {
			m := structured("ce-source-s", "")
			m.Value = bytes.Replace(m.Value, []byte(`"/test"`), []byte(`"::not a uri ::%zz"`), 1)
			deadLettered(t, m, "ce-source-s", `"source"`)
		}},
		{`structured mode, "subject":5`, false, func(t *testing.T) {
			m := structured("ce-subject", "")
			m.Value = bytes.Replace(m.Value, []byte(`"subject":"item-ce"`), []byte(`"subject":5`), 1)
			deadLettered(t, m, "ce-subject", `"subject"`)
		}},
		{"structured mode, an upper-case extension name", false, func(t *testing.T) {
			deadLettered(t, structured("ce-upper", `,"CorrelationID":"c-1"`), "ce-upper", `"CorrelationID"`)
		}},
		{`structured mode, "data_base64":"!!!"`, false, func(t *testing.T) {
			deadLettered(t, structured("ce-base64", `,"data_base64":"!!!"`), "ce-base64", `"data_base64"`)
		}},
		{"binary mode, an extension name with a hyphen", false, func(t *testing.T) {
			deadLettered(t, binary("ce-ext-b", "ce_trace-id", "x"), "ce-ext-b", `"trace-id"`)
		}},
		{"an unsupported format, application/cloudevents+avro", false, func(t *testing.T) {
			m := binary("ce-avro", "content-type", "application/cloudevents+avro")
			m.Value = []byte{0, 1, 2}
			deadLettered(t, m, "ce-avro", "not supported")
		}},
		{"batch mode", false, func(t *testing.T) {
			m := structured("ce-batch", "")
			m.Value = append(append([]byte("["), m.Value...), ']')
			m.Headers[0].Value = []byte("application/cloudevents-batch+json")
			deadLettered(t, m, "ce-batch", "batch mode is not supported")
		}},
		{"valid records in both modes, with an extension", true, func(t *testing.T) {
			b := binary("ce-valid-b", "ce_time", "2026-12-01T00:00:00Z")
			b.Headers = append(b.Headers, kafka.Header{Key: "ce_correlationid", Value: []byte("c-valid")})
			s := structured("ce-valid-s", `,"time":"2026-12-01T00:00:00Z","correlationid":"c-valid","datacontenttype":"text/plain","data_base64":"aGk="`)
			s.Topic, s.Key = "items.reported", []byte("item-ce")
			produce(t, a.kafkaAddr, withKey(b, "item-ce"), s)
			secWaitIDs(t, mod, modSeen, "ce-valid-b", "ce-valid-s")
		}},
	}

	runAttempts(t, attempts) // in order: later attempts build on earlier ones
	if st := a.consumer.Stats(); st.DeadLettered != uint64(sentinels) {
		t.Errorf("%d records dead-lettered, want %d", st.DeadLettered, sentinels)
	}
}

// headerOf is the value of a record's header key, or nil.
func headerOf(m kafka.Message, key string) []byte {
	for _, h := range m.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}
