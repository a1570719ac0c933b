package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Defaults for HTTPGuardConfig.
const (
	// DefaultBodyTimeout bounds how long a request body may take to
	// arrive, as long as the header's own bound (the server's
	// ReadHeaderTimeout): 64 KiB in 10 s is 6.4 KB/s.
	DefaultBodyTimeout = 10 * time.Second
	// DefaultMaxBodyBytes is the largest request body the guard reads.
	DefaultMaxBodyBytes = 64 << 10
	// DefaultMaxUnauthenticated bounds the connections that have not yet
	// authenticated: far above the handshakes of a reconnect storm in
	// flight at once, far below a production file-descriptor limit.
	DefaultMaxUnauthenticated = 1024
)

// HTTPGuardConfig configures the HTTP-level defences of a server.
type HTTPGuardConfig struct {
	// BodyTimeout bounds reading a request's whole body; past it the
	// request is answered 408 and its connection closed.
	BodyTimeout time.Duration
	// MaxBodyBytes bounds a request body; a larger one is answered 413.
	MaxBodyBytes int64
	// MaxUnauthenticated bounds the open connections on which no request
	// has yet carried a valid credential (see Authenticated).
	MaxUnauthenticated int
}

// Reasons the guard counts in HTTPGuardStats.
const (
	// GuardRefusedConnection: a new connection over MaxUnauthenticated,
	// closed at once because no idle one could make room.
	GuardRefusedConnection = "connection_refused"
	// GuardClosedIdle: an idle unauthenticated keep-alive connection,
	// closed to make room for a new one.
	GuardClosedIdle = "idle_closed"
	// GuardBodyTimeout: a body that did not arrive within BodyTimeout (408).
	GuardBodyTimeout = "body_timeout"
	// GuardAmbiguousLength: a request with both Content-Length and
	// Transfer-Encoding (400, connection closed).
	GuardAmbiguousLength = "ambiguous_length"
)

// GuardReasons are the reasons HTTPGuardStats counts, for a metric's labels.
var GuardReasons = []string{GuardRefusedConnection, GuardClosedIdle, GuardBodyTimeout, GuardAmbiguousLength}

// HTTPGuard is what a server needs below the doors against clients that
// hold connections without using them honestly:
//
//   - a request body must arrive within BodyTimeout (408 problem+json,
//     connection closed), so a withheld body holds nothing for long;
//   - a request with both Content-Length and Transfer-Encoding is refused
//     with 400 and its connection closed (RFC 9112 §6.1: net/http would
//     serve it by Transfer-Encoding and keep the connection, which is what
//     request smuggling through a proxy that reads Content-Length needs);
//   - at most MaxUnauthenticated connections are open on which no request
//     has carried a valid credential; a new one over the cap closes an idle
//     one of those, or is itself closed at once.
//
// Wire it as a server's listener (Listener), ConnContext, ConnState and
// outermost handler (Handler). A Guard tells it with Authenticated which
// connections carried a valid credential.
type HTTPGuard struct {
	cfg  HTTPGuardConfig
	log  *slog.Logger
	logs *rate.Limiter // bounds the guard's log lines under attack

	mu     sync.Mutex
	unauth int                       // counted connections
	idle   map[*guardedConn]struct{} // counted connections idle between requests

	counts [4]atomic.Uint64 // by index in GuardReasons
}

