package takedown

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
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
//	<prefix>td:{<correlation id>}:fenced      set when a keyed record was
//	                                          fenced off before it was
//	                                          written: it never will be
//	<prefix>idem:{<principal>}:<key>          the correlation ID of a takedown's key
//	<prefix>idem:{<principal>}/<command>:<key> the same for a declared command
//	<prefix>td:publishing                     the takedowns not known to be
//	                                          published, scored by their last
//	                                          publish attempt (Unix ms)
//
// Records and keys expire takedown.result_ttl after the record was made; an
// entry of the publishing set goes when its command is acknowledged, its
// outcome arrives, or its record is gone.
//
// Each node keeps the last JSON it read or wrote of its most recent records
// (seen), so a change it makes (MarkPublished, Apply) is one round trip:
// the compare-and-set against what it last saw, which hands back the
// record as it is when another node wrote it meanwhile.
type RedisStore struct {
	rdb    redis.UniversalClient
	ttl    time.Duration
	prefix string
	seen   seenRecords
	// Reservations and marks of concurrent requests go together.
	reserves group[*reservation]
	marks    group[*mark]
	// releaseRead, if set, is called by Release between its read of the
	// record and its delete (tests: another node's write meanwhile).
	releaseRead func()
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
//
// The publishing set is written before the record, so a record is never
// publishing without being found by the sweep: with the key's SET NX in
// one round trip (a member whose record was never made is dropped by the
// next claim, or at once when the key was taken), then the record. With
// no key on one server (not a Cluster, where the two are in different
// slots and a pipeline's commands to different servers have no order),
// the set and the record are one pipeline, which the server runs in
// order.
//
// The reservations of concurrent requests go together (a group commit,
// as the marks): one that finds none in flight is sent at once; those
// that come meanwhile wait for it and then go in one pipeline (and the
// records that must wait for their key or set, in a second one), so
// under load the request's first round trip is shared. A key found taken
// is then joined by its own request (joinKey).
//
// A keyed record is written only if no request that found its key first
// fenced it off (recordScript): one fenced off joins whoever took its key.
// So exactly one request owns a key, and publishes its command, however
// concurrent or slow the requests with that key are, on any node.
func (s *RedisStore) Reserve(ctx context.Context, rec *Record) (*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, s.wrap(err)
	}
	r := &reservation{rec: rec, publish: rec.needsPublish(), js: mustJSON(rec), done: make(chan struct{}),
		member: redis.Z{Score: unixMs(time.Now()), Member: rec.CorrelationID}}
	// A reservation is not abandoned once queued: the batch runs to its
	// end whatever becomes of ctx, so a caller never walks away from a
	// record made after it failed.
	s.reserves.commit(context.WithoutCancel(ctx), r, s.reserveAll)
	<-r.done
	if !r.join {
		return nil, r.err
	}
	ik, added := s.idemKey(rec), r.zadd != nil
	for range 8 {
		existing, err := s.joinKey(ctx, rec, ik, added)
		if existing != nil || err != nil {
			return existing, err
		}
		if r.publish { // the key is taken again: the set first, once more
			if err := s.rdb.ZAdd(ctx, s.publishingKey(), r.member).Err(); err != nil {
				return nil, s.wrap(err)
			}
		}
		added = r.publish
		wrote, err := s.runInt(ctx, recordScript, s.recordKeys(rec.CorrelationID), r.js, s.ttl.Milliseconds())
		if err != nil {
			s.seen.forget(rec.CorrelationID)
			return nil, s.wrap(err)
		}
		if wrote == 1 {
			s.seen.put(rec.CorrelationID, r.js, rec.Final())
			return nil, nil
		}
		// Fenced off: another request found the key before the record
		// and took it.
	}
	return nil, s.wrap(errors.New("too much contention on " + ik))
}

// recordKeys are a record's key and its fence, in one slot.
func (s *RedisStore) recordKeys(id string) []string {
	return []string{s.recKey(id), s.prefix + "td:{" + id + "}:fenced"}
}

// recordScript writes a keyed reservation's record KEYS[1] (ARGV[1],
// expiring in ARGV[2] ms; never when 0) unless it was fenced off (KEYS[2]
// is there), and returns 1; else 0, and writes nothing.
var recordScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 1
`)

// fenceScript fences off the record KEYS[1] (sets KEYS[2], expiring in
// ARGV[1] ms; never when 0) unless it is there, and returns 1; else 0.
var fenceScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[1] == '0' then redis.call('SET', KEYS[2], '1') else redis.call('SET', KEYS[2], '1', 'PX', ARGV[1]) end
return 1
`)

