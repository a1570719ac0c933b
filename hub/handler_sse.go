package hub

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
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
	cur := newStreamPos(chans)
	fromOldest := q.Get("from") == "oldest"
	for i, ch := range chans {
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
		cur.pos[i] = res.Start
	}

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	st := sseStream{cur: cur}
	if len(chans) > 1 {
		st.seen = newKeyRing(sseDedupeWindow)
		// What the client got last before it dropped: their copies on the
		// stream's other channels are not sent again.
		for _, h := range recent {
			st.seen.addHash(h)
		}
	}
	// The first id tells the browser where the stream starts, so a drop
	// before the first event resumes without loss.
	st.buf = append(st.buf, "retry: "...)
	st.buf = strconv.AppendInt(st.buf, s.cfg.Retry.Milliseconds(), 10)
	st.buf = append(st.buf, '\n')
	st.buf = st.appendID(st.buf)
	st.buf = append(st.buf, '\n')
	if at, ok := ExpiryFrom(ctx); ok {
		c.expireAt(at)
	}
	s.h.stats.SSEConnections.Add(1)
	if r.Method == http.MethodGet && r.ProtoMajor == 1 {
		if conn, err := hijackStream(w, st.buf); err == nil {
			handedOff = true
			st.buf = st.buf[:0]
			sc := &sseConn{conn: conn, c: c, st: st, cfg: s.cfg, wake: make(chan struct{}, 1), release: func() {
				release()
				s.h.stats.SSEConnections.Add(-1)
			}}
			sc.cut.conn = conn
			c.setNotify(sc.notify)
			sc.hb = time.AfterFunc(s.cfg.Heartbeat, sc.heartbeat)
			sc.kick() // anything the subscriptions queued already
			go sc.watchClose()
			return
		}
	}
	defer s.h.stats.SSEConnections.Add(-1)
	s.serveHeld(w, r, ctx, c, &st)
}

// serveHeld streams within the handler, for what cannot be hijacked (HTTP/2,
// HEAD, test recorders): one goroutine per stream, net/http's buffers.
func (s *sseHandler) serveHeld(w http.ResponseWriter, r *http.Request, ctx context.Context, c *Client, st *sseStream) {
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	flush := func() error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_, err := w.Write(st.buf)
		if err == nil {
			err = rc.Flush()
		}
		st.reset()
		return err
	}
	if flush() != nil {
		return
	}
	hb := time.NewTicker(s.cfg.Heartbeat)
	defer hb.Stop()
	ready := make(chan struct{}, 1)
	c.setNotify(func() {
		select {
		case ready <- struct{}{}:
		default:
		}
	})
	ready <- struct{}{} // what the subscriptions queued already
	for {
		select {
		case <-ready:
			items := c.drain()
			for _, it := range items {
				st.add(it)
			}
			c.release(items)
			if flush() != nil {
				return
			}
		case <-hb.C:
			st.buf = append(st.buf, ": ping\n\n"...)
			if flush() != nil {
				return
			}
		case <-c.Done():
			// Slow consumer or shutdown: end the stream; the browser
			// reconnects (elsewhere) with its Last-Event-ID. An expired
			// credential is said first.
			if c.Err() == ErrExpired {
				st.buf = append(st.buf, sseExpired...)
				_ = flush()
			}
			return
		case <-ctx.Done():
			return
		}
	}
}

