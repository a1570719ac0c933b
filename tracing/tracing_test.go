package tracing

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
	clientParent  = "00-" + clientTraceID + "-" + clientSpanID + "-01"
	clientState   = "congo=t61rcWkgMzE"
)

// useRecorder turns tracing on with an in-memory exporter until the test
// ends.
func useRecorder(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prev := otel.GetTracerProvider()
	SetProvider(tp)
	t.Cleanup(func() {
		SetProvider(nil)
		otel.SetTracerProvider(prev)
		tp.Shutdown(context.Background())
	})
	return exp
}

// TestOffAllocatesNothing: while tracing is off a span on the hot path
// (start, check, end) allocates nothing, with or without a trace context.
func TestOffAllocatesNothing(t *testing.T) {
	if Enabled() {
		t.Fatal("tracing is on before any Setup")
	}
	for name, ctx := range map[string]context.Context{
		"no trace context": context.Background(),
		"remote parent":    Remote(context.Background(), clientParent, clientState),
	} {
		t.Run(name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(1000, func() {
				sctx, span := Start(ctx, "publish takedown.commands", trace.SpanKindProducer)
				if span.IsRecording() || sctx != ctx {
					t.Fatal("a span is recorded while tracing is off")
				}
				End(span, io.EOF)
			})
			if allocs != 0 {
				t.Fatalf("a no-op span costs %v allocations, want 0", allocs)
			}
		})
	}
}

// BenchmarkSpan is the cost of one span, off and on (in-memory export).
func BenchmarkSpan(b *testing.B) {
	ctx := Remote(context.Background(), clientParent, "")
	run := func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, span := Start(ctx, "wait", trace.SpanKindInternal)
			span.End()
		}
	}
	b.Run("off", run)
	b.Run("on", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())))
		prev := otel.GetTracerProvider()
		SetProvider(tp)
		defer func() { SetProvider(nil); otel.SetTracerProvider(prev); tp.Shutdown(context.Background()) }()
		run(b)
	})
}

// TestSetupWithoutEndpoint: no endpoint installs nothing: no goroutine,
// the global provider stays the no-op one, no span is made.
func TestSetupWithoutEndpoint(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	before := otel.GetTracerProvider()
	shutdown, err := Setup(t.Context(), "", "switchboard-test")
	if err != nil {
		t.Fatal(err)
	}
	if Enabled() || otel.GetTracerProvider() != before {
		t.Fatal("Setup without an endpoint installed a provider")
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
		t.Fatal("the global provider is an SDK one")
	}
	if _, span := Start(t.Context(), "x", trace.SpanKindInternal); span.IsRecording() {
		t.Fatal("a span is recorded")
	}
	if err := shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestSetupRefusesBadEndpoints(t *testing.T) {
	for _, ep := range []string{"collector:4318", "ftp://collector", "http://", "http://[::1"} {
		t.Run(ep, func(t *testing.T) {
			if _, err := Setup(t.Context(), ep, ""); err == nil || !strings.Contains(err.Error(), "otel.endpoint") {
				t.Fatalf("Setup(%q) = %v, want an error naming otel.endpoint", ep, err)
			}
			if Enabled() {
				t.Fatal("tracing is on after a refused Setup")
			}
		})
	}
}

// TestSetupExports: with an endpoint, spans reach an OTLP/HTTP collector
// (here a test server decoding the protobuf export), under the service
// name, once shutdown flushes them; shutdown leaves no goroutine.
func TestSetupExports(t *testing.T) {
	got := make(chan *coltrace.ExportTraceServiceRequest, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		req := &coltrace.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		got <- req
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Write(out)
	}))
	defer srv.Close()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	shutdown, err := Setup(t.Context(), srv.URL, "switchboard-test")
	if err != nil {
		t.Fatal(err)
	}
	if !Enabled() {
		t.Fatal("tracing is off after Setup with an endpoint")
	}
	ctx := Remote(t.Context(), clientParent, "")
	_, span := Start(ctx, "publish takedown.commands", trace.SpanKindProducer)
	span.End()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if Enabled() {
		t.Fatal("tracing is still on after shutdown")
	}
	srv.CloseClientConnections()

	var req *coltrace.ExportTraceServiceRequest
	select {
	case req = <-got:
	default:
		t.Fatal("nothing was exported")
	}
	rs := req.GetResourceSpans()
	if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 || len(rs[0].GetScopeSpans()[0].GetSpans()) != 1 {
		t.Fatalf("want one span, got %v", req)
	}
	service := ""
	for _, kv := range rs[0].GetResource().GetAttributes() {
		if kv.GetKey() == "service.name" {
			service = kv.GetValue().GetStringValue()
		}
	}
	if service != "switchboard-test" {
		t.Errorf("service.name = %q", service)
	}
	s := rs[0].GetScopeSpans()[0].GetSpans()[0]
	if s.GetName() != "publish takedown.commands" || trace.TraceID(s.GetTraceId()).String() != clientTraceID ||
		trace.SpanID(s.GetParentSpanId()).String() != clientSpanID {
		t.Fatalf("span %q trace %x parent %x, want the client's trace and parent", s.GetName(), s.GetTraceId(), s.GetParentSpanId())
	}
}

func TestExportURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://collector:4318":            "http://collector:4318/v1/traces",
		"http://collector:4318/":           "http://collector:4318/v1/traces",
		"https://otel.example/custom/path": "https://otel.example/custom/path",
	} {
		if got, err := exportURL(in); err != nil || got != want {
			t.Errorf("exportURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestRemoteAndPropagated: a trace context read from a traceparent and
// tracestate is written back the same; what is not valid is dropped.
func TestRemoteAndPropagated(t *testing.T) {
	ctx := Remote(context.Background(), clientParent, clientState)
	if tp, ts := Propagated(ctx); tp != clientParent || ts != clientState {
		t.Fatalf("Propagated = %q, %q", tp, ts)
	}
	for _, bad := range []string{"", "garbage", "00-" + clientTraceID + "-0000000000000000-01", "00-00000000000000000000000000000000-" + clientSpanID + "-01"} {
		ctx := Remote(context.Background(), bad, clientState)
		if tp, ts := Propagated(ctx); tp != "" || ts != "" {
			t.Errorf("Remote(%q): Propagated = %q, %q; want nothing", bad, tp, ts)
		}
	}
	// Continue keeps the context's own trace, and fills in a missing one.
	if tp, _ := Propagated(Continue(ctx, "00-"+strings.Repeat("1", 32)+"-"+clientSpanID+"-01", "")); tp != clientParent {
		t.Errorf("Continue replaced the context's trace: %q", tp)
	}
	if tp, _ := Propagated(Continue(context.Background(), clientParent, "")); tp != clientParent {
		t.Errorf("Continue did not fill in the trace: %q", tp)
	}
}

// TestFromRequestOff: while tracing is off a request's traceparent is
// kept, and one is made when it has none: a new trace, not sampled.
func TestFromRequestOff(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/v1/takedowns", nil)
	r.Header.Set("Traceparent", clientParent)
	r.Header.Set("Tracestate", clientState)
	if tp, ts := Propagated(FromRequest(r)); tp != clientParent || ts != clientState {
		t.Fatalf("kept %q, %q", tp, ts)
	}
	for _, h := range []string{"", "not a traceparent"} {
		r := httptest.NewRequest(http.MethodPost, "/v1/takedowns", nil)
		if h != "" {
			r.Header.Set("Traceparent", h)
		}
		sc := trace.SpanContextFromContext(FromRequest(r))
		if !sc.IsValid() || sc.IsSampled() || sc.TraceID().String() == clientTraceID {
			t.Fatalf("traceparent %q: made %v, want a new valid trace, not sampled", h, sc)
		}
	}
}

// TestHandler: the server span is a child of the client's span and ends
// with the response; a handed-off request's span ends when its answer is
// written, with that answer's status.
func TestHandler(t *testing.T) {
	exp := useRecorder(t)
	var done func(int, int64)
	h := Handler("POST /v1/takedowns", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tp, _ := Propagated(r.Context()); r.Header.Get("Traceparent") != "" && !strings.Contains(tp, clientTraceID) {
			t.Errorf("the handler's context carries %q", tp)
		}
		if r.Header.Get("X-Hand-Off") != "" {
			for w := w; w != nil; {
				if rec, ok := w.(interface{ HandOff() func(int, int64) }); ok {
					done = rec.HandOff()
				}
				u, ok := w.(interface{ Unwrap() http.ResponseWriter })
				if !ok {
					break
				}
				w = u.Unwrap()
			}
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))

	r := httptest.NewRequest(http.MethodPost, "/v1/takedowns", nil)
	r.Header.Set("Traceparent", clientParent)
	h.ServeHTTP(httptest.NewRecorder(), r)
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	s := spans[0]
	if s.Name != "POST /v1/takedowns" || s.SpanKind != trace.SpanKindServer || s.Parent.SpanID().String() != clientSpanID ||
		s.SpanContext.TraceID().String() != clientTraceID || s.Status.Code.String() != "Error" {
		t.Fatalf("span %+v", s)
	}

	exp.Reset()
	r = httptest.NewRequest(http.MethodPost, "/v1/takedowns", nil)
	r.Header.Set("Traceparent", clientParent)
	r.Header.Set("X-Hand-Off", "1")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if done == nil {
		t.Fatal("the writer has no HandOff")
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans ended before the handed-off answer", n)
	}
	done(http.StatusOK, 10)
	spans = exp.GetSpans()
	if len(spans) != 1 || !hasAttr(spans[0], "http.response.status_code", "200") {
		t.Fatalf("spans after the answer: %+v", spans)
	}

	// Without a traceparent the server span starts a new trace.
	exp.Reset()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v1/takedowns", nil))
	if spans = exp.GetSpans(); len(spans) != 1 || spans[0].Parent.IsValid() || !spans[0].SpanContext.IsSampled() {
		t.Fatalf("spans without a traceparent: %+v", spans)
	}
}

func hasAttr(s tracetest.SpanStub, key, value string) bool {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key && kv.Value.Emit() == value {
			return true
		}
	}
	return false
}

// BenchmarkHandler is what the trace context adds to a command's request
// while tracing is off (a made trace context, or the client's read) and on.
func BenchmarkHandler(b *testing.B) {
	h := Handler("POST /v1/takedowns", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tp, _ := Propagated(r.Context()); tp == "" {
			b.Fatal("no trace context")
		}
	}))
	run := func(hdr string) func(b *testing.B) {
		return func(b *testing.B) {
			r := httptest.NewRequest(http.MethodPost, "/v1/takedowns", nil)
			if hdr != "" {
				r.Header.Set("Traceparent", hdr)
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		}
	}
	b.Run("off/made", run(""))
	b.Run("off/client", run(clientParent))
	b.Run("on/client", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())))
		prev := otel.GetTracerProvider()
		SetProvider(tp)
		defer func() { SetProvider(nil); otel.SetTracerProvider(prev); tp.Shutdown(context.Background()) }()
		run(clientParent)(b)
	})
}