// takeKeyScript points the idempotency key KEYS[1] at ARGV[2] (expiring
// in ARGV[3] ms; never when 0) if it names ARGV[1] or nothing, and
// returns 1; else it returns what the key names.
var takeKeyScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return cur end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
`)

// releaseRecordScript deletes the record KEYS[1] if it still holds ARGV[1],
// and returns 1; else 0.
var releaseRecordScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
`)

// releaseKeyScript deletes the idempotency key KEYS[1] if it names ARGV[1].
var releaseKeyScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`)

// runInt runs a script that answers an integer.
func (s *RedisStore) runInt(ctx context.Context, sc *redis.Script, keys []string, args ...any) (int64, error) {
	return sc.Run(ctx, s.rdb, keys, args...).Int64()
}

// reservation is one Reserve in a group commit.
type reservation struct {
	rec     *Record
	js      []byte
	publish bool
	member  redis.Z
	setNX   *redis.BoolCmd
	zadd    *redis.IntCmd
	set     *redis.StatusCmd
	write   *redis.Cmd // a keyed record's (recordScript)
	// Set by reserveAll before done is closed: join says the key was
	// taken (the request joins it); otherwise err is the outcome.
	join bool
	err  error
	done chan struct{}
}

// reserveAll makes the reservations of batch: the keys' SET NX and the
// publishing set's ZADDs in one pipeline (with the records that need
// nothing before them), then the records that had to wait for those in
// a second one. Each reservation's done is closed with its outcome.
func (s *RedisStore) reserveAll(ctx context.Context, batch []*reservation) {
	_, single := s.rdb.(*redis.Client)
	pipe := s.rdb.Pipeline()
	for _, r := range batch {
		switch {
		case r.rec.IdempotencyKey != "":
			r.setNX = pipe.SetNX(ctx, s.idemKey(r.rec), r.rec.CorrelationID, s.ttl)
			if r.publish {
				r.zadd = pipe.ZAdd(ctx, s.publishingKey(), r.member)
			}
		case r.publish && single:
			r.zadd = pipe.ZAdd(ctx, s.publishingKey(), r.member)
			r.set = pipe.Set(ctx, s.recKey(r.rec.CorrelationID), r.js, s.ttl)
		case r.publish:
			r.zadd = pipe.ZAdd(ctx, s.publishingKey(), r.member)
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // each command's own error is read below
	}
	// The records that wait for their key or set go next; the requests
	// that found their key taken join it after those, so one that found it
	// taken in this very batch finds its record.
	var then, joins []*reservation
	for _, r := range batch {
		var err error
		switch {
		case r.setNX != nil && r.setNX.Err() != nil:
			err = r.setNX.Err()
		case r.setNX != nil && !r.setNX.Val():
			r.join = true
			joins = append(joins, r)
			continue
		case r.set != nil:
			if err = r.zadd.Err(); err == nil {
				err = r.set.Err()
			} else if r.set.Err() == nil {
				s.rdb.Del(ctx, s.recKey(r.rec.CorrelationID)) // not found by the sweep: not kept either
			}
			if err == nil {
				s.seen.put(r.rec.CorrelationID, r.js, r.rec.Final())
			}
		case r.zadd != nil && r.zadd.Err() != nil:
			err = r.zadd.Err()
		default:
			then = append(then, r)
			continue
		}
		r.err = s.wrap(err)
		close(r.done)
	}
	if len(then) > 0 {
		s.writeRecords(ctx, then, false)
		for _, r := range then {
			var err error
			if r.write != nil {
				var wrote int64
				if wrote, err = r.write.Int64(); err == nil && wrote == 0 {
					// Fenced off: a request that found the key before the
					// record took it. This one joins it.
					r.join = true
					joins = append(joins, r)
					continue
				}
			} else {
				err = r.set.Err()
			}
			if err != nil {
				s.seen.forget(r.rec.CorrelationID)
				r.err = s.wrap(err)
			} else {
				s.seen.put(r.rec.CorrelationID, r.js, r.rec.Final())
			}
			close(r.done)
		}
	}
	for _, r := range joins {
		close(r.done)
	}
}

// writeRecords writes the records of batch in one pipeline: a keyed one
// with recordScript (write), which a request that found its key may have
// fenced off, others with SET (set). load sends the script whole; it is
// sent so again to those it was not cached for.
func (s *RedisStore) writeRecords(ctx context.Context, batch []*reservation, load bool) {
	pipe := s.rdb.Pipeline()
	for _, r := range batch {
		switch {
		case r.setNX == nil:
			r.set = pipe.Set(ctx, s.recKey(r.rec.CorrelationID), r.js, s.ttl)
		case load:
			r.write = recordScript.Eval(ctx, pipe, s.recordKeys(r.rec.CorrelationID), r.js, s.ttl.Milliseconds())
		default:
			r.write = recordScript.EvalSha(ctx, pipe, s.recordKeys(r.rec.CorrelationID), r.js, s.ttl.Milliseconds())
		}
	}
	_, _ = pipe.Exec(ctx)
	if load {
		return
	}
	var again []*reservation
	for _, r := range batch {
		if r.write != nil && redis.HasErrorPrefix(r.write.Err(), "NOSCRIPT") {
			again = append(again, r)
		}
	}
	if len(again) > 0 {
		s.writeRecords(ctx, again, true)
	}
}

// group is a group commit: what comes while a batch is in flight waits
// for it and then goes in the next batch, together.
type group[T any] struct {
	mu    sync.Mutex
	busy  bool // a goroutine is sending a batch
	queue []T
}

// commit queues it; when no batch is in flight, it sends the queue with
// send, then hands what queued meanwhile to a goroutine of its own, so no
// caller waits for others' batches after its own. The caller then waits
// for send to say it is done with it.
func (g *group[T]) commit(ctx context.Context, it T, send func(context.Context, []T)) {
	g.mu.Lock()
	g.queue = append(g.queue, it)
	if g.busy {
		g.mu.Unlock()
		return
	}
	g.busy = true
	g.mu.Unlock()
	g.drain(ctx, send)
}

func (g *group[T]) drain(ctx context.Context, send func(context.Context, []T)) {
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	g.mu.Unlock()
	send(ctx, batch)
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.busy = false
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	go g.drain(context.WithoutCancel(ctx), send)
}

// joinWait is how long a request that found its key naming a record not
// there waits for the record before it fences it off: the key's request
// writes its record a round trip after the key. It bounds only how soon
// a key whose request is gone is taken over: a record fenced off is
// never written, however late its request comes.
const joinWait = 250 * time.Millisecond

// joinKey is Reserve when rec's idempotency key ik was taken: the record
// it names, or nil when rec took the key, as it does one that names
// nothing or a record that will never be there (released, expired, or
// its request gone before writing it). added says rec's correlation ID
// went into the publishing set; it is taken out again.
//
// A key is set before its record, so it names a record not there yet
// while its request is between the two: a join waits for the record (up
// to joinWait), then fences it off (fenceScript), so that its request
// can no more write it (recordScript) and joins in turn, and only then
// takes the key, if it still names that record (takeKeyScript). So one
// request owns a key however slow the others are.
func (s *RedisStore) joinKey(ctx context.Context, rec *Record, ik string, added bool) (*Record, error) {
	var get *redis.StringCmd
	// A failed ZREM is left to the next claim, which drops a member
	// without a record.
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, ik)
		if added {
			p.ZRem(ctx, s.publishingKey(), rec.CorrelationID)
		}
		return nil
	})
	id, err := get.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, s.wrap(err)
	}
	ttl := s.ttl.Milliseconds()
	deadline, pause := time.Now().Add(joinWait), time.Millisecond
	for range 256 {
		if id != "" {
			existing, err := s.Get(ctx, id)
			if err == nil {
				return existing, nil
			} else if !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			if time.Now().Before(deadline) {
				select {
				case <-ctx.Done():
					return nil, s.wrap(ctx.Err())
				case <-time.After(pause):
				}
				pause = min(2*pause, 32*time.Millisecond)
				continue
			}
			fenced, err := s.runInt(ctx, fenceScript, s.recordKeys(id), ttl)
			if err != nil {
				return nil, s.wrap(err)
			}
			if fenced == 0 {
				continue // the record came: join it
			}
		}
		cur, err := takeKeyScript.Run(ctx, s.rdb, []string{ik}, id, rec.CorrelationID, ttl).Result()
		if err != nil {
			return nil, s.wrap(err)
		}
		if next, ok := cur.(string); ok {
			// Another request took it meanwhile: join that one, which
			// may be a round trip from its record.
			id, deadline, pause = next, time.Now().Add(joinWait), time.Millisecond
			continue
		}
		return nil, nil
	}
	return nil, s.wrap(errors.New("too much contention on " + ik))
}

func unixMs(t time.Time) float64 { return float64(t.UnixMilli()) }

func mustJSON(r *Record) []byte {
	b, _ := json.Marshal(r) // a Record always marshals
	return b
}

// MarkPublished implements Store.
func (s *RedisStore) MarkPublished(ctx context.Context, id string) error {
	_, err := s.markPublished(ctx, id)
	return err
}

// markPublished is MarkPublished, and returns the record as Redis holds it
// once marked (nil when it is not there): the compare-and-set that marks
// it reads it too, so a call that reserved the record needs no read of its
// own after registering its wait (readAfterMark).
//
// The marks of concurrent requests go together (a group commit): a mark
// that finds none in flight is sent at once; those that come meanwhile
// wait for it and then go in one pipeline (updateAll), so under load the
// request's last round trip is shared.
func (s *RedisStore) markPublished(ctx context.Context, id string) (*Record, error) {
	m := &mark{id: id, done: make(chan struct{})}
	s.marks.commit(ctx, m, s.markAll)
	<-m.done
	return m.rec, m.err
}

type mark struct {
	id   string
	rec  *Record
	err  error
	done chan struct{}
}

func markOne(r *Record) (*Record, error) {
	if r.Published {
		return nil, nil
	}
	r.Published = true
	return r, nil
}

// markAll sends the marks of batch in one go (updateAll).
func (s *RedisStore) markAll(ctx context.Context, batch []*mark) {
	ids := make([]string, len(batch))
	fns := make([]func(*Record) (*Record, error), len(batch))
	for i, m := range batch {
		ids[i], fns[i] = m.id, markOne
	}
	stored, found, errs := s.updateAll(ctx, ids, fns)
	for i, m := range batch {
		m.rec, m.err = stored[i], errs[i]
		if m.err == nil && !found[i] {
			m.err = s.wrap(s.rdb.ZRem(ctx, s.publishingKey(), m.id).Err())
		}
		close(m.done)
	}
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
// ARGV[1] or ARGV[3] (marked, "" for none), and returns 1; otherwise it
// returns what KEYS[1] holds (nil when nothing), so a caller that guessed
// wrong retries without reading again.
var casScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
if cur ~= ARGV[1] and cur ~= ARGV[3] then return cur end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
`)

