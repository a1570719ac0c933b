package hub

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Defaults for Config.
const (
	DefaultClientQueue      = 1024
	DefaultClientQueueBytes = 1 << 20
	DefaultMaxChannels      = 64
)

// Config sets the hub's per-client bounds.
type Config struct {
	// ClientQueue is how many frames may wait for one client before it is
	// disconnected as a slow consumer.
	ClientQueue int
	// ClientQueueBytes is how many bytes of frames may wait for one client
	// before it is disconnected as a slow consumer, so a client that does
	// not read cannot hold the frame bound's worth of large frames.
	ClientQueueBytes int
	// MaxChannels is how many channels one client may hold.
	MaxChannels int
}

const hubShards = 64

// Hub is the registry of channels and clients of one node. Events reach it
// through its Backplane; it fans each entry out to the local clients of its
// channel without ever blocking on one of them.
//
// Lock order: hubShard.mu, then hubChannel.mu, then Client.mu. The
// backplane's own locks come before hubChannel.mu (its fan-out calls
// dispatch), and no hub lock is held across a backplane call: Listen and
// its cancel run outside hubShard.mu, so a slow backplane stalls only the
// channel it is called for (see hubChannel for the states that make this
// safe).
type Hub struct {
	cfg  Config
	bp   Backplane
	log  *slog.Logger
	seed maphash.Seed

	shards [hubShards]hubShard

	mu      sync.Mutex
	clients map[*Client]struct{}
	closed  bool
	down    chan struct{} // closed by Shutdown: every watch's done
	wg      sync.WaitGroup

	watching atomic.Int64 // watches in place (Watch)

	stats counters
}

type hubShard struct {
	mu    sync.Mutex
	chans map[string]*hubChannel
}

// hubChannel is a channel with local clients. Adding and removing a client
// is O(1) (swap-remove with an index); the fan-out holds the read lock while
// it offers an entry to each client, which never blocks.
//
// Its state, guarded by hubShard.mu, says where its backplane listener is;
// the backplane is called with no hub lock held:
//
//   - absent (not in hubShard.chans): no listener. The first subscriber
//     enters starting and calls Listen.
//   - starting: one subscriber calls Listen. Others wait on done and share
//     its result (one Listen however many subscribe at once): on success
//     the channel is live; on failure it is absent again and err says why,
//     so the next subscriber tries anew. When the attempt failed only
//     because its subscriber's context ended, waiters try anew at once.
//   - live: cancel stops the listener. Subscribers are added only in this
//     state, so a subscriber is never without a listener.
//   - stopping: the last subscriber left and calls cancel. Subscribers wait
//     on done, then find the channel absent and start a new listener, so
//     a listener is never without subscribers and two never overlap.
type hubChannel struct {
	name string

	// Guarded by hubShard.mu.
	state  chanState
	done   chan struct{} // closed when starting or stopping ends; made by its first waiter
	err    error         // why starting failed
	retry  bool          // starting failed on its subscriber's context
	cancel func()

	mu   sync.RWMutex
	subs []subscriber
	// sub1 backs subs while it holds one subscriber, as a command's
	// corr: channel's does (its call's watch): no slice of its own.
	sub1 [1]subscriber
	// index finds a subscriber in subs once they are more than
	// smallChannel; a channel with a few (a command's corr:, watched by
	// its call) is searched instead and has no map.
	index map[subscriber]int
}

// smallChannel is the most local subscribers a channel holds without an
// index map.
const smallChannel = 8

// subscriber is what a channel's fan-out offers its entries to: a client,
// or a watch (Hub.Watch). Neither call may block.
type subscriber interface {
	// offer gives the subscriber a new entry of the channel.
	offer(d *delivery)
	// resyncLater says announcements of channel may have been lost.
	resyncLater(channel string)
}

// chanState is where a hubChannel's backplane listener is.
type chanState uint8

const (
	chanStarting chanState = iota
	chanLive
	chanStopping
)

