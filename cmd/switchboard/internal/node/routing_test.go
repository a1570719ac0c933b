package node

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
)

// postsRoute is the route of SPEC §2.1's example, as docs/configuration.md
// shows it.
var postsRoute = config.TopicRoute{
	Name:     "items.posted",
	Types:    []string{"item.posted", "item.updated"},
	Channels: []string{"group:{data.group_id}", "feed:{data.author_id}", "item:{subject}"},
}

// eventIDs reads n events from s and returns their CloudEvents ids.
func eventIDs(t *testing.T, s *sseStream, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		var ev struct {
			ID string `json:"id"`
		}
		data := s.next(t)["data"]
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %s: %v", data, err)
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

// TestRouteAnyTopic: records on a topic added to kafka.topics reach the
// channels its templates name from data members (strings and integers),
// over the embedded broker, a real consumer group and real SSE streams. A
// record whose member is missing, or makes no valid channel, still reaches
// the other channels and is counted; a type the route does not list
// reaches none and is counted; the default topics route as before.
func TestRouteAnyTopic(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) {
		c.Kafka.Topics = append(c.Kafka.Topics, postsRoute)
	})
	group := openSSE(t, a.base()+"/v1/sse?channel=group:group-3")
	feed := openSSE(t, a.base()+"/v1/sse?channel=feed:user-42")
	feedNum := openSSE(t, a.base()+"/v1/sse?channel=feed:42")
	item := openSSE(t, a.base()+"/v1/sse?channel=item:item-7")
	reports := openSSE(t, a.base()+"/v1/sse?channel=reports")
	waitReady(t, a)

	posted := func(id, typ string, data map[string]any) kafka.Message {
		return binaryMsg("items.posted", id, typ, "item-7", "", data)
	}
	produce(t, a.kafkaAddr,
		// 1: a group post: its group, its author's feed, its item.
		posted("p1", "item.posted", map[string]any{"item_id": "item-7", "group_id": "group-3", "author_id": "user-42", "title": "Bike", "posted_at": "2026-12-01T10:00:00Z"}),
		// 2: a feed post, no group_id (structured mode): feed and item.
		structuredMsg("items.posted", "p2", "item.posted", "item-7", "", map[string]any{"item_id": "item-7", "author_id": "user-42"}),
		// 3: a type the route does not list: nowhere.
		posted("p3", "item.deleted", map[string]any{"item_id": "item-7", "group_id": "group-3", "author_id": "user-42"}),
		// 4: an update whose author is an integer, and a null group_id.
		posted("p4", "item.updated", map[string]any{"item_id": "item-7", "group_id": nil, "author_id": 42}),
		// 5: a group_id that makes no valid channel, and a nested author.
		posted("p5", "item.updated", map[string]any{"item_id": "item-7", "group_id": "group 3", "author_id": map[string]any{"id": "user-42"}}),
		// 6: the group again: p3's absence between p1 and p6 shows it was not routed.
		posted("p6", "item.updated", map[string]any{"item_id": "item-7", "group_id": "group-3", "author_id": "user-42"}),
	)
	// The same key, so one partition, so this order on every channel.
	if got, want := eventIDs(t, group, 2), []string{"p1", "p6"}; !slices.Equal(got, want) {
		t.Errorf("group:group-3 got %v, want %v", got, want)
	}
	if got, want := eventIDs(t, feed, 3), []string{"p1", "p2", "p6"}; !slices.Equal(got, want) {
		t.Errorf("feed:user-42 got %v, want %v", got, want)
	}
	if got, want := eventIDs(t, feedNum, 1), []string{"p4"}; !slices.Equal(got, want) {
		t.Errorf("feed:42 got %v, want %v", got, want)
	}
	if got, want := eventIDs(t, item, 5), []string{"p1", "p2", "p4", "p5", "p6"}; !slices.Equal(got, want) {
		t.Errorf("item:item-7 got %v, want %v", got, want)
	}

	// The default topics are routed as ever.
	produce(t, a.kafkaAddr, binaryMsg("items.reported", "r1", "item.reported", "item-7", "", map[string]any{"item_id": "item-7"}))
	if got := eventIDs(t, reports, 1); got[0] != "r1" {
		t.Errorf("reports got %v, want r1", got)
	}
	if got := eventIDs(t, item, 1); got[0] != "r1" {
		t.Errorf("item:item-7 got %v after the posts, want r1", got)
	}

	eventually(t, "every post committed", func() bool { return a.consumer.TopicStats()["items.posted"].Consumed == 6 })
	// Missing: p2's group_id, p4's group_id (null) and p5's author_id (an
	// object). Invalid: p5's group_id. The report has no correlation ID.
	if got, want := a.consumer.RouteStats()["items.posted"], (consumers.RouteStats{Filtered: 1, Missing: 3, Invalid: 1}); got != want {
		t.Errorf("items.posted route stats %+v, want %+v", got, want)
	}
	m := scrape(t, a)
	for k, want := range map[string]float64{
		`switchboard_route_skipped_total{reason=type,topic=items.posted}`:      1,
		`switchboard_route_skipped_total{reason=missing,topic=items.posted}`:   3,
		`switchboard_route_skipped_total{reason=invalid,topic=items.posted}`:   1,
		`switchboard_route_skipped_total{reason=missing,topic=items.reported}`: 1,
		`switchboard_route_skipped_total{reason=type,topic=items.reported}`:    0,
		`switchboard_consumed_total{topic=items.posted}`:                       6,
	} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
}

// TestDemoRoutesPosts: --demo routes items.posted when kafka.topics does
// not name it, and its generator's posts reach group: and feed: channels
// with the event shape docs/configuration.md describes.
func TestDemoRoutesPosts(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) {
		c.Demo.Enabled = true
		c.Demo.Rate = 50
	})
	waitReady(t, a)
	// The demo posts random items: follow every group of the demo world
	// (group-1 … group-50), from the oldest event each holds.
	q := "from=oldest"
	for g := 1; g <= 50; g++ {
		q += "&channel=group:group-" + strconv.Itoa(g)
	}
	groups := openSSE(t, a.base()+"/v1/sse?"+q)
	ev := groups.next(t)
	if ev["event"] != "item.posted" {
		t.Fatalf("got %v, want an item.posted", ev)
	}
	var got struct {
		Type    string `json:"type"`
		Subject string `json:"subject"`
		Data    struct {
			ItemID   string `json:"item_id"`
			GroupID  string `json:"group_id"`
			AuthorID string `json:"author_id"`
			Title    string `json:"title"`
			PostedAt string `json:"posted_at"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(ev["data"]), &got); err != nil {
		t.Fatal(err)
	}
	d := got.Data
	if got.Subject != d.ItemID || !strings.HasPrefix(d.ItemID, "item-") || !strings.HasPrefix(d.GroupID, "group-") ||
		!strings.HasPrefix(d.AuthorID, "user-") || d.Title == "" || d.PostedAt == "" {
		t.Errorf("post %s: want subject = item_id, a group_id, an author_id, a title and posted_at", ev["data"])
	}
	// Its author's feed carries the author's posts too.
	feed := openSSE(t, a.base()+"/v1/sse?channel=feed:"+d.AuthorID+"&from=oldest")
	if ev := feed.next(t); ev["event"] != "item.posted" {
		t.Errorf("feed:%s got %v, want an item.posted", d.AuthorID, ev)
	}
}
