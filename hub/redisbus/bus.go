// Package redisbus is the Redis backplane of the hub: per-channel history
// in Redis Streams, fan-out across nodes by Redis pub/sub, so a cursor from
// one node resumes on any other, and after every node restarted.
//
// It runs on one server, on a primary with replicas watched by Sentinel,
// and on a Redis Cluster, where announcements use sharded pub/sub
// (SPUBLISH/SSUBSCRIBE): each travels only within its channel's shard, and
// a node holds one pub/sub connection per shard it listens to.
package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub"
)

// Defaults for Config.
const (
	DefaultPrefix         = "sb:"
	DefaultListenTimeout  = 5 * time.Second
	reconnectBackoffMin   = 50 * time.Millisecond
	reconnectBackoffLimit = 500 * time.Millisecond
)

// Config configures the Redis backplane.
type Config struct {
	// HistorySize and HistoryTTL bound each channel's history.
	HistorySize int
	HistoryTTL  time.Duration
	// Prefix starts every key and pub/sub channel name.
	Prefix string
	// ListenTimeout bounds waiting for Redis to confirm a subscription.
	ListenTimeout time.Duration
	// SharedNamespaces are the channel namespaces announced on one
	// node-level pub/sub channel that every node listens to from its start,
	// instead of one pub/sub channel each: listening to such a channel
	// costs no Redis command. It fits short-lived channels with few events,
	// like a command's corr:<id>, which would otherwise cost a SUBSCRIBE
	// and an UNSUBSCRIBE each; every node then receives every
	// announcement of those namespaces. Nil means
	// DefaultSharedNamespaces; empty means none.
	SharedNamespaces []string
}

// DefaultSharedNamespaces is Config.SharedNamespaces by default: the
// correlation channels that each synchronous command opens and closes.
var DefaultSharedNamespaces = []string{"corr"}

// Bus is the Redis backplane. One pub/sub connection per node (per shard
// on a Cluster) carries the channels its clients hold, and only those.
type Bus struct {
	cfg Config
	rdb redis.UniversalClient
	ps  *redis.PubSub        // classic pub/sub; nil on a Cluster
	cc  *redis.ClusterClient // set on a Cluster
	// masterFor is the client of the master of a key's slot, as the
	// slot map says: cc.MasterForKey (a test makes it stale).
	masterFor func(ctx context.Context, key string) (*redis.Client, error)
	// pubCmd announces an entry: PUBLISH, or SPUBLISH on a Cluster.
	pubCmd string
	log    *slog.Logger

	mu       sync.Mutex
	channels map[string]*listening // by pub/sub name
	shards   map[string]*shard     // by node address, on a Cluster

	// shared is the pub/sub connection of the node-level channel
	// sharedName, which carries the announcements of every channel in
	// Config.SharedNamespaces; sharedL holds this node's listeners of those
	// channels by channel (guarded by mu). sharedUp is closed once Redis
	// confirmed the subscription the first time.
	shared     *redis.PubSub
	sharedName string
	sharedL    map[string]*listening
	sharedUp   chan struct{}

	// known is the newest position this node saw of each channel it
	// published to or heard from, to catch a log that lost writes. Its
	// lock is never held with mu.
	known knownTops

	// Commands counts the Redis commands the bus sent (scripts count one),
	// for the benchmarks' commands per delivered event.
	Commands atomic.Uint64
	// LostWrites counts the channel logs this bus found had lost writes
	// (their top went backwards in a failover) and moved to a new epoch.
	LostWrites atomic.Uint64

	now   func() time.Time
	rctx  context.Context
	stop  context.CancelFunc
	done  chan struct{}
	tasks sync.WaitGroup // shard receivers, re-subscriptions, fences
	once  sync.Once
}

// listening is one channel this node receives. Its fields after deliver
// are guarded by Bus.mu.
type listening struct {
	channel   string
	name      string // pub/sub name
	deliver   func(hub.Entry)
	confirmed chan struct{} // closed when Redis confirmed the subscription
	ok        bool
	// shared: the channel's announcements come on the node-level
	// channel (Config.SharedNamespaces).
	shared bool
	// shard carries the channel on a Cluster (nil while it is being
	// subscribed again); resync asks for a Resync entry at the next
	// confirmation.
	shard  *shard
	resync bool
	// misses counts the checks in a row that found the channel
	// subscribed on a node not serving its slot as master.
	misses int
	// heard is the position of the last announcement; fencing is set
	// while a log heard going backwards is moved to a new epoch.
	heard   hub.Position
	fencing bool
}

