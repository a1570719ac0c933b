package auth

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Revocations remembers signed-out sessions until they would have expired
// anyway, so a cookie taken before DELETE /v1/session is refused after it.
// Every node must share one (Redis) for the refusal to hold on every node.
type Revocations interface {
	// Revoke refuses session id from now until until.
	Revoke(ctx context.Context, id string, until time.Time) error
	// Revoked reports whether session id was signed out.
	Revoked(ctx context.Context, id string) (bool, error)
}

// SignOuts tells a node of every sign-out as it is made, on whichever node,
// so the node can end that session's open connections (hub.EndSession).
// Both Revocations here are SignOuts.
type SignOuts interface {
	// WatchSignOuts calls ended with each session signed out from now on,
	// and resync whenever sign-outs may have been missed meanwhile (the
	// watch started, or its connection came back), until ctx ends. ended
	// and resync are called one at a time.
	WatchSignOuts(ctx context.Context, ended func(id string), resync func()) error
}

// MemoryRevocations is the revocation list of a single node (no redis.url).
// Entries leave once their session would have expired, so it holds at most
// the sign-outs of one session lifetime.
type MemoryRevocations struct {
	mu    sync.Mutex
	until map[string]time.Time
	prune int // prune expired entries when the map grows to this size

	watchMu  sync.Mutex // held while a watcher is told, so one at a time
	watchers map[*func(string)]struct{}
}

var (
	_ Revocations = (*MemoryRevocations)(nil)
	_ SignOuts    = (*MemoryRevocations)(nil)
	_ Revocations = (*RedisRevocations)(nil)
	_ SignOuts    = (*RedisRevocations)(nil)
)

// NewMemoryRevocations returns an empty list.
func NewMemoryRevocations() *MemoryRevocations {
	return &MemoryRevocations{until: map[string]time.Time{}, prune: 1024, watchers: map[*func(string)]struct{}{}}
}

// WatchSignOuts implements SignOuts: Revoke tells ended at once, on the
// node it is made on (the only one).
func (m *MemoryRevocations) WatchSignOuts(ctx context.Context, ended func(id string), resync func()) error {
	m.watchMu.Lock()
	m.watchers[&ended] = struct{}{}
	resync()
	m.watchMu.Unlock()
	<-ctx.Done()
	m.watchMu.Lock()
	delete(m.watchers, &ended)
	m.watchMu.Unlock()
	return nil
}

// Revoke implements Revocations.
func (m *MemoryRevocations) Revoke(_ context.Context, id string, until time.Time) error {
	now := time.Now()
	if !until.After(now) {
		return nil
	}
	m.mu.Lock()
	m.until[id] = until
	if len(m.until) >= m.prune {
		for k, u := range m.until {
			if !u.After(now) {
				delete(m.until, k)
			}
		}
		m.prune = max(1024, 2*len(m.until))
	}
	m.mu.Unlock()
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	for fn := range m.watchers {
		(*fn)(id)
	}
	return nil
}

// Revoked implements Revocations.
func (m *MemoryRevocations) Revoked(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.until[id]
	return ok && u.After(time.Now()), nil
}

// Len returns how many sign-outs the list holds.
func (m *MemoryRevocations) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.until)
}

// RedisRevocations keeps the revocation list in Redis, shared by every node:
// one key per signed-out session, <prefix>revoked:{<id>}, which expires
// when the session would have. Each sign-out is also published on the
// pub/sub channel <prefix>signouts, which every node watches
// (WatchSignOuts).
type RedisRevocations struct {
	rdb    redis.UniversalClient
	prefix string
}

// revocationTimeout bounds one Redis call of the revocation list, so a
// Redis that hangs refuses cookies quickly instead of holding requests.
const revocationTimeout = 2 * time.Second

// NewRedisRevocations keeps the list in rdb under prefix (the backplane's,
// so one deployment's keys share it).
func NewRedisRevocations(rdb redis.UniversalClient, prefix string) *RedisRevocations {
	return &RedisRevocations{rdb: rdb, prefix: prefix}
}

func (r *RedisRevocations) key(id string) string { return r.prefix + "revoked:{" + id + "}" }

func (r *RedisRevocations) channel() string { return r.prefix + "signouts" }

// signOutsRetry is the pause before WatchSignOuts reads again after its
// subscription failed (Redis down): go-redis reconnects on that read.
const signOutsRetry = time.Second

// WatchSignOuts implements SignOuts on the pub/sub channel Revoke
// publishes on. Pub/sub keeps nothing for a node that is not listening, so
// resync is called whenever the subscription is made, first or again
// after a lost connection: the node then asks Revoked of its sessions.
func (r *RedisRevocations) WatchSignOuts(ctx context.Context, ended func(id string), resync func()) error {
	sub := r.rdb.Subscribe(ctx, r.channel())
	// A read blocked on the connection does not see ctx end: closing
	// the subscription ends it.
	stop := context.AfterFunc(ctx, func() { _ = sub.Close() })
	defer stop()
	defer sub.Close()
	for {
		msg, err := sub.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(signOutsRetry):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				resync()
			}
		case *redis.Message:
			ended(m.Payload)
		}
	}
}

// Revoke implements Revocations.
func (r *RedisRevocations) Revoke(ctx context.Context, id string, until time.Time) error {
	ttl := time.Until(until)
	if ttl <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, revocationTimeout)
	defer cancel()
	if err := r.rdb.Set(ctx, r.key(id), "1", ttl).Err(); err != nil {
		return fmt.Errorf("auth: revoke a session: %w", err)
	}
	// Then every node ends the session's open connections.
	if err := r.rdb.Publish(ctx, r.channel(), id).Err(); err != nil {
		return fmt.Errorf("auth: announce a sign-out: %w", err)
	}
	return nil
}

// Revoked implements Revocations.
func (r *RedisRevocations) Revoked(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, revocationTimeout)
	defer cancel()
	n, err := r.rdb.Exists(ctx, r.key(id)).Result()
	if err != nil {
		return false, fmt.Errorf("auth: check a session: %w", err)
	}
	return n > 0, nil
}
