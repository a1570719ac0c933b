package hub

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// Bounds of re-reading history to fill a hole. A read that fails (the
// backplane is unreachable, or its client is still reconnecting) is tried
// again after a pause that doubles from resyncRetryMin up to resyncRetryMax,
// with jitter so the subscribers of a node do not retry in step; a read
// that succeeds starts the next hole's pauses from resyncRetryMin again.
const (
	resyncTimeout  = 10 * time.Second
	resyncRetryMin = 100 * time.Millisecond
	resyncRetryMax = 5 * time.Second
)

// delivery is one entry on its way to the clients of its channel. Its wire
// encodings are made once and shared by every subscriber.
type delivery struct {
	Entry

	wsOnce  sync.Once
	ws      []byte
	sseOnce sync.Once
	sse     []byte
}

// WSFrame returns the WebSocket frame of the delivery:
// {"type":"event","channel":...,"cursor":...,"event":{...}}. Channel names and
// cursors need no JSON escaping: their grammar has no such characters.
func (d *delivery) WSFrame() []byte {
	d.wsOnce.Do(func() {
		cur := d.Pos.String()
		b := make([]byte, 0, 48+len(d.Channel)+len(cur)+len(d.Event.JSON))
		b = append(b, `{"type":"event","channel":"`...)
		b = append(b, d.Channel...)
		b = append(b, `","cursor":"`...)
		b = append(b, cur...)
		b = append(b, `","event":`...)
		b = append(b, d.Event.JSON...)
		b = append(b, '}')
		d.ws = b
	})
	return d.ws
}

// SSEFrame returns the SSE event of the delivery without its id line:
// "event: <type>\ndata: <json>\n\n".
func (d *delivery) SSEFrame() []byte {
	d.sseOnce.Do(func() {
		typ := d.Event.Type
		if strings.ContainsAny(typ, "\r\n") {
			typ = strings.NewReplacer("\r", " ", "\n", " ").Replace(typ)
		}
		b := make([]byte, 0, 16+len(typ)+len(d.Event.JSON))
		b = append(b, "event: "...)
		b = append(b, typ...)
		b = append(b, "\ndata: "...)
		b = append(b, d.Event.JSON...)
		b = append(b, "\n\n"...)
		d.sse = b
	})
	return d.sse
}

// itemKind tells what a queued item carries.
type itemKind uint8

// The kinds of queueItem.
const (
	// itemEvent carries a delivery.
	itemEvent itemKind = iota
	// itemGap says history could not cover a resume of Channel; the client
	// goes on live from Pos.
	itemGap
	// itemFrame carries a door's own frame (ack, pong, error) in Raw.
	itemFrame
)

// queueItem is one thing queued for a client, in the order the door must write it.
type queueItem struct {
	Kind     itemKind
	delivery *delivery
	Channel  string
	Pos      Position
	Raw      []byte
}

// subState is one subscription of a client. While buffering, live entries
// wait in pending until the history read is queued; last is the offset of
// the newest entry queued, so an entry is never queued twice.
//
// Pending holds at most the client's queue bound: every entry in it is in
// the log already, so when more arrive (a read that waits on a backplane
// that is down), pending is dropped and reread set, and history is read
// again once the read in flight is done. Reread is also set when
// announcements may have been lost while a read was in flight.
type subState struct {
	onEvent   func(*Event)
	buffering bool
	reread    bool
	pending   []*delivery
	epoch     string
	last      uint64
	// adopt: no history was read (a follower, live only), so the first
	// entry heard sets where the subscription stands, with no gap.
	adopt bool
}

// Client is one connection of a door (a WebSocket or an SSE stream): its
// subscriptions and its bounded queue. The hub offers entries without
// blocking; the door's writer drains the queue and writes everything queued
// in one go. A client whose queue overflows ends with ErrSlowConsumer.
type Client struct {
	h        *Hub
	maxLen   int
	maxBytes int
	// session names the signed-in session the client's connection was
	// admitted with (WithSession), for Hub.EndSession; guarded by h.mu.
	session string

	mu     sync.Mutex
	subs   map[string]*subState
	queue  []queueItem
	spare  []queueItem
	bytes  int // the size of queue's items
	err    error
	closed bool
	// replayed and replayedBytes count the queued items that history
	// reads gave since the last drain, and their size. They fill a hole
	// the hub found, not a backlog the client let grow, so the
	// slow-consumer bounds count only the rest.
	replayed      int
	replayedBytes int
	// expiry ends the client when its credential expires; nil without one.
	expiry *time.Timer

	// follower is set for Hub.Follow's clients, which queue nothing.
	follower bool
	notify   func()
	tasks    sync.WaitGroup // resyncs in flight
	done     chan struct{}
	once     sync.Once
}

