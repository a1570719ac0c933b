package takedown

import (
	"hash/maphash"
	"sync"
)

// A node's Recorder folds the outcomes of its consumer's partitions into
// the store; the request waiting for one of them is often on the same
// node (always on a single node). Its corr: event comes back through the
// hub: on the Redis backplane an append and a pub/sub hop after the store
// already holds the outcome, and later still when the pub/sub connection
// was lost and resyncs. So the Recorder also tells the adapter (Wake) as
// soon as a trusted outcome is in the store, and the adapter wakes this
// node's calls waiting on that correlation ID: each reads the store, as a corr:
// event would have it do, and answers from what the store holds. Nothing
// is believed from the wake-up itself, and the corr: event still follows
// for every other listener (a waiter on another node, a WebSocket, the
// moderator page).
//
// Only held HTTP requests (follower) are woken so: a WebSocket's result
// frame must follow the outcome's event frame on its connection, so its
// call waits for the event as before.

// A Waker is told of each trusted outcome the Recorder folded into the
// store, before the event goes on to the hub.
type Waker interface {
	Wake(correlationID string)
}

// waiting is an adapter's calls that wait for an outcome on this node, by
// correlation ID, in shards (each request adds and removes its call).
// Several calls may wait on one ID (an idempotent retry joining it, a held GET);
// they are chained through call.nextWaiting. A shard's lock is never held
// with another lock: calls are woken after it is let go.
type waiting struct {
	once   sync.Once
	seed   maphash.Seed
	shards [waitingShards]waitingShard
}

const waitingShards = 16

type waitingShard struct {
	mu sync.Mutex
	m  map[string]*call
}

func (w *waiting) shard(id string) *waitingShard {
	w.once.Do(func() {
		w.seed = maphash.MakeSeed()
		for i := range w.shards {
			w.shards[i].m = map[string]*call{}
		}
	})
	return &w.shards[maphash.String(w.seed, id)%waitingShards]
}

func (w *waiting) add(c *call) {
	s := w.shard(c.id)
	s.mu.Lock()
	c.nextWaiting = s.m[c.id]
	s.m[c.id] = c
	s.mu.Unlock()
}

// remove takes c out, if it is in.
func (w *waiting) remove(c *call) {
	s := w.shard(c.id)
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, prev := s.m[c.id], (*call)(nil); p != nil; prev, p = p, p.nextWaiting {
		if p != c {
			continue
		}
		switch {
		case prev != nil:
			prev.nextWaiting = c.nextWaiting
		case c.nextWaiting != nil:
			s.m[c.id] = c.nextWaiting
		default:
			delete(s.m, c.id)
		}
		c.nextWaiting = nil
		return
	}
}

// wake wakes every call waiting on id, once the shard's lock is let go: a
// wake-up takes the call's own lock.
func (w *waiting) wake(id string) {
	var buf [4]*call
	calls := buf[:0]
	s := w.shard(id)
	s.mu.Lock()
	for c := s.m[id]; c != nil; c = c.nextWaiting {
		calls = append(calls, c)
	}
	s.mu.Unlock()
	for _, c := range calls {
		c.wake()
	}
}

// Wake implements Waker: this node's held requests waiting for the
// takedown (or declared command) id read the store now.
func (a *Adapter) Wake(id string) { a.waiting.wake(id) }
