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
//	<prefix>idem:{<principal>}:<key>          the correlation ID of a takedown's key
//	<prefix>idem:{<principal>}/<command>:<key> the same for a declared command
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

// idemKey scopes an idempotency key to its principal and command.
func (s *RedisStore) idemKey(r *Record) string {
	if r.Command == "" {
		return s.prefix + "idem:{" + r.Principal + "}:" + r.IdempotencyKey
	}
	return s.prefix + "idem:{" + r.Principal + "}/" + r.Command + ":" + r.IdempotencyKey
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
		ik := s.idemKey(rec)
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
	found, err := s.update(ctx, id, func(r *Record) (*Record, error) {
		if r.Published {
			return nil, nil
		}
		r.Published = true
		return r, nil
	})
	if err == nil && !found {
		err = s.wrap(s.rdb.ZRem(ctx, s.publishingKey(), id).Err())
	}
	return err
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

// casScript sets KEYS[1] to ARGV[2], keeping its TTL, if it still holds
// ARGV[1]; it returns 1 if it did.
var casScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
`)

// update runs fn on the record of id and stores what it returns (nil:
// nothing), unless another node wrote the record meanwhile: then it reads
// and runs fn again. Unless fn fails, it takes id out of the publishing
// set, in the same round trip as the write: the caller knows the command
// is on the topic. A record that is not there is left alone, and found is
// false. Two round trips, where WATCH, GET, MULTI/EXEC and ZREM take four
// on a connection of their own: the consumer applies outcomes one at a
// time, so this is its pace.
func (s *RedisStore) update(ctx context.Context, id string, fn func(r *Record) (*Record, error)) (found bool, err error) {
	key := s.recKey(id)
	for range 16 {
		old, err := s.rdb.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		if err != nil {
			return true, s.wrap(err)
		}
		var cur Record
		if err := json.Unmarshal(old, &cur); err != nil {
			return true, s.wrap(err)
		}
		next, err := fn(&cur)
		if err != nil {
			return true, err
		}
		if next == nil {
			return true, s.wrap(s.rdb.ZRem(ctx, s.publishingKey(), id).Err())
		}
		out, err := json.Marshal(next)
		if err != nil {
			return true, s.wrap(err)
		}
		swapped, err := s.swap(ctx, key, id, old, out)
		if err != nil {
			return true, s.wrap(err)
		}
		if swapped {
			return true, nil
		}
	}
	return true, s.wrap(errors.New("too much contention on " + key))
}

// swap writes out to key if it still holds old, and takes id out of the
// publishing set, in one round trip (the two keys are in different slots
// on a Cluster: a pipeline, not one script).
func (s *RedisStore) swap(ctx context.Context, key, id string, old, out []byte) (bool, error) {
	keys, args := []string{key}, []any{old, out}
	for _, load := range []bool{false, true} {
		var cas *redis.Cmd
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			if load {
				cas = casScript.Eval(ctx, p, keys, args...)
			} else {
				cas = casScript.EvalSha(ctx, p, keys, args...)
			}
			p.ZRem(ctx, s.publishingKey(), id)
			return nil
		})
		if !load && redis.HasErrorPrefix(cas.Err(), "NOSCRIPT") {
			continue // the script is not cached there yet: send it whole
		}
		if err != nil {
			return false, err
		}
		n, err := cas.Int()
		return n == 1, err
	}
	return false, nil // not reached
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
		ik := s.idemKey(rec)
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
	return s.apply(ctx, ev, applyTakedown)
}

func (s *RedisStore) apply(ctx context.Context, ev *hub.Event, judge judgeFunc) error {
	found, err := s.update(ctx, ev.CorrelationID, func(r *Record) (*Record, error) {
		cmd, err := judge(r, ev)
		if err != nil {
			return nil, err // untrusted: it changes nothing, not even the outbox
		}
		if r.Final() {
			// Still checked: an untrusted event is counted as such.
			return nil, fold(r, cmd, ev)
		}
		if err := fold(r, cmd, ev); err != nil {
			return nil, err
		}
		return r, nil
	})
	if err == nil && !found {
		err = &UntrustedError{Reason: ReasonUnknown}
	}
	return err
}

// Owner implements auth.Owners.
func (s *RedisStore) Owner(ctx context.Context, id string) (string, bool) {
	r, err := s.Get(ctx, id)
	if err != nil || r.Principal == "" {
		return "", false
	}
	return r.Principal, true
}