// SubscribeResult says where a subscription starts.
type SubscribeResult struct {
	// Start is the position the subscription resumes after: the cursor it
	// was given when history covers it; the position before the oldest
	// entry history holds when the cursor's epoch is gone (or for Oldest);
	// otherwise the channel's top.
	Start Position
	// Gap is true when history could not cover the given cursor.
	Gap bool
}

// SubscribeOptions say where a subscription starts and what it adds to
// the client's queue.
type SubscribeOptions struct {
	// After resumes the subscription after this position (nil: live
	// only; &Oldest: everything history holds).
	After *Position
	// Ack makes the frame queued first, from where the subscription starts.
	Ack func(SubscribeResult) []byte
	// OnEvent sees every event of the subscription, replayed or live, in
	// order, right after it is queued (a follower that must act in the
	// queue's order, like a command waiter), and nil where a gap notice is
	// queued (events may have been missed: re-read what depends on them).
	// It runs under the client's lock: it must not block or call the
	// client.
	OnEvent func(*Event)
}

// Subscribe subscribes c to channel. The order of the queue is: the frame
// o.Ack makes, if any; a gap notice, if history could not cover o.After;
// the missed entries (when After's epoch is gone, every entry of the new
// epoch history holds); then live entries, each once. Live delivery starts
// before history is read, so nothing published meanwhile is lost. A
// repeated subscribe to a channel starts over from its options.
func (c *Client) Subscribe(ctx context.Context, channel string, o SubscribeOptions) (SubscribeResult, error) {
	after, ack := o.After, o.Ack
	if err := ValidateChannel(channel); err != nil {
		return SubscribeResult{}, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return SubscribeResult{}, ErrClosed
	}
	if _, ok := c.subs[channel]; ok {
		// A repeated subscribe starts over from the cursor it carries.
		c.mu.Unlock()
		c.Unsubscribe(channel)
		c.mu.Lock()
	}
	if len(c.subs) >= c.h.cfg.MaxChannels {
		c.mu.Unlock()
		return SubscribeResult{}, ErrTooManyChannels
	}
	// A follower that starts live (Hub.Follow with no cursor) reads no
	// history: it queues nothing, and what it needs from a read, where
	// the channel stands, the first entry it hears says as well. On a
	// shared backplane that read is a round trip per follow (a command's
	// corr: channel, brand new, one per request).
	live := c.follower && after == nil && ack == nil
	st := &subState{buffering: !live, adopt: live, onEvent: o.OnEvent}
	c.subs[channel] = st
	c.mu.Unlock()

	if err := c.h.attach(ctx, channel, c); err != nil {
		c.dropSub(channel, st)
		return SubscribeResult{}, err
	}
	if live {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.subs[channel] != st {
			c.mu.Unlock()
			c.h.detach(channel, c)
			c.mu.Lock()
			return SubscribeResult{}, ErrClosed
		}
		return SubscribeResult{}, nil
	}
	rep, err := c.h.bp.Read(ctx, channel, after)
	fromOldest := after != nil && *after == Oldest
	gone := ""
	if err == nil && rep.Gap && after != nil && !fromOldest && rep.Top.Epoch != after.Epoch {
		// The cursor's epoch is gone (a restarted memory backplane, a
		// Redis that lost its data): after the gap, the new epoch from
		// its start, as a connected subscriber gets it, so what was
		// published since is not skipped.
		fromOldest, gone = true, after.Epoch
		rep, err = c.h.bp.Read(ctx, channel, &Oldest)
		rep.Gap = true
	}
	if err != nil {
		c.h.stats.BackplaneErrors.Add(1)
		c.dropSub(channel, st)
		c.h.detach(channel, c)
		return SubscribeResult{}, err
	}
	res := SubscribeResult{Start: rep.Top, Gap: rep.Gap}
	switch {
	case fromOldest:
		if len(rep.Entries) > 0 {
			res.Start = Position{Epoch: rep.Top.Epoch, Offset: rep.Entries[0].Pos.Offset - 1}
		}
	case after != nil && !rep.Gap:
		res.Start = *after
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[channel] != st {
		// Closed meanwhile: Close did not see this attachment.
		c.mu.Unlock()
		c.h.detach(channel, c)
		c.mu.Lock()
		return res, ErrClosed
	}
	if ack != nil {
		c.push(queueItem{Kind: itemFrame, Raw: ack(res)})
	}
	if res.Gap {
		c.push(queueItem{Kind: itemGap, Channel: channel, Pos: res.Start})
		st.gapped()
	}
	for _, e := range rep.Entries {
		c.queueReplayedLocked(st, e)
	}
	st.epoch, st.last = rep.Top.Epoch, rep.Top.Offset
	if gone != "" {
		st.dropEpoch(gone)
	}
	c.settleLocked(channel, st)
	c.wake()
	return res, nil
}

// dropEpoch forgets the pending entries of an epoch a read found gone:
// queued after the new epoch's, they would take the subscription back to
// it, for another gap and another copy of the new epoch.
func (st *subState) dropEpoch(epoch string) {
	st.pending = slices.DeleteFunc(st.pending, func(d *delivery) bool { return d.Pos.Epoch == epoch })
}

// queueReplayedLocked queues an entry a history read gave.
func (c *Client) queueReplayedLocked(st *subState, e Entry) {
	d := &delivery{Entry: e}
	it := queueItem{Kind: itemEvent, delivery: d}
	c.push(it)
	c.replayed++
	c.replayedBytes += it.size()
	st.last = e.Pos.Offset
	st.watched(d)
}

// settleLocked ends a history read of st: history is read again if
// entries were dropped or announcements lost meanwhile, otherwise the live
// entries that waited are queued.
func (c *Client) settleLocked(channel string, st *subState) {
	if st.reread {
		st.reread = false
		c.startResync(channel, st)
		return
	}
	c.flushPendingLocked(st)
}

// flushPendingLocked ends st's buffering: the live entries that waited are
// queued after what history gave, each once.
func (c *Client) flushPendingLocked(st *subState) {
	st.buffering = false
	pending := st.pending
	st.pending = nil
	for i, d := range pending {
		c.queueLocked(st, d)
		if st.buffering {
			// Another hole: the rest waits for that re-read.
			st.pending = append(st.pending, pending[i+1:]...)
			return
		}
	}
}

// resyncLater re-reads channel's history after what c queued, for entries
// whose announcement was lost. A read in flight may have been made before
// the loss: it is followed by another.
func (c *Client) resyncLater(channel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.subs[channel]
	if c.closed || st == nil {
		return
	}
	if st.buffering {
		st.reread = true
		return
	}
	st.buffering = true
	c.startResync(channel, st)
}

// startResync reads st's channel after its last queued entry in the
// background; live entries wait in st.pending meanwhile. A read that fails
// is tried again, with backoff, until it succeeds or the client ends: a
// backplane that is down for a while (a Redis restart) delays the
// subscription, it does not end it. It runs under c.mu.
func (c *Client) startResync(channel string, st *subState) {
	st.adopt = false // a live follower that heard nothing yet: the read below says where it stands
	after := Position{Epoch: st.epoch, Offset: st.last}
	c.tasks.Add(1)
	go func() {
		defer c.tasks.Done()
		rep, ok := c.readRetrying(channel, st, &after)
		c.mu.Lock()
		defer c.mu.Unlock()
		if !ok || c.closed || c.subs[channel] != st {
			return
		}
		if rep.Gap && rep.Top.Epoch != after.Epoch {
			// A new epoch: say so, then read it from its start.
			c.push(queueItem{Kind: itemGap, Channel: channel, Pos: Position{Epoch: rep.Top.Epoch}})
			st.gapped()
			st.epoch, st.last = rep.Top.Epoch, 0
			st.reread = false
			st.dropEpoch(after.Epoch)
			c.startResync(channel, st)
			c.wake()
			return
		}
		if rep.Gap {
			c.push(queueItem{Kind: itemGap, Channel: channel, Pos: rep.Top})
			st.gapped()
			st.epoch, st.last = rep.Top.Epoch, rep.Top.Offset
		} else {
			for _, e := range rep.Entries {
				if e.Pos.Offset > st.last {
					c.queueReplayedLocked(st, e)
				}
			}
		}
		c.settleLocked(channel, st)
		c.wake()
	}()
}

// readRetrying reads channel's history after *after until a read succeeds
// (ok), or st is no longer the channel's subscription, or the client ends.
func (c *Client) readRetrying(channel string, st *subState, after *Position) (rep Replay, ok bool) {
	pause := resyncRetryMin
	for {
		c.mu.Lock()
		gone := c.closed || c.subs[channel] != st
		c.mu.Unlock()
		if gone {
			return Replay{}, false
		}
		ctx, cancel := context.WithTimeout(context.Background(), resyncTimeout)
		go func() {
			// A client that ends does not wait for the read.
			select {
			case <-c.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		rep, err := c.h.bp.Read(ctx, channel, after)
		cancel()
		if err == nil {
			return rep, true
		}
		c.h.stats.BackplaneErrors.Add(1)
		t := time.NewTimer(pause/2 + rand.N(pause/2+1))
		select {
		case <-c.done:
			t.Stop()
			return Replay{}, false
		case <-t.C:
		}
		pause = min(2*pause, resyncRetryMax)
	}
}

// dropSub forgets st if it is still channel's subscription.
func (c *Client) dropSub(channel string, st *subState) {
	c.mu.Lock()
	if c.subs[channel] == st {
		delete(c.subs, channel)
	}
	c.mu.Unlock()
}

// Unsubscribe stops channel's deliveries to c. Entries already queued stay.
// It returns the position of the last entry queued for the channel, where a
// later subscription may resume.
func (c *Client) Unsubscribe(channel string) (Position, bool) {
	c.mu.Lock()
	st, ok := c.subs[channel]
	delete(c.subs, channel)
	c.mu.Unlock()
	if !ok {
		return Position{}, false
	}
	c.h.detach(channel, c)
	return Position{Epoch: st.epoch, Offset: st.last}, true
}

// Channels returns how many channels c holds.
func (c *Client) Channels() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs)
}

// Send queues a door's own frame (ack, pong, error). Frames answer the
// client's own requests, so they get room beyond the queue bounds (twice
// the frames and twice the bytes); a client that keeps sending requests
// without reading the answers still ends as a slow consumer instead of
// growing its queue without end.
func (c *Client) Send(raw []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if len(c.queue)-c.replayed >= 2*c.maxLen || c.bytes-c.replayedBytes >= 2*c.maxBytes {
		c.failLocked(ErrSlowConsumer)
		return
	}
	c.push(queueItem{Kind: itemFrame, Raw: raw})
	c.wake()
}

// offer is the hub's fan-out into c. It never blocks.
func (c *Client) offer(d *delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	st := c.subs[d.Channel]
	if st == nil {
		return
	}
	if st.buffering {
		if len(st.pending) >= c.maxLen {
			// History holds them: read it again instead of holding more.
			clear(st.pending)
			st.pending = st.pending[:0]
			st.reread = true
		}
		st.pending = append(st.pending, d)
		return
	}
	if len(c.queue)-c.replayed >= c.maxLen || c.bytes-c.replayedBytes >= c.maxBytes {
		c.failLocked(ErrSlowConsumer)
		return
	}
	c.queueLocked(st, d)
	c.wake()
}

// queueLocked queues d unless it is not newer than what st already queued. A
// new epoch means the log lost its continuity: the client is told with a gap.
// A hole (an offset past the next one) means announcements were lost: the
// subscription buffers and re-reads history to fill it.
func (c *Client) queueLocked(st *subState, d *delivery) {
	if st.adopt {
		st.adopt = false
		st.epoch, st.last = d.Pos.Epoch, d.Pos.Offset-1
	}
	if d.Pos.Epoch != st.epoch {
		// The log lost its continuity: the client is told, then gets the
		// new epoch from its start (the hole check below fetches what came
		// before d).
		c.push(queueItem{Kind: itemGap, Channel: d.Channel, Pos: Position{Epoch: d.Pos.Epoch}})
		st.gapped()
		st.epoch, st.last = d.Pos.Epoch, 0
	}
	if d.Pos.Offset > st.last+1 && !st.buffering {
		st.buffering = true
		st.pending = append(st.pending, d)
		c.startResync(d.Channel, st)
		return
	}
	if d.Pos.Offset <= st.last {
		return
	}
	st.last = d.Pos.Offset
	c.push(queueItem{Kind: itemEvent, delivery: d})
	st.watched(d)
}

// itemOverhead is what a queued item costs beyond its payload: the queueItem
// itself and its frame's envelope (type, channel, cursor).
const itemOverhead = 64

// size is what it counts for against the client's byte bound. An event's
// bytes are shared with the channel's other subscribers, but a client that
// falls behind keeps them alive.
func (it *queueItem) size() int {
	switch it.Kind {
	case itemEvent:
		return itemOverhead + len(it.delivery.Channel) + len(it.delivery.Event.JSON)
	case itemGap:
		return itemOverhead + len(it.Channel)
	default:
		return itemOverhead + len(it.Raw)
	}
}

// push queues it and counts its size. A follower's client (Hub.Follow)
// keeps nothing: its OnEvent has seen the event.
func (c *Client) push(it queueItem) {
	if c.follower {
		return
	}
	c.queue = append(c.queue, it)
	c.bytes += it.size()
}

// gapped tells st's OnEvent of a queued gap notice.
func (st *subState) gapped() {
	if st.onEvent != nil {
		st.onEvent(nil)
	}
}

// watched shows a queued delivery to st's OnEvent.
func (st *subState) watched(d *delivery) {
	if st.onEvent != nil {
		st.onEvent(d.Event)
	}
}

func (c *Client) wake() {
	if c.notify != nil {
		c.notify()
	}
}

// setNotify makes fn run whenever items are queued and when the client
// ends: the one way a client tells its writer there is work, so an idle
// connection holds no writer goroutine. fn runs under the client's lock: it
// must not block or call c.
func (c *Client) setNotify(fn func()) {
	c.mu.Lock()
	c.notify = fn
	c.mu.Unlock()
}

// Done is closed when the client has ended: slow consumer, hub shutdown, or
// Close. Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client ended, or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// drain returns every queued item, oldest first, and empties the queue. It
// never blocks. The writer hands the slice back with release after writing.
func (c *Client) drain() []queueItem {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return nil
	}
	items := c.queue
	c.queue = c.spare
	c.spare = nil
	c.bytes, c.replayed, c.replayedBytes = 0, 0, 0
	return items
}

