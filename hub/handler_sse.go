package hub

import (
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"slices"
	"strconv"
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

// sseDedupeWindow is how many recent event keys a multi-channel stream
// remembers to send an event that several of its channels carry once.
const sseDedupeWindow = 1024

// SSEHandler serves GET /v1/sse?channel=A&channel=B. Every event is written
// with an id that is the position of every channel of the stream, so the
// browser's Last-Event-ID (or the last_event_id query parameter) resumes
// all of them.
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
	defer release()
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
	resume, err := ParseStreamCursor(lastID)
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
	defer c.Close()
	cur := newStreamPos(chans)
	for i, ch := range chans {
		var after *Position
		if p, ok := resume[ch]; ok {
			after = &p
		}
		res, err := c.Subscribe(ctx, ch, after, nil)
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
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	st := sseStream{w: w, rc: rc, timeout: s.cfg.WriteTimeout, cur: cur}
	if len(chans) > 1 {
		st.seen = newKeyRing(sseDedupeWindow)
	}
	// The first id tells the browser where the stream starts, so a drop
	// before the first event resumes without loss.
	st.buf = append(st.buf, "retry: "...)
	st.buf = strconv.AppendInt(st.buf, s.cfg.Retry.Milliseconds(), 10)
	st.buf = append(st.buf, '\n')
	st.buf = st.appendID(st.buf)
	st.buf = append(st.buf, '\n')
	if st.flush() != nil {
		return
	}

	hb := time.NewTicker(s.cfg.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-c.Ready():
			items := c.Drain()
			for _, it := range items {
				st.add(it)
			}
			c.Release(items)
			if st.flush() != nil {
				return
			}
		case <-hb.C:
			st.buf = append(st.buf, ": ping\n\n"...)
			if st.flush() != nil {
				return
			}
		case <-c.Done():
			// Slow consumer or shutdown: end the stream; the browser
			// reconnects (elsewhere) with its Last-Event-ID.
			return
		case <-ctx.Done():
			return
		}
	}
}

// sseStream batches one stream's writes: everything queued goes out in one
// write and one flush.
type sseStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	cur     streamPos
	seen    *keyRing
	buf     []byte
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
		st.buf = st.appendID(st.buf)
		if st.seen != nil && !st.seen.add(d.Event.key()) {
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
	b = st.cur.appendEncoded(b)
	return append(b, '\n')
}

func (st *sseStream) flush() error {
	if len(st.buf) == 0 {
		return nil
	}
	_ = st.rc.SetWriteDeadline(time.Now().Add(st.timeout))
	_, err := st.w.Write(st.buf)
	if err == nil {
		err = st.rc.Flush()
	}
	if cap(st.buf) > 64<<10 {
		st.buf = nil
	} else {
		st.buf = st.buf[:0]
	}
	return err
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

// appendEncoded appends the same encoding as StreamCursor.Encode.
func (s *streamPos) appendEncoded(dst []byte) []byte {
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
	s.raw = raw
	return base64.RawURLEncoding.AppendEncode(dst, raw)
}

// keyRing remembers the last n event keys (as hashes).
type keyRing struct {
	seed maphash.Seed
	max  int
	ring []uint64
	next int
	set  map[uint64]struct{}
}

func newKeyRing(n int) *keyRing {
	// It grows as events flow: an idle stream holds almost nothing.
	return &keyRing{seed: maphash.MakeSeed(), max: n, set: make(map[uint64]struct{})}
}

// add reports whether key is new, and remembers it.
func (k *keyRing) add(key string) bool {
	h := maphash.String(k.seed, key)
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
	return true
}