// TestHeaderNamesCanonical: FromRequest looks the trace headers up by their
// canonical names, which must be those of ExtTraceParent and ExtTraceState.
func TestHeaderNamesCanonical(t *testing.T) {
	if got := http.CanonicalHeaderKey(ExtTraceParent); got != traceParentHeader {
		t.Errorf("traceparent header %q, want %q", traceParentHeader, got)
	}
	if got := http.CanonicalHeaderKey(ExtTraceState); got != traceStateHeader {
		t.Errorf("tracestate header %q, want %q", traceStateHeader, got)
	}
}

// ctxHandler records how Handler served it.
type ctxHandler struct {
	viaContext bool
	sc         trace.SpanContext
}

func (h *ctxHandler) ServeHTTP(_ http.ResponseWriter, r *http.Request) {
	h.sc = trace.SpanContextFromContext(r.Context())
}

func (h *ctxHandler) ServeHTTPContext(ctx context.Context, _ http.ResponseWriter, _ *http.Request) {
	h.viaContext, h.sc = true, trace.SpanContextFromContext(ctx)
}

// TestHandlerContextHandler: while tracing is off, Handler gives a
// ContextHandler the request's trace context with ServeHTTPContext.
func TestHandlerContextHandler(t *testing.T) {
	SetProvider(nil)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	next := &ctxHandler{}
	r := httptest.NewRequest(http.MethodPost, "/v1/takedowns", nil)
	r.Header.Set(ExtTraceParent, tp)
	Handler("POST /v1/takedowns", next).ServeHTTP(httptest.NewRecorder(), r)
	if !next.viaContext || next.sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || !next.sc.IsRemote() {
		t.Fatalf("via ServeHTTPContext %v, span context %+v", next.viaContext, next.sc)
	}
}
