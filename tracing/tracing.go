// Package tracing carries the W3C trace context of a command from the HTTP
// request that asks for it, through the command record on Kafka and the
// item service's answers, back to the answer (SPEC §10), and makes the
// OpenTelemetry spans of that path.
//
// The trace context always travels: a traceparent received on a request
// (or one made there) goes on the command record as the CloudEvents
// distributed-tracing extension, and the item service copies it onto its
// outcome events. Spans are made and exported only once Setup has an
// endpoint (or a test installed a provider with SetProvider); until then
// Start returns the span the context already holds, a non-recording one,
// and allocates nothing.
package tracing

import (
	"context"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// DefaultServiceName names the process in traces when Setup is given no
// service name.
const DefaultServiceName = "switchboard"

// tracesPath is where an OTLP/HTTP collector takes traces.
const tracesPath = "/v1/traces"

// scope is the instrumentation scope of Switchboard's spans.
const scope = "github.com/switchboard/switchboard"

// The names of the distributed-tracing extension's attributes: the
// members of a structured event, and, behind "ce_", the headers of a
// binary-mode record.
const (
	ExtTraceParent = "traceparent"
	ExtTraceState  = "tracestate"
)

// current is the tracer spans come from; nil while tracing is off.
var current atomic.Pointer[trace.Tracer]

// Enabled reports whether spans are made: Setup was given an endpoint, or
// a provider was installed with SetProvider.
func Enabled() bool { return current.Load() != nil }

// SetProvider makes tp the provider of Switchboard's spans, and the
// OpenTelemetry global one with the W3C TraceContext propagator; nil turns
// spans off again (the global provider stays as it was). Setup calls it;
// tests install an SDK provider around an in-memory exporter with it.
func SetProvider(tp trace.TracerProvider) {
	if tp == nil {
		current.Store(nil)
		return
	}
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t := tp.Tracer(scope)
	current.Store(&t)
}

// Setup installs trace export for the process. With an empty endpoint it
// installs nothing: no exporter, no goroutine, and the OpenTelemetry
// global provider stays the no-op one; the trace context still travels.
// Otherwise spans go, in batches, to the OTLP/HTTP collector at endpoint:
// a URL such as http://collector:4318 (the traces path /v1/traces is
// added when the URL has no path) or https://... for TLS. The standard
// OTEL_EXPORTER_OTLP_* variables set what the endpoint does not (headers,
// timeout, certificates). serviceName ("" means DefaultServiceName) names
// the process in traces.
//
// shutdown flushes the spans not yet exported, within ctx, and stops the
// export; it does nothing when nothing was installed.
func Setup(ctx context.Context, endpoint, serviceName string) (shutdown func(context.Context) error, err error) {
	if endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	u, err := exportURL(endpoint)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u))
	if err != nil {
		return nil, fmt.Errorf("tracing: otel.endpoint: %w", err)
	}
	if serviceName == "" {
		serviceName = DefaultServiceName
	}
	// The service name given here wins over OTEL_SERVICE_NAME; the
	// OTEL_RESOURCE_ATTRIBUTES add the rest.
	res, err := resource.Merge(resource.Default(),
		resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(serviceName)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	SetProvider(tp)
	return func(ctx context.Context) error {
		SetProvider(nil)
		return tp.Shutdown(ctx)
	}, nil
}

// exportURL checks endpoint and returns the URL traces are sent to.
func exportURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", fmt.Errorf("tracing: otel.endpoint %q: %w", endpoint, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("tracing: otel.endpoint %q: want an http:// or https:// URL of an OTLP/HTTP collector, like http://collector:4318", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = tracesPath
	}
	return u.String(), nil
}

// Start starts a span named name of kind kind, a child of the span ctx
// holds (local or remote), and returns it with ctx carrying it. While
// tracing is off it returns ctx as it is and a span that does nothing,
// allocating nothing: set attributes under span.IsRecording(), so that
// their values are not built for nothing.
func Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	t := current.Load()
	if t == nil {
		return ctx, noop
	}
	return (*t).Start(ctx, name, trace.WithSpanKind(kind))
}

// noop is the span Start returns while tracing is off: it does nothing,
// and ending it never ends the span of the caller's context.
var noop = trace.SpanFromContext(context.Background())

// End ends span, marking it failed with err when err is not nil.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// pair is a TextMapCarrier of the two trace context fields.
type pair struct{ parent, state string }

func (p *pair) Get(key string) string {
	switch key {
	case ExtTraceParent:
		return p.parent
	case ExtTraceState:
		return p.state
	}
	return ""
}

func (p *pair) Set(key, value string) {
	switch key {
	case ExtTraceParent:
		p.parent = value
	case ExtTraceState:
		p.state = value
	}
}

func (p *pair) Keys() []string { return []string{ExtTraceParent, ExtTraceState} }

// Remote returns ctx carrying the remote span context that traceparent and
// tracestate (W3C Trace Context) describe, or ctx itself when traceparent
// is empty or not valid. A tracestate that is not valid is dropped.
func Remote(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, &pair{traceparent, tracestate})
}

// Propagated returns the traceparent and tracestate of the span ctx holds,
// for the next hop; both are empty when it holds none.
func Propagated(ctx context.Context) (traceparent, tracestate string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	// The carrier escapes through the propagator's interface: a pooled
	// one spares an allocation per command.
	p := pairs.Get().(*pair)
	propagation.TraceContext{}.Inject(ctx, p)
	parent, state := p.parent, p.state
	*p = pair{}
	pairs.Put(p)
	return parent, state
}

// pairs are the carriers Propagated injects into.
var pairs = sync.Pool{New: func() any { return new(pair) }}

// Continue returns ctx when it holds a span context, else ctx carrying the
// one traceparent and tracestate describe: a retry without its request
// (the sweep's republish) continues the request's trace.
func Continue(ctx context.Context, traceparent, tracestate string) context.Context {
	if trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return Remote(ctx, traceparent, tracestate)
}

// The canonical HTTP header names of ExtTraceParent and ExtTraceState.
const (
	traceParentHeader = "Traceparent"
	traceStateHeader  = "Tracestate"
)

// FromRequest returns r's context carrying the trace context of its
// traceparent and tracestate headers. Without a valid traceparent it
// carries a new one while tracing is off (a new trace, not sampled: this
// node records nothing); while tracing is on the span started from it is
// the root of a new trace.
func FromRequest(r *http.Request) context.Context {
	ctx := r.Context()
	// The canonical forms of the header names: Get does not convert them
	// per request.
	if tp := r.Header.Get(traceParentHeader); tp != "" {
		if rc := Remote(ctx, tp, strings.Join(r.Header.Values(traceStateHeader), ",")); rc != ctx {
			return rc
		}
	}
	if Enabled() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, newSpanContext())
}

// newSpanContext makes a span context of a new trace: random IDs, the
// random flag set, not sampled.
func newSpanContext() trace.SpanContext {
	var c trace.SpanContextConfig
	for !c.TraceID.IsValid() {
		binary.BigEndian.PutUint64(c.TraceID[:8], mrand.Uint64())
		binary.BigEndian.PutUint64(c.TraceID[8:], mrand.Uint64())
	}
	for !c.SpanID.IsValid() {
		binary.BigEndian.PutUint64(c.SpanID[:], mrand.Uint64())
	}
	c.TraceFlags = trace.FlagsRandom
	c.Remote = true
	return trace.NewSpanContext(c)
}
