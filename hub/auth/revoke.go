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

// MemoryRevocations is the revocation list of a single node (no redis.url).
// Entries leave once their session would have expired, so it holds at most
// the sign-outs of one session lifetime.
type MemoryRevocations struct {
	mu    sync.Mutex
	until map[string]time.Time
	prune int // prune expired entries when the map grows to this size
}

var _ Revocations = (*MemoryRevocations)(nil)

// NewMemoryRevocations returns an empty list.
func NewMemoryRevocations() *MemoryRevocations {
	return &MemoryRevocations{until: map[string]time.Time{}, prune: 1024}
}

// Revoke implements Revocations.
func (m *MemoryRevocations) Revoke(_ context.Context, id string, until time.Time) error {
	now := time.Now()
	if !until.After(now) {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.until[id] = until
	if len(m.until) >= m.prune {
		for k, u := range m.until {
			if !u.After(now) {
				delete(m.until, k)
			}
		}
		m.prune = max(1024, 2*len(m.until))
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
// when the session would have.
type RedisRevocations struct {
	rdb    redis.UniversalClient
	prefix string
}

var _ Revocations = (*RedisRevocations)(nil)

// revocationTimeout bounds one Redis call of the revocation list, so a
// Redis that hangs refuses cookies quickly instead of holding requests.
const revocationTimeout = 2 * time.Second

// NewRedisRevocations keeps the list in rdb under prefix (the backplane's,
// so one deployment's keys share it).
func NewRedisRevocations(rdb redis.UniversalClient, prefix string) *RedisRevocations {
	return &RedisRevocations{rdb: rdb, prefix: prefix}
}

func (r *RedisRevocations) key(id string) string { return r.prefix + "revoked:{" + id + "}" }

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
