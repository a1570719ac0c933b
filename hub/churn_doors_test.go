package hub

import (
	"fmt"
	"net/url"
	"testing"
)

// TestChannelChurnThroughTheDoors is issue 11's channel churn made from
// outside, over real sockets: a WebSocket client subscribes to and leaves
// 3,000 distinct item: channels, and SSE clients open and close streams on
// 1,000 more. Before, each kept its registry entry and its empty log for
// hub.history.ttl (about 46 MB after 200,000); now, once the connections
// are gone, neither the hub nor the memory backplane holds any of them,
// while a channel that holds an event keeps it.
func TestChannelChurnThroughTheDoors(t *testing.T) {
	th := newTestHub(t, Config{}, MemoryConfig{})
	th.publish(t, 1, "item:kept") // a log with an event stays

	const wsChannels = 3000
	c := dialWS(t, th.srv.URL, "")
	const batch = 50 // frames in flight before their answers are read
	for start := 0; start < wsChannels; start += batch {
		for i := start; i < start+batch; i++ {
			writeFrame(t, c, fmt.Sprintf(`{"type":"subscribe","id":"s%d","channel":"item:ws-%d"}`, i, i))
			writeFrame(t, c, fmt.Sprintf(`{"type":"unsubscribe","id":"u%d","channel":"item:ws-%d"}`, i, i))
		}
		for range 2 * batch {
			if f := readFrame(t, c); f["type"] != "ack" {
				t.Fatalf("got %v, want an ack", f)
			}
		}
	}
	if hubs, logs := registered(th.Hub, th.mem); hubs != 0 || logs != 1 {
		t.Fatalf("after %d channels came and went on an open WebSocket: %d hub entries and %d logs, want 0 and 1", wsChannels, hubs, logs)
	}

	const streams, perStream = 50, 20
	for s := range streams {
		q := url.Values{}
		for k := range perStream {
			q.Add("channel", fmt.Sprintf("item:sse-%d-%d", s, k))
		}
		sub := openSSE(t, th.srv.URL, "?"+q.Encode(), "")
		sub.resp.Body.Close()
	}
	c.CloseNow()
	eventuallyHub(t, func() bool { // every connection gone
		st := th.Stats()
		return st.WSConnections == 0 && st.SSEConnections == 0 && st.Subscriptions == 0
	})
	if hubs, logs := registered(th.Hub, th.mem); hubs != 0 || logs != 1 {
		t.Fatalf("after %d channels came and went through both doors: %d hub entries and %d logs, want 0 and 1 (item:kept)",
			wsChannels+streams*perStream, hubs, logs)
	}

	// The channel with an event still replays it.
	sub := openSSE(t, th.srv.URL, "?channel=item:kept&from=oldest", "")
	if ev := sub.next(t); ev.Kind != "event" || ev.ID != "ev-1" {
		t.Fatalf("item:kept replayed %+v, want ev-1", ev)
	}
}
