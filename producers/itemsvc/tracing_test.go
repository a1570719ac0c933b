package itemsvc

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/tracing"
)

// TestItemServiceCopiesTraceContext: every answer carries the command's
// trace context (SPEC §10): the command's traceparent as it is while
// tracing is off; while it is on, the traceparent of the service's own
// span, a child of the command's, in the same trace.
func TestItemServiceCopiesTraceContext(t *testing.T) {
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanID  = "00f067aa0ba902b7"
		parent  = "00-" + traceID + "-" + spanID + "-01"
		state   = "congo=t61rcWkgMzE"
	)
	h := newIsvcHarness(t)
	h.start(Config{})
	cat := DemoCatalogue()
	r := h.eventReader()
	traced := func(item, corr string) {
		t.Helper()
		ev := producers.NewEvent("/test", producers.TypeTakedownRequested, item, corr,
			map[string]string{"item_id": item, "reason": "court order", "requested_by": "test"})
		ev.TraceParent, ev.TraceState = parent, state
		m, err := producers.Message(isvcCommands, item, ev)
		if err != nil {
			t.Fatal(err)
		}
		h.send(m)
	}

	t.Run("off", func(t *testing.T) {
		traced("item-1", "c-off")
		traced("item-1001", "c-off-unknown")
		h.send(h.command("item-2", "c-none"))
		got := isvcByCorr(isvcNext(t, r, isvcExpected(cat, "item-1", "item-1001", "item-2")))
		for _, corr := range []string{"c-off", "c-off-unknown"} {
			for _, a := range got[corr] {
				if a.TraceParent != parent || a.TraceState != state {
					t.Errorf("%s %s: traceparent %q tracestate %q, want the command's", corr, a.Type, a.TraceParent, a.TraceState)
				}
			}
		}
		for _, a := range got["c-none"] {
			if a.TraceParent != "" {
				t.Errorf("an answer to a command without a trace context has traceparent %q", a.TraceParent)
			}
		}
	})

	t.Run("on", func(t *testing.T) {
		exp := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
		prev := otel.GetTracerProvider()
		tracing.SetProvider(tp)
		t.Cleanup(func() { tracing.SetProvider(nil); otel.SetTracerProvider(prev); tp.Shutdown(context.Background()) })

		traced("item-3", "c-on")
		answers := isvcNext(t, r, isvcExpected(cat, "item-3"))
		var spans tracetest.SpanStubs
		isvcWaitFor(t, "the service's span", func() bool { spans = exp.GetSpans(); return len(spans) == 1 })
		s := spans[0]
		if s.Name != "process "+isvcCommands || s.SpanKind != trace.SpanKindConsumer ||
			s.SpanContext.TraceID().String() != traceID || s.Parent.SpanID().String() != spanID {
			t.Fatalf("span %q kind %v trace %s parent %s, want a consumer span, child of the command's", s.Name, s.SpanKind, s.SpanContext.TraceID(), s.Parent.SpanID())
		}
		want := "00-" + traceID + "-" + s.SpanContext.SpanID().String() + "-01"
		for _, a := range answers {
			if a.TraceParent != want || !strings.HasPrefix(a.TraceState, "congo=") {
				t.Errorf("%s: traceparent %q tracestate %q, want %q and the command's state", a.Type, a.TraceParent, a.TraceState, want)
			}
		}
	})
}
