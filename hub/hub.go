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
// Lock order: hubShard.mu, then the backplane's own locks, then
// hubChannel.mu, then Client.mu.
type Hub struct {
	cfg  Config
	bp   Backplane
	log  *slog.Logger
	seed maphash.Seed

	shards [hubShards]hubShard

	mu      sync.Mutex
	clients map[*Client]struct{}
	closed  bool
	wg      sync.WaitGroup

	stats Stats
}

type hubShard struct {
	mu    sync.Mutex
	chans map[string]*hubChannel
}

// hubChannel is a channel with local clients. Adding and removing a client
// is O(1) (swap-remove with an index); the fan-out holds the read lock while
// it offers an entry to each client, which never blocks.
type hubChannel struct {
	name   string
	cancel func()

	mu    sync.RWMutex
	subs  []*Client
	index map[*Client]int
}

// Stats are the hub's counters and gauges, read with atomic loads.
type Stats struct {
	// Published counts events accepted into history.
	Published atomic.Uint64
	// Deliveries counts entries offered to local clients.
	Deliveries atomic.Uint64
	// SlowConsumers counts clients ended because their queue overflowed.
	SlowConsumers atomic.Uint64
	// BackplaneErrors counts failed backplane calls (publish, read, listen).
	BackplaneErrors atomic.Uint64
	// WSConnections and SSEConnections are the open connections by door.
	WSConnections, SSEConnections atomic.Int64
	// Subscriptions is the number of (client, channel) subscriptions.
	Subscriptions atomic.Int64
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
		fn(c.Queued())
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
	h := &Hub{cfg: cfg, bp: bp, log: log, seed: maphash.MakeSeed(), clients: make(map[*Client]struct{})}
	for i := range h.shards {
		h.shards[i].chans = make(map[string]*hubChannel)
	}
	return h, nil
}

// Stats returns the hub's counters.
func (h *Hub) Stats() *Stats { return &h.stats }

// Backplane returns the hub's backplane.
func (h *Hub) Backplane() Backplane { return h.bp }

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
		ready:    make(chan struct{}, 1),
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
// when c is the channel's first.
func (h *Hub) attach(ctx context.Context, ch string, c *Client) error {
	s := h.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	hc := s.chans[ch]
	if hc == nil {
		hc = &hubChannel{name: ch, index: map[*Client]int{}}
		cancel, err := h.bp.Listen(ctx, ch, hc.dispatchFunc(h))
		if err != nil {
			h.stats.BackplaneErrors.Add(1)
			return fmt.Errorf("hub: listen %q: %w", ch, err)
		}
		hc.cancel = cancel
		s.chans[ch] = hc
	}
	hc.mu.Lock()
	if _, ok := hc.index[c]; !ok {
		hc.index[c] = len(hc.subs)
		hc.subs = append(hc.subs, c)
		h.stats.Subscriptions.Add(1)
	}
	hc.mu.Unlock()
	return nil
}

// detach removes c from channel's local subscribers and stops listening when
// no local subscriber is left. The backplane's cancel runs after the
// channel's lock is released: the fan-out takes them in the other order.
func (h *Hub) detach(ch string, c *Client) {
	s := h.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	hc := s.chans[ch]
	if hc == nil {
		return
	}
	hc.mu.Lock()
	if i, ok := hc.index[c]; ok {
		last := len(hc.subs) - 1
		hc.subs[i] = hc.subs[last]
		hc.index[hc.subs[i]] = i
		hc.subs[last] = nil
		hc.subs = hc.subs[:last]
		delete(hc.index, c)
		h.stats.Subscriptions.Add(-1)
	}
	empty := len(hc.subs) == 0
	hc.mu.Unlock()
	if empty {
		delete(s.chans, ch)
		hc.cancel()
	}
}

// dispatchFunc returns the backplane callback of hc: it shares one Delivery,
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
		d := &Delivery{Entry: e}
		for _, c := range hc.subs {
			c.offer(d)
		}
		h.stats.Deliveries.Add(uint64(len(hc.subs)))
	}
}