// Stats is a snapshot of the hub's counters and gauges.
type Stats struct {
	// Published counts events accepted into history.
	Published uint64
	// Deliveries counts entries offered to local clients.
	Deliveries uint64
	// SlowConsumers counts clients ended because their queue overflowed.
	SlowConsumers uint64
	// BackplaneErrors counts failed backplane calls (publish, read, listen).
	BackplaneErrors uint64
	// WSConnections and SSEConnections are the open connections by door.
	WSConnections, SSEConnections int64
	// Subscriptions is the number of (client, channel) subscriptions.
	Subscriptions int64
	// Writes counts the doors' writes on their sockets (the write(2)
	// calls of hijacked connections, flushes of held streams): with
	// Deliveries, how well writes coalesce.
	Writes uint64
}

// counters are the hub's live counters behind Stats.
type counters struct {
	Published, Deliveries, SlowConsumers, BackplaneErrors, Writes atomic.Uint64
	WSConnections, SSEConnections, Subscriptions                  atomic.Int64
}

// QueueDepths calls fn with the queue length of every connected client.
func (h *Hub) QueueDepths(fn func(int)) {
	h.mu.Lock()
	cs := make([]*Client, 0, len(h.clients))
	for c := range h.clients {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		fn(c.queued())
	}
}

// New returns a hub over bp.
func New(cfg Config, bp Backplane, log *slog.Logger) (*Hub, error) {
	if bp == nil {
		return nil, fmt.Errorf("hub: no backplane")
	}
	if cfg.ClientQueue == 0 {
		cfg.ClientQueue = DefaultClientQueue
	}
	if cfg.ClientQueueBytes == 0 {
		cfg.ClientQueueBytes = DefaultClientQueueBytes
	}
	if cfg.MaxChannels == 0 {
		cfg.MaxChannels = DefaultMaxChannels
	}
	if cfg.ClientQueue < 0 || cfg.ClientQueueBytes < 0 || cfg.MaxChannels < 0 {
		return nil, fmt.Errorf("hub: client queue, client queue bytes and max channels must be positive")
	}
	if log == nil {
		log = slog.Default()
	}
	h := &Hub{cfg: cfg, bp: bp, log: log, seed: maphash.MakeSeed(), clients: make(map[*Client]struct{}), down: make(chan struct{})}
	for i := range h.shards {
		h.shards[i].chans = make(map[string]*hubChannel)
	}
	return h, nil
}

// Stats returns a snapshot of the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{
		Published:       h.stats.Published.Load(),
		Deliveries:      h.stats.Deliveries.Load(),
		SlowConsumers:   h.stats.SlowConsumers.Load(),
		BackplaneErrors: h.stats.BackplaneErrors.Load(),
		WSConnections:   h.stats.WSConnections.Load(),
		SSEConnections:  h.stats.SSEConnections.Load(),
		Subscriptions:   h.stats.Subscriptions.Load(),
		Writes:          h.stats.Writes.Load(),
	}
}

// Top returns the position of channel's newest event (offset 0 in the
// current epoch for an empty log): a subscription that starts After it
// receives exactly what is published from now on.
func (h *Hub) Top(ctx context.Context, channel string) (Position, error) {
	if err := ValidateChannel(channel); err != nil {
		return Position{}, err
	}
	rep, err := h.bp.Read(ctx, channel, nil)
	if err != nil {
		h.stats.BackplaneErrors.Add(1)
		return Position{}, err
	}
	return rep.Top, nil
}

// Follow calls fn with every event of channel after *after (live only when
// after is nil), in order, and with nil for a gap (see
// SubscribeOptions.OnEvent), until stop is called or the hub shuts down; no
// queue, no goroutine. fn runs under a lock: it must not block. It returns
// once the subscription is live (the same guarantee as Subscribe: nothing
// published after it returns is missed). done is closed when the follow
// ends.
func (h *Hub) Follow(ctx context.Context, channel string, after *Position, fn func(*Event)) (stop func(), done <-chan struct{}, err error) {
	c, err := h.NewClient()
	if err != nil {
		return nil, nil, err
	}
	c.follower = true
	if _, err := c.Subscribe(ctx, channel, SubscribeOptions{After: after, OnEvent: fn}); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c.Close, c.done, nil
}

// Publish accepts ev into the history of each channel and fans it out. It
// returns once the backplane holds it: the caller may then commit its source.
func (h *Hub) Publish(ctx context.Context, channels []string, ev *Event) error {
	if len(channels) == 0 {
		return nil
	}
	if err := h.bp.Publish(ctx, channels, ev); err != nil {
		h.stats.BackplaneErrors.Add(1)
		return fmt.Errorf("hub: publish: %w", err)
	}
	h.stats.Published.Add(1)
	return nil
}

