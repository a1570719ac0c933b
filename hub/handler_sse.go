package hub

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/hub/internal/cork"
	"github.com/switchboard/switchboard/hub/internal/streamid"
)

// Defaults for SSEConfig.
const (
	DefaultSSEHeartbeat    = 15 * time.Second
	DefaultSSERetry        = 3 * time.Second
	DefaultSSEWriteTimeout = 10 * time.Second
)

// SSEConfig configures the Server-Sent Events door.
type SSEConfig struct {
	// Heartbeat is how often an idle stream gets a ": ping" comment.
	Heartbeat time.Duration
	// Retry is the reconnection delay hinted to EventSource.
	Retry time.Duration
	// WriteTimeout bounds one write to a client.
	WriteTimeout time.Duration
	// Guard admits streams and authorises their channels; nil admits
	// everyone.
	Guard Guard
}

// sseExpired ends a stream whose credential expired (ErrExpired). It has
// no id, so Last-Event-ID still resumes after the last event: a page that
// signs in again reconnects without loss. EventSource's own reconnect,
// with the expired credential, is refused (401), which stops it.
const sseExpired = "event: expired\ndata: {\"reason\":\"expired\"}\n\n"

// sseSignedOut ends a stream whose session was signed out (ErrSignedOut),
// as sseExpired does.
const sseSignedOut = "event: expired\ndata: {\"reason\":\"signed_out\"}\n\n"

// sseDedupeWindow is how many recent event keys a multi-channel stream
// remembers to send an event that several of its channels carry once.
const sseDedupeWindow = 1024

// SSEHandler serves GET /v1/sse?channel=A&channel=B. Every event is written
// with an id that is the position of every channel of the stream, so the
// browser's Last-Event-ID (or the last_event_id query parameter) resumes
// all of them. With from=oldest, a channel the resume cursor does not name
// starts with everything its history holds.
func (h *Hub) SSEHandler(cfg SSEConfig) http.Handler {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultSSEHeartbeat
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultSSERetry
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultSSEWriteTimeout
	}
	return &sseHandler{h: h, cfg: cfg}
}

type sseHandler struct {
	h   *Hub
	cfg SSEConfig
}