// update runs fn on the record of id and stores what it returns (nil:
// nothing), unless another node wrote the record meanwhile: then it runs
// fn again on the record as the compare-and-set found it. Unless fn
// fails, it takes id out of the publishing set, in the same round trip as
// the write: the caller knows the command is on the topic. A record that
// is not there is left alone, and found is false.
//
// The first try is against what this node last saw of the record (seen),
// without reading it: one round trip when no other node wrote it since,
// which is the common case (the node that reserved a takedown marks it
// published; the node that consumes its outcome read or wrote it last);
// a record this node never saw is read first, as is one that fn would
// leave as it is (nothing is written then, so nothing would check that
// the record is still there and still so). The consumer applies outcomes
// one at a time, so this is its pace.
func (s *RedisStore) update(ctx context.Context, id string, fn func(r *Record) (*Record, error)) (found bool, err error) {
	_, found, err = s.updateRec(ctx, id, fn)
	return found, err
}

// updateRec is update, and returns the record as Redis holds it after
// the change (nil when it failed or the record is not there).
func (s *RedisStore) updateRec(ctx context.Context, id string, fn func(r *Record) (*Record, error)) (stored *Record, found bool, err error) {
	key := s.recKey(id)
	if cur := s.seenFinal(id); cur != nil {
		if next, err := fn(cur); err == nil && next == nil {
			return cur, true, nil // final: nothing to change, nothing to check
		}
	}
	old, verified, unqueued := s.seen.get(id), false, false
	for range 16 {
		if old == nil {
			b, err := s.rdb.Get(ctx, key).Bytes()
			if errors.Is(err, redis.Nil) {
				s.seen.forget(id)
				return nil, false, nil
			}
			if err != nil {
				return nil, true, s.wrap(err)
			}
			old, verified = b, true
			s.seen.put(id, old, false)
		}
		cur, err := s.seen.parse(id, old)
		if err != nil {
			s.seen.forget(id)
			return nil, true, s.wrap(err)
		}
		base := *cur // fn changes cur
		next, err := fn(cur)
		if err != nil {
			if !verified {
				// Judged on what this node saw: judge what is there.
				old = nil
				continue
			}
			return nil, true, err
		}
		if next == nil {
			if !verified {
				// Judged on what this node saw: read what is there, and
				// take id out of the publishing set in the same round
				// trip. fn left the record as it saw it, so it is
				// published or final, and stays so: the set has no use
				// for it whatever the read finds.
				b, found, err := s.readUnqueue(ctx, key, id)
				if err != nil {
					return nil, true, s.wrap(err)
				}
				if !found {
					s.seen.forget(id)
					return nil, false, nil
				}
				old, verified, unqueued = b, true, true
				s.seen.put(id, old, false)
				continue
			}
			if !unqueued {
				if err := s.rdb.ZRem(ctx, s.publishingKey(), id).Err(); err != nil {
					return nil, true, s.wrap(err)
				}
			}
			s.seen.put(id, old, cur.Final())
			return cur, true, nil
		}
		out, err := json.Marshal(next)
		if err != nil {
			return nil, true, s.wrap(err)
		}
		now, found, err := s.swap(ctx, key, id, old, out, marked(&base, next))
		switch {
		case err != nil:
			s.seen.forget(id)
			return nil, true, s.wrap(err)
		case !found:
			s.seen.forget(id)
			return nil, false, nil
		case now == nil:
			s.seen.putRec(id, out, next)
			return next, true, nil
		}
		old, verified = now, true // another node wrote it: fold into that
		s.seen.put(id, old, false)
	}
	return nil, true, s.wrap(errors.New("too much contention on " + key))
}

