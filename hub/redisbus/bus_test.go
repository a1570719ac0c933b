package redisbus

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitFor = 10 * time.Second

func newBus(t *testing.T, srv redistest.Server, cfg Config) *Bus {
	t.Helper()
	cfg.Prefix = srv.Prefix
	b, err := New(t.Context(), srv.Client(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func ev(n int) *hub.Event {
	id := fmt.Sprintf("e-%d", n)
	return &hub.Event{ID: id, Source: "/t", Type: "item.reported", Subject: "item-1", CorrelationID: "c-1",
		JSON: []byte(fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/t","type":"item.reported","data":{"n":%d}}`, id, n))}
}

// collector gathers what a Listen delivers.
type collector struct {
	mu  sync.Mutex
	got []hub.Entry
	c   chan struct{}
}

func newCollector() *collector { return &collector{c: make(chan struct{}, 1000)} }

func (c *collector) deliver(e hub.Entry) {
	c.mu.Lock()
	c.got = append(c.got, e)
	c.mu.Unlock()
	c.c <- struct{}{}
}

func (c *collector) wait(t *testing.T, n int) []hub.Entry {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		c.mu.Lock()
		if len(c.got) >= n {
			out := append([]hub.Entry(nil), c.got...)
			c.mu.Unlock()
			return out
		}
		c.mu.Unlock()
		select {
		case <-c.c:
		case <-deadline:
			t.Fatalf("got %d entries, want %d", len(c.got), n)
		}
	}
}

// TestBus runs on miniredis and on the real server (required in CI): an
// append on one node is announced to another node that listens, and every
// node reads the same history with the same cursors.
func TestBus(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			a := newBus(t, srv, Config{HistorySize: 3})
			b := newBus(t, srv, Config{HistorySize: 3})
			col := newCollector()
			cancel, err := b.Listen(ctx, "item:1", col.deliver)
			if err != nil {
				t.Fatal(err)
			}
			defer cancel()
			top, err := a.Read(ctx, "item:1", nil)
			if err != nil || top.Top.Offset != 0 || top.Top.Epoch == "" {
				t.Fatalf("empty top %+v %v", top, err)
			}
			for i := 1; i <= 5; i++ {
				if err := a.Publish(ctx, []string{"item:1", "reports"}, ev(i)); err != nil {
					t.Fatal(err)
				}
			}
			got := col.wait(t, 5)
			for i, e := range got {
				if e.Pos.Offset != uint64(i+1) || e.Pos.Epoch != top.Top.Epoch || e.Event.ID != fmt.Sprintf("e-%d", i+1) || e.Event.CorrelationID != "c-1" {
					t.Fatalf("entry %d: %+v", i, e)
				}
			}
			ep := top.Top.Epoch
			tests := []struct {
				name  string
				after *hub.Position
				gap   bool
				want  []uint64
			}{
				{"top", nil, false, nil},
				{"covered", &hub.Position{Epoch: ep, Offset: 2}, false, []uint64{3, 4, 5}},
				{"at top", &hub.Position{Epoch: ep, Offset: 5}, false, nil},
				{"left history", &hub.Position{Epoch: ep, Offset: 1}, true, nil},
				{"other epoch", &hub.Position{Epoch: "nope", Offset: 3}, true, nil},
				{"future", &hub.Position{Epoch: ep, Offset: 9}, true, nil},
				{"oldest", &hub.Oldest, false, []uint64{3, 4, 5}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					r, err := b.Read(ctx, "item:1", tt.after)
					if err != nil {
						t.Fatal(err)
					}
					var offs []uint64
					for _, e := range r.Entries {
						offs = append(offs, e.Pos.Offset)
					}
					if r.Gap != tt.gap || r.Top.Offset != 5 || fmt.Sprint(offs) != fmt.Sprint(tt.want) {
						t.Fatalf("gap=%v top=%v entries=%v, want gap=%v %v", r.Gap, r.Top, offs, tt.gap, tt.want)
					}
				})
			}
			// The other channel got its own log.
			if r, _ := b.Read(ctx, "reports", &hub.Oldest); len(r.Entries) != 3 || r.Top.Offset != 5 {
				t.Fatalf("reports: %+v", r)
			}
		})
	}
}

