package hub

import (
	"context"
	"crypto/rand"
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

// LoggerFrom returns the logger ctx carries, or fallback. The request
// log's logger lives in the request's context: something that outlives
// the request (a held request handed off from net/http) keeps a copy of
// the logger, not the pointer, or it keeps the whole context alive.
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
			id = newRequestID()
		}
		ctx := newLoggerCtx(r.Context(), log, id)
		// The line keeps what it logs, not the request: a request handed
		// off from net/http is logged when its answer is written, and
		// must not hold its request (headers, context) until then.
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK, line: accessLine{
			log: log, id: id, method: r.Method, path: r.URL.Path, start: time.Now()}}
		// Header().Set("X-Request-Id", id), with the value's slice in rw.
		rw.idHeader[0] = id
		w.Header()["X-Request-Id"] = rw.idHeader[:]
		if client != nil {
			rw.line.addr, rw.line.hasAddr = client(r), true
		} else if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			rw.line.addr, rw.line.hasAddr = ap.Addr().Unmap(), true
		}
		next.ServeHTTP(rw, r.WithContext(ctx))
		if !rw.handedOff {
			rw.line.write(r.Context(), rw.status, rw.bytes)
		}
	})
}

// newRequestID returns a new random (version 4) UUID, as uuid.NewString
// does, with one allocation (the string) instead of two.
func newRequestID() string {
	var u uuid.UUID
	if _, err := rand.Read(u[:]); err != nil {
		return uuid.NewString() // crypto/rand does not fail; if it did, uuid's way says so
	}
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // variant RFC 4122
	return u.String()
}

// accessLine is what a request's line logs, kept by value in its
// statusWriter: no closure per request.
type accessLine struct {
	log              *slog.Logger
	id, method, path string
	addr             netip.Addr // the client, logged as a string: "" without one
	hasAddr          bool
	start            time.Time
}

// write logs the line of a request answered with status and bytes.
func (a *accessLine) write(ctx context.Context, status int, bytes int64) {
	// LogAttrs asks too; asking first spares the client's string when
	// the line is not logged.
	if !a.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	var client string
	if a.hasAddr {
		client = a.addr.String()
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, "http request", slog.String("request_id", a.id),
		slog.String("method", a.method), slog.String("path", a.path), slog.String("client", client),
		slog.Int("status", status), slog.Int64("bytes", bytes),
		slog.Duration("duration", time.Since(a.start)))
}

// loggerCtx is WithLogger(parent, log.With("request_id", id)) made in
// one allocation instead of three (the context, the logger and its
// attributes).
type loggerCtx struct {
	context.Context
	log   slog.Logger
	attrs [1]slog.Attr
}

func newLoggerCtx(parent context.Context, log *slog.Logger, id string) *loggerCtx {
	c := &loggerCtx{Context: parent}
	c.attrs[0] = slog.String("request_id", id)
	// As Logger.With does: the handler with the attributes, in a new
	// logger.
	c.log = *slog.New(log.Handler().WithAttrs(c.attrs[:]))
	return c
}

// Value answers LoggerFrom's key with the logger; every other key is the
// parent's, as with context.WithValue.
func (c *loggerCtx) Value(key any) any {
	if key == (logKey{}) {
		return &c.log
	}
	return c.Context.Value(key)
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
	line      accessLine // logs the request
	handedOff bool       // HandOff logs it, later
	idHeader  [1]string  // the value of its X-Request-Id header
}

// HandOff (takedown.HandOffRecorder) logs the request when its handed-off
// answer is written, not when the handler returns; a client that hung up
// first (status 0) is logged as a handler that wrote nothing.
func (w *statusWriter) HandOff() func(status int, bytes int64) {
	w.handedOff = true
	line := w.line // a copy: the closure keeps neither w nor its writer
	return func(status int, bytes int64) {
		if status == 0 {
			status = http.StatusOK
		}
		line.write(context.Background(), status, bytes)
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