// NewHTTPGuard returns a guard; zero fields of cfg take their defaults.
func NewHTTPGuard(cfg HTTPGuardConfig, log *slog.Logger) (*HTTPGuard, error) {
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxUnauthenticated == 0 {
		cfg.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	switch {
	case cfg.BodyTimeout < 0:
		return nil, fmt.Errorf("hub: BodyTimeout must not be negative, got %s", cfg.BodyTimeout)
	case cfg.MaxBodyBytes < 0:
		return nil, fmt.Errorf("hub: MaxBodyBytes must not be negative, got %d", cfg.MaxBodyBytes)
	case cfg.MaxUnauthenticated < 0:
		return nil, fmt.Errorf("hub: MaxUnauthenticated must not be negative, got %d", cfg.MaxUnauthenticated)
	}
	if log == nil {
		log = slog.Default()
	}
	return &HTTPGuard{cfg: cfg, log: log, logs: rate.NewLimiter(1, 5), idle: map[*guardedConn]struct{}{}}, nil
}

// HTTPGuardStats is what the guard has done.
type HTTPGuardStats struct {
	// Unauthenticated is how many open connections have not authenticated.
	Unauthenticated int
	// Idle is how many of those wait between requests: the ones a new
	// connection over the cap may close.
	Idle int
	// Counts are by reason (GuardReasons).
	Counts map[string]uint64
}

// Stats returns the guard's counts.
func (g *HTTPGuard) Stats() HTTPGuardStats {
	g.mu.Lock()
	s := HTTPGuardStats{Unauthenticated: g.unauth, Idle: len(g.idle), Counts: make(map[string]uint64, len(GuardReasons))}
	g.mu.Unlock()
	for i, r := range GuardReasons {
		s.Counts[r] = g.counts[i].Load()
	}
	return s
}

func (g *HTTPGuard) count(reason string, msg string, args ...any) {
	for i, r := range GuardReasons {
		if r == reason {
			g.counts[i].Add(1)
		}
	}
	if g.logs.Allow() {
		g.log.Warn(msg, append(args, "reason", reason)...)
	}
}

// Listener returns ln with the guard counting its connections. Over the
// cap, Accept closes an idle unauthenticated connection to make room, or
// closes the new one before reading anything from it.
func (g *HTTPGuard) Listener(ln net.Listener) net.Listener {
	return &guardListener{Listener: ln, g: g}
}

type guardListener struct {
	net.Listener
	g *HTTPGuard
}

func (l *guardListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := &guardedConn{Conn: nc, g: l.g}
		c.scanning.Store(true)
		if l.g.admit(c) {
			return c, nil
		}
		nc.Close()
	}
}

// admit counts c as unauthenticated, making room by closing an idle one
// when the cap is reached; it reports false when there is no room.
func (g *HTTPGuard) admit(c *guardedConn) bool {
	var victim *guardedConn
	g.mu.Lock()
	if g.unauth >= g.cfg.MaxUnauthenticated {
		for v := range g.idle {
			victim = v
			break
		}
		if victim == nil {
			g.mu.Unlock()
			g.count(GuardRefusedConnection, "connection closed: too many unauthenticated connections",
				"remote", c.RemoteAddr().String(), "max", g.cfg.MaxUnauthenticated)
			return false
		}
		g.forgetLocked(victim)
	}
	g.unauth++
	c.counted = true
	g.mu.Unlock()
	if victim != nil {
		// The server's read of the next request fails and it closes the
		// connection; a client retries an idempotent request elsewhere.
		victim.Conn.Close()
		g.count(GuardClosedIdle, "idle unauthenticated connection closed to make room",
			"remote", victim.RemoteAddr().String(), "max", g.cfg.MaxUnauthenticated)
	}
	return true
}

// forgetLocked stops counting c; g.mu is held.
func (g *HTTPGuard) forgetLocked(c *guardedConn) {
	if c.counted {
		c.counted = false
		g.unauth--
		delete(g.idle, c)
	}
}

type guardedConnKey struct{}

// ConnContext is the server's ConnContext: it lets Authenticated and
// Handler find a request's connection.
func (g *HTTPGuard) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if gc := asGuarded(c); gc != nil {
		return context.WithValue(ctx, guardedConnKey{}, gc)
	}
	return ctx
}

// ConnState is the server's ConnState: an unauthenticated connection
// waiting between requests may be closed to make room, and a hijacked one
// (a WebSocket or an SSE stream) is no longer scanned for request heads.
func (g *HTTPGuard) ConnState(c net.Conn, s http.ConnState) {
	gc := asGuarded(c)
	if gc == nil {
		return
	}
	switch s {
	case http.StateIdle:
		g.mu.Lock()
		if gc.counted {
			g.idle[gc] = struct{}{}
		}
		g.mu.Unlock()
	case http.StateActive, http.StateHijacked:
		if s == http.StateHijacked {
			gc.scanning.Store(false)
		}
		g.mu.Lock()
		delete(g.idle, gc)
		g.mu.Unlock()
	}
}

