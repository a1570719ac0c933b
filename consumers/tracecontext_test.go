package consumers

import (
	"testing"

	"github.com/segmentio/kafka-go"
)

// TestTraceContext: the distributed-tracing extension survives Decode in
// both modes and is read back from the event.
func TestTraceContext(t *testing.T) {
	const (
		tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		ts = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	)
	tests := []struct {
		name   string
		msg    kafka.Message
		tp, ts string
	}{
		{
			name: "binary mode",
			msg:  kafka.Message{Headers: binaryHeaders("ce_traceparent", tp, "ce_tracestate", ts), Value: []byte(`{"item_id":"i"}`)},
			tp:   tp, ts: ts,
		},
		{
			name: "binary mode, header names in any case",
			msg:  kafka.Message{Headers: binaryHeaders("CE_TraceParent", tp)},
			tp:   tp,
		},
		{
			name: "structured mode",
			msg: kafka.Message{Headers: hdrs("content-type", "application/cloudevents+json"),
				Value: []byte(`{"specversion":"1.0","id":"e","source":"/s","type":"t","traceparent":"` + tp + `","tracestate":"` + ts + `","data":{"traceparent":"not this one"}}`)},
			tp: tp, ts: ts,
		},
		{
			name: "structured mode, not a string",
			msg: kafka.Message{Headers: hdrs("content-type", "application/cloudevents+json"),
				Value: []byte(`{"specversion":"1.0","id":"e","source":"/s","type":"t","traceparent":42}`)},
		},
		{
			name: "none",
			msg:  kafka.Message{Headers: binaryHeaders(), Value: []byte(`{"traceparent":"in the data"}`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			gotTP, gotTS := TraceContext(ev)
			if gotTP != tt.tp || gotTS != tt.ts {
				t.Fatalf("TraceContext = %q, %q; want %q, %q (event %s)", gotTP, gotTS, tt.tp, tt.ts, ev.JSON)
			}
		})
	}
}
