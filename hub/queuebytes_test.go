package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestClientQueueBytes: a client that does not drain its queue ends as a
// slow consumer once the queue holds hub.client_queue_bytes, long before
// the frame bound, whether events or its own answers fill it; what a
// history read replays does not count.
func TestClientQueueBytes(t *testing.T) {
	const bound = 64 << 10
	big := strings.Repeat("x", 4000)
	tests := []struct {
		name string
		fill func(t *testing.T, h *Hub, c *Client, i int)
		// most is twice what the bound allows: far below the frame bound.
		most int
	}{
		{"events", func(t *testing.T, h *Hub, c *Client, i int) {
			ev := testEvent(i, "item.reported", "item-1", "")
			ev.JSON = []byte(fmt.Sprintf(`{"id":"ev-%d","pad":%q}`, i, big))
			if err := h.Publish(t.Context(), []string{"reports"}, ev); err != nil {
				t.Fatal(err)
			}
		}, 2 * bound / 4000},
		{"answers", func(t *testing.T, h *Hub, c *Client, i int) {
			c.Send([]byte(`{"type":"pong","id":"` + big + `"}`))
		}, 4 * bound / 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := NewMemory(MemoryConfig{})
			defer mem.Close()
			h, err := New(Config{ClientQueue: 1 << 20, ClientQueueBytes: bound}, mem, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Shutdown(context.Background())
			c, err := h.NewClient()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Subscribe(t.Context(), "reports", SubscribeOptions{}); err != nil {
				t.Fatal(err)
			}
			n := 0
			for ; c.Err() == nil; n++ {
				if n > tt.most {
					t.Fatalf("%d frames of 4 KB queued (%d bytes) and the client is still on", n, c.queuedBytes())
				}
				tt.fill(t, h, c, n+1)
			}
			if !errors.Is(c.Err(), ErrSlowConsumer) || h.Stats().SlowConsumers != 1 {
				t.Fatalf("ended with %v after %d frames, want a slow consumer", c.Err(), n)
			}
		})
	}

	t.Run("replayed history does not count", func(t *testing.T) {
		mem := NewMemory(MemoryConfig{HistorySize: 100})
		defer mem.Close()
		h, err := New(Config{ClientQueueBytes: bound}, mem, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Shutdown(context.Background())
		for i := 1; i <= 100; i++ {
			ev := testEvent(i, "item.reported", "item-1", "")
			ev.JSON = []byte(fmt.Sprintf(`{"id":"ev-%d","pad":%q}`, i, big))
			if err := h.Publish(t.Context(), []string{"reports"}, ev); err != nil {
				t.Fatal(err)
			}
		}
		c, err := h.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Subscribe(t.Context(), "reports", SubscribeOptions{After: &Oldest}); err != nil {
			t.Fatal(err)
		}
		h.Publish(t.Context(), []string{"reports"}, testEvent(101, "item.reported", "item-1", ""))
		if c.Err() != nil || c.queued() != 101 {
			t.Fatalf("after a replay of 400 KB: %v, %d queued", c.Err(), c.queued())
		}
		// Drained, the bound starts over.
		c.release(c.drain())
		if c.queuedBytes() != 0 {
			t.Fatalf("%d bytes counted after a drain", c.queuedBytes())
		}
	})
}

func (c *Client) queuedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
