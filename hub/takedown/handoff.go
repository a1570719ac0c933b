package takedown

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// answerWriteTimeout bounds writing a handed-off request's answer.
const answerWriteTimeout = 10 * time.Second

// HandOffRecorder is a ResponseWriter wrapper that records responses (a
// request log, route metrics) and can record one written after its handler
// returned. A held request handed off from net/http calls HandOff once it
// has hijacked the connection: the wrapper then records nothing when the
// handler returns, and done is called once, with the status and body size
// of the answer written on the connection, or with status 0 and size 0
// when the client hung up before its answer.
type HandOffRecorder interface {
	HandOff() (done func(status int, bytes int64))
}

// handoff is a held request (POST, or GET with Prefer: wait) that may be
// handed off from net/http: once its call is running and its answer is
// not immediate, the connection is hijacked and the handler returns; the
// call's answer, or its deadline, writes the whole response on the
// connection. What it holds until then is the connection, the call and
// the response headers: no goroutine, no net/http buffers.
type handoff struct {
	a          *Adapter
	c          *call
	door       door            // writes the answer; told of a hang-up
	release    func()          // the principal's held slot
	answers    chan *Record    // an answer the handler writes
	followDone <-chan struct{} // closed when the call's follow ends
	f          follower        // the call's listener

	mu        sync.Mutex
	inHandler bool // answered before any hand-off: the handler writes it
	conn      net.Conn
	hdr       []string // the headers set before the hand-off: name, value, …
	done      []func(int, int64)
	unwatch   func()
	over      bool // answered, or the client is gone
	head      bool // a HEAD request: the answer has no body
	poll      *time.Timer
}

// A door is how a held request is answered: respond writes the answer
// (on the request's writer, or on the connection once handed off), gone
// runs when the client hung up. A door that is a struct made once per
// request costs one allocation where two closures cost two.
type door interface {
	respond(w http.ResponseWriter, rec *Record)
	gone()
}

// hold carries out c for a held request whose slot release frees, and
// waits for its answer. When the answer is not immediate and the
// connection is HTTP/1.x and can be hijacked, the request is handed off:
// hold returns handedOff, and door.respond later writes the answer on the
// connection. Otherwise the handler's goroutine waits, as for HTTP/2:
// hold returns the answer, or nil when the client hung up. door.gone runs
// when the client of a handed-off request hangs up.
func (a *Adapter) hold(w http.ResponseWriter, r *http.Request, c *call, d time.Duration, release func(),
	door door) (rec *Record, handedOff bool, err error) {
	h := &handoff{a: a, c: c, door: door, release: release, answers: make(chan *Record, 1)}
	a.held.Add(1)
	defer func() {
		if !handedOff {
			c.close()
			a.held.Add(-1)
			release()
		}
	}()
	f := &h.f
	if err := c.run(r.Context(), f, d, h); err != nil {
		return nil, false, err
	}
	h.followDone = f.done
	// Most takedowns are answered within milliseconds: the handler waits
	// HandOffAfter first, so their connection stays open for the client's
	// next request (a handed-off answer closes it). A longer wait is
	// handed off. Until then the handler keeps the call's deadline too:
	// one timer for both.
	t := timers.Get().(*time.Timer)
	defer timers.Put(t)
	defer t.Stop()
	handOffAt := time.Now().Add(h.a.cfg.HandOffAfter)
	tryHandOff, expired := true, false
	for {
		due, hasDue := c.deadline()
		hasDue = hasDue && !expired
		next, timed := handOffAt, tryHandOff
		if hasDue && (!timed || due.Before(next)) {
			next, timed = due, true
		}
		var until <-chan time.Time
		if timed {
			t.Reset(time.Until(next)) // fires at once when past
			until = t.C
		}
		rec, ok, waited := f.await(r.Context(), c, h.answers, until)
		if !waited {
			if !ok {
				rec = nil
			}
			return rec, false, nil
		}
		if hasDue && !time.Now().Before(due) {
			expired = true
			c.expire() // the answer comes through answers
			continue
		}
		tryHandOff = false
		if h.handOff(w, r) {
			return nil, true, nil
		}
	}
}

