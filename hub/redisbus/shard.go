package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub"
)

// On a Cluster each channel's announcements are a shard channel of its
// slot. go-redis's ClusterClient knows which master holds a slot
// (MasterForKey); the bus keeps one pub/sub connection per master it
// listens to and subscribes each channel on its master's connection. When
// that connection is lost, or Redis says a channel left it (SUNSUBSCRIBE
// from the server: its slot moved, or the node became a replica in a
// failover), every channel of the connection is subscribed again where the
// reloaded slot map says, and its listener gets a Resync entry once that is
// confirmed: announcements made meanwhile are read from history.
//
// The slot map can be stale for a moment after a failover (go-redis loads
// it from whichever node it asks, which may not have heard yet), so a
// subscription can land on a replica. A replica takes SSUBSCRIBE for its
// master's slots, but hears the shard's messages only once its master
// knows it as a replica, which after a failover can take seconds of
// cluster gossip: until then the subscription is silent. So every
// confirmed subscription is checked: a key of its slot is read on the same
// node, which a node that does not serve the slot as master answers with
// MOVED. The check comes after the confirmation, so a node that answers
// it as master held the subscription as master, and Redis unsubscribes
// it should the node lose the slot later. A subscription that fails the
// check is moved, after a backoff, where the reloaded map says, and its
// listener resyncs. A check that gets no answer (a timeout, CLUSTERDOWN,
// LOADING) is made again after a backoff, and moves the channel only
// after checkTries in a row.

// ssubscribe subscribes l on its slot's master.
func (b *Bus) ssubscribe(ctx context.Context, l *listening) error {
	node, err := b.masterFor(ctx, l.name)
	if err != nil {
		return err
	}
	addr := node.Options().Addr
	b.mu.Lock()
	if b.rctx.Err() != nil {
		b.mu.Unlock()
		return redis.ErrClosed
	}
	if b.channels[l.name] != l {
		b.mu.Unlock()
		return nil // cancelled meanwhile
	}
	sh := b.shards[addr]
	if sh == nil {
		sh = &shard{addr: addr, node: node, ps: node.SSubscribe(b.rctx), unsub: map[string]int{}}
		b.shards[addr] = sh
		b.tasks.Add(1)
		go b.receiveShard(sh)
	}
	l.shard = sh
	b.mu.Unlock()
	b.Commands.Add(1)
	if err := sh.ps.SSubscribe(ctx, l.name); err != nil {
		b.mu.Lock()
		if l.shard == sh {
			l.shard = nil
		}
		b.mu.Unlock()
		return err
	}
	return nil
}

// receiveShard reads one master's pub/sub connection until it fails or the
// bus closes.
func (b *Bus) receiveShard(sh *shard) {
	defer b.tasks.Done()
	for {
		msg, err := sh.ps.Receive(b.rctx)
		if err != nil {
			if b.rctx.Err() != nil {
				return
			}
			b.shardLost(sh, err)
			return
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			switch m.Kind {
			case "ssubscribe":
				b.shardConfirmed(sh, m.Channel)
			case "sunsubscribe":
				b.mu.Lock()
				ours := sh.unsub[m.Channel] > 0
				if ours {
					if sh.unsub[m.Channel]--; sh.unsub[m.Channel] == 0 {
						delete(sh.unsub, m.Channel)
					}
				}
				l := b.channels[m.Channel]
				moved := !ours && l != nil && l.shard == sh
				b.mu.Unlock()
				if moved {
					b.shardLost(sh, fmt.Errorf("redis unsubscribed %s: its slot moved", m.Channel))
					return
				}
			}
		case *redis.Message:
			b.announced(m.Channel, m.Payload)
		}
	}
}

// shardConfirmed is Redis's confirmation of a channel on sh.
func (b *Bus) shardConfirmed(sh *shard, name string) {
	b.mu.Lock()
	l := b.channels[name]
	if l == nil || l.shard != sh {
		b.mu.Unlock()
		return
	}
	first := !l.ok
	l.ok = true
	resync := !first && l.resync
	l.resync = false
	start := b.queueCheckLocked(sh, l)
	b.mu.Unlock()
	if start {
		go b.checkShard(sh)
	}
	switch {
	case first:
		close(l.confirmed)
	case resync:
		l.deliver(hub.Entry{Channel: l.channel, Resync: true})
	}
}

