package hub

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/hub/internal/cork"
)

// door is the framing a door plugs into the writer.
type door interface {
	// write encodes one drained batch, and a heartbeat when beat is set,
	// onto the corked connection. It may stop early once the writer's
	// cutoff is cut: the client ended as a slow consumer.
	write(items []queueItem, beat bool) error
	// finish ends the connection as err, the client's end, says: a close
	// frame, the SSE expired event. It runs once, uncorked, on the writer.
	finish(err error)
	// abort drops the connection after a write failed.
	abort()
}

// writer is the writing side of one connection, shared by both doors: it
// drains the client's queue, has the door frame what it drained, and
// writes it in one write(2).
//
// An idle connection holds no writer goroutine: the client's notify (kick)
// starts one when something is queued, and it exits once the queue is
// empty. A connection fed steadily (two batches less than writerLinger
// apart) keeps its writer writerLinger more, woken through wake, instead of
// starting one per event. A held stream (SSE that cannot be hijacked) runs
// the writer on its handler's goroutine until held closes.
//
// Correctness: running is set while a writer goroutine exists, so at most
// one writes (and only it touches steady and the door's state). A writer
// exits only after clearing running and then finding the queue empty, no
// heartbeat due and the client not ended; an item queued (or a heartbeat,
// or the end) after its last drain either saw running set, and is found
// by that check or by the writer that wins running back, or saw it clear
// and started a writer of its own. So nothing queued is left unwritten,
// and the end is always written. A lingering (or held) writer waits on
// wake, which kick fills without blocking; it has room for one, so a
// wake-up is never lost, only merged with another, and the writer drains
// everything queued either way. A write that fails leaves running set:
// nothing more is written on a broken connection.
//
// Each batch is written corked (cork.Writer): however many frames and
// messages the door makes of it, they leave in one write, or in pieces of
// cork.Bound for a large one, with a buffer borrowed only for the batch.
// A batch's write deadline is between 7/8 of timeout and timeout away: the
// deadline stays armed while the writer runs and is moved only when less
// than 7/8 of timeout is left (moving it per batch cost a runtime timer
// update per write, a tenth of the CPU of a connection fed one frame at a
// time), and is cleared when the writer goes idle, so a protocol ping on
// an idle connection meets no stale deadline. When the client ends as a slow
// consumer its notify cuts the deadline to slowCloseTimeout (cutoff), so a
// writer blocked on a full socket writes the frame in flight and the end,
// or is dropped, within it, while a client that still reads learns why.
type writer struct {
	c       *Client
	door    door
	out     *cork.Writer
	cut     cutoff
	timeout time.Duration
	held    <-chan struct{} // a held stream's end; nil for a goroutine writer
	armed   int64           // the write deadline set, unix nanoseconds; 0: none (the running writer's only)

	running atomic.Bool
	wake    chan struct{} // wakes a lingering writer
	steady  lingering
	beatDue atomic.Bool
	wg      sync.WaitGroup
}

// init makes w, a zero writer embedded in its door d, the writer of c on
// out, whose deadlines conn takes.
func (w *writer) init(c *Client, d door, out *cork.Writer, conn deadliner, timeout time.Duration) {
	w.c, w.door, w.out, w.cut.conn, w.timeout = c, d, out, conn, timeout
	w.wake = make(chan struct{}, 1)
}

// start makes w the client's writer and writes what is queued already.
func (w *writer) start() {
	w.c.setNotify(w.notify)
	w.kick()
}

// runHeld writes on the caller's goroutine until held is closed or the
// client ends.
func (w *writer) runHeld(held <-chan struct{}) {
	w.held = held
	w.running.Store(true)
	w.c.setNotify(w.notify)
	w.run()
}

// notify is the client's notify: it runs under the client's lock when
// items are queued or the client ends.
func (w *writer) notify() {
	if w.c.err == ErrSlowConsumer { // under the client's lock
		w.cut.cut(min(slowCloseTimeout, w.timeout))
	}
	w.kick()
}

// kick starts the writer unless it runs already, then only wakes it.
func (w *writer) kick() {
	if w.running.CompareAndSwap(false, true) {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.run()
		}()
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// beat asks the writer for a heartbeat; it is a heartbeat's beat.
func (w *writer) beat() bool {
	w.beatDue.Store(true)
	w.kick()
	return true
}

// wait waits for a writer goroutine to exit.
func (w *writer) wait() { w.wg.Wait() }

func (w *writer) run() {
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		items := w.c.drain()
		beat := w.beatDue.Swap(false)
		if len(items) > 0 || beat {
			if len(items) > 0 {
				w.steady.wrote()
			}
			err := w.flush(items, beat)
			w.c.release(items)
			if err != nil {
				w.door.abort()
				return // running stays set: nothing more is written.
			}
			continue
		}
		if isDone(w.c) {
			w.cut.set(time.Now().Add(w.timeout))
			w.door.finish(w.c.Err())
			return
		}
		if w.held != nil || w.steady.is() {
			var expired <-chan time.Time
			if w.held == nil {
				if linger == nil {
					linger = time.NewTimer(writerLinger)
				} else {
					linger.Reset(writerLinger)
				}
				expired = linger.C
			}
			select {
			case <-w.wake:
				continue
			case <-w.c.Done():
				continue
			case <-w.held:
				return
			case <-expired:
			}
		}
		w.disarm()
		w.running.Store(false)
		if w.c.queued() == 0 && !w.beatDue.Load() && !isDone(w.c) || !w.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// flush writes one batch corked, under the write deadline.
func (w *writer) flush(items []queueItem, beat bool) error {
	w.arm()
	w.out.Cork()
	err := w.door.write(items, beat)
	if uerr := w.out.Uncork(); err == nil {
		err = uerr
	}
	return err
}

// arm makes the write deadline at least 7/8 of timeout away, moving it to
// timeout from now only when it is closer.
func (w *writer) arm() {
	now := time.Now().UnixNano()
	if w.armed == 0 || w.armed-now < int64(w.timeout)/8*7 {
		w.armed = now + int64(w.timeout)
		w.cut.set(time.Unix(0, w.armed))
	}
}

// disarm clears the write deadline when the writer goes idle: a protocol
// ping may write meanwhile.
func (w *writer) disarm() {
	if w.armed != 0 {
		w.armed = 0
		w.cut.set(time.Time{})
	}
}

func isDone(c *Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// writerLinger is how long the writer of a steadily fed connection waits for
// more before it exits, instead of starting a goroutine per event. A
// connection that is not fed steadily (an ack now and then) holds none.
const writerLinger = 2 * time.Second

// lingering tells a writer whether its connection is fed steadily: two
// writes less than writerLinger apart. Only the writer touches it; writer
// runs never overlap.
type lingering struct {
	last   time.Time
	steady bool
}

func (l *lingering) wrote() {
	now := time.Now()
	l.steady = !l.last.IsZero() && now.Sub(l.last) < writerLinger
	l.last = now
}

func (l *lingering) is() bool { return l.steady }

// heartbeat calls beat every interval from a timer until beat returns false
// or stop is called; stop waits for a beat in flight. A held stream, an
// SSE stream and a WebSocket's protocol pings all keep time with one.
type heartbeat struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (h *heartbeat) start(interval time.Duration, beat func() bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.t = time.AfterFunc(interval, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.stopped && beat() {
			h.t.Reset(interval)
		}
	})
}

// stop stops the beats; a beat in flight is waited for, so whatever ends
// one (closing the connection) comes first.
func (h *heartbeat) stop() {
	h.mu.Lock()
	t := h.t
	h.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
}