// shard is the pub/sub connection to one Cluster master.
type shard struct {
	addr string
	node *redis.Client // the node's client, for the checks
	ps   *redis.PubSub
	// unsub counts SUNSUBSCRIBEs this node sent and Redis has not yet
	// confirmed, by name: their confirmations are not moves.
	unsub map[string]int
	// check holds the confirmed subscriptions not checked yet (that the
	// node serves their slots as master); checking is set while a
	// checkShard runs. Both are guarded by Bus.mu.
	check    []*listening
	checking bool
}

var (
	_ hub.Backplane     = (*Bus)(nil)
	_ hub.HealthChecker = (*Bus)(nil)
	_ hub.Closer        = (*Bus)(nil)
)

// Open connects to the Redis of url (redis://, rediss://, unix://) and
// starts the bus.
func Open(ctx context.Context, url string, cfg Config, log *slog.Logger) (*Bus, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redisbus: redis.url: %w", err)
	}
	return New(ctx, redis.NewClient(opts), cfg, log)
}

// New starts a bus over rdb, which it then owns (Close closes it).
func New(ctx context.Context, rdb redis.UniversalClient, cfg Config, log *slog.Logger) (*Bus, error) {
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = hub.DefaultHistorySize
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = hub.DefaultHistoryTTL
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.ListenTimeout <= 0 {
		cfg.ListenTimeout = DefaultListenTimeout
	}
	if cfg.SharedNamespaces == nil {
		cfg.SharedNamespaces = DefaultSharedNamespaces
	}
	if log == nil {
		log = slog.Default()
	}
	// go-redis has one logger per process, which writes "redis: <date> …"
	// lines to stderr; they go to the last bus started instead.
	redis.SetLogger(redisLogger{log})
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redisbus: %w", err)
	}
	rctx, stop := context.WithCancel(context.Background())
	b := &Bus{cfg: cfg, rdb: rdb, log: log, channels: map[string]*listening{}, shards: map[string]*shard{},
		now: time.Now, rctx: rctx, stop: stop, done: make(chan struct{}), pubCmd: "PUBLISH",
		sharedName: cfg.Prefix + "shared", sharedL: map[string]*listening{}, sharedUp: make(chan struct{})}
	if len(cfg.SharedNamespaces) > 0 {
		// Classic pub/sub on every form, a Cluster included: the
		// node-level channel is no key of any slot, and every node
		// listens to it.
		b.shared = rdb.Subscribe(rctx, b.sharedName)
		b.Commands.Add(1)
		b.tasks.Add(1)
		go b.receiveShared()
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		b.cc, b.pubCmd, b.masterFor = cc, "SPUBLISH", cc.MasterForKey
		close(b.done)
		return b, nil
	}
	b.ps = rdb.Subscribe(rctx)
	go b.receive(rctx)
	return b, nil
}

// redisLogger writes go-redis's log lines (failed dials, dropped pub/sub
// connections) through slog, at warn level: go-redis logs only trouble.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimPrefix(strings.TrimSpace(fmt.Sprintf(format, v...)), "redis: ")
	l.log.WarnContext(ctx, "redis: "+msg)
}

// Client returns the Redis client, for parts that keep their own state in
// the same Redis (the outcome store).
func (b *Bus) Client() redis.UniversalClient { return b.rdb }

// Close stops receiving and closes the connections. It is idempotent.
func (b *Bus) Close() error {
	var err error
	b.once.Do(func() {
		b.stop()
		if b.ps != nil {
			err = b.ps.Close()
		}
		if b.shared != nil {
			err = errors.Join(err, b.shared.Close())
		}
		b.mu.Lock()
		for _, sh := range b.shards {
			_ = sh.ps.Close()
		}
		b.mu.Unlock()
		<-b.done
		b.tasks.Wait()
		err = errors.Join(err, b.rdb.Close())
	})
	return err
}