// timers are the stopped timers of held handlers, used again.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// answer is the call's answer callback.
func (h *handoff) answer(rec *Record, _ bool) {
	h.mu.Lock()
	if h.conn == nil {
		h.inHandler = true
		h.mu.Unlock()
		h.answers <- rec
		return
	}
	if h.over {
		h.mu.Unlock()
		return
	}
	h.over = true
	h.mu.Unlock()
	h.stop()
	aw := &answerWriter{hdr: make(http.Header, len(h.hdr)/2+8)}
	for i := 0; i+1 < len(h.hdr); i += 2 {
		aw.hdr[h.hdr[i]] = append(aw.hdr[h.hdr[i]], h.hdr[i+1])
	}
	h.door.respond(aw, rec)
	_ = h.conn.SetWriteDeadline(time.Now().Add(answerWriteTimeout))
	_, err := h.conn.Write(aw.response(h.head))
	h.conn.Close()
	h.end()
	status, n := aw.status, int64(aw.body.Len())
	if h.head {
		n = 0
	}
	if err != nil {
		// The client is gone (or stopped reading): as a hang-up.
		h.door.gone()
		status, n = 0, 0
	}
	for _, done := range h.done {
		done(status, n)
	}
}

// handOff hijacks the connection, unless the answer is in already or it
// cannot be hijacked; from then on the call wakes without the handler.
func (h *handoff) handOff(w http.ResponseWriter, r *http.Request) bool {
	if r.ProtoMajor != 1 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inHandler {
		return false
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// net/http's buffers are dropped: the request was read whole, and
	// nothing was written. Bytes a client sent behind it stay unread.
	// The headers set so far (the request ID, …) are kept as pairs of
	// strings, smaller than a map.
	h.conn, h.answers, h.head = conn, nil, r.Method == http.MethodHead
	n := 0
	for _, vs := range w.Header() {
		n += 2 * len(vs)
	}
	h.hdr = make([]string, 0, n)
	for k, vs := range w.Header() {
		for _, v := range vs {
			h.hdr = append(h.hdr, k, v)
		}
	}
	for w := w; w != nil; {
		if rec, ok := w.(HandOffRecorder); ok {
			h.done = append(h.done, rec.HandOff())
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	h.unwatch, _ = watchHangup(conn, h.hungUp)
	h.c.unkick()
	h.a.handoffs.add(h)
	return true
}

// hungUp ends a handed-off request whose client hung up: the wait and the
// slot are freed at once, and the takedown goes on.
func (h *handoff) hungUp() {
	if h.drop(true) {
		h.door.gone()
	}
}

// drop ends a handed-off request without an answer, closing its
// connection, unless it is over; fired says its hang-up watch fired.
func (h *handoff) drop(fired bool) bool {
	h.mu.Lock()
	if h.over {
		h.mu.Unlock()
		return false
	}
	h.over = true
	if fired {
		h.unwatch = nil // the watch is over
	}
	h.mu.Unlock()
	h.stop()
	h.conn.Close()
	h.end()
	for _, done := range h.done {
		done(0, 0)
	}
	return true
}

// DropHeld closes, without an answer, the connection of every held
// request handed off from net/http, as a node that stops at once would:
// http.Server.Close does not reach hijacked connections. Their takedowns
// go on. It returns how many it dropped.
func (a *Adapter) DropHeld() int {
	a.handoffs.mu.Lock()
	all := make([]*handoff, 0, len(a.handoffs.set))
	for h := range a.handoffs.set {
		all = append(all, h)
	}
	a.handoffs.mu.Unlock()
	n := 0
	for _, h := range all {
		if h.drop(false) {
			n++
		}
	}
	return n
}

// stop ends the call, the hang-up watch and the store polling; the
// request leaves the adapter's set first, before its follow ends.
func (h *handoff) stop() {
	h.a.handoffs.remove(h)
	h.mu.Lock()
	unwatch, poll := h.unwatch, h.poll
	h.unwatch, h.poll = nil, nil
	h.mu.Unlock()
	if unwatch != nil {
		unwatch()
	}
	if poll != nil {
		poll.Stop()
	}
	h.c.close()
}

// end frees what a handed-off request held.
func (h *handoff) end() {
	h.a.held.Add(-1)
	h.release()
}

// pollStore reads the store every storePoll once the hub no longer tells
// the call of its events (the node is shutting down), as a waiting
// handler does.
func (h *handoff) pollStore() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.over || h.poll != nil {
		return
	}
	var tick func()
	tick = func() {
		h.c.check()
		h.mu.Lock()
		if !h.over {
			h.poll = time.AfterFunc(storePoll, tick)
		}
		h.mu.Unlock()
	}
	h.poll = time.AfterFunc(storePoll, tick)
}

// handoffs are an adapter's handed-off requests. While there are any, one
// goroutine waits on the follow of one of them at a time: a follow that
// ends while its call still waits means the hub is shutting down, and
// every handed-off call then reads the store every storePoll instead, as a
// waiting handler does.
type handoffs struct {
	mu   sync.Mutex
	set  map[*handoff]struct{}
	idle chan struct{} // closed to end the watching goroutine; nil if none
	down bool          // the hub shut down
}

func (hs *handoffs) add(h *handoff) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.set == nil {
		hs.set = map[*handoff]struct{}{}
	}
	hs.set[h] = struct{}{}
	if hs.down {
		go h.pollStore()
		return
	}
	if hs.idle == nil {
		hs.idle = make(chan struct{})
		go hs.watch(hs.idle)
	}
}

func (hs *handoffs) remove(h *handoff) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	delete(hs.set, h)
	if len(hs.set) == 0 && hs.idle != nil {
		close(hs.idle)
		hs.idle = nil
	}
}

