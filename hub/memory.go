package hub

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard/switchboard/hub/internal/ring"
)

// Defaults for history bounds.
const (
	DefaultHistorySize     = 1000
	DefaultHistoryTTL      = time.Hour
	DefaultHistoryMaxBytes = 256 << 20
)

// MemoryConfig bounds the memory backplane's history.
type MemoryConfig struct {
	// HistorySize is how many events a channel keeps.
	HistorySize int
	// HistoryTTL is how long a channel keeps an event.
	HistoryTTL time.Duration
	// MaxBytes bounds the history of all channels together (EntryCost);
	// past it the oldest entries leave first, whatever their channel. The
	// count passes it only for a moment, by the events being published
	// then (an event's entries are counted before older ones make room).
	// 0 means DefaultHistoryMaxBytes.
	MaxBytes int64
}

// entryOverhead is what EntryCost counts for an entry beside its share of
// the event: the entry, its channel's share of a log, its sibling
// position and its place in the eviction queue, rounded up.
const entryOverhead = 256

// EntryCost is what one channel's entry of ev counts against
// MemoryConfig.MaxBytes when ev went to channels channels: the event's
// bytes (its JSON and attributes) shared among them, plus entryOverhead.
// An event is held once however many channels hold it, so the heap the
// history takes stays near the sum of its entries' costs.
func EntryCost(ev *Event, channels int) int64 {
	n := 128 + len(ev.JSON) + len(ev.ID) + len(ev.Source) + len(ev.Type) + len(ev.Subject) + len(ev.CorrelationID) + len(ev.Topic)
	return int64(n/max(channels, 1)) + entryOverhead
}

func (e *memEntry) cost() int64 { return EntryCost(e.ev, len(e.sib)) }

// memShards is how many shards hold the logs; memGens is how many epoch
// generations each shard keeps (see Memory).
const (
	memShards = 64
	memGens   = 64
)

// Memory is the single-node backplane: a ring of recent entries per channel.
//
// A channel's log has an epoch that hashes a seed random per Memory, the
// channel's name and a generation: a log that never held an event (dropped
// when its last subscriber left) comes back with the same epoch, so the
// cursors its subscribers were given stay current; a log that held events
// and was swept away moves its generation on, so it comes back with another
// epoch and its old cursors are a gap, never a silent skip. The generations
// are a fixed table (memShards × memGens counters), not one per channel.
type Memory struct {
	cfg       MemoryConfig
	seed      maphash.Seed
	epochSeed maphash.Seed
	shards    [memShards]memShard
	now       func() time.Time

	// bytes is the cost of every entry the logs hold; evicted counts the
	// entries that left for MaxBytes.
	bytes, evicted atomic.Int64
	// queue names every entry pushed, oldest first, for eviction; an
	// entry may have left since (overwritten, expired), which eviction
	// sees and skips. It holds at most MaxBytes/entryOverhead names: when
	// full, the oldest leaves, and its entry with it if still held.
	queueMu sync.Mutex
	queue   ring.Queue[memRef]

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type memShard struct {
	mu   sync.Mutex
	logs map[string]*memLog
	gens [memGens]uint32 // epoch generations of the shard's channels
}

// memLog is one channel's log. Lock order: memShard.mu, then memLog.mu.
//
// A log is dropped from its shard (gone set, under both locks) when it
// holds nothing worth keeping: no listener and no entry, either once its
// last listener leaves a log that never had an entry, or when the sweeper
// finds it idle. Whoever found it before then and locks it afterwards sees
// gone and looks the channel up again (lockLog).
type memLog struct {
	mu      sync.Mutex
	gone    bool
	name    string // the channel's
	epoch   string
	top     uint64
	ring    []memEntry // ring[(head+i)%len] for i < n, oldest first
	head, n int
	// keys maps the hash of an event key (Event.keyHash) to the offset of
	// the newest entry with it, for what ring holds, once it holds more
	// than smallLog entries; a smaller log is searched instead, so a
	// channel with a few events (a command's corr:) has no map. The ring
	// is in offset order, so while an entry is held the map has its hash;
	// a hit is checked against the entry, and two keys of one hash (a
	// collision) fall back to a search.
	keys    map[uint64]uint64
	deliver []*listener
	// deliver1 backs deliver while it holds one listener, as a command's
	// corr: channel's does (its call's watch): no slice of its own.
	deliver1 [1]*listener
	lastUsed time.Time
}

type memEntry struct {
	off uint64
	at  time.Time
	ev  *Event
	sib []ChannelPos
}

// listener is one Memory.Listen: its callback, and what its cancel needs.
type listener struct {
	fn func(Entry)

	m        *Memory
	ch       string
	l        *memLog
	canceled bool // guarded by the channel's shard's mu
}

var _ Backplane = (*Memory)(nil)

// NewMemory returns a memory backplane and starts its sweeper, which drops
// expired history and forgets idle channels. Close stops it.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = DefaultHistorySize
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = DefaultHistoryTTL
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultHistoryMaxBytes
	}
	m := &Memory{cfg: cfg, seed: maphash.MakeSeed(), epochSeed: maphash.MakeSeed(), now: time.Now, stop: make(chan struct{}), done: make(chan struct{})}
	for i := range m.shards {
		m.shards[i].logs = make(map[string]*memLog)
	}
	go m.sweep()
	return m
}

