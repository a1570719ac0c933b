package auth

import (
	"context"
	"sync"
	"time"
)

// OwnerTable is a test Owners: who asked for which correlation ID, kept for
// a TTL. In production the takedown outcome store answers.
type OwnerTable struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]owned
}

type owned struct {
	name string
	exp  time.Time
}

// NewOwnerTable returns an empty table whose entries last ttl.
func NewOwnerTable(ttl time.Duration) *OwnerTable {
	return &OwnerTable{ttl: ttl, m: map[string]owned{}}
}

// Record notes that principal asked for correlationID.
func (t *OwnerTable) Record(correlationID, principal string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) > 1024 && len(t.m)%1024 == 0 {
		for k, v := range t.m {
			if now.After(v.exp) {
				delete(t.m, k)
			}
		}
	}
	t.m[correlationID] = owned{name: principal, exp: now.Add(t.ttl)}
}

// Owner returns who asked for correlationID.
func (t *OwnerTable) Owner(_ context.Context, correlationID string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.m[correlationID]
	if !ok || time.Now().After(o.exp) {
		return "", false
	}
	return o.name, true
}
