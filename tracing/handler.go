package tracing

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Handler serves next with the request's trace context (FromRequest) and,
// while tracing is on, a server span named route (the ServeMux pattern,
// such as "POST /v1/takedowns"). The span ends when the response is
// complete: when next returns, or, for a held request handed off from
// net/http (takedown.HandOffRecorder), when its answer is written.
func Handler(route string, next http.Handler) http.Handler {
	cnext, _ := next.(ContextHandler)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := FromRequest(r)
		t := current.Load()
		if t == nil {
			if cnext != nil {
				cnext.ServeHTTPContext(ctx, w, r) // no copy of r here
				return
			}
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		ctx, span := (*t).Start(ctx, route, trace.WithSpanKind(trace.SpanKindServer))
		if span.IsRecording() {
			span.SetAttributes(semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPRoute(route))
		}
		sw := &spanWriter{ResponseWriter: w, span: span, status: http.StatusOK}
		next.ServeHTTP(sw, r.WithContext(ctx))
		if !sw.handedOff {
			endServer(span, sw.status)
		}
	})
}

// ContextHandler is a handler that can serve a request with a context
// other than the request's own: ServeHTTPContext(ctx, w, r) does what
// ServeHTTP(w, r.WithContext(ctx)) does. Handler gives it the trace
// context that way while tracing is off, sparing a copy of the request
// when the handler copies it anyway (to add values of its own).
type ContextHandler interface {
	http.Handler
	ServeHTTPContext(ctx context.Context, w http.ResponseWriter, r *http.Request)
}

// endServer ends a server span with the response's status; 0 means the
// client hung up before its answer.
func endServer(span trace.Span, status int) {
	if span.IsRecording() {
		if status == 0 {
			span.AddEvent("client hung up before the answer")
		} else {
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
		}
	}
	span.End()
}

// spanWriter keeps the status of a response for its server span. Unwrap
// lets http.ResponseController reach Flush and Hijack underneath.
type spanWriter struct {
	http.ResponseWriter
	span      trace.Span
	status    int
	wrote     bool
	handedOff bool
}

func (w *spanWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *spanWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *spanWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// HandOff (takedown.HandOffRecorder) ends the span when the handed-off
// answer is written, not when the handler returns.
func (w *spanWriter) HandOff() func(status int, bytes int64) {
	w.handedOff = true
	span := w.span
	return func(status int, _ int64) { endServer(span, status) }
}