// TestBusExpiry: entries older than history.ttl leave history.
func TestBusExpiry(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			b := newBus(t, srv, Config{HistorySize: 10, HistoryTTL: time.Hour})
			now := time.Now()
			b.now = func() time.Time { return now }
			b.Publish(ctx, []string{"c"}, ev(1))
			now = now.Add(2 * time.Hour)
			b.Publish(ctx, []string{"c"}, ev(2))
			r, _ := b.Read(ctx, "c", nil)
			if r2, _ := b.Read(ctx, "c", &hub.Position{Epoch: r.Top.Epoch, Offset: 0}); !r2.Gap {
				t.Fatalf("an expired entry still covers a resume: %+v", r2)
			}
			if r3, _ := b.Read(ctx, "c", &hub.Position{Epoch: r.Top.Epoch, Offset: 1}); r3.Gap || len(r3.Entries) != 1 {
				t.Fatalf("want the fresh entry: %+v", r3)
			}
		})
	}
}

// TestBusExpiryTrimsHead: an append drops every expired entry at the head
// of history, however many (the trim looks at the head alone first, then
// goes on in batches), keeps the entries that are still fresh, and forgets
// the keys of what it dropped: an expired event published again is new.
func TestBusExpiryTrimsHead(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			b := newBus(t, srv, Config{HistorySize: 100, HistoryTTL: time.Hour})
			now := time.Now()
			b.now = func() time.Time { return now }
			for i := 1; i <= 40; i++ {
				if err := b.Publish(ctx, []string{"c"}, ev(i)); err != nil {
					t.Fatal(err)
				}
			}
			now = now.Add(30 * time.Minute)
			for i := 41; i <= 42; i++ {
				b.Publish(ctx, []string{"c"}, ev(i))
			}
			now = now.Add(45 * time.Minute) // 1-40 expired, 41-42 not
			b.Publish(ctx, []string{"c"}, ev(43))
			r, offs := historyOffsets(ctx, t, b, "c")
			if fmt.Sprint(offs) != "[41 42 43]" {
				t.Fatalf("history holds %v, want [41 42 43]", offs)
			}
			if r2, _ := b.Read(ctx, "c", &hub.Position{Epoch: r.Top.Epoch, Offset: 39}); !r2.Gap {
				t.Fatalf("an expired entry still covers a resume: %+v", r2)
			}
			b.Publish(ctx, []string{"c"}, ev(1)) // left history: new again
			if r3, _ := b.Read(ctx, "c", nil); r3.Top.Offset != 44 {
				t.Fatalf("top %v after publishing an expired event again, want 44", r3.Top)
			}
		})
	}
}