// checkBatch bounds the reads of one check: one pipeline, one round trip.
const checkBatch = 256

// checkTries is how many checks in a row may fail to get an answer (a
// timeout, CLUSTERDOWN or LOADING during a failover) before the channel is
// moved anyway, as if the node had answered MOVED.
const checkTries = 8

// checkWait is the backoff after the misses-th check in a row that did
// not find the channel served: 50 ms, doubling up to 0.5 s.
func checkWait(misses int) time.Duration {
	if misses >= 8 {
		return reconnectBackoffLimit
	}
	return min(reconnectBackoffMin<<max(misses-1, 0), reconnectBackoffLimit)
}

// queueCheckLocked queues l for a check on sh, and says whether a
// checkShard must be started (the caller starts it after unlocking; the
// task is counted here). It runs under b.mu.
func (b *Bus) queueCheckLocked(sh *shard, l *listening) bool {
	sh.check = append(sh.check, l)
	if sh.checking {
		return false
	}
	sh.checking = true
	b.tasks.Add(1)
	return true
}

// checkShard checks the subscriptions confirmed on sh until none is left
// to check: a read of each channel's meta key on sh's node, in one
// pipeline per checkBatch. Those the node answers with MOVED move; those
// it gives no answer for are checked again after a backoff, and moved
// after checkTries such checks in a row.
func (b *Bus) checkShard(sh *shard) {
	defer b.tasks.Done()
	for {
		b.mu.Lock()
		n := min(len(sh.check), checkBatch)
		ls := slices.Clone(sh.check[:n])
		sh.check = sh.check[n:]
		if n == 0 {
			sh.check = nil
			sh.checking = false
		}
		b.mu.Unlock()
		if n == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(b.rctx, b.cfg.ListenTimeout)
		pipe := sh.node.Pipeline()
		cmds := make([]*redis.IntCmd, len(ls))
		for i, l := range ls {
			meta, _, _ := b.keys(l.channel)
			cmds[i] = pipe.Exists(ctx, meta)
		}
		b.Commands.Add(uint64(len(ls)))
		_, _ = pipe.Exec(ctx) // each read's own error is looked at below
		cancel()
		if b.rctx.Err() != nil {
			return
		}
		var away, again []*listening
		var why error
		misses := 0
		b.mu.Lock()
		for i, l := range ls {
			if l.shard != sh || b.channels[l.name] != l {
				continue // cancelled or moved meanwhile
			}
			// ASK: the slot is migrating away, and the node still
			// serves it; Redis unsubscribes when it is gone.
			err := cmds[i].Err()
			if err == nil || redis.HasErrorPrefix(err, "ASK") {
				l.misses = 0
				continue
			}
			l.misses++
			why = err
			if redis.HasErrorPrefix(err, "MOVED") || l.misses >= checkTries {
				away = append(away, l)
			} else {
				again = append(again, l)
				misses = max(misses, l.misses)
			}
		}
		b.mu.Unlock()
		if len(away) > 0 {
			b.moveOff(sh, away, why)
		}
		if len(again) > 0 {
			b.log.Warn("redis shard channels could not be checked; checking again", "node", sh.addr, "channels", len(again), "err", why)
			b.checkLater(sh, again, checkWait(misses))
		}
	}
}

// checkLater queues ls for another check on sh after wait, those still
// subscribed there.
func (b *Bus) checkLater(sh *shard, ls []*listening, wait time.Duration) {
	b.tasks.Add(1)
	go func() {
		defer b.tasks.Done()
		select {
		case <-b.rctx.Done():
			return
		case <-time.After(wait):
		}
		start := false
		b.mu.Lock()
		for _, l := range ls {
			if l.shard == sh && b.channels[l.name] == l {
				start = b.queueCheckLocked(sh, l) || start
			}
		}
		b.mu.Unlock()
		if start {
			go b.checkShard(sh)
		}
	}()
}