func (s *sseHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		Error(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	q := r.URL.Query()
	chans := slices.Compact(slices.Sorted(slices.Values(q["channel"])))
	if len(chans) == 0 {
		Error(w, http.StatusBadRequest, "name at least one channel: /v1/sse?channel=reports")
		return
	}
	if len(chans) > s.h.cfg.MaxChannels {
		Error(w, http.StatusBadRequest, fmt.Sprintf("too many channels: at most %d per stream", s.h.cfg.MaxChannels))
		return
	}
	for _, ch := range chans {
		if err := ValidateChannel(ch); err != nil {
			Error(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	ctx, release, err := admit(s.cfg.Guard, r)
	if err != nil {
		WriteRefusal(w, err)
		return
	}
	handedOff := false // a hijacked stream owns the client and the slot
	defer func() {
		if !handedOff {
			release()
		}
	}()
	for _, ch := range chans {
		if err := allow(s.cfg.Guard, ctx, ch); err != nil {
			WriteRefusal(w, err)
			return
		}
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = q.Get("last_event_id")
	}
	resume, recent, err := parseStreamCursor(lastID)
	if err != nil {
		Error(w, http.StatusBadRequest, "Last-Event-ID: "+err.Error())
		return
	}

	c, err := s.h.NewClient()
	if err != nil {
		w.Header().Set("Retry-After", "1")
		Error(w, http.StatusServiceUnavailable, "shutting down: reconnect to another node")
		return
	}
	defer func() {
		if !handedOff {
			c.Close()
		}
	}()
	cur := streamid.New(chans)
	fromOldest := q.Get("from") == "oldest"
	for _, ch := range chans {
		var after *Position
		if p, ok := resume[ch]; ok {
			after = &p
		} else if fromOldest {
			after = &Position{}
		}
		res, err := c.Subscribe(ctx, ch, SubscribeOptions{After: after})
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return
			}
			w.Header().Set("Retry-After", "1")
			Error(w, http.StatusServiceUnavailable, "backplane unavailable")
			return
		}
		cur.Set(ch, streamid.Pos(res.Start))
	}

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	st := sseStream{cur: cur}
	if len(chans) > 1 {
		st.seen = streamid.NewKeyRing(sseDedupeWindow)
		// What the client got last before it dropped: their copies on the
		// stream's other channels are not sent again.
		for _, h := range recent {
			st.seen.Add(h)
		}
	}
	// The first id tells the browser where the stream starts, so a drop
	// before the first event resumes without loss.
	first := append([]byte("retry: "), strconv.FormatInt(s.cfg.Retry.Milliseconds(), 10)...)
	first = append(st.appendID(append(first, '\n')), '\n')
	if at, ok := ExpiryFrom(ctx); ok {
		c.expireAt(at)
	}
	s.h.bindSession(ctx, c)
	s.h.stats.SSEConnections.Add(1)
	if r.Method == http.MethodGet && r.ProtoMajor == 1 {
		if conn, err := hijackStream(w, first, &s.h.stats.Writes); err == nil {
			handedOff = true
			s.serveHijacked(conn, c, st, func() {
				release()
				s.h.stats.SSEConnections.Add(-1)
			})
			return
		}
	}
	defer s.h.stats.SSEConnections.Add(-1)
	s.serveHeld(w, r, c, st, first)
}

// serveHijacked streams on a hijacked connection. While idle it holds one
// small goroutine, blocked reading the socket to notice at once a client
// that hangs up, and a heartbeat timer; the writer runs only while
// something is queued or a heartbeat is due.
func (s *sseHandler) serveHijacked(conn net.Conn, c *Client, st sseStream, release func()) {
	d := &sseDoor{st: st, conn: conn, release: release}
	d.out.Init(conn, &s.h.stats.Writes)
	d.init(c, d, &d.out, conn, s.cfg.WriteTimeout)
	d.hb.start(s.cfg.Heartbeat, d.beat)
	d.start() // anything the subscriptions queued already
	go func() {
		// The client closed its side (or sent anything: the response
		// said Connection: close).
		var b [1]byte
		_, _ = conn.Read(b[:])
		d.end()
	}()
}

// serveHeld streams within the handler, for what cannot be hijacked (HTTP/2,
// HEAD, test recorders): the writer runs on the handler's goroutine, on
// net/http's buffers.
func (s *sseHandler) serveHeld(w http.ResponseWriter, r *http.Request, c *Client, st sseStream, first []byte) {
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	d := &sseDoor{st: st}
	d.out.Init(heldWriter{w, rc}, &s.h.stats.Writes)
	d.init(c, d, &d.out, rc, s.cfg.WriteTimeout)
	d.cut.set(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := d.out.Write(first); err != nil {
		return
	}
	d.hb.start(s.cfg.Heartbeat, d.beat)
	defer d.hb.stop()
	d.runHeld(r.Context().Done())
}

// heldWriter writes a held stream: every write is flushed to the client.
type heldWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (h heldWriter) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	if err == nil {
		err = h.rc.Flush()
	}
	return n, err
}

// hijackStream takes the connection from net/http and writes the response
// head and first bytes on it, counting the write in writes. The body is
// delimited by the connection's close, so no chunking is needed.
func hijackStream(w http.ResponseWriter, first []byte, writes *atomic.Uint64) (net.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	_ = brw.Writer.Flush()
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	w.Header().Write(&b)
	b.WriteString("Connection: close\r\n\r\n")
	b.Write(first)
	_ = conn.SetWriteDeadline(time.Now().Add(DefaultSSEWriteTimeout))
	writes.Add(1)
	if _, err := conn.Write(b.Bytes()); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// sseDoor is the SSE framing of the writer: events with the stream's id,
// ": ping" heartbeats, and the expired event before the end.
type sseDoor struct {
	writer
	out     cork.Writer
	st      sseStream
	hb      heartbeat
	conn    net.Conn // nil for a held stream
	release func()
}

func (d *sseDoor) write(items []queueItem, beat bool) error {
	for i := range items {
		if err := d.out.Append(func(b []byte) []byte { return d.st.add(b, &items[i]) }); err != nil {
			return err
		}
	}
	if beat {
		return d.out.Append(func(b []byte) []byte { return append(b, ": ping\n\n"...) })
	}
	return nil
}

// finish ends the stream. A slow consumer or a shutdown just ends it: the
// browser reconnects (elsewhere) with its Last-Event-ID. An expired
// credential is said first.
func (d *sseDoor) finish(err error) {
	switch err {
	case ErrExpired:
		_ = d.out.Append(func(b []byte) []byte { return append(b, sseExpired...) })
	case ErrSignedOut:
		_ = d.out.Append(func(b []byte) []byte { return append(b, sseSignedOut...) })
	}
	d.end()
}

func (d *sseDoor) abort() { d.end() }

// end ends a hijacked stream once: the client, the heartbeat, the socket,
// the connection slot. A held stream ends when its handler returns.
func (d *sseDoor) end() {
	if d.conn == nil {
		return
	}
	d.c.CloseAfter(func() {
		d.hb.stop()
		d.conn.Close()
		d.release()
	})
}

// sseStream encodes one stream's frames.
type sseStream struct {
	cur  streamid.Cursor
	seen *streamid.KeyRing
}

// add appends the frame of it to b.
func (st *sseStream) add(b []byte, it *queueItem) []byte {
	switch it.Kind {
	case itemEvent:
		d := it.delivery
		if !st.cur.Advance(d.Channel, streamid.Pos(d.Pos)) {
			return b // Sent already, and its position with it, via a sibling.
		}
		// Move every sibling channel of the stream whose next event this
		// is, so the id alone resumes all of them without a duplicate.
		for _, s := range d.Siblings {
			if s.Channel != d.Channel {
				st.cur.Follow(s.Channel, streamid.Pos(s.Pos))
			}
		}
		dup := st.seen != nil && !st.seen.Add(d.Event.keyHash())
		b = st.appendID(b)
		if dup {
			// Sent already through another channel of this stream: only
			// move the browser's Last-Event-ID.
			return append(b, '\n')
		}
		return append(b, d.SSEFrame()...)
	case itemGap:
		st.cur.Set(it.Channel, streamid.Pos(it.Pos))
		b = st.appendID(b)
		b = append(b, "event: gap\ndata: {\"channel\":\""...)
		b = append(b, it.Channel...)
		return append(b, "\"}\n\n"...)
	}
	return b
}

func (st *sseStream) appendID(b []byte) []byte {
	b = append(b, "id: "...)
	b = st.cur.AppendEncoded(b, st.seen.Newest())
	return append(b, '\n')
}