// hijackStream takes the connection from net/http and writes the response
// head and first bytes on it. The body is delimited by the connection's
// close, so no chunking is needed.
func hijackStream(w http.ResponseWriter, first []byte) (net.Conn, error) {
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
	if _, err := conn.Write(b.Bytes()); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// sseConn is a hijacked stream. While idle it holds one small goroutine,
// blocked reading the socket to notice at once a client that hangs up; a
// writer runs only while something is queued or a heartbeat is due, and the
// heartbeat is a timer. A stream that ends as a slow consumer gives the
// write in flight slowCloseTimeout, not the whole write timeout, then ends.
type sseConn struct {
	conn    net.Conn
	cut     cutoff
	c       *Client
	st      sseStream
	cfg     SSEConfig
	release func()
	hb      *time.Timer

	running atomic.Bool
	wake    chan struct{} // wakes a lingering writer
	steady  lingering
	pingDue atomic.Bool
	ended   atomic.Bool
}

// notify is the client's notify: it runs under the client's lock when
// items are queued or the client ends.
func (s *sseConn) notify() {
	if s.c.err == ErrSlowConsumer {
		s.cut.cut(min(slowCloseTimeout, s.cfg.WriteTimeout))
	}
	s.kick()
}

// kick starts the writer unless it runs already.
func (s *sseConn) kick() {
	if s.running.CompareAndSwap(false, true) {
		go s.pump()
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sseConn) heartbeat() {
	if s.ended.Load() {
		return
	}
	s.pingDue.Store(true)
	s.kick()
	s.hb.Reset(s.cfg.Heartbeat)
}

func (s *sseConn) pump() {
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		items := s.c.drain()
		ping := s.pingDue.Swap(false)
		if len(items) > 0 || ping {
			if len(items) > 0 {
				s.steady.wrote()
			}
			for _, it := range items {
				s.st.add(it)
			}
			s.c.release(items)
			if ping {
				s.st.buf = append(s.st.buf, ": ping\n\n"...)
			}
			s.cut.set(time.Now().Add(s.cfg.WriteTimeout))
			_, err := s.conn.Write(s.st.buf)
			s.st.reset()
			if err != nil {
				s.end()
				return
			}
			continue
		}
		select {
		case <-s.c.Done():
			// Slow consumer or shutdown: end the stream; the browser
			// reconnects (elsewhere) with its Last-Event-ID. An expired
			// credential is said first.
			if s.c.Err() == ErrExpired {
				s.cut.set(time.Now().Add(s.cfg.WriteTimeout))
				_, _ = s.conn.Write([]byte(sseExpired))
			}
			s.end()
			return
		default:
		}
		// A stream fed steadily keeps its writer a little, instead of
		// starting one per event.
		if s.steady.is() {
			if linger == nil {
				linger = time.NewTimer(writerLinger)
			} else {
				linger.Reset(writerLinger)
			}
			select {
			case <-s.wake:
				continue
			case <-s.c.Done():
				continue
			case <-linger.C:
			}
		}
		s.running.Store(false)
		if s.c.queued() == 0 && !s.pingDue.Load() && !isDone(s.c) || !s.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// watchClose ends the stream when the client closes its side (or sends
// anything: the response said Connection: close).
func (s *sseConn) watchClose() {
	var b [1]byte
	_, _ = s.conn.Read(b[:])
	s.end()
}

// end closes the stream once: the socket, the client, the connection slot.
func (s *sseConn) end() {
	if !s.ended.CompareAndSwap(false, true) {
		return
	}
	s.c.CloseAfter(func() {
		s.hb.Stop()
		s.conn.Close()
		s.release()
	})
}

func isDone(c *Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// sseStream encodes one stream's frames: everything queued goes out in one
// write.
type sseStream struct {
	cur  streamPos
	seen *keyRing
	buf  []byte
}

// reset empties the buffer, dropping it when a burst made it large.
func (st *sseStream) reset() {
	if cap(st.buf) > 64<<10 {
		st.buf = nil
	} else {
		st.buf = st.buf[:0]
	}
}

func (st *sseStream) add(it Item) {
	switch it.Kind {
	case ItemEvent:
		d := it.Delivery
		if !st.cur.advance(d.Channel, d.Pos) {
			return // Sent already, and its position with it, via a sibling.
		}
		// Move every sibling channel of the stream whose next event this
		// is, so the id alone resumes all of them without a duplicate.
		for _, s := range d.Siblings {
			if s.Channel != d.Channel {
				st.cur.follow(s.Channel, s.Pos)
			}
		}
		dup := st.seen != nil && !st.seen.addHash(d.Event.keyHash())
		st.buf = st.appendID(st.buf)
		if dup {
			// Sent already through another channel of this stream: only
			// move the browser's Last-Event-ID.
			st.buf = append(st.buf, '\n')
			return
		}
		st.buf = append(st.buf, d.SSEFrame()...)
	case ItemGap:
		st.cur.set(it.Channel, it.Pos)
		st.buf = st.appendID(st.buf)
		st.buf = append(st.buf, "event: gap\ndata: {\"channel\":\""...)
		st.buf = append(st.buf, it.Channel...)
		st.buf = append(st.buf, "\"}\n\n"...)
	}
}

func (st *sseStream) appendID(b []byte) []byte {
	b = append(b, "id: "...)
	b = st.cur.appendEncoded(b, st.seen.newest())
	return append(b, '\n')
}

// streamPos is a StreamCursor kept as parallel sorted slices, so encoding it
// for every event allocates nothing beyond the output.
type streamPos struct {
	names []string
	pos   []Position
	raw   []byte
}

func newStreamPos(sorted []string) streamPos {
	return streamPos{names: sorted, pos: make([]Position, len(sorted))}
}

// advance moves ch to p unless ch is already at or past p in the same
// epoch; it reports whether it moved.
func (s *streamPos) advance(ch string, p Position) bool {
	i, ok := slices.BinarySearch(s.names, ch)
	if !ok {
		return true
	}
	if cur := s.pos[i]; cur.Epoch == p.Epoch && cur.Offset >= p.Offset {
		return false
	}
	s.pos[i] = p
	return true
}

// follow moves ch to p only when p is the very next position of ch, so no
// event of ch between them is skipped.
func (s *streamPos) follow(ch string, p Position) {
	if i, ok := slices.BinarySearch(s.names, ch); ok {
		if cur := s.pos[i]; cur.Epoch == p.Epoch && cur.Offset+1 == p.Offset {
			s.pos[i] = p
		}
	}
}

func (s *streamPos) set(ch string, p Position) {
	if i, ok := slices.BinarySearch(s.names, ch); ok {
		s.pos[i] = p
	}
}

// appendEncoded appends the same encoding as StreamCursor.Encode, then the
// keys of the newest events sent, if any (";~h1,h2" in base 36).
func (s *streamPos) appendEncoded(dst []byte, recent []uint64) []byte {
	raw := s.raw[:0]
	for i, ch := range s.names {
		if i > 0 {
			raw = append(raw, ';')
		}
		raw = append(raw, ch...)
		raw = append(raw, '|')
		raw = append(raw, s.pos[i].Epoch...)
		raw = append(raw, '.')
		raw = strconv.AppendUint(raw, s.pos[i].Offset, 36)
	}
	for i, h := range recent {
		if i == 0 {
			raw = append(raw, ";~"...)
		} else {
			raw = append(raw, ',')
		}
		raw = strconv.AppendUint(raw, h, 36)
	}
	s.raw = raw
	return base64.RawURLEncoding.AppendEncode(dst, raw)
}

// keyRing remembers the last n event keys, as FNV-1a hashes: stable across
// processes, so the most recent ones can travel in the stream's id and be
// remembered again by whichever node the stream resumes on.
type keyRing struct {
	max    int
	ring   []uint64
	next   int
	set    map[uint64]struct{}
	recent [recentKeys]uint64 // the newest first
	nrec   int
}

// recentKeys is how many of the newest event keys a multi-channel stream's
// id carries: the events whose copies on the stream's other channels may
// not have reached the client when it dropped.
const recentKeys = 4

func newKeyRing(n int) *keyRing {
	// It grows as events flow: an idle stream holds almost nothing.
	return &keyRing{max: n, set: make(map[uint64]struct{})}
}

// addHash reports whether the event key hash h is new, and remembers it.
func (k *keyRing) addHash(h uint64) bool {
	if _, ok := k.set[h]; ok {
		return false
	}
	if len(k.ring) < k.max {
		k.ring = append(k.ring, h)
	} else {
		delete(k.set, k.ring[k.next])
		k.ring[k.next] = h
		k.next = (k.next + 1) % len(k.ring)
	}
	k.set[h] = struct{}{}
	copy(k.recent[1:], k.recent[:recentKeys-1])
	k.recent[0] = h
	k.nrec = min(k.nrec+1, recentKeys)
	return true
}

// newest returns the newest keys, newest first.
func (k *keyRing) newest() []uint64 {
	if k == nil {
		return nil
	}
	return k.recent[:k.nrec]
}