// TestBusAppendReadsNoEntry: while the oldest entry of a log is within
// its TTL, an append reads no entry (each read copies an event into the
// script); the entries MAXLEN drops still leave the keys of history, so
// such an event published again is new.
func TestBusAppendReadsNoEntry(t *testing.T) {
	n := redistest.StartServer(t)
	b, err := New(t.Context(), n.Client(), Config{HistorySize: 5, HistoryTTL: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	c := n.Client()
	defer c.Close()
	if err := b.Publish(ctx, []string{"c"}, ev(1)); err != nil { // makes the log
		t.Fatal(err)
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 8; i++ {
		if err := b.Publish(ctx, []string{"c"}, ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	stats, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stats, "cmdstat_xrange:") {
		t.Fatalf("appends to a log whose head is fresh read entries:\n%s", stats)
	}
	_, offs := historyOffsets(ctx, t, b, "c")
	if fmt.Sprint(offs) != "[4 5 6 7 8]" {
		t.Fatalf("history holds %v, want [4 5 6 7 8]", offs)
	}
	if err := b.Publish(ctx, []string{"c"}, ev(3)); err != nil { // dropped by MAXLEN: new again
		t.Fatal(err)
	}
	if err := b.Publish(ctx, []string{"c"}, ev(7)); err != nil { // still held: kept once
		t.Fatal(err)
	}
	if r, _ := b.Read(ctx, "c", nil); r.Top.Offset != 9 {
		t.Fatalf("top %v, want 9 (event 3 appended again, event 7 not)", r.Top)
	}
}

// TestBusExpiriesSetOnceInAWhile: an append gives a channel's keys 9/8 of
// the TTL to live, so they outlive it by the TTL at least; the appends of
// the next eighth of the TTL leave the expiries as they are (three
// commands fewer each), and the first one after it sets them again, as
// does one from a node whose clock is behind. A channel whose meta hash a
// read made, without that time, has them set by its first append.
func TestBusExpiriesSetOnceInAWhile(t *testing.T) {
	const ttl = time.Hour
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			b := newBus(t, srv, Config{HistorySize: 10, HistoryTTL: ttl})
			now := time.Now()
			b.now = func() time.Time { return now }
			rdb := b.Client()
			keys := func(ch string) []string {
				meta, log, _ := b.keys(ch)
				return []string{meta, log, b.idsKey(ch)}
			}
			// lives checks that each key of ch has between lo and hi to live.
			lives := func(step, ch string, lo, hi time.Duration) {
				t.Helper()
				for _, k := range keys(ch) {
					d, err := rdb.PTTL(ctx, k).Result()
					if err != nil {
						t.Fatal(err)
					}
					if d <= lo || d > hi {
						t.Fatalf("%s: %s has %v to live, want more than %v and at most %v", step, k, d, lo, hi)
					}
				}
			}
			if err := b.Publish(ctx, []string{"c"}, ev(1)); err != nil {
				t.Fatal(err)
			}
			lives("first append", "c", ttl, ttl+ttl/8)
			for _, k := range keys("c") { // a mark: set again or not
				rdb.Expire(ctx, k, 3*ttl)
			}
			now = now.Add(ttl/8 - time.Minute)
			if err := b.Publish(ctx, []string{"c"}, ev(2)); err != nil {
				t.Fatal(err)
			}
			if err := b.PublishBatch(ctx, []hub.Publication{{Event: ev(3), Channels: []string{"c"}}}); err != nil {
				t.Fatal(err)
			}
			lives("appends within an eighth of the TTL", "c", 3*ttl-time.Minute, 3*ttl)
			now = now.Add(time.Minute)
			if err := b.PublishBatch(ctx, []hub.Publication{{Event: ev(4), Channels: []string{"c"}}}); err != nil {
				t.Fatal(err)
			}
			lives("the append an eighth of the TTL later", "c", ttl, ttl+ttl/8)
			// A node whose clock is behind the one that set them last
			// sets them again.
			for _, k := range keys("c") {
				rdb.Expire(ctx, k, 3*ttl)
			}
			now = now.Add(-time.Minute)
			if err := b.Publish(ctx, []string{"c"}, ev(5)); err != nil {
				t.Fatal(err)
			}
			lives("an append with a clock behind", "c", ttl, ttl+ttl/8)
			if r, _ := b.Read(ctx, "c", nil); r.Top.Offset != 5 {
				t.Fatalf("top %v, want 5", r.Top)
			}

			if _, err := b.Read(ctx, "d", nil); err != nil { // makes d's meta hash
				t.Fatal(err)
			}
			if err := b.Publish(ctx, []string{"d"}, ev(1)); err != nil {
				t.Fatal(err)
			}
			lives("first append to a channel a read made", "d", ttl, ttl+ttl/8)
		})
	}
}

// TestBusLostAnnouncement: an entry whose announcement never arrived (as
// after a dropped connection) is filled in from history by the hub's
// subscribers, in order, once.
func TestBusLostAnnouncement(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			b := newBus(t, srv, Config{})
			c := subscribed(t, b, "reports")
			b.Publish(ctx, []string{"reports"}, ev(1))
			// Entry 2 goes into history without an announcement.
			meta, log, _ := b.keys("reports")
			rdb := b.Client()
			top, _ := rdb.HIncrBy(ctx, meta, "top", 1).Result()
			rdb.XAdd(ctx, &redis.XAddArgs{Stream: log, ID: fmt.Sprintf("%d-0", top), Values: []any{"h", header(ev(2)), "j", string(ev(2).JSON), "t", time.Now().UnixMilli()}}).Err()
			b.Publish(ctx, []string{"reports"}, ev(3))
			got := collect(t, c, 3)
			if fmt.Sprint(got) != "[e-1 e-2 e-3]" {
				t.Fatalf("got %v", got)
			}
		})
	}
}

// TestBusIdempotentPublish: an event published again (a record Kafka
// delivered twice, or a retried Publish) is kept and announced once while
// history holds it, on any node; the keys kept for that stay bounded by
// history.
func TestBusIdempotentPublish(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			a := newBus(t, srv, Config{HistorySize: 2})
			b := newBus(t, srv, Config{HistorySize: 2})
			col := newCollector()
			cancel, err := b.Listen(ctx, "reports", col.deliver)
			if err != nil {
				t.Fatal(err)
			}
			defer cancel()
			for _, p := range []*Bus{a, b, a} {
				if err := p.Publish(ctx, []string{"item:1", "reports"}, ev(1)); err != nil {
					t.Fatal(err)
				}
			}
			a.Publish(ctx, []string{"reports"}, ev(2))
			got := col.wait(t, 2)
			if len(got) != 2 || got[0].Event.ID != "e-1" || got[1].Event.ID != "e-2" || got[1].Pos.Offset != 2 {
				t.Fatalf("announced %+v", got)
			}
			for ch, want := range map[string]int{"item:1": 1, "reports": 2} {
				if r, _ := b.Read(ctx, ch, &hub.Oldest); len(r.Entries) != want || r.Top.Offset != uint64(want) {
					t.Fatalf("%s holds %+v, want %d entries", ch, r, want)
				}
			}
			// Once it has left history, the same event is appended again.
			a.Publish(ctx, []string{"reports"}, ev(3))
			a.Publish(ctx, []string{"reports"}, ev(1))
			r, _ := b.Read(ctx, "reports", &hub.Oldest)
			if len(r.Entries) != 2 || r.Entries[1].Event.ID != "e-1" || r.Top.Offset != 4 {
				t.Fatalf("reports holds %+v", r)
			}
			if n, _ := a.Client().ZCard(ctx, a.idsKey("reports")).Result(); n != 2 {
				t.Fatalf("%d event keys kept for a history of 2", n)
			}
		})
	}
}