// asGuarded finds the guard's connection under c (c itself, or the
// connection under a *tls.Conn).
func asGuarded(c net.Conn) *guardedConn {
	for range 2 {
		switch v := c.(type) {
		case *guardedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Authenticated tells the guard that the request running in ctx carried a
// valid credential: its connection no longer counts as unauthenticated. A
// Guard calls it when it admits a request; without a guard it does nothing.
func Authenticated(ctx context.Context) {
	c, _ := ctx.Value(guardedConnKey{}).(*guardedConn)
	if c == nil || c.authed.Load() {
		return
	}
	c.authed.Store(true)
	c.g.mu.Lock()
	c.g.forgetLocked(c)
	c.g.mu.Unlock()
}

// guardedConn is a connection the guard counts and scans.
type guardedConn struct {
	net.Conn
	g *HTTPGuard

	counted bool // guarded by g.mu: counts as unauthenticated
	authed  atomic.Bool
	closed  atomic.Bool

	// The scanner sees the bytes net/http reads, before it parses them.
	// Only the goroutine reading the connection touches scan; net/http
	// reads from one goroutine at a time, and stops before a hijack.
	scanning  atomic.Bool
	scan      headScanner
	ambiguous atomic.Bool
}

// NetConn returns the connection under the guard's (as *tls.Conn does),
// where a held takedown watches for its client's hang-up.
func (c *guardedConn) NetConn() net.Conn { return c.Conn }

func (c *guardedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.scanning.Load() && c.scan.scan(p[:n]) {
		c.ambiguous.Store(true)
	}
	return n, err
}

func (c *guardedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.g.mu.Lock()
		c.g.forgetLocked(c)
		c.g.mu.Unlock()
	}
	return c.Conn.Close()
}

// headScanner finds, in the bytes of a connection, a block of lines up to
// an empty line (a request head) that holds both a Content-Length and a
// Transfer-Encoding header line. net/http drops Content-Length from such a
// request before a handler sees it, so the raw bytes are where it shows.
// Body bytes are scanned too: a body that looks like such a head can only
// make its own connection refused.
type headScanner struct {
	line   [len("transfer-encoding:")]byte // the start of the current line, lower case
	n      int                             // length of the current line, capped at len(line)+1
	cl, te bool                            // the block so far has these header lines
}

// scan takes the next bytes read; it reports whether a block with both
// headers ended in them.
func (s *headScanner) scan(p []byte) bool {
	found := false
	for len(p) > 0 {
		if s.n > len(s.line) {
			// A long line: only where it ends matters.
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return found
			}
			p = p[i:]
		}
		c := p[0]
		p = p[1:]
		if c == '\n' {
			found = s.endLine() || found
			continue
		}
		if s.n < len(s.line) {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			s.line[s.n] = c
		}
		s.n++
	}
	return found
}

// endLine ends the current line: an empty one ends the block.
func (s *headScanner) endLine() bool {
	n := s.n
	s.n = 0
	if n == 0 || n == 1 && s.line[0] == '\r' {
		both := s.cl && s.te
		s.cl, s.te = false, false
		return both
	}
	l := s.line[:min(n, len(s.line))]
	switch {
	case bytes.HasPrefix(l, []byte("content-length:")):
		s.cl = true
	case bytes.HasPrefix(l, []byte("transfer-encoding:")):
		s.te = true
	}
	return false
}

// Handler wraps a server's handler: it refuses a request whose connection
// sent an ambiguous length, and reads a request's body (at most
// MaxBodyBytes) within BodyTimeout before next sees the request, so no
// handler, nor net/http after it, waits for a withheld body. A request
// without a body passes untouched, and the read deadline is cleared once
// the body is in, so the doors that hijack or stream keep their own.
func (g *HTTPGuard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, _ := r.Context().Value(guardedConnKey{}).(*guardedConn); c != nil && c.ambiguous.Load() {
			g.count(GuardAmbiguousLength, "request refused: both Content-Length and Transfer-Encoding",
				"remote", r.RemoteAddr, "path", r.URL.Path)
			closeAfter(w)
			WriteProblem(w, Problem{Type: ProblemBadRequest,
				Detail: "the request has both Content-Length and Transfer-Encoding: send one of them"})
			return
		}
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > g.cfg.MaxBodyBytes {
			g.tooLarge(w, r)
			return
		}
		_ = setReadDeadline(w, time.Now().Add(g.cfg.BodyTimeout))
		body, err := readAtMost(r.Body, r.ContentLength, g.cfg.MaxBodyBytes+1)
		if err != nil {
			closeAfter(w)
			var ne net.Error
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
				g.count(GuardBodyTimeout, "request refused: the body did not arrive in time",
					"remote", r.RemoteAddr, "path", r.URL.Path, "timeout", g.cfg.BodyTimeout)
				WriteProblem(w, Problem{Type: ProblemRequestTimeout,
					Detail: fmt.Sprintf("the request body did not arrive within %s", g.cfg.BodyTimeout)})
				return
			}
			WriteProblem(w, Problem{Type: ProblemBadRequest, Detail: "the request body could not be read"})
			return
		}
		if int64(len(body)) > g.cfg.MaxBodyBytes {
			g.tooLarge(w, r)
			return
		}
		_ = setReadDeadline(w, time.Time{})
		rb := &readBody{b: body}
		rb.Reset(body)
		r.Body = rb
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// setReadDeadline sets the read deadline of w's connection, found under
// w's wrappers (Unwrap) as http.ResponseController finds it, without
// making a controller per request.
func setReadDeadline(w http.ResponseWriter, t time.Time) error {
	for {
		switch v := w.(type) {
		case interface{ SetReadDeadline(time.Time) error }:
			return v.SetReadDeadline(t)
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return http.ErrNotSupported
		}
	}
}

// readAtMost reads r to its end, or to limit bytes; size, when positive,
// is how many bytes to expect (a request's Content-Length).
func readAtMost(r io.Reader, size, limit int64) ([]byte, error) {
	n := int64(512)
	if size > 0 {
		n = size + 1 // one more: the end shows without growing
	}
	b := make([]byte, 0, min(n, limit))
	for {
		if len(b) == cap(b) {
			if int64(len(b)) >= limit {
				return b, nil
			}
			b = append(b, 0)[:len(b)]
			b = b[:len(b):min(int64(cap(b)), limit)]
		}
		m, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// readBody is a request body the guard read whole (Handler).
type readBody struct {
	bytes.Reader
	b []byte
}

func (*readBody) Close() error { return nil }

// ReadBody returns r's body when the HTTP guard read it whole (Handler)
// and none of it was read since, so a handler takes it without a copy or
// a wait; otherwise it reports false and the body is read as usual.
func ReadBody(r *http.Request) ([]byte, bool) {
	rb, ok := r.Body.(*readBody)
	if !ok || rb.Len() != len(rb.b) {
		return nil, false
	}
	return rb.b, true
}

// closeAfter makes the answer to a refused request the connection's last,
// and net/http not wait for the rest of its body: after a handler returns,
// net/http reads what is left of the body, even on a connection it closes.
func closeAfter(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// tooLarge answers 413. A moderate overshoot (at most four times
// MaxBodyBytes, within BodyTimeout) is read and dropped first: a client
// still sending its body when the server closes gets a connection reset
// instead of the answer. A larger body is not read at all.
func (g *HTTPGuard) tooLarge(w http.ResponseWriter, r *http.Request) {
	if limit := 4 * g.cfg.MaxBodyBytes; r.ContentLength <= limit {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(g.cfg.BodyTimeout))
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, limit))
	}
	closeAfter(w)
	WriteProblem(w, Problem{Type: ProblemTooLarge, Detail: fmt.Sprintf("the body is over %d bytes", g.cfg.MaxBodyBytes)})
}
