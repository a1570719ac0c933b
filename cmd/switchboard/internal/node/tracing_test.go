package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/tracing"
)

// The trace context a test client sends: sampled, so a node that traces
// records its spans.
const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
	clientParent  = "00-" + clientTraceID + "-" + clientSpanID + "-01"
)

// recordSpans turns tracing on, into an in-memory exporter, until the test
// ends.
func recordSpans(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prev := otel.GetTracerProvider()
	tracing.SetProvider(tp)
	t.Cleanup(func() {
		tracing.SetProvider(nil)
		otel.SetTracerProvider(prev)
		tp.Shutdown(context.Background())
	})
	return exp
}

// tracedRecord reads topic from the start until a record of correlation
// ID corr and CloudEvents type typ, and returns its trace context.
func tracedRecord(t *testing.T, a *Node, topic, corr, typ string) (traceparent string) {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: []string{a.kafkaAddr}, GroupID: fmt.Sprintf("test-trace-%d", time.Now().UnixNano()),
		Topic: topic, StartOffset: kafka.FirstOffset, MaxWait: 50 * time.Millisecond,
	})
	defer r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("no %s of %s on %s: %v", typ, corr, topic, err)
		}
		ev, err := consumers.Decode(m)
		if err != nil || ev.CorrelationID != corr || ev.Type != typ {
			continue
		}
		tp, _ := consumers.TraceContext(ev)
		for _, h := range m.Headers {
			if h.Key == "ce_traceparent" && string(h.Value) != tp {
				t.Fatalf("ce_traceparent %q, decoded as %q", h.Value, tp)
			}
		}
		return tp
	}
}

// postTraced posts a takedown of item with the client's traceparent and
// returns its correlation ID; the takedown must be confirmed.
func postTraced(t *testing.T, a *Node, item string) string {
	t.Helper()
	resp, m := post(t, t.Context(), a, policeToken, `{"item_id":"`+item+`","reason":"court order"}`, "Traceparent", clientParent)
	if resp.StatusCode != http.StatusOK || m["status"] != "confirmed" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	return m["correlation_id"].(string)
}

// TestTraceContextThroughATakedown (SPEC §10): with tracing on, one
// takedown yields spans in the client's trace: the request (a child of
// the client's span), the publish, the item service's processing (a
// child of the publish, through the command record's ce_traceparent), the
// wait and the answer; the outcome on takedown.events carries the trace.
func TestTraceContextThroughATakedown(t *testing.T) {
	exp := recordSpans(t)
	a := startTestApp(t, nil)
	waitReady(t, a)
	corr := postTraced(t, a, "item-5")

	byName := map[string]tracetest.SpanStub{}
	want := []string{"POST /v1/takedowns", "publish takedown.commands", "process takedown.commands", "takedowns answer"}
	eventually(t, "the takedown's spans", func() bool {
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID().String() == clientTraceID {
				byName[s.Name] = s
			}
		}
		for _, n := range want {
			if _, ok := byName[n]; !ok {
				return false
			}
		}
		return true
	})
	server, publish, process := byName["POST /v1/takedowns"], byName["publish takedown.commands"], byName["process takedown.commands"]
	checks := []struct {
		span   tracetest.SpanStub
		kind   trace.SpanKind
		parent trace.SpanID
	}{
		{server, trace.SpanKindServer, mustSpanID(t, clientSpanID)},
		{publish, trace.SpanKindProducer, server.SpanContext.SpanID()},
		{process, trace.SpanKindConsumer, publish.SpanContext.SpanID()},
		{byName["takedowns answer"], trace.SpanKindInternal, server.SpanContext.SpanID()},
	}
	if w, ok := byName["takedowns wait"]; ok { // none when the outcome came before the wait began
		checks = append(checks, struct {
			span   tracetest.SpanStub
			kind   trace.SpanKind
			parent trace.SpanID
		}{w, trace.SpanKindInternal, server.SpanContext.SpanID()})
	}
	for _, c := range checks {
		if c.span.SpanKind != c.kind || c.span.Parent.SpanID() != c.parent {
			t.Errorf("span %q: kind %v parent %s, want %v under %s", c.span.Name, c.span.SpanKind, c.span.Parent.SpanID(), c.kind, c.parent)
		}
	}
	if !hasStatus(server, 200) {
		t.Errorf("the server span has no status 200: %v", server.Attributes)
	}

	// The records carry the trace: the command, the publish span's; the
	// outcome, the item service span's.
	if got, want := tracedRecord(t, a, producers.DefaultCommandsTopic, corr, producers.TypeTakedownRequested),
		"00-"+clientTraceID+"-"+publish.SpanContext.SpanID().String()+"-01"; got != want {
		t.Errorf("command ce_traceparent %q, want %q", got, want)
	}
	for _, typ := range []string{producers.TypeItemRemoved, producers.TypeTakedownConfirmed} {
		if got, want := tracedRecord(t, a, producers.DefaultEventsTopic, corr, typ),
			"00-"+clientTraceID+"-"+process.SpanContext.SpanID().String()+"-01"; got != want {
			t.Errorf("%s ce_traceparent %q, want %q", typ, got, want)
		}
	}

	// A held GET of the takedown answers in the takedown's trace too.
	exp.Reset()
	resp, m := post(t, t.Context(), a, policeToken, `{"item_id":"item-9","reason":"court order"}`, "Traceparent", clientParent, "Prefer", "respond-async")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("respond-async: %d %v", resp.StatusCode, m)
	}
	if resp, m := get(t, a, policeToken, resp.Header.Get("Location"), "Prefer", "wait=10"); resp.StatusCode != http.StatusOK || m["status"] != "confirmed" {
		t.Fatalf("GET: %d %v", resp.StatusCode, m)
	}
	eventually(t, "the POST's and the GET's answer spans in the client's trace", func() bool {
		n := 0
		for _, s := range exp.GetSpans() {
			if s.Name == "takedowns answer" && s.SpanContext.TraceID().String() == clientTraceID {
				n++
			}
		}
		return n == 2
	})
}