// moveOff unsubscribes ls from sh, whose node failed the check (err says
// how), and subscribes them again after a backoff that grows with each
// check they failed in a row.
func (b *Bus) moveOff(sh *shard, ls []*listening, err error) {
	var moved []*listening
	var names []string
	misses := 0
	b.mu.Lock()
	for _, l := range ls {
		if l.shard != sh || b.channels[l.name] != l {
			continue // cancelled or moved meanwhile
		}
		l.shard = nil
		l.resync = l.ok
		misses = max(misses, l.misses)
		if l.misses >= checkTries {
			// The next node gets its own tries; the backoff starts over.
			l.misses = 0
		}
		sh.unsub[l.name]++
		moved = append(moved, l)
		names = append(names, l.name)
	}
	b.mu.Unlock()
	if len(moved) == 0 {
		return
	}
	b.log.Warn("redis shard channels subscribed on a node that does not serve their slots as master (a stale slot map after a failover); subscribing again",
		"node", sh.addr, "channels", len(moved), "err", err)
	ctx, cancel := context.WithTimeout(b.rctx, b.cfg.ListenTimeout)
	b.Commands.Add(1)
	_ = sh.ps.SUnsubscribe(ctx, names...)
	cancel()
	b.tasks.Add(1)
	go func() {
		select {
		case <-b.rctx.Done():
			b.tasks.Done()
			return
		case <-time.After(checkWait(misses)):
		}
		b.reroute(moved) // its Done ends this task
	}()
}

// shardLost closes sh and subscribes its channels again.
func (b *Bus) shardLost(sh *shard, err error) {
	b.mu.Lock()
	if b.shards[sh.addr] == sh {
		delete(b.shards, sh.addr)
	}
	var moved []*listening
	for _, l := range b.channels {
		if l.shard == sh {
			l.shard = nil
			l.resync = l.ok
			moved = append(moved, l)
		}
	}
	b.mu.Unlock()
	_ = sh.ps.Close()
	if errors.Is(err, redis.ErrClosed) {
		return
	}
	b.log.Warn("redis shard pub/sub connection lost; subscribing again", "node", sh.addr, "channels", len(moved), "err", err)
	if len(moved) > 0 {
		b.tasks.Add(1)
		go b.reroute(moved)
	}
}

// reroute subscribes ls again, each on its slot's master after the slot map
// was reloaded, until every one is subscribed or cancelled.
func (b *Bus) reroute(ls []*listening) {
	defer b.tasks.Done()
	backoff := reconnectBackoffMin
	for {
		// ForEachMaster reloads the slot map; the function does nothing.
		_ = b.cc.ForEachMaster(b.rctx, func(context.Context, *redis.Client) error { return nil })
		var left []*listening
		where := map[string]int{}
		for _, l := range ls {
			b.mu.Lock()
			todo := b.channels[l.name] == l && l.shard == nil
			b.mu.Unlock()
			if !todo {
				continue
			}
			ctx, cancel := context.WithTimeout(b.rctx, b.cfg.ListenTimeout)
			err := b.ssubscribe(ctx, l)
			cancel()
			if err != nil {
				left = append(left, l)
				continue
			}
			b.mu.Lock()
			if l.shard != nil {
				where[l.shard.addr]++
			}
			b.mu.Unlock()
		}
		if len(left) == 0 {
			b.log.Info("redis shard channels subscribed again", "channels", len(ls), "nodes", where)
			return
		}
		ls = left
		select {
		case <-b.rctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, reconnectBackoffLimit)
	}
}

// knownTopsSize bounds each generation of knownTops.
const knownTopsSize = 1 << 16

// knownTops is the newest position seen of each channel, in two
// generations of at most knownTopsSize channels each: a channel not seen
// for a generation is forgotten (a log that lost writes is then caught by
// those who heard it, or not at all).
type knownTops struct {
	mu        sync.Mutex
	cur, prev map[string]hub.Position
}

func (k *knownTops) get(ch string) hub.Position {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.cur[ch]; ok {
		return p
	}
	return k.prev[ch]
}

// see records p unless a newer position of the same epoch is known. A new
// epoch replaces the old one.
func (k *knownTops) see(ch string, p hub.Position) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old, ok := k.cur[ch]
	if !ok {
		old = k.prev[ch]
	}
	if old.Epoch == p.Epoch && old.Offset >= p.Offset {
		if !ok {
			k.put(ch, old)
		}
		return
	}
	k.put(ch, p)
}

func (k *knownTops) put(ch string, p hub.Position) {
	if k.cur == nil || len(k.cur) >= knownTopsSize {
		k.prev, k.cur = k.cur, make(map[string]hub.Position)
	}
	k.cur[ch] = p
}