// Healthy pings Redis: on a Cluster every master, so a master that died
// makes it fail until its replica took over.
func (b *Bus) Healthy(ctx context.Context) error {
	if b.cc != nil {
		// ForEachMaster reloads the slot map first.
		if err := b.cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		}); err != nil {
			return fmt.Errorf("redisbus: %w", err)
		}
		return nil
	}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisbus: %w", err)
	}
	return nil
}

func (b *Bus) keys(ch string) (meta, log, live string) {
	tag := b.cfg.Prefix + "{" + ch + "}:"
	return tag + "meta", tag + "log", tag + "live"
}

// idsKey is the sorted set of the keys of the events ch's history holds.
func (b *Bus) idsKey(ch string) string { return b.cfg.Prefix + "{" + ch + "}:ids" }

func (b *Bus) liveName(ch string) string {
	_, _, live := b.keys(ch)
	return live
}

// header carries the attributes the hub routes and dedupes on; the event
// JSON travels beside it.
func header(ev *hub.Event) string {
	h, _ := json.Marshal([5]string{ev.ID, ev.Source, ev.Type, ev.Subject, ev.CorrelationID})
	return string(h)
}

func event(h string, js []byte) (*hub.Event, error) {
	var f [5]string
	if err := json.Unmarshal([]byte(h), &f); err != nil {
		return nil, fmt.Errorf("redisbus: bad entry header: %w", err)
	}
	return &hub.Event{ID: f[0], Source: f[1], Type: f[2], Subject: f[3], CorrelationID: f[4], JSON: js}, nil
}

// Publish appends ev to each channel's stream and announces it, one script
// per channel (each atomic on its own slot). It is idempotent: a channel
// whose history already holds ev (same source and id) keeps it once, so a
// record Kafka delivers again, or a retried Publish, reaches nobody twice.
func (b *Bus) Publish(ctx context.Context, channels []string, ev *hub.Event) error {
	return b.PublishBatch(ctx, []hub.Publication{{Channels: channels, Event: ev}})
}

var _ hub.BatchPublisher = (*Bus)(nil)

// manyAppends bounds the appends of one publishManyScript: one script
// holds Redis for all of its appends.
const manyAppends = 64