// seenFinal is the record of id as this node saw it when it is final and
// may be answered from what was seen (Get), else nil.
func (s *RedisStore) seenFinal(id string) *Record {
	b := s.seen.final(id)
	if b == nil {
		return nil
	}
	r, err := s.seen.parse(id, b)
	if err != nil || !r.Final() || (s.ttl > 0 && time.Since(r.CreatedAt) >= s.ttl/2) {
		return nil
	}
	return r
}

// readUnqueue reads key and takes id out of the publishing set, in one
// round trip. found is false when key holds nothing.
func (s *RedisStore) readUnqueue(ctx context.Context, key, id string) (b []byte, found bool, err error) {
	var get *redis.StringCmd
	var zrem *redis.IntCmd
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, key)
		zrem = p.ZRem(ctx, s.publishingKey(), id)
		return nil
	})
	b, err = get.Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, false, zrem.Err()
	case err != nil:
		return nil, true, err
	}
	return b, true, zrem.Err()
}

// swap writes out to key if it still holds old, and takes id out of the
// publishing set, in one round trip (the two keys are in different slots
// on a Cluster: a pipeline, not one script). It writes out over alt too,
// when not nil (marked). When key holds something else, cur is that;
// when it holds nothing, found is false.
func (s *RedisStore) swap(ctx context.Context, key, id string, old, out, alt []byte) (cur []byte, found bool, err error) {
	keys, args := []string{key}, []any{old, out, alt}
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
		v, cerr := cas.Result()
		if errors.Is(cerr, redis.Nil) {
			return nil, false, nil
		}
		if cerr != nil {
			return nil, true, cerr
		}
		if err != nil {
			return nil, true, err // the ZREM failed
		}
		switch v := v.(type) {
		case int64:
			return nil, true, nil
		case string:
			return []byte(v), true, nil
		}
		return nil, true, fmt.Errorf("compare-and-set answered %T", v)
	}
	return nil, true, nil // not reached
}

