package itemsvc

import (
	"crypto/sha256"
	"strconv"
	"sync"
)

// commandKey names a command by its CloudEvents source and id: 128 bits of
// a SHA-256 over both, so a remembered command costs 16 bytes whatever the
// length of its id.
type commandKey [16]byte

// commandOf returns the key of the command with source and id.
func commandOf(source, id string) commandKey {
	// Length-prefixed, so no two (source, id) pairs share an input; on
	// the stack when short, as it is for every command.
	var buf [256]byte
	b := strconv.AppendInt(buf[:0], int64(len(source)), 10)
	b = append(b, ':')
	b = append(b, source...)
	b = append(b, id...)
	sum := sha256.Sum256(b)
	var k commandKey
	copy(k[:], sum[:])
	return k
}

// answeredSet remembers the last cap commands answered; when full, the
// oldest is forgotten. It is safe for concurrent use.
type answeredSet struct {
	mu   sync.Mutex
	cap  int
	keys map[commandKey]struct{}
	ring []commandKey // in the order added; next overwrites the oldest
	next int
}

func newAnsweredSet(capacity int) *answeredSet {
	return &answeredSet{cap: capacity, keys: make(map[commandKey]struct{})}
}

// has reports whether k was answered (and is still remembered).
func (a *answeredSet) has(k commandKey) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.keys[k]
	return ok
}

// add remembers k, forgetting the oldest command if the set is full.
func (a *answeredSet) add(k commandKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.keys[k]; ok {
		return
	}
	if len(a.ring) < a.cap {
		a.ring = append(a.ring, k)
	} else {
		delete(a.keys, a.ring[a.next])
		a.ring[a.next] = k
		a.next = (a.next + 1) % a.cap
	}
	a.keys[k] = struct{}{}
}

// len is the number of commands remembered.
func (a *answeredSet) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.keys)
}