// PublishBatch implements hub.BatchPublisher: every event of batch is
// appended to each of its channels (as Publish), in the batch's order.
// Where one server holds every key, the appends go in one script per
// manyAppends; on a Cluster, one script per channel (each atomic on its
// own slot), in one pipeline that each master runs in order, and a
// channel's keys are on one master. Either way a consumer's queued records
// cost one round trip (per master), not one each.
func (b *Bus) PublishBatch(ctx context.Context, batch []hub.Publication) error {
	type pub struct {
		ch     string
		ev     *hub.Event
		header string
		keys   []string
		seen   hub.Position
		// target and lead: for a channel of a shared namespace, the
		// node-level channel and the start of its announcements
		target, lead string
	}
	var pubs []pub
	for _, p := range batch {
		if len(p.Channels) == 0 {
			continue
		}
		h := header(p.Event)
		for _, ch := range p.Channels {
			meta, log, live := b.keys(ch)
			pb := pub{ch: ch, ev: p.Event, header: h, seen: b.known.get(ch), keys: []string{meta, log, live, b.idsKey(ch)}}
			if b.isShared(ch) {
				pb.target, pb.lead = b.sharedName, ch+" "
			}
			pubs = append(pubs, pb)
		}
	}
	if len(pubs) == 0 {
		return nil
	}
	now := b.now().UnixMilli()
	ttl := b.cfg.HistoryTTL.Milliseconds()
	evKey := func(ev *hub.Event) string { return ev.Source + "\x00" + ev.ID }

	// A script the server does not hold yet (NOSCRIPT) is sent whole,
	// alone, in order.
	type call struct {
		script     *redis.Script
		keys       []string
		args       []any
		cmd        *redis.Cmd
		from, upto int // the pubs it appends
	}
	var calls []call
	if b.cc == nil {
		for from := 0; from < len(pubs); from += manyAppends {
			part := pubs[from:min(from+manyAppends, len(pubs))]
			// PUBLISH announces on a single server: every channel's,
			// the node-level one too.
			c := call{script: publishManyScript, from: from, upto: from + len(part),
				keys: make([]string, 0, 4*len(part)), args: []any{b.cfg.HistorySize, ttl, now, b.pubCmd}}
			for i, p := range part {
				if i == 0 || part[i-1].ev != p.ev {
					n := 1
					for n < len(part)-i && part[i+n].ev == p.ev {
						n++
					}
					c.args = append(c.args, p.header, p.ev.JSON, evKey(p.ev), n)
				}
				c.keys = append(c.keys, p.keys...)
				c.args = append(c.args, newEpoch(), p.seen.Epoch, p.seen.Offset, p.target, p.lead)
			}
			calls = append(calls, c)
		}
	} else {
		for i, p := range pubs {
			pubCmd := b.pubCmd
			if p.target != "" {
				pubCmd = "PUBLISH" // the node-level channel is no key of a slot
			}
			calls = append(calls, call{script: publishScript, from: i, upto: i + 1, keys: p.keys,
				args: []any{p.header, p.ev.JSON, b.cfg.HistorySize, ttl, now, newEpoch(), evKey(p.ev), pubCmd, p.seen.Epoch, p.seen.Offset, p.target, p.lead}})
		}
	}
	pipe := b.rdb.Pipeline()
	for i := range calls {
		calls[i].cmd = calls[i].script.EvalSha(ctx, pipe, calls[i].keys, calls[i].args...)
	}
	b.Commands.Add(uint64(len(calls)))
	_, _ = pipe.Exec(ctx) // each command's own error is read below
	for _, c := range calls {
		res, err := c.cmd.Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			res, err = c.script.Run(ctx, b.rdb, c.keys, c.args...).Slice()
		}
		if err != nil {
			return fmt.Errorf("redisbus: publish to %s: %w", pubs[c.from].ch, err)
		}
		if c.script == publishScript {
			res = []any{res}
		}
		var refused error
		for i, r := range res {
			if c.from+i >= c.upto {
				break
			}
			p := &pubs[c.from+i]
			r, _ := r.([]any)
			if len(r) == 2 { // {0, error}: the others went on
				if refused == nil {
					msg, _ := r[1].(string)
					refused = fmt.Errorf("redisbus: publish to %s: %s", p.ch, msg)
				}
				continue
			}
			if len(r) == 3 {
				ep, _ := r[0].(string)
				off, _ := r[1].(int64)
				b.known.see(p.ch, hub.Position{Epoch: ep, Offset: uint64(off)})
				if fenced, _ := r[2].(int64); fenced == 1 {
					b.LostWrites.Add(1)
					b.log.Warn("redis log went backwards: it lost writes in a failover; moved it to a new epoch", "channel", p.ch, "published", p.seen, "now", ep)
				}
			}
		}
		if refused != nil {
			return refused
		}
	}
	return nil
}

// Read returns the entries of ch after *after.
func (b *Bus) Read(ctx context.Context, ch string, after *hub.Position) (hub.Replay, error) {
	meta, log, _ := b.keys(ch)
	mode, epoch, off := "top", "", "0"
	switch {
	case after == nil:
	case *after == hub.Oldest:
		mode = "oldest"
	default:
		mode, epoch, off = "after", after.Epoch, strconv.FormatUint(after.Offset, 10)
	}
	b.Commands.Add(1)
	res, err := readScript.Run(ctx, b.rdb, []string{meta, log},
		newEpoch(), b.cfg.HistoryTTL.Milliseconds(), b.now().UnixMilli(), mode, epoch, off).Slice()
	if err != nil {
		return hub.Replay{}, fmt.Errorf("redisbus: read %s: %w", ch, err)
	}
	if len(res) != 3 {
		return hub.Replay{}, fmt.Errorf("redisbus: read %s: unexpected reply", ch)
	}
	ep, _ := res[0].(string)
	top, _ := res[1].(int64)
	r := hub.Replay{Top: hub.Position{Epoch: ep, Offset: uint64(top)}}
	switch v := res[2].(type) {
	case string:
		r.Gap = true
	case []any:
		r.Entries = make([]hub.Entry, 0, len(v))
		for _, raw := range v {
			e, err := streamEntry(ch, ep, raw)
			if err != nil {
				return hub.Replay{}, err
			}
			r.Entries = append(r.Entries, e)
		}
	}
	return r, nil
}