// marked is what the compare-and-set of an outcome may write over besides
// base, the record it was worked out from: base as its command's mark
// leaves it, byte for byte (markOne, json.Marshal), when base is not
// marked and next is final. The command's acknowledgement and its outcome
// arrive together (the item service answers within a millisecond), so
// the mark often lands between this node's read of the record and the
// outcome's write, which then failed and went again. An outcome marks the
// record itself (fold), and nothing it does depends on the mark: written
// over either form, it leaves the same record. nil otherwise.
func marked(base, next *Record) []byte {
	if base.Published || next == nil || !next.Published || !next.Final() {
		return nil
	}
	m := *base
	m.Published = true
	b, err := json.Marshal(&m)
	if err != nil {
		return nil
	}
	return b
}

// seenSize bounds each generation of seenRecords, and seenMaxBytes the
// JSON of a record it keeps (a bigger one is read before it is changed):
// at most 2 × 2048 × 4 KiB = 16 MiB; a takedown's record is well under
// 1 KiB.
const (
	seenSize     = 2048
	seenMaxBytes = 4 << 10
)

// seenRecords is the JSON a node last read or wrote of each record, in two
// generations of at most seenSize records each: a record not used for a
// generation is forgotten. It is a guess, never trusted for a change:
// every write compares it with what is in Redis. Only a record known to be
// final (it changes no more) is answered from it (Get).
type seenRecords struct {
	mu        sync.Mutex
	cur, prev map[string]seenRecord
}

