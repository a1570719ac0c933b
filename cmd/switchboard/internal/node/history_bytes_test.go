package node

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
)

// TestMemoryHistoryBoundedUnderTakedowns: every takedown opens a corr:
// channel; on the memory backplane their history stays within
// hub.history.max_bytes however many takedowns pass, the oldest leaving
// first, and every takedown is still answered from its outcome. The count
// may pass the bound for a moment by what is being published then (an
// event's entries are counted before the oldest make room): the consumer's
// three partition lanes, an event of three channels each, at most slack.
func TestMemoryHistoryBoundedUnderTakedowns(t *testing.T) {
	const maxBytes, slack = 16 << 10, 8 << 10
	a := startTakedownApp(t, func(c *config.Config) {
		c.ItemSvc.Latency = 0
		c.Hub.History.MaxBytes = maxBytes
	})
	mem, ok := a.bp.(*hub.Memory)
	if !ok {
		t.Fatalf("backplane %T, want the memory one", a.bp)
	}
	base := a.base()
	ctx := context.Background()
	for i := 1; i <= 60; i++ {
		item := fmt.Sprintf("item-%d", i)
		status, body, err := postTakedown(ctx, http.DefaultClient, base, item, "Prefer", "wait=55")
		if err != nil || status != http.StatusOK {
			t.Fatalf("takedown %s: %d %s %v", item, status, body, err)
		}
		if got := mem.HistoryBytes(); got > maxBytes+slack {
			t.Fatalf("after takedown %d: history %d bytes, bound %d and %d being published", i, got, maxBytes, slack)
		}
	}
	if mem.Evicted() == 0 {
		t.Fatalf("60 takedowns evicted nothing from %d bytes of history", mem.HistoryBytes())
	}
	m := scrape(t, a)
	if got := m[`switchboard_history_evicted_total`]; got <= 0 {
		t.Errorf("switchboard_history_evicted_total %v, want the evictions", got)
	}
	if got := m[`switchboard_history_bytes`]; got <= 0 || got > maxBytes+slack {
		t.Errorf("switchboard_history_bytes %v, want within (0, %d]", got, maxBytes+slack)
	}
}