// streamEntry decodes one XRANGE item: [id, [field, value, ...]].
func streamEntry(ch, epoch string, raw any) (hub.Entry, error) {
	item, ok := raw.([]any)
	if !ok || len(item) != 2 {
		return hub.Entry{}, errors.New("redisbus: bad stream entry")
	}
	id, _ := item[0].(string)
	offStr, _, _ := strings.Cut(id, "-")
	off, err := strconv.ParseUint(offStr, 10, 64)
	if err != nil {
		return hub.Entry{}, fmt.Errorf("redisbus: bad stream id %q", id)
	}
	fields, _ := item[1].([]any)
	var h, js string
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch k {
		case "h":
			h = v
		case "j":
			js = v
		}
	}
	ev, err := event(h, []byte(js))
	if err != nil {
		return hub.Entry{}, err
	}
	return hub.Entry{Channel: ch, Pos: hub.Position{Epoch: epoch, Offset: off}, Event: ev}, nil
}

// Listen subscribes this node to ch's announcements and returns once Redis
// confirmed the subscription, so nothing appended afterwards is missed.
func (b *Bus) Listen(ctx context.Context, ch string, deliver func(hub.Entry)) (func(), error) {
	if b.isShared(ch) {
		return b.listenShared(ctx, ch, deliver)
	}
	name := b.liveName(ch)
	l := &listening{channel: ch, name: name, deliver: deliver, confirmed: make(chan struct{})}
	b.mu.Lock()
	if _, dup := b.channels[name]; dup {
		b.mu.Unlock()
		return nil, fmt.Errorf("redisbus: %s is listened to already", ch)
	}
	b.channels[name] = l
	b.mu.Unlock()
	cancel := func() {
		b.mu.Lock()
		if b.channels[name] == l {
			delete(b.channels, name)
		}
		sh := l.shard
		l.shard = nil
		if sh != nil {
			sh.unsub[name]++
		}
		b.mu.Unlock()
		uctx, c := context.WithTimeout(context.Background(), b.cfg.ListenTimeout)
		defer c()
		b.Commands.Add(1)
		switch {
		case b.cc == nil:
			_ = b.ps.Unsubscribe(uctx, name)
		case sh != nil:
			_ = sh.ps.SUnsubscribe(uctx, name)
		}
	}
	var err error
	if b.cc != nil {
		err = b.ssubscribe(ctx, l)
	} else {
		b.Commands.Add(1)
		err = b.ps.Subscribe(ctx, name)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("redisbus: subscribe %s: %w", ch, err)
	}
	return b.confirmed(ctx, ch, l.confirmed, cancel)
}

// confirmed waits until up is closed (Redis confirmed the subscription
// that carries ch), and returns cancel; if ctx ends or ListenTimeout
// passes first, it calls cancel and fails.
func (b *Bus) confirmed(ctx context.Context, ch string, up <-chan struct{}, cancel func()) (func(), error) {
	select {
	case <-up:
		return cancel, nil
	default:
	}
	t := time.NewTimer(b.cfg.ListenTimeout)
	defer t.Stop()
	select {
	case <-up:
		return cancel, nil
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	case <-t.C:
		cancel()
		return nil, fmt.Errorf("redisbus: subscribe %s: not confirmed in %s", ch, b.cfg.ListenTimeout)
	}
}

// receive reads the pub/sub connection until Close. After the connection
// was lost, go-redis resubscribes; each channel is then told to resync,
// since announcements made meanwhile are gone.
func (b *Bus) receive(ctx context.Context) {
	defer close(b.done)
	lost := false
	backoff := reconnectBackoffMin
	for {
		msg, err := b.ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			if !lost {
				b.log.Warn("redis pub/sub connection lost; reconnecting", "err", err)
			}
			lost = true
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, reconnectBackoffLimit)
			continue
		}
		backoff = reconnectBackoffMin
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			b.mu.Lock()
			l := b.channels[m.Channel]
			first := l != nil && !l.ok
			if l != nil {
				l.ok = true
			}
			b.mu.Unlock()
			switch {
			case first:
				close(l.confirmed)
			case l != nil && lost:
				l.deliver(hub.Entry{Channel: l.channel, Resync: true})
			}
			if lost && m.Count == b.count() {
				b.log.Info("redis pub/sub connection back")
				lost = false
			}
		case *redis.Message:
			b.announced(m.Channel, m.Payload)
		}
	}
}

