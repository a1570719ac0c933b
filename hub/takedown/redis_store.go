package takedown

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub"
)

// RedisStore is the outcome store in Redis, shared by every node: a record
// is written by whichever node consumes an event, so a request held on one
// node is answered from another's consumption, and a retry on any node finds
// its idempotency key. Keys (hash-tagged, one slot each):
//
//	<prefix>td:{<correlation id>}            the record as JSON
//	<prefix>idem:{<principal>}:<key>          the correlation ID of a key
//
// Both expire takedown.result_ttl after the record was made.
type RedisStore struct {
	rdb    redis.UniversalClient
	ttl    time.Duration
	prefix string
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store in rdb (which the caller owns).
func NewRedisStore(rdb redis.UniversalClient, ttl time.Duration, prefix string) *RedisStore {
	if prefix == "" {
		prefix = "sb:"
	}
	return &RedisStore{rdb: rdb, ttl: ttl, prefix: prefix}
}

func (s *RedisStore) recKey(id string) string { return s.prefix + "td:{" + id + "}" }
func (s *RedisStore) idemKey(principal, key string) string {
	return s.prefix + "idem:{" + principal + "}:" + key
}

func (s *RedisStore) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("takedown: redis store: %w", err)
}

// Reserve implements Store: SET NX on the idempotency key arbitrates between
// concurrent requests with the same key, on any node.
func (s *RedisStore) Reserve(ctx context.Context, rec *Record) (*Record, error) {
	if rec.IdempotencyKey != "" {
		ik := s.idemKey(rec.Principal, rec.IdempotencyKey)
		ok, err := s.rdb.SetNX(ctx, ik, rec.CorrelationID, s.ttl).Result()
		if err != nil {
			return nil, s.wrap(err)
		}
		if !ok {
			id, err := s.rdb.Get(ctx, ik).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return nil, s.wrap(err)
			}
			if existing, err := s.Get(ctx, id); err == nil {
				return existing, nil
			} else if !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			// The key outlived its record (released or expired): take it.
			if err := s.rdb.Set(ctx, ik, rec.CorrelationID, s.ttl).Err(); err != nil {
				return nil, s.wrap(err)
			}
		}
	}
	return nil, s.update(ctx, rec.CorrelationID, func(r *Record, found bool) *Record {
		if !found {
			return clone(rec)
		}
		// Outcome events came before the reservation: keep them.
		r.Principal, r.IdempotencyKey, r.BodyHash = rec.Principal, rec.IdempotencyKey, rec.BodyHash
		r.Reason, r.AuthorityRef = rec.Reason, rec.AuthorityRef
		return r
	})
}

// update runs fn on the record in an optimistic transaction, retried when
// another node wrote it meanwhile. fn returns the record to store, or nil.
func (s *RedisStore) update(ctx context.Context, id string, fn func(r *Record, found bool) *Record) error {
	key := s.recKey(id)
	for range 16 {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			var cur Record
			found := true
			b, err := tx.Get(ctx, key).Bytes()
			switch {
			case errors.Is(err, redis.Nil):
				found = false
			case err != nil:
				return err
			default:
				if err := json.Unmarshal(b, &cur); err != nil {
					return err
				}
			}
			next := fn(&cur, found)
			if next == nil {
				return nil
			}
			out, err := json.Marshal(next)
			if err != nil {
				return err
			}
			ttl := s.ttl
			if found {
				ttl = redis.KeepTTL
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, out, ttl)
				return nil
			})
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		return s.wrap(err)
	}
	return s.wrap(errors.New("too much contention on " + key))
}

// Release implements Store.
func (s *RedisStore) Release(ctx context.Context, rec *Record) error {
	if r, err := s.Get(ctx, rec.CorrelationID); err == nil && !r.Final() {
		if err := s.rdb.Del(ctx, s.recKey(rec.CorrelationID)).Err(); err != nil {
			return s.wrap(err)
		}
	}
	if rec.IdempotencyKey != "" {
		ik := s.idemKey(rec.Principal, rec.IdempotencyKey)
		if id, err := s.rdb.Get(ctx, ik).Result(); err == nil && id == rec.CorrelationID {
			return s.wrap(s.rdb.Del(ctx, ik).Err())
		}
	}
	return nil
}

// Get implements Store.
func (s *RedisStore) Get(ctx context.Context, id string) (*Record, error) {
	b, err := s.rdb.Get(ctx, s.recKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, s.wrap(err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, s.wrap(err)
	}
	return &r, nil
}

// Apply implements Store.
func (s *RedisStore) Apply(ctx context.Context, ev *hub.Event) error {
	o, err := ParseOutcome(ev)
	if err != nil {
		return nil
	}
	return s.update(ctx, ev.CorrelationID, func(r *Record, found bool) *Record {
		if !found {
			r = &Record{CorrelationID: ev.CorrelationID, Status: StatusPending, CreatedAt: time.Now()}
		}
		if r.Final() {
			return nil
		}
		fold(r, o, ev.JSON)
		return r
	})
}

// Owner implements auth.Owners.
func (s *RedisStore) Owner(ctx context.Context, id string) (string, bool) {
	r, err := s.Get(ctx, id)
	if err != nil || r.Principal == "" {
		return "", false
	}
	return r.Principal, true
}