type seenRecord struct {
	js    []byte
	final bool // js was read or written as a final record
	// rec is js parsed, once it was (parse, putRec); never handed out,
	// only copies of it.
	rec *Record
}

func (c *seenRecords) lookup(id string) seenRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.cur[id]; ok {
		return r
	}
	return c.prev[id]
}

func (c *seenRecords) get(id string) []byte { return c.lookup(id).js }

// final returns the record's JSON if it is known to be final, else nil.
func (c *seenRecords) final(id string) []byte {
	if r := c.lookup(id); r.final {
		return r.js
	}
	return nil
}

func (c *seenRecords) put(id string, b []byte, final bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(b) > seenMaxBytes {
		delete(c.cur, id)
		delete(c.prev, id)
		return
	}
	was, ok := c.cur[id]
	if !ok {
		was = c.prev[id]
		if c.cur == nil || len(c.cur) >= seenSize {
			c.prev, c.cur = c.cur, make(map[string]seenRecord, seenSize)
		}
	}
	r := seenRecord{js: b, final: final}
	if was.final && !final {
		// A final record changes no more: what is put now was read or
		// written before it (a mark whose answer is handled after its
		// outcome's), or is it unparsed (a compare-and-set's refusal).
		r = was
	}
	if sameBytes(was.js, b) {
		r.rec = was.rec // the same JSON: the same parse
	}
	c.cur[id] = r
	delete(c.prev, id)
}

// putRec is put of a record known parsed: b is rec's JSON.
func (c *seenRecords) putRec(id string, b []byte, rec *Record) {
	c.put(id, b, rec.Final())
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.cur[id]; ok && sameBytes(r.js, b) {
		r.rec = clone(rec)
		c.cur[id] = r
	}
}

// parse returns b, a JSON of id's record, parsed: a copy of the parse
// this node keeps while b is what it saw of the record, so a record is
// parsed once however often it is looked at.
func (c *seenRecords) parse(id string, b []byte) (*Record, error) {
	if r := c.lookup(id); r.rec != nil && sameBytes(r.js, b) {
		return clone(r.rec), nil
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.cur[id]; ok && sameBytes(r.js, b) {
		r.rec = clone(&rec)
		c.cur[id] = r
	}
	return &rec, nil
}

// sameBytes reports whether a and b are the same bytes in memory, not
// merely equal.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && len(a) > 0 && &a[0] == &b[0]
}

func (c *seenRecords) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.cur, id)
	delete(c.prev, id)
}

func (c *seenRecords) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev)
}

// Release implements Store.
func (s *RedisStore) Release(ctx context.Context, rec *Record) error {
	id := rec.CorrelationID
	key := s.recKey(id)
	b, err := s.rdb.Get(ctx, key).Bytes()
	var r Record
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		return s.wrap(err)
	case json.Unmarshal(b, &r) == nil && r.needsPublish():
		s.seen.forget(id)
		if s.releaseRead != nil {
			s.releaseRead()
		}
		// Deleted only if still as read: a record another node's sweep
		// published, or an outcome decided, meanwhile stays.
		n, err := s.runInt(ctx, releaseRecordScript, []string{key}, b)
		if err != nil {
			return s.wrap(err)
		}
		if n == 1 {
			if err := s.rdb.ZRem(ctx, s.publishingKey(), id).Err(); err != nil {
				return s.wrap(err)
			}
		}
	}
	if rec.IdempotencyKey != "" {
		return s.wrap(releaseKeyScript.Run(ctx, s.rdb, []string{s.idemKey(rec)}, rec.CorrelationID).Err())
	}
	return nil
}