// TestTracingOffByDefault: without otel.endpoint nothing is installed (no
// goroutine, no exporter) even when the OTEL_* variables name a
// collector, no span is made, and the client's trace context still
// travels, unchanged, on the command and its outcome.
func TestTracingOffByDefault(t *testing.T) {
	var exports atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { exports.Add(1) }))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.URL+"/v1/traces")

	// Before the node, whose own goroutines come and go.
	func() {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		cfg, err := config.Load("", nil)
		if err != nil {
			t.Fatal(err)
		}
		stop, err := startTracing(t.Context(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if tracing.Enabled() {
			t.Error("tracing is on without otel.endpoint")
		}
		stop()
	}()
	a := startTestApp(t, nil)
	waitReady(t, a)

	corr := postTraced(t, a, "item-6")
	if got := tracedRecord(t, a, producers.DefaultCommandsTopic, corr, producers.TypeTakedownRequested); got != clientParent {
		t.Errorf("command ce_traceparent %q, want the client's %q", got, clientParent)
	}
	if got := tracedRecord(t, a, producers.DefaultEventsTopic, corr, producers.TypeTakedownConfirmed); got != clientParent {
		t.Errorf("outcome ce_traceparent %q, want the client's %q", got, clientParent)
	}

	// Without a traceparent one is made: a new trace, on the command and
	// its outcome.
	resp, m := post(t, t.Context(), a, policeToken, `{"item_id":"item-7","reason":"court order"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	corr = m["correlation_id"].(string)
	made := tracedRecord(t, a, producers.DefaultCommandsTopic, corr, producers.TypeTakedownRequested)
	if len(made) != len(clientParent) || strings.Contains(made, clientTraceID) {
		t.Errorf("made traceparent %q", made)
	}
	if got := tracedRecord(t, a, producers.DefaultEventsTopic, corr, producers.TypeTakedownConfirmed); got != made {
		t.Errorf("outcome ce_traceparent %q, want the command's %q", got, made)
	}
	if n := exports.Load(); n != 0 {
		t.Errorf("%d exports reached the collector", n)
	}
}

func mustSpanID(t *testing.T, s string) trace.SpanID {
	t.Helper()
	id, err := trace.SpanIDFromHex(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func hasStatus(s tracetest.SpanStub, code int) bool {
	for _, kv := range s.Attributes {
		if kv.Key == "http.response.status_code" && kv.Value.AsInt64() == int64(code) {
			return true
		}
	}
	return false
}

// TestTracingExportsToACollector: with otel.endpoint set, the spans of a
// takedown reach an OTLP/HTTP collector (a test server that decodes the
// export) under otel.service_name, flushed when tracing stops.
func TestTracingExportsToACollector(t *testing.T) {
	var mu sync.Mutex
	var spans []*tracev1.Span
	services := map[string]bool{}
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := &coltrace.ExportTraceServiceRequest{}
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, req) != nil {
			http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					services[kv.GetValue().GetStringValue()] = true
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				spans = append(spans, ss.GetSpans()...)
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	a := startTestApp(t, func(c *config.Config) {
		c.OTel.Endpoint = collector.URL
		c.OTel.ServiceName = "switchboard-test"
	})
	stop, err := startTracing(t.Context(), a.cfg, a.log)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, a)
	postTraced(t, a, "item-8")
	// Every span has ended once the node is down; stop flushes them.
	if err := a.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	stop()
	if tracing.Enabled() {
		t.Fatal("tracing is on after stop")
	}

	mu.Lock()
	defer mu.Unlock()
	if !services["switchboard-test"] {
		t.Errorf("service names %v, want switchboard-test", services)
	}
	names := map[string]bool{}
	for _, s := range spans {
		if trace.TraceID(s.GetTraceId()).String() == clientTraceID {
			names[s.GetName()] = true
		}
	}
	for _, want := range []string{"POST /v1/takedowns", "process takedown.commands"} {
		if !names[want] {
			t.Errorf("no span %q in the client's trace among %v", want, names)
		}
	}
}