// Close stops the sweeper. It is idempotent.
func (m *Memory) Close() error {
	m.once.Do(func() { close(m.stop) })
	<-m.done
	return nil
}

// Healthy always reports a memory backplane reachable.
func (m *Memory) Healthy(context.Context) error { return nil }

func (m *Memory) shard(ch string) *memShard {
	s, _ := m.place(ch)
	return s
}

// place returns channel's shard and the index of its generation there.
func (m *Memory) place(ch string) (*memShard, int) {
	h := maphash.String(m.seed, ch)
	return &m.shards[h%memShards], int(h / memShards % memGens)
}

// log returns channel's log, creating it when create is set.
func (m *Memory) log(ch string, create bool) *memLog {
	s, g := m.place(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logs[ch]
	if l == nil && create {
		l = &memLog{name: ch, epoch: m.epoch(ch, s.gens[g]), lastUsed: m.now()}
		s.logs[ch] = l
	}
	return l
}

// epoch returns the epoch of channel's log in generation gen: 8 characters
// of [a-z0-9].
func (m *Memory) epoch(ch string, gen uint32) string {
	var h maphash.Hash
	h.SetSeed(m.epochSeed)
	h.WriteString(ch)
	h.Write(binary.LittleEndian.AppendUint32(nil, gen))
	return EpochOf(h.Sum64())
}

// lockLog returns channel's log, created if need be, locked: never one that
// was dropped meanwhile.
func (m *Memory) lockLog(ch string) *memLog {
	for {
		l := m.log(ch, true)
		l.mu.Lock()
		if !l.gone {
			return l
		}
		l.mu.Unlock()
	}
}

// sortedChannels appends channels to dst, sorted.
func sortedChannels(dst, channels []string) []string {
	dst = append(dst, channels...)
	slices.Sort(dst)
	return dst
}

// lockLogs returns the logs of channels (sorted), created if need be,
// locked in that order: never one that was dropped meanwhile. No shard lock
// is taken while a log is locked. The logs are appended to dst.
func (m *Memory) lockLogs(dst []*memLog, channels []string) []*memLog {
	logs := append(dst, make([]*memLog, len(channels))...)
	for {
		for i, ch := range channels {
			logs[i] = m.log(ch, true)
		}
		if lockAll(logs) {
			return logs
		}
	}
}

// lockAll locks logs in order, or none of them when one is gone.
func lockAll(logs []*memLog) bool {
	for i, l := range logs {
		l.mu.Lock()
		if l.gone {
			for _, u := range logs[:i+1] {
				u.mu.Unlock()
			}
			return false
		}
	}
	return true
}

// dropLocked forgets l, channel's log, from s. Both locks are held.
func (s *memShard) dropLocked(ch string, l *memLog) {
	l.gone = true
	if s.logs[ch] == l {
		delete(s.logs, ch)
	}
}

// Publish appends ev to every channel's ring, then hands the entries to
// the channels' listeners. It holds the locks of all the channels (taken in
// name order) throughout, so listeners see each channel's entries in offset
// order and every entry knows its siblings' positions.
func (m *Memory) Publish(_ context.Context, channels []string, ev *Event) error {
	// A few channels (an event has three by default) are sorted, and their
	// logs found, on the stack: Publish is on the path of every event.
	var sorted [8]string
	channels = slices.Compact(sortedChannels(sorted[:0], channels))
	now := m.now()
	var inline [len(sorted)]*memLog
	logs := m.lockLogs(inline[:0], channels)
	sib := make([]ChannelPos, len(channels))
	var freshInline [len(sorted)]bool
	fresh := freshInline[:0]
	if len(channels) > len(freshInline) {
		fresh = make([]bool, len(channels))
	}
	fresh = fresh[:len(channels)]
	var refsInline [len(sorted)]memRef
	refs := refsInline[:0]
	cost := EntryCost(ev, len(sib))
	var added int64
	for i, l := range logs {
		if off, ok := l.held(ev); ok {
			// Held already (Kafka delivers at least once): not again.
			sib[i] = ChannelPos{Channel: channels[i], Pos: Position{Epoch: l.epoch, Offset: off}}
			continue
		}
		l.top++
		sib[i] = ChannelPos{Channel: channels[i], Pos: Position{Epoch: l.epoch, Offset: l.top}}
		added += cost - l.push(memEntry{off: l.top, at: now, ev: ev, sib: sib}, m.cfg.HistorySize)
		l.index(ev)
		l.lastUsed = now
		fresh[i] = true
		refs = append(refs, memRef{l: l, off: l.top})
	}
	for i, l := range logs {
		if fresh[i] && len(l.deliver) > 0 {
			e := Entry{Channel: channels[i], Pos: sib[i].Pos, Event: ev, Siblings: sib}
			for _, d := range l.deliver {
				d.fn(e)
			}
		}
	}
	for _, l := range logs {
		l.mu.Unlock()
	}
	m.account(added, refs)
	return nil
}

// push appends e, and returns the cost of the entry it replaced (the
// oldest, when the ring is full at size), else 0.
func (l *memLog) push(e memEntry, size int) (freed int64) {
	if l.n == len(l.ring) {
		if len(l.ring) >= size {
			// Full at the bound: the newest replaces the oldest.
			freed = l.ring[l.head].cost()
			l.forget(l.ring[l.head])
			l.ring[l.head] = e
			l.head = (l.head + 1) % len(l.ring)
			return freed
		}
		// Grow towards the bound: most channels hold a few events (a
		// command's corr: channel, one to four).
		grown := make([]memEntry, min(max(2*len(l.ring), 4), size))
		for i := 0; i < l.n; i++ {
			grown[i] = l.ring[(l.head+i)%len(l.ring)]
		}
		l.ring, l.head = grown, 0
	}
	l.ring[(l.head+l.n)%len(l.ring)] = e
	l.n++
	return 0
}

// smallLog is the most entries a log keeps without a key map.
const smallLog = 8

// held reports the offset of the entry of ev's key, if the ring holds one.
func (l *memLog) held(ev *Event) (uint64, bool) {
	if l.keys != nil {
		off, ok := l.keys[ev.keyHash()]
		if !ok {
			return 0, false
		}
		if e := l.entry(off); e != nil && e.ev != nil && e.ev.Source == ev.Source && e.ev.ID == ev.ID {
			return off, true
		}
		// Another key of the same hash: search.
	}
	for i := 0; i < l.n; i++ {
		e := l.ring[(l.head+i)%len(l.ring)]
		if e.ev != nil && e.ev.Source == ev.Source && e.ev.ID == ev.ID {
			return e.off, true
		}
	}
	return 0, false
}

// entry returns the entry at offset off, nil if the ring does not hold it.
func (l *memLog) entry(off uint64) *memEntry {
	if off > l.top || l.top-off >= uint64(l.n) {
		return nil
	}
	return &l.ring[(l.head+l.n-1-int(l.top-off))%len(l.ring)]
}

// index records the newest entry, ev's, in the key map; past smallLog
// entries it makes the map from what the ring holds.
func (l *memLog) index(ev *Event) {
	if l.keys == nil {
		if l.n <= smallLog {
			return
		}
		l.keys = make(map[uint64]uint64, l.n)
		for i := 0; i < l.n; i++ {
			if e := l.ring[(l.head+i)%len(l.ring)]; e.ev != nil {
				l.keys[e.ev.keyHash()] = e.off
			}
		}
		return
	}
	l.keys[ev.keyHash()] = l.top
}

// forget drops a leaving entry's event key, the oldest entry's.
func (l *memLog) forget(e memEntry) {
	if l.keys != nil && e.ev != nil {
		if k := e.ev.keyHash(); l.keys[k] == e.off {
			delete(l.keys, k)
		}
	}
}

// expire drops entries older than cutoff, and returns their cost.
func (l *memLog) expire(cutoff time.Time) (freed int64) {
	for l.n > 0 && l.ring[l.head].at.Before(cutoff) {
		freed += l.dropOldest()
	}
	return freed
}

// dropOldest drops the oldest entry, and returns its cost. The log holds
// one.
func (l *memLog) dropOldest() int64 {
	e := &l.ring[l.head]
	freed := e.cost()
	l.forget(*e)
	*e = memEntry{}
	l.head = (l.head + 1) % len(l.ring)
	l.n--
	if l.n == 0 {
		l.ring, l.head = nil, 0
	}
	return freed
}

// Read returns the entries after *after. A position of another epoch, one
// beyond the top, or one whose successors have left the ring is a gap.
func (m *Memory) Read(_ context.Context, ch string, after *Position) (Replay, error) {
	l := m.lockLog(ch)
	defer l.mu.Unlock()
	m.bytes.Add(-l.expire(m.now().Add(-m.cfg.HistoryTTL)))
	r := Replay{Top: Position{Epoch: l.epoch, Offset: l.top}}
	if after == nil {
		return r, nil
	}
	if *after == Oldest {
		r.Entries = make([]Entry, 0, l.n)
		for i := 0; i < l.n; i++ {
			e := l.ring[(l.head+i)%len(l.ring)]
			r.Entries = append(r.Entries, Entry{Channel: ch, Pos: Position{Epoch: l.epoch, Offset: e.off}, Event: e.ev, Siblings: e.sib})
		}
		return r, nil
	}
	if after.Epoch != l.epoch || after.Offset > l.top {
		r.Gap = true
		return r, nil
	}
	missing := l.top - after.Offset
	if missing == 0 {
		return r, nil
	}
	if missing > uint64(l.n) {
		r.Gap = true
		return r, nil
	}
	r.Entries = make([]Entry, 0, missing)
	for i := l.n - int(missing); i < l.n; i++ {
		e := l.ring[(l.head+i)%len(l.ring)]
		r.Entries = append(r.Entries, Entry{Channel: ch, Pos: Position{Epoch: l.epoch, Offset: e.off}, Event: e.ev, Siblings: e.sib})
	}
	return r, nil
}

// Listen registers deliver for channel's new entries. When the last
// listener of a log that never had an entry leaves, the log is dropped: a
// channel that holds no event and no subscriber costs nothing, however many
// distinct channels come and go.
func (m *Memory) Listen(_ context.Context, ch string, deliver func(Entry)) (func(), error) {
	l := m.lockLog(ch)
	ln := &listener{fn: deliver, m: m, ch: ch, l: l}
	if l.deliver == nil {
		l.deliver = l.deliver1[:0]
	}
	l.deliver = append(l.deliver, ln)
	l.mu.Unlock()
	// A method value, not a closure over a sync.Once: one allocation
	// fewer for every listen (a command's call makes one).
	return ln.cancel, nil
}

// cancel ends ln; only its first call does anything, and a later one
// returns once it is done (the shard's lock is held throughout).
func (ln *listener) cancel() {
	m, ch, l := ln.m, ln.ch, ln.l
	s := m.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ln.canceled {
		return
	}
	ln.canceled = true
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := slices.Index(l.deliver, ln); i >= 0 {
		l.deliver = slices.Delete(l.deliver, i, i+1) // clears the freed slot
	}
	l.lastUsed = m.now()
	if len(l.deliver) == 0 && l.top == 0 {
		s.dropLocked(ch, l)
	}
}

// sweep drops expired entries and forgets channels with no history and no
// listener, so correlation channels do not pile up.
func (m *Memory) sweep() {
	defer close(m.done)
	every := min(m.cfg.HistoryTTL/4, time.Minute)
	t := time.NewTicker(max(every, time.Second))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweepOnce()
		}
	}
}

