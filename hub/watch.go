package hub

import (
	"context"
	"sync"
)

// Watch calls fn with every live event of channel from the moment it
// returns, and with nil wherever events may have been missed: a hole in the
// offsets, a new epoch of the channel's log, a backplane connection that
// dropped. It is Follow without history: nothing is replayed, and a nil
// says "look again" instead of being followed by the missed events. It
// suits a waiter whose truth is elsewhere and which an event only tells
// when to look (a command's call reads its outcome store), and costs a
// small struct in the channel's fan-out: no client, no queue, no
// goroutine. fn runs under a lock: it must not block; an event may reach
// it twice. stop ends the watch; done is closed when the hub shuts down.
func (h *Hub) Watch(ctx context.Context, channel string, fn func(*Event)) (stop func(), done <-chan struct{}, err error) {
	if err := ValidateChannel(channel); err != nil {
		return nil, nil, err
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, nil, ErrShutdown
	}
	w := &watch{h: h, channel: channel, fn: fn}
	if err := h.attach(ctx, channel, w); err != nil {
		return nil, nil, err
	}
	h.watching.Add(1)
	// No read of where the channel stands: the first entry heard says it
	// (offer), and a hole after it is one. On a shared backplane that read
	// was a round trip per command's call.
	return w.stop, h.down, nil
}

// Watchers returns how many watches (Watch) are in place.
func (h *Hub) Watchers() int { return int(h.watching.Load()) }

// watch is one Hub.Watch: a subscriber of its channel's fan-out that
// calls fn.
type watch struct {
	h       *Hub
	channel string
	fn      func(*Event)

	mu      sync.Mutex
	known   bool   // epoch and last are set
	epoch   string // of the newest entry seen
	last    uint64 // its offset
	stopped bool
}

func (w *watch) offer(d *delivery) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if w.known && d.Pos.Epoch == w.epoch {
		if d.Pos.Offset <= w.last {
			return // seen
		}
		if d.Pos.Offset > w.last+1 {
			w.fn(nil) // a hole: announcements were lost
		}
	} else if w.known {
		w.fn(nil) // a new epoch: the log lost its continuity
	}
	w.epoch, w.last, w.known = d.Pos.Epoch, d.Pos.Offset, true
	w.fn(d.Event)
}

func (w *watch) resyncLater(string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.fn(nil)
	}
}

// stop ends the watch, once.
func (w *watch) stop() {
	w.mu.Lock()
	stopped := w.stopped
	w.stopped = true
	w.mu.Unlock()
	if stopped {
		return
	}
	w.h.detach(w.channel, w)
	w.h.watching.Add(-1)
}