// PublishBatch publishes the events of batch in order, in one call to a
// backplane that takes batches (BatchPublisher), else one after another.
// It returns once the backplane holds them all.
func (h *Hub) PublishBatch(ctx context.Context, batch []Publication) error {
	bb, ok := h.bp.(BatchPublisher)
	if !ok {
		for _, p := range batch {
			if err := h.Publish(ctx, p.Channels, p.Event); err != nil {
				return err
			}
		}
		return nil
	}
	var n int
	for _, p := range batch {
		if len(p.Channels) > 0 {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if err := bb.PublishBatch(ctx, batch); err != nil {
		h.stats.BackplaneErrors.Add(1)
		return fmt.Errorf("hub: publish: %w", err)
	}
	h.stats.Published.Add(uint64(n))
	return nil
}

// Healthy reports whether the backplane is reachable.
func (h *Hub) Healthy(ctx context.Context) error {
	if hc, ok := h.bp.(HealthChecker); ok {
		return hc.Healthy(ctx)
	}
	return nil
}

// NewClient registers a client: one connection of a door. The door must call
// Close when the connection ends.
func (h *Hub) NewClient() (*Client, error) {
	c := &Client{
		h:        h,
		subs:     make(map[string]*subState),
		done:     make(chan struct{}),
		maxLen:   h.cfg.ClientQueue,
		maxBytes: h.cfg.ClientQueueBytes,
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrShutdown
	}
	h.clients[c] = struct{}{}
	h.wg.Add(1)
	return c, nil
}

func (h *Hub) forget(c *Client) {
	h.mu.Lock()
	if _, ok := h.clients[c]; ok {
		delete(h.clients, c)
		h.wg.Done()
	}
	h.mu.Unlock()
}

// bindSession names the signed-in session c's connection was admitted
// with (WithSession), for EndSession.
func (h *Hub) bindSession(ctx context.Context, c *Client) {
	if id, ok := SessionFrom(ctx); ok {
		h.mu.Lock()
		c.session = id
		h.mu.Unlock()
	}
}

// EndSession ends every connection of this node admitted with session id
// (WithSession) with ErrSignedOut: WebSocket close 1008 "signed out", SSE
// "event: expired" with reason "signed_out". It returns how many it ended.
func (h *Hub) EndSession(id string) int {
	var ended []*Client
	h.mu.Lock()
	for c := range h.clients {
		if c.session == id {
			ended = append(ended, c)
		}
	}
	h.mu.Unlock()
	for _, c := range ended {
		c.fail(ErrSignedOut)
	}
	return len(ended)
}

// Sessions returns the signed-in sessions this node's connections were
// admitted with, each once.
func (h *Hub) Sessions() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for c := range h.clients {
		if c.session != "" && !seen[c.session] {
			seen[c.session] = true
			out = append(out, c.session)
		}
	}
	return out
}

// Clients returns how many clients are connected.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// Shutdown refuses new clients, ends every client with ErrShutdown (the doors
// close WebSockets with 1001 and end SSE streams) and waits until every door
// has closed its client, or ctx ends.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	if !h.closed {
		close(h.down)
	}
	h.closed = true
	cs := make([]*Client, 0, len(h.clients))
	for c := range h.clients {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.fail(ErrShutdown)
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hub: shutdown: %w", ctx.Err())
	}
}

func (h *Hub) shard(ch string) *hubShard {
	return &h.shards[maphash.String(h.seed, ch)%hubShards]
}

// attach adds c to channel's local subscribers, listening on the backplane
// when c is the channel's first. Listen runs outside the shard's lock.
func (h *Hub) attach(ctx context.Context, ch string, c subscriber) error {
	s := h.shard(ch)
	for {
		s.mu.Lock()
		hc := s.chans[ch]
		switch {
		case hc == nil:
			hc = &hubChannel{name: ch, state: chanStarting}
			s.chans[ch] = hc
			s.mu.Unlock()
			return h.start(ctx, s, hc, c)
		case hc.state == chanLive:
			hc.add(h, c)
			s.mu.Unlock()
			return nil
		}
		if hc.done == nil {
			// Made only when waited for: most channels start and stop
			// with no one waiting (a command's corr: channel, each call).
			hc.done = make(chan struct{})
		}
		starting, done := hc.state == chanStarting, hc.done
		s.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("hub: listen %q: %w", ch, ctx.Err())
		}
		if starting && hc.err != nil && !hc.retry {
			return fmt.Errorf("hub: listen %q: %w", ch, hc.err)
		}
	}
}

