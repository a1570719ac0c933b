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
//	<prefix>td:publishing                     the takedowns not known to be
//	                                          published, scored by their last
//	                                          publish attempt (Unix ms)
//
// Records and keys expire takedown.result_ttl after the record was made; an
// entry of the publishing set goes when its command is acknowledged, its
// outcome arrives, or its record is gone.
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
func (s *RedisStore) publishingKey() string   { return s.prefix + "td:publishing" }
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
	// Into the publishing set first: a record is never publishing without
	// being found by the sweep. (The set and the record are in different
	// slots on a Cluster, so they cannot be written in one step.)
	if rec.needsPublish() {
		if err := s.rdb.ZAdd(ctx, s.publishingKey(), redis.Z{Score: unixMs(time.Now()), Member: rec.CorrelationID}).Err(); err != nil {
			return nil, s.wrap(err)
		}
	}
	return nil, s.wrap(s.rdb.Set(ctx, s.recKey(rec.CorrelationID), mustJSON(rec), s.ttl).Err())
}

func unixMs(t time.Time) float64 { return float64(t.UnixMilli()) }

func mustJSON(r *Record) []byte {
	b, _ := json.Marshal(r) // a Record always marshals
	return b
}

// MarkPublished implements Store.
func (s *RedisStore) MarkPublished(ctx context.Context, id string) error {
	err := s.update(ctx, id, func(r *Record, found bool) *Record {
		if !found || r.Published {
			return nil
		}
		r.Published = true
		return r
	})
	if err != nil {
		return err
	}
	return s.wrap(s.rdb.ZRem(ctx, s.publishingKey(), id).Err())
}

// claimScript takes the members of the publishing set scored at or below
// ARGV[1] (at most ARGV[3]) and scores them ARGV[2]: one key, so it runs
// on a Cluster too.
var claimScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
`)

// ClaimUnpublished implements Store.
func (s *RedisStore) ClaimUnpublished(ctx context.Context, before time.Time, max int) ([]*Record, error) {
	ids, err := claimScript.Run(ctx, s.rdb, []string{s.publishingKey()}, unixMs(before), unixMs(time.Now()), max).StringSlice()
	if err != nil {
		return nil, s.wrap(err)
	}
	var out []*Record
	for _, id := range ids {
		r, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound) || (err == nil && !r.needsPublish()):
			if err := s.rdb.ZRem(ctx, s.publishingKey(), id).Err(); err != nil {
				return out, s.wrap(err)
			}
		case err != nil:
			return out, err
		default:
			out = append(out, r)
		}
	}
	return out, nil
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
	if r, err := s.Get(ctx, rec.CorrelationID); err == nil && r.needsPublish() {
		if err := s.rdb.Del(ctx, s.recKey(rec.CorrelationID)).Err(); err != nil {
			return s.wrap(err)
		}
		if err := s.rdb.ZRem(ctx, s.publishingKey(), rec.CorrelationID).Err(); err != nil {
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
		return &UntrustedError{Reason: ReasonMalformed}
	}
	var untrusted error
	err = s.update(ctx, ev.CorrelationID, func(r *Record, found bool) *Record {
		untrusted = nil
		if !found {
			untrusted = &UntrustedError{Reason: ReasonUnknown}
			return nil
		}
		if err := o.about(r.ItemID); err != nil {
			untrusted = err
			return nil
		}
		if r.Final() {
			return nil
		}
		fold(r, o, ev.JSON)
		return r
	})
	if err != nil {
		return err
	}
	if untrusted != nil {
		return untrusted
	}
	return s.wrap(s.rdb.ZRem(ctx, s.publishingKey(), ev.CorrelationID).Err())
}

// Owner implements auth.Owners.
func (s *RedisStore) Owner(ctx context.Context, id string) (string, bool) {
	r, err := s.Get(ctx, id)
	if err != nil || r.Principal == "" {
		return "", false
	}
	return r.Principal, true
}