func (m *Memory) sweepOnce() {
	now := m.now()
	cutoff := now.Add(-m.cfg.HistoryTTL)
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for ch, l := range s.logs {
			l.mu.Lock()
			m.bytes.Add(-l.expire(cutoff))
			if l.n == 0 && len(l.deliver) == 0 && l.lastUsed.Before(cutoff) {
				if l.top > 0 {
					// Its cursors must not pass on the log made next.
					_, g := m.place(ch)
					s.gens[g]++
				}
				s.dropLocked(ch, l)
			}
			l.mu.Unlock()
		}
		s.mu.Unlock()
	}
	m.trimQueue()
}

// trimQueue takes from the front of the eviction queue the names of
// entries that left already (expired, or replaced in a full ring), so the
// queue does not keep the logs of channels forgotten since alive. It stops
// at the first name of an entry still held: names are in push order. The
// queue's lock is taken for one name at a time, not for the whole trim.
func (m *Memory) trimQueue() {
	for {
		m.queueMu.Lock()
		r, ok := m.queue.Peek()
		m.queueMu.Unlock()
		if !ok {
			return
		}
		r.l.mu.Lock()
		held := !r.l.gone && r.l.n > 0 && r.l.ring[r.l.head].off <= r.off
		r.l.mu.Unlock()
		if held {
			return
		}
		m.queueMu.Lock()
		if head, ok := m.queue.Peek(); ok && head == r {
			m.queue.Pop()
		}
		m.queueMu.Unlock()
	}
}

