package hub

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// Defaults for history bounds.
const (
	DefaultHistorySize = 1000
	DefaultHistoryTTL  = time.Hour
)

// MemoryConfig bounds the memory backplane's per-channel history.
type MemoryConfig struct {
	// HistorySize is how many events a channel keeps.
	HistorySize int
	// HistoryTTL is how long a channel keeps an event.
	HistoryTTL time.Duration
}

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
		l = &memLog{epoch: m.epoch(ch, s.gens[g]), lastUsed: m.now()}
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
	for i, l := range logs {
		if off, ok := l.held(ev); ok {
			// Held already (Kafka delivers at least once): not again.
			sib[i] = ChannelPos{Channel: channels[i], Pos: Position{Epoch: l.epoch, Offset: off}}
			continue
		}
		l.top++
		sib[i] = ChannelPos{Channel: channels[i], Pos: Position{Epoch: l.epoch, Offset: l.top}}
		l.push(memEntry{off: l.top, at: now, ev: ev, sib: sib}, m.cfg.HistorySize)
		l.index(ev)
		l.lastUsed = now
		fresh[i] = true
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
	return nil
}

func (l *memLog) push(e memEntry, size int) {
	if l.n == len(l.ring) {
		if len(l.ring) >= size {
			// Full at the bound: the newest replaces the oldest.
			l.forget(l.ring[l.head])
			l.ring[l.head] = e
			l.head = (l.head + 1) % len(l.ring)
			return
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

// expire drops entries older than cutoff.
func (l *memLog) expire(cutoff time.Time) {
	for l.n > 0 && l.ring[l.head].at.Before(cutoff) {
		l.forget(l.ring[l.head])
		l.ring[l.head] = memEntry{}
		l.head = (l.head + 1) % len(l.ring)
		l.n--
	}
	if l.n == 0 {
		l.ring, l.head = nil, 0
	}
}

// Read returns the entries after *after. A position of another epoch, one
// beyond the top, or one whose successors have left the ring is a gap.
func (m *Memory) Read(_ context.Context, ch string, after *Position) (Replay, error) {
	l := m.lockLog(ch)
	defer l.mu.Unlock()
	l.expire(m.now().Add(-m.cfg.HistoryTTL))
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
			l.expire(cutoff)
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
}