// Get implements Store. A final record this node wrote or read is
// answered from what it saw, with no round trip: a final record changes no
// more (an outcome folded into it changes nothing, a publish mark changes
// nothing a reader acts on, and it is never released), so what the node
// saw is what Redis holds, until it expires. That is the read of a call
// woken by its outcome on the node that consumed the outcome, the common
// case. It is not trusted past half the record's TTL (the TTL runs from
// its making, on another node's clock perhaps).
func (s *RedisStore) Get(ctx context.Context, id string) (*Record, error) {
	if r := s.seenFinal(id); r != nil {
		return r, nil
	}
	b, err := s.rdb.Get(ctx, s.recKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		s.seen.forget(id)
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, s.wrap(err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, s.wrap(err)
	}
	s.seen.put(id, b, r.Final())
	return &r, nil
}

// Apply implements Store.
func (s *RedisStore) Apply(ctx context.Context, ev *hub.Event) error {
	return s.apply(ctx, ev, applyTakedown)
}

func (s *RedisStore) apply(ctx context.Context, ev *hub.Event, judge judgeFunc) error {
	found, err := s.update(ctx, ev.CorrelationID, applying(ev, judge))
	if err == nil && !found {
		err = &UntrustedError{Reason: ReasonUnknown}
	}
	return err
}

// applying is the change an outcome event makes to its record.
func applying(ev *hub.Event, judge judgeFunc) func(r *Record) (*Record, error) {
	return func(r *Record) (*Record, error) {
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
	}
}

// applyAll is apply for several events, with one error each (updateAll).
func (s *RedisStore) applyAll(ctx context.Context, evs []*hub.Event, judge judgeFunc) []error {
	ids := make([]string, len(evs))
	fns := make([]func(*Record) (*Record, error), len(evs))
	for i, ev := range evs {
		ids[i], fns[i] = ev.CorrelationID, applying(ev, judge)
	}
	_, found, errs := s.updateAll(ctx, ids, fns)
	for i := range errs {
		if errs[i] == nil && !found[i] {
			errs[i] = &UntrustedError{Reason: ReasonUnknown}
		}
	}
	return errs
}

// try is one record's compare-and-set (or read) in updateAll.
type try struct {
	i      int
	riders []rider // later changes of the same record, folded into next
	out    []byte  // nil: a read (fn changes nothing in what was seen)
	old    []byte
	base   Record // old, parsed (marked)
	next   *Record
	cas    *redis.Cmd
	get    *redis.StringCmd
	zrem   *redis.IntCmd
}

// rider is a later change of a try's record: its index, and the error it
// was judged with (the record unchanged by it).
type rider struct {
	i   int
	err error
}

// all is the indices of t's changes, in order.
func (t *try) all() []int {
	out := []int{t.i}
	for _, r := range t.riders {
		out = append(out, r.i)
	}
	return out
}

// updateAll is updateRec for several records at once: the compare-and-sets
// of those this node saw, and which fn changes, go in one pipeline (with
// the publishing set's ZREMs), so a batch costs one round trip, not one
// each; the later changes of a record in the batch are folded into its
// one compare-and-set, in order. A record fn leaves as this node saw it is
// answered from what was seen when that is final (updateRec); otherwise
// its read, and its ZREM, go in the same pipeline. Every other change (a
// record never seen, a compare-and-set that found the record changed, a
// change to judge on what is there, a read that fn then changes) is then
// made one at a time, as updateRec does, in the given order: records are
// independent of each other, and each record's changes keep their order.
func (s *RedisStore) updateAll(ctx context.Context, ids []string, fns []func(*Record) (*Record, error)) (stored []*Record, found []bool, errs []error) {
	stored, found, errs = make([]*Record, len(ids)), make([]bool, len(ids)), make([]error, len(ids))
	var tries []try
	var rest []int
	reads := 0
	// by is the try that carries each record's changes; a record whose
	// changes go one at a time (rest) is -1 from then on.
	by := make(map[string]int, len(ids))
	for i, id := range ids {
		if k, ok := by[id]; ok {
			// A later change of a record in the batch: folded into the
			// same compare-and-set, judged on the record as the changes
			// before it leave it, which is what Redis holds if the
			// compare-and-set succeeds (a refusal changes nothing).
			if k >= 0 && tries[k].next != nil {
				next, err := fns[i](clone(tries[k].next))
				if err == nil && next != nil {
					tries[k].next = next
				}
				tries[k].riders = append(tries[k].riders, rider{i, err})
				continue
			}
			by[id] = -1
			rest = append(rest, i)
			continue
		}
		by[id] = -1
		old := s.seen.get(id)
		if old == nil {
			rest = append(rest, i)
			continue
		}
		if cur := s.seenFinal(id); cur != nil {
			if next, err := fns[i](cur); err == nil && next == nil {
				stored[i], found[i] = cur, true // final: nothing to change, nothing to check
				delete(by, id)
				continue
			}
		}
		cur, err := s.seen.parse(id, old)
		if err != nil {
			rest = append(rest, i)
			continue
		}
		base := *cur // fns[i] changes cur
		next, err := fns[i](cur)
		if err != nil {
			rest = append(rest, i) // judged on what this node saw: judge what is there
			continue
		}
		by[id] = len(tries)
		if next == nil {
			// Published or final as seen, so as stored too (updateRec):
			// read what is there.
			tries = append(tries, try{i: i})
			reads++
			continue
		}
		tries = append(tries, try{i: i, old: old, next: next, base: base})
	}
	for k := range tries {
		t := &tries[k]
		if t.next == nil {
			continue
		}
		out, err := json.Marshal(t.next)
		if err != nil {
			t.next = nil
			rest = append(rest, t.all()...)
			continue
		}
		t.out = out
	}
	tries = slices.DeleteFunc(tries, func(t try) bool { return t.old != nil && t.out == nil })
	if len(tries) > 1 || reads > 0 || (len(tries) == 1 && len(tries[0].riders) > 0) {
		pipe := s.rdb.Pipeline()
		for k := range tries {
			t := &tries[k]
			if t.out == nil {
				t.get = pipe.Get(ctx, s.recKey(ids[t.i]))
			} else {
				t.cas = casScript.EvalSha(ctx, pipe, []string{s.recKey(ids[t.i])}, t.old, t.out, marked(&t.base, t.next))
			}
			t.zrem = pipe.ZRem(ctx, s.publishingKey(), ids[t.i])
		}
		_, _ = pipe.Exec(ctx) // each command's own error is read below
		for _, t := range tries {
			id := ids[t.i]
			if t.get != nil {
				b, err := t.get.Bytes()
				if errors.Is(err, redis.Nil) && t.zrem.Err() == nil {
					s.seen.forget(id)
					continue // not found
				}
				var cur Record
				if err == nil && t.zrem.Err() == nil && json.Unmarshal(b, &cur) == nil {
					if next, ferr := fns[t.i](&cur); ferr == nil && next == nil {
						s.seen.put(id, b, cur.Final())
						stored[t.i], found[t.i] = &cur, true
						continue
					}
					s.seen.put(id, b, false) // fn changes it: from what is there
				}
				rest = append(rest, t.i)
				continue
			}
			v, err := t.cas.Result()
			if n, ok := v.(int64); err == nil && ok && n == 1 && t.zrem.Err() == nil {
				s.seen.putRec(id, t.out, t.next)
				stored[t.i], found[t.i] = t.next, true
				for _, r := range t.riders {
					if errs[r.i] = r.err; r.err == nil {
						stored[r.i] = clone(t.next)
					}
					found[r.i] = true
				}
				continue
			}
			if cur, ok := v.(string); err == nil && ok {
				s.seen.put(id, []byte(cur), false) // another node wrote it: fold into that
			}
			rest = append(rest, t.all()...)
		}
	} else {
		for _, t := range tries {
			rest = append(rest, t.all()...)
		}
	}
	slices.Sort(rest)
	for _, i := range rest {
		stored[i], found[i], errs[i] = s.updateRec(ctx, ids[i], fns[i])
	}
	return stored, found, errs
}

// Owner implements auth.Owners.
func (s *RedisStore) Owner(ctx context.Context, id string) (string, bool) {
	r, err := s.Get(ctx, id)
	if err != nil || r.Principal == "" {
		return "", false
	}
	return r.Principal, true
}