func (hs *handoffs) watch(idle <-chan struct{}) {
	for {
		var h *handoff
		hs.mu.Lock()
		for h = range hs.set {
			break
		}
		hs.mu.Unlock()
		if h == nil {
			<-idle // the set is empty: idle is closed, or about to be
			return
		}
		select {
		case <-idle:
			return
		case <-h.followDone:
		}
		h.mu.Lock()
		over := h.over
		h.mu.Unlock()
		if over {
			continue // it ended, and has left the set
		}
		hs.mu.Lock()
		hs.down = true
		if hs.idle == idle {
			hs.idle = nil
		}
		all := make([]*handoff, 0, len(hs.set))
		for h := range hs.set {
			all = append(all, h)
		}
		hs.mu.Unlock()
		for _, h := range all {
			h.pollStore()
		}
		return
	}
}

// answerWriter takes a handed-off request's answer, to write it on the
// connection as net/http would have: the status line, the headers the
// request had before the hand-off and those of the answer, Date,
// Content-Length, and Connection: close (the connection ends with it).
type answerWriter struct {
	hdr    http.Header
	status int
	body   bytes.Buffer
}

func (w *answerWriter) Header() http.Header { return w.hdr }

func (w *answerWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *answerWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

// response is the whole HTTP/1.1 response; the body is left out for a
// HEAD request, as net/http does.
func (w *answerWriter) response(head bool) []byte {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var b bytes.Buffer
	b.Grow(256 + w.body.Len())
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(w.status))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(w.status))
	b.WriteString("\r\n")
	if w.hdr.Get("Date") == "" {
		w.hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	w.hdr.Set("Content-Length", strconv.Itoa(w.body.Len()))
	w.hdr.Set("Connection", "close")
	_ = w.hdr.Write(&b)
	b.WriteString("\r\n")
	if !head {
		b.Write(w.body.Bytes())
	}
	return b.Bytes()
}

// rawConn finds the socket under conn: conn itself, or the connection
// under a wrapper that gives it with NetConn (a *tls.Conn, the HTTP
// guard's).
func rawConn(conn net.Conn) syscall.RawConn {
	for range 4 {
		switch v := conn.(type) {
		case syscall.Conn:
			rc, err := v.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		case interface{ NetConn() net.Conn }:
			conn = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
