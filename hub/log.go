package hub

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/google/uuid"
)

type logKey struct{}

// WithLogger returns ctx carrying log, for the lines logged while serving a
// request (they then carry its request_id).
func WithLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, logKey{}, log)
}

// LoggerFrom returns the logger ctx carries, or fallback.
func LoggerFrom(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(logKey{}).(*slog.Logger); ok {
		return l
	}
	return fallback
}

// RequestLog gives every request a request ID (a sane incoming X-Request-ID,
// or a new one), echoes it in X-Request-ID, hands handlers a logger that
// carries it, and logs one line per request. It logs the path, never the
// query: access_token may be there.
func RequestLog(log *slog.Logger, next http.Handler) http.Handler {
	return RequestLogClient(log, nil, next)
}

// RequestLogClient is RequestLog whose line names the client as client
// says (the address behind trusted proxies); nil means the peer's address.
func RequestLogClient(log *slog.Logger, client func(*http.Request) netip.Addr, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// X-Request-Id is the canonical form of X-Request-ID: no
		// conversion per request.
		id := r.Header.Get("X-Request-Id")
		if !saneID(id) {
			id = uuid.NewString()
		}
		w.Header().Set("X-Request-Id", id)
		l := log.With("request_id", id)
		start := time.Now()
		var addr string
		if client != nil {
			addr = client(r).String()
		} else if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			addr = ap.Addr().Unmap().String()
		}
		// The line keeps what it logs, not the request: a request handed
		// off from net/http is logged when its answer is written, and
		// must not hold its request (headers, context) until then.
		method, path := r.Method, r.URL.Path
		line := func(ctx context.Context, status int, bytes int64) {
			log.LogAttrs(ctx, slog.LevelInfo, "http request", slog.String("request_id", id),
				slog.String("method", method), slog.String("path", path), slog.String("client", addr),
				slog.Int("status", status), slog.Int64("bytes", bytes),
				slog.Duration("duration", time.Since(start)))
		}
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK, line: line}
		next.ServeHTTP(rw, r.WithContext(WithLogger(r.Context(), l)))
		if !rw.handedOff {
			line(r.Context(), rw.status, rw.bytes)
		}
	})
}

func saneID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// statusWriter records the status and size of a response. Unwrap lets
// http.ResponseController reach Flush and Hijack underneath.
type statusWriter struct {
	http.ResponseWriter
	status    int
	bytes     int64
	wrote     bool
	line      func(ctx context.Context, status int, bytes int64) // logs the request
	handedOff bool                                               // HandOff logs it, later
}

// HandOff (takedown.HandOffRecorder) logs the request when its handed-off
// answer is written, not when the handler returns; a client that hung up
// first (status 0) is logged as a handler that wrote nothing.
func (w *statusWriter) HandOff() func(status int, bytes int64) {
	w.handedOff = true
	line := w.line
	return func(status int, bytes int64) {
		if status == 0 {
			status = http.StatusOK
		}
		line(context.Background(), status, bytes)
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