// start listens on the backplane for hc, which is starting, and adds c as
// its first subscriber, or makes hc absent again when Listen fails.
func (h *Hub) start(ctx context.Context, s *hubShard, hc *hubChannel, c subscriber) error {
	cancel, err := h.bp.Listen(ctx, hc.name, hc.dispatchFunc(h))
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		h.stats.BackplaneErrors.Add(1)
		delete(s.chans, hc.name)
		hc.err, hc.retry = err, ctx.Err() != nil
		if hc.done != nil {
			close(hc.done) // after err: waiters read it
		}
		return fmt.Errorf("hub: listen %q: %w", hc.name, err)
	}
	hc.state, hc.cancel = chanLive, cancel
	hc.add(h, c)
	// Waiters took done before; a live channel keeps none (one per
	// command's corr: channel adds up).
	if hc.done != nil {
		close(hc.done)
		hc.done = nil
	}
	return nil
}

// add makes c a subscriber of hc. The caller holds the shard's lock.
func (hc *hubChannel) add(h *Hub, c subscriber) {
	hc.mu.Lock()
	if hc.find(c) < 0 {
		if hc.subs == nil {
			hc.subs = hc.sub1[:0]
		}
		hc.subs = append(hc.subs, c)
		if hc.index != nil {
			hc.index[c] = len(hc.subs) - 1
		} else if len(hc.subs) > smallChannel {
			hc.index = make(map[subscriber]int, len(hc.subs))
			for i, s := range hc.subs {
				hc.index[s] = i
			}
		}
		h.stats.Subscriptions.Add(1)
	}
	hc.mu.Unlock()
}

// find returns c's index in hc.subs, or -1. hc.mu is held.
func (hc *hubChannel) find(c subscriber) int {
	if hc.index != nil {
		if i, ok := hc.index[c]; ok {
			return i
		}
		return -1
	}
	for i, s := range hc.subs {
		if s == c {
			return i
		}
	}
	return -1
}

// detach removes c from channel's local subscribers and stops listening when
// no local subscriber is left. The backplane's cancel runs with no hub lock
// held: the channel is stopping meanwhile, and a new subscriber waits for
// the cancel to return before it listens again.
func (h *Hub) detach(ch string, c subscriber) {
	s := h.shard(ch)
	s.mu.Lock()
	hc := s.chans[ch]
	if hc == nil || hc.state != chanLive {
		// Only a live channel has subscribers.
		s.mu.Unlock()
		return
	}
	hc.mu.Lock()
	if i := hc.find(c); i >= 0 {
		last := len(hc.subs) - 1
		moved := hc.subs[last]
		hc.subs[i] = moved
		hc.subs[last] = nil
		hc.subs = hc.subs[:last]
		if hc.index != nil {
			hc.index[moved] = i
			delete(hc.index, c) // after: moved may be c
		}
		h.stats.Subscriptions.Add(-1)
	}
	empty := len(hc.subs) == 0
	hc.mu.Unlock()
	if !empty {
		s.mu.Unlock()
		return
	}
	hc.state = chanStopping // a live channel has no done: its first waiter makes it
	s.mu.Unlock()

	hc.cancel()

	s.mu.Lock()
	delete(s.chans, ch)
	if hc.done != nil {
		close(hc.done)
	}
	s.mu.Unlock()
}

// dispatchFunc returns the backplane callback of hc: it shares one delivery,
// whose wire encodings are made once, among every local subscriber.
func (hc *hubChannel) dispatchFunc(h *Hub) func(Entry) {
	return func(e Entry) {
		hc.mu.RLock()
		defer hc.mu.RUnlock()
		if len(hc.subs) == 0 {
			return
		}
		if e.Resync {
			for _, c := range hc.subs {
				c.resyncLater(hc.name)
			}
			return
		}
		d := &delivery{Entry: e}
		for _, c := range hc.subs {
			c.offer(d)
		}
		h.stats.Deliveries.Add(uint64(len(hc.subs)))
	}
}