// memRef names an entry for eviction: its log and offset.
type memRef struct {
	l   *memLog
	off uint64
}

// account adds added to the history's cost and queues refs, the entries
// just pushed; then, while the cost is over MaxBytes, it evicts the oldest
// entries of all channels. It is called with no lock held.
func (m *Memory) account(added int64, refs []memRef) {
	total := m.bytes.Add(added)
	maxRefs := max(int(m.cfg.MaxBytes/entryOverhead), 1)
	var outInline [8]memRef
	out := outInline[:0]
	m.queueMu.Lock()
	for _, r := range refs {
		if m.queue.Len() >= maxRefs {
			if old, ok := m.queue.Pop(); ok {
				out = append(out, old)
			}
		}
		m.queue.Push(r)
	}
	m.queueMu.Unlock()
	for _, r := range out {
		m.evict(r)
	}
	for total > m.cfg.MaxBytes {
		m.queueMu.Lock()
		r, ok := m.queue.Pop()
		m.queueMu.Unlock()
		if !ok {
			return
		}
		m.evict(r)
		total = m.bytes.Load()
	}
}

// evict drops r's entry, and any older one of its log, if the log still
// holds them. A log left with no entry and no listener is dropped, its
// generation moved on (sweepOnce), so its old cursors get a gap.
func (m *Memory) evict(r memRef) {
	l := r.l
	s, g := m.place(l.name)
	s.mu.Lock()
	defer s.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gone {
		return
	}
	var freed, n int64
	for l.n > 0 && l.ring[l.head].off <= r.off {
		freed += l.dropOldest()
		n++
	}
	if n == 0 {
		return
	}
	m.bytes.Add(-freed)
	m.evicted.Add(n)
	if l.n == 0 && len(l.deliver) == 0 {
		s.gens[g]++
		s.dropLocked(l.name, l)
	}
}

// HistoryBytes is the cost (EntryCost) of the entries all channels hold.
func (m *Memory) HistoryBytes() int64 { return m.bytes.Load() }

// Evicted is how many entries left the history early for MaxBytes.
func (m *Memory) Evicted() int64 { return m.evicted.Load() }