// announced delivers an announcement to the channel's listener. One that
// goes backwards in the same epoch means the log lost writes (a failover to
// a replica that had not received them): the log is moved to a new epoch
// and the listener resyncs, so its subscribers get a gap, not a silent skip.
func (b *Bus) announced(name, payload string) {
	b.mu.Lock()
	l := b.channels[name]
	b.mu.Unlock()
	if l == nil {
		return
	}
	b.announcedTo(l, payload)
}

// announcedTo delivers an announcement of l's channel to l.
func (b *Bus) announcedTo(l *listening, payload string) {
	e, err := announcement(l.channel, payload)
	if err != nil {
		b.log.Error("bad announcement", "channel", l.channel, "err", err)
		return
	}
	b.known.see(l.channel, e.Pos)
	b.mu.Lock()
	heard := l.heard
	back := heard.Epoch == e.Pos.Epoch && e.Pos.Offset <= heard.Offset
	fence := back && !l.fencing
	if fence {
		l.fencing = true
	}
	if !back {
		l.heard = e.Pos
	}
	b.mu.Unlock()
	if fence {
		b.log.Warn("redis log went backwards: it lost writes in a failover; moving it to a new epoch", "channel", l.channel, "heard", heard, "now", e.Pos)
		b.tasks.Add(1)
		go b.fence(l, e.Pos.Epoch)
	}
	if !back {
		l.deliver(e)
	}
}

// fence moves l's log from epoch to a new one (unless another node did),
// then delivers the log's newest entry, in the new epoch: the hub's
// subscribers see the new epoch, say gap, and read it from its start, as
// for any new epoch. Should that read fail, the listener is told to
// resync instead.
func (b *Bus) fence(l *listening, epoch string) {
	defer b.tasks.Done()
	meta, _, _ := b.keys(l.channel)
	backoff := reconnectBackoffMin
	var newest *hub.Entry
	for {
		b.Commands.Add(1)
		ep, err := fenceScript.Run(b.rctx, b.rdb, []string{meta}, epoch, newEpoch()).Text()
		if err == nil {
			b.LostWrites.Add(1)
			newest = b.newest(l.channel, ep)
			break
		}
		if b.rctx.Err() != nil {
			return
		}
		select {
		case <-b.rctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, reconnectBackoffLimit)
	}
	b.mu.Lock()
	l.fencing = false
	live := b.channels[l.name] == l
	if l.shared {
		live = b.sharedL[l.channel] == l
	}
	b.mu.Unlock()
	switch {
	case !live:
	case newest != nil:
		l.deliver(*newest)
	default:
		l.deliver(hub.Entry{Channel: l.channel, Resync: true})
	}
}

// newest returns ch's newest entry if it is in epoch, or nil.
func (b *Bus) newest(ch, epoch string) *hub.Entry {
	ctx, cancel := context.WithTimeout(b.rctx, b.cfg.ListenTimeout)
	defer cancel()
	top, err := b.Read(ctx, ch, nil)
	if err != nil || top.Top.Epoch != epoch || top.Top.Offset == 0 {
		return nil
	}
	r, err := b.Read(ctx, ch, &hub.Position{Epoch: epoch, Offset: top.Top.Offset - 1})
	if err != nil || r.Gap || len(r.Entries) == 0 {
		return nil
	}
	b.known.see(ch, r.Top)
	return &r.Entries[len(r.Entries)-1]
}

func (b *Bus) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.channels)
}

// announcement decodes "<epoch> <offset> <header length> <header><json>".
func announcement(ch, p string) (hub.Entry, error) {
	parts := strings.SplitN(p, " ", 4)
	if len(parts) != 4 {
		return hub.Entry{}, errors.New("malformed")
	}
	off, err1 := strconv.ParseUint(parts[1], 10, 64)
	hl, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || hl < 0 || hl > len(parts[3]) {
		return hub.Entry{}, errors.New("malformed")
	}
	ev, err := event(parts[3][:hl], []byte(parts[3][hl:]))
	if err != nil {
		return hub.Entry{}, err
	}
	return hub.Entry{Channel: ch, Pos: hub.Position{Epoch: parts[0], Offset: off}, Event: ev}, nil
}

// newEpoch returns 10 random characters of [a-z0-9].
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hub.EpochOf(binary.LittleEndian.Uint64(b[:]))
}