// TestBusNewEpoch: Redis lost a channel's data (a restart without
// persistence) and the first entry of the new epoch was never announced:
// a live subscriber is told with a gap, then gets the new epoch from its
// start, in order, once.
func TestBusNewEpoch(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			b := newBus(t, srv, Config{})
			c := subscribed(t, b, "reports")
			b.Publish(ctx, []string{"reports"}, ev(1))
			meta, log, _ := b.keys("reports")
			rdb := b.Client()
			rdb.Del(ctx, meta, log, b.cfg.Prefix+"{reports}:ids")
			// Entry 1 of the new epoch, unannounced; then entry 2, announced.
			rdb.HSet(ctx, meta, "epoch", "newepoch01", "top", 1)
			rdb.XAdd(ctx, &redis.XAddArgs{Stream: log, ID: "1-0", Values: []any{"h", header(ev(2)), "j", string(ev(2).JSON), "t", time.Now().UnixMilli()}})
			b.Publish(ctx, []string{"reports"}, ev(3))
			got := collect(t, c, 4)
			if fmt.Sprint(got) != "[e-1 gap e-2 e-3]" {
				t.Fatalf("got %v", got)
			}
		})
	}
}

// followed is a channel followed through a hub over the bus: its events'
// ids, and "gap" for each gap, in order.
type followed struct {
	mu   sync.Mutex
	got  []string
	wake chan struct{}
}

// subscribed returns channel followed through a hub over b.
func subscribed(t *testing.T, b *Bus, channel string) *followed {
	t.Helper()
	h, err := hub.New(hub.Config{}, b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	f := &followed{wake: make(chan struct{}, 1)}
	stop, _, err := h.Follow(t.Context(), channel, nil, func(ev *hub.Event) {
		f.mu.Lock()
		if ev == nil {
			f.got = append(f.got, "gap")
		} else {
			f.got = append(f.got, ev.ID)
		}
		f.mu.Unlock()
		select {
		case f.wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return f
}

// collect waits until f has n events and gaps, and takes them.
func collect(t *testing.T, f *followed, n int) []string {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		f.mu.Lock()
		if len(f.got) >= n {
			got := f.got[:n:n]
			f.got = f.got[n:]
			f.mu.Unlock()
			return got
		}
		got := slices.Clone(f.got)
		f.mu.Unlock()
		select {
		case <-f.wake:
		case <-deadline:
			t.Fatalf("got %v, want %d", got, n)
		}
	}
}

// TestBusPublishAfterScriptFlush: a publish to several channels goes out
// as one pipeline of cached scripts; when the server no longer holds the
// script (a restart, SCRIPT FLUSH), each channel's script is sent whole and
// the event still lands in every channel once.
func TestBusPublishAfterScriptFlush(t *testing.T) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			ctx := t.Context()
			b := newBus(t, srv, Config{})
			if err := b.Publish(ctx, []string{"item:1", "reports", "corr:c-1"}, ev(1)); err != nil {
				t.Fatal(err)
			}
			if err := b.Client().ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, []string{"item:1", "reports", "corr:c-1"}, ev(2)); err != nil {
				t.Fatal(err)
			}
			for _, ch := range []string{"item:1", "reports", "corr:c-1"} {
				r, err := b.Read(ctx, ch, &hub.Oldest)
				if err != nil || len(r.Entries) != 2 || r.Entries[0].Event.ID != "e-1" || r.Entries[1].Event.ID != "e-2" {
					t.Fatalf("%s holds %+v (%v)", ch, r, err)
				}
			}
		})
	}
}

// historyOffsets reads ch's whole history and the offsets of its entries.
func historyOffsets(ctx context.Context, t *testing.T, b *Bus, ch string) (hub.Replay, []uint64) {
	t.Helper()
	r, err := b.Read(ctx, ch, &hub.Oldest)
	if err != nil {
		t.Fatal(err)
	}
	var offs []uint64
	for _, e := range r.Entries {
		offs = append(offs, e.Pos.Offset)
	}
	return r, offs
}
