package node

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
)

// scrape reads /metrics into name{labels} → value, the labels as
// name=value sorted by name; a histogram as name_count.
func scrape(t *testing.T, a *Node) map[string]float64 {
	t.Helper()
	fams := scrapeFamilies(t, a)
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestMetricsCounts: after a scripted run (reports, a dead letter, a slow
// consumer, takedowns of each outcome), /metrics reads back the exact counts.
func TestMetricsCounts(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) {
		c.Hub.ClientQueue = 8
		// Long enough that the respond-async takedown below is answered
		// 202 before its outcome is in (with the outcome in, 200 is the
		// right answer).
		c.ItemSvc.Latency = 500 * time.Millisecond
		c.Takedown.Timeout = 5 * time.Second
		c.Limits.TakedownBurst = 100
	})
	waitReady(t, a)

	// A stalled SSE subscriber on "reports": its socket takes little and it
	// never reads, so its queue overflows.
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return nil
	}}
	conn, err := d.DialContext(t.Context(), "tcp", strings.TrimPrefix(a.base(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/sse?channel=reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", modToken)
	eventually(t, "the stalled stream", func() bool { return a.hub.Stats().SSEConnections == 1 })

	const reports = 300
	pad := strings.Repeat("x", 4000)
	var msgs []kafka.Message
	for i := range reports {
		msgs = append(msgs, binaryMsg("items.reported", fmt.Sprint("m-", i), "item.reported", "item-1", "", map[string]any{"pad": pad}))
	}
	msgs = append(msgs, kafka.Message{Topic: "items.reported", Key: []byte("item-1"), Value: []byte("{broken")})
	produce(t, a.kafkaAddr, msgs...)
	eventually(t, "every report consumed", func() bool {
		return a.consumer.TopicStats()["items.reported"].Consumed == reports+1
	})
	eventually(t, "the slow consumer dropped", func() bool { return a.hub.Stats().SlowConsumers == 1 })

	// Takedowns: confirmed, not found, accepted (respond-async).
	if resp, _ := post(t, t.Context(), a, policeToken, `{"item_id":"item-1","reason":"test"}`); resp.StatusCode != 200 {
		t.Fatalf("confirmed: %d", resp.StatusCode)
	}
	if resp, _ := post(t, t.Context(), a, policeToken, `{"item_id":"nope","reason":"test"}`); resp.StatusCode != 404 {
		t.Fatalf("not found: %d", resp.StatusCode)
	}
	if resp, _ := post(t, t.Context(), a, policeToken, `{"item_id":"item-2","reason":"test"}`, "Prefer", "respond-async"); resp.StatusCode != 202 {
		t.Fatalf("accepted: %d", resp.StatusCode)
	}
	eventually(t, "takedown events consumed", func() bool {
		return a.consumer.TopicStats()["takedown.events"].Consumed >= 3
	})
	// An outcome from a foreign source: untrusted, counted by reason.
	produce(t, a.kafkaAddr, binaryMsg("takedown.events", "forged", "takedown.confirmed", "item-3", "nobody",
		map[string]any{"item_id": "item-3", "removed_from": []string{}, "confirmed_at": "2026-01-01T00:00:00Z"}))
	eventually(t, "the forgery consumed", func() bool { return a.recorder.Untrusted()["source"] == 1 })
	eventually(t, "a lag sample", func() bool { return len(a.lag.Last()) > 0 })

	m := scrape(t, a)
	want := map[string]float64{
		`switchboard_consumed_total{topic=items.reported}`:       reports + 1,
		`switchboard_dead_lettered_total{topic=items.reported}`:  1,
		`switchboard_dead_lettered_total{topic=takedown.events}`: 0,
		// A report has no correlation ID: corr:{correlationid} yields no channel.
		`switchboard_route_skipped_total{reason=missing,topic=items.reported}`: reports,
		`switchboard_route_skipped_total{reason=invalid,topic=items.reported}`: 0,
		`switchboard_route_skipped_total{reason=type,topic=items.reported}`:    0,
		`switchboard_slow_consumers_total`:                                     1,
		`switchboard_takedowns_total{outcome=confirmed}`:                       1,
		`switchboard_takedowns_total{outcome=not_found}`:                       1,
		`switchboard_takedowns_total{outcome=accepted}`:                        1,
		`switchboard_takedowns_total{outcome=timeout}`:                         0,
		`switchboard_takedowns_total{outcome=rejected}`:                        0,
		`switchboard_takedowns_total{outcome=unavailable}`:                     0,
		`switchboard_takedown_duration_seconds_count`:                          3,
		`switchboard_commands_total{command=takedowns,outcome=confirmed}`:      1,
		`switchboard_commands_total{command=takedowns,outcome=not_found}`:      1,
		`switchboard_commands_total{command=takedowns,outcome=accepted}`:       1,
		`switchboard_commands_total{command=takedowns,outcome=timeout}`:        0,
		`switchboard_command_duration_seconds{command=takedowns}_count`:        3,
		`switchboard_takedowns_held`:                                           0,
		`switchboard_untrusted_outcomes_total{reason=source}`:                  1,
		`switchboard_untrusted_outcomes_total{reason=topic}`:                   0,
		`switchboard_takedown_republished_total{result=published}`:             0,
		`switchboard_connections{transport=sse}`:                               0,
		`switchboard_connections{transport=ws}`:                                0,
		`switchboard_backplane_errors_total`:                                   0,
		`switchboard_consumed_total{topic=takedown.commands}`:                  3,
		`switchboard_events_published_total`:                                   m[`switchboard_events_published_total`],
		`switchboard_consumer_lag{partition=0,topic=items.reported}`:           m[`switchboard_consumer_lag{partition=0,topic=items.reported}`],
	}
	for k, v := range want {
		got, ok := m[k]
		if !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	// Events published: every consumed, valid record reached history.
	if got := m[`switchboard_events_published_total`]; got < reports+3 {
		t.Errorf("events published %v, want at least %d", got, reports+3)
	}
	if m[`switchboard_deliveries_total`] < 1 {
		t.Error("no delivery counted")
	}
	if m[`switchboard_socket_writes_total`] < 1 {
		t.Error("no socket write counted")
	}
	if _, ok := m[`switchboard_redis_lost_writes_total`]; ok {
		t.Error("lost writes reported on the memory backplane")
	}
	// The memory backplane's history: what the events above take, none
	// evicted under the default bound.
	if m[`switchboard_history_bytes`] <= 0 {
		t.Errorf("history bytes %v, want the events consumed", m[`switchboard_history_bytes`])
	}
	if got, ok := m[`switchboard_history_evicted_total`]; !ok || got != 0 {
		t.Errorf("history evicted %v (present %v), want 0", got, ok)
	}
	// The takedowns above are in the memory outcome store, none forgotten.
	if m[`switchboard_takedown_records`] < 1 {
		t.Errorf("takedown records %v, want the takedowns made", m[`switchboard_takedown_records`])
	}
	if got, ok := m[`switchboard_takedown_records_evicted_total`]; !ok || got != 0 {
		t.Errorf("takedown records evicted %v (present %v), want 0", got, ok)
	}
	// No label carries a channel or a correlation ID.
	for k := range m {
		if strings.Contains(k, "corr:") || strings.Contains(k, "item:") || strings.Contains(k, "channel=") {
			t.Errorf("unbounded label in %s", k)
		}
	}
}