// release returns a slice from drain for reuse, so a busy client does not
// allocate a queue per write.
func (c *Client) release(items []queueItem) {
	if cap(items) > 4*c.maxLen {
		return
	}
	clear(items)
	c.mu.Lock()
	if c.spare == nil && !c.closed {
		c.spare = items[:0]
	}
	c.mu.Unlock()
}

// queued returns how many items wait in c's queue.
func (c *Client) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	c.failLocked(err)
	c.mu.Unlock()
}

// failLocked ends the client with err and drops its queue. It only marks:
// the door sees Done and calls Close, which detaches from the hub, so the
// fan-out never takes the hub's locks.
func (c *Client) failLocked(err error) { c.endLocked(err, false) }

// finish ends the client with err but keeps what is queued: the door
// writes it, then ends the connection as err says (a WebSocket closes
// after the answers to the frames before the one that ended it). Nothing
// more is queued.
func (c *Client) finish(err error) {
	c.mu.Lock()
	c.endLocked(err, true)
	c.mu.Unlock()
}

// expireAt ends the client with ErrExpired at t, when its credential
// expires. The timer is the only cost until then; the client's end stops
// it.
func (c *Client) expireAt(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.expiry = time.AfterFunc(time.Until(t), func() { c.fail(ErrExpired) })
}

func (c *Client) endLocked(err error, keep bool) {
	if c.closed {
		return
	}
	c.closed = true
	c.err = err
	if !keep {
		c.queue, c.spare, c.bytes = nil, nil, 0
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if err == ErrSlowConsumer {
		c.h.stats.SlowConsumers.Add(1)
	}
	close(c.done)
	if c.notify != nil {
		c.notify()
	}
}

// Close ends the client, detaches it from every channel and tells the hub it
// is gone. It is idempotent.
func (c *Client) Close() { c.CloseAfter(nil) }

// CloseAfter is Close that runs fn (a door's own teardown: waiting for its
// writer, closing its socket) before the hub counts the client gone, so
// Hub.Shutdown returns only once the doors are done.
func (c *Client) CloseAfter(fn func()) {
	c.once.Do(func() {
		c.mu.Lock()
		c.failLocked(ErrClosed)
		chans := make([]string, 0, len(c.subs))
		for ch := range c.subs {
			chans = append(chans, ch)
		}
		c.subs = map[string]*subState{}
		c.mu.Unlock()
		for _, ch := range chans {
			c.h.detach(ch, c)
		}
		c.tasks.Wait()
		if fn != nil {
			fn()
		}
		c.h.forget(c)
	})
}
