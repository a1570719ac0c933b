package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub"
)

// The channels of Config.SharedNamespaces (corr: by default) are announced
// on one node-level pub/sub channel, <prefix>shared, that every node
// subscribes to once, at its start. A takedown's corr:<id> lives for one
// request: with a pub/sub channel of its own, each one cost a SUBSCRIBE,
// a wait for Redis to confirm it and an UNSUBSCRIBE. On the shared channel,
// listening is a map entry. Each announcement there starts with its
// channel's name and a space; history stays per channel, as for any other.
// The price is that every node receives every announcement of those
// namespaces, whether it has a listener or not.

// isShared reports whether ch is announced on the node-level channel.
func (b *Bus) isShared(ch string) bool {
	if b.shared == nil {
		return false
	}
	ns, _, _ := strings.Cut(ch, ":")
	for _, s := range b.cfg.SharedNamespaces {
		if ns == s {
			return true
		}
	}
	return false
}

// listenShared registers a listener of a shared channel. It waits only for
// the node-level subscription's first confirmation; once that is there,
// listening sends nothing to Redis. While the connection is lost a new
// listener still registers: when it is back every listener is told to
// resync, so nothing announced meanwhile is missed.
func (b *Bus) listenShared(ctx context.Context, ch string, deliver func(hub.Entry)) (func(), error) {
	l := &listening{channel: ch, name: ch, deliver: deliver, shared: true, ok: true}
	b.mu.Lock()
	if _, dup := b.sharedL[ch]; dup {
		b.mu.Unlock()
		return nil, fmt.Errorf("redisbus: %s is listened to already", ch)
	}
	b.sharedL[ch] = l
	b.mu.Unlock()
	cancel := func() {
		b.mu.Lock()
		if b.sharedL[ch] == l {
			delete(b.sharedL, ch)
		}
		b.mu.Unlock()
	}
	return b.confirmed(ctx, ch, b.sharedUp, cancel)
}

// receiveShared reads the node-level channel's connection until Close.
// go-redis reconnects and subscribes again after a loss; the confirmation
// of that tells every shared listener to resync.
func (b *Bus) receiveShared() {
	defer b.tasks.Done()
	first, lost := true, false
	backoff := reconnectBackoffMin
	for {
		msg, err := b.shared.Receive(b.rctx)
		if err != nil {
			if b.rctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			if !lost && !first {
				b.log.Warn("redis pub/sub connection of the shared channels lost; reconnecting", "err", err)
			}
			lost = !first
			select {
			case <-b.rctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, reconnectBackoffLimit)
			continue
		}
		backoff = reconnectBackoffMin
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" || m.Channel != b.sharedName {
				continue
			}
			if first {
				first = false
				close(b.sharedUp)
				continue
			}
			if !lost {
				continue
			}
			lost = false
			b.log.Info("redis pub/sub connection of the shared channels back")
			b.mu.Lock()
			ls := make([]*listening, 0, len(b.sharedL))
			for _, l := range b.sharedL {
				ls = append(ls, l)
			}
			b.mu.Unlock()
			for _, l := range ls {
				l.deliver(hub.Entry{Channel: l.channel, Resync: true})
			}
		case *redis.Message:
			ch, payload, ok := strings.Cut(m.Payload, " ")
			if !ok {
				continue
			}
			b.mu.Lock()
			l := b.sharedL[ch]
			b.mu.Unlock()
			if l != nil {
				b.announcedTo(l, payload)
			}
		}
	}
}
