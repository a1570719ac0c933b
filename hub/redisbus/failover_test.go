package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// failoverWait bounds waiting for a failover or a delivery: a deadline
// against hangs, never a measure.
const failoverWait = 60 * time.Second

// switchNodeTimeout is the cluster-node-timeout of a test of a coordinated
// switch: far longer than any stall of a busy machine, so the cluster
// fails no live master over on its own.
const switchNodeTimeout = 15 * time.Second

// spread returns n channels per master of the cluster: channels whose keys
// land on each master.
func spread(t testing.TB, c *redistest.Cluster, n int) (chans []string, master map[string]*redistest.Node) {
	t.Helper()
	master = map[string]*redistest.Node{}
	per := map[string]int{}
	b := &Bus{cfg: Config{Prefix: DefaultPrefix}}
	for i := 0; len(chans) < n*len(per) || len(per) < 3 || len(chans) < 3*n; i++ {
		ch := "item:" + strconv.Itoa(i)
		m := c.MasterOf(t, b.liveName(ch))
		if per[m.Addr] >= n {
			continue
		}
		per[m.Addr]++
		master[ch] = m
		chans = append(chans, ch)
		if i > 1000 {
			t.Fatalf("channels do not spread over 3 masters: %v", per)
		}
	}
	return chans, master
}

// node is one Switchboard node of a test: a bus, a hub over it, and one
// client subscribed to the channels.
type node struct {
	bus  *Bus
	hub  *hub.Hub
	w    *watcher
	logs *lockedBuffer
}

// watcher records what one hub client saw per channel: event IDs in order,
// "gap" where a gap notice was queued.
type watcher struct {
	mu   sync.Mutex
	seen map[string][]string
	at   map[string]time.Time // when each event ID was first seen
	c    chan struct{}
	logs *lockedBuffer // what the node's bus logged, for a failure's message
}

func startNode(t testing.TB, rdb redis.UniversalClient, prefix string, chans []string) *node {
	t.Helper()
	logs := &lockedBuffer{}
	bus, err := New(t.Context(), rdb, Config{Prefix: prefix, HistorySize: 10000}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(hub.Config{ClientQueue: 1 << 20, ClientQueueBytes: 1 << 30}, bus, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), failoverWait)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		bus.Close()
	})
	n := &node{bus: bus, hub: h, logs: logs, w: &watcher{logs: logs, seen: map[string][]string{}, at: map[string]time.Time{}, c: make(chan struct{}, 1)}}
	for _, ch := range chans {
		if _, err := c.Subscribe(t.Context(), ch, hub.SubscribeOptions{OnEvent: n.w.on(ch)}); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func (w *watcher) on(ch string) func(*hub.Event) {
	return func(ev *hub.Event) {
		w.mu.Lock()
		if ev == nil {
			w.seen[ch] = append(w.seen[ch], "gap")
		} else {
			w.seen[ch] = append(w.seen[ch], ev.ID)
			if _, ok := w.at[ev.ID+"@"+ch]; !ok {
				w.at[ev.ID+"@"+ch] = time.Now()
			}
		}
		w.mu.Unlock()
		select {
		case w.c <- struct{}{}:
		default:
		}
	}
}

// waitFor waits until the watcher saw id on every channel.
func (w *watcher) waitFor(t testing.TB, chans []string, id string) {
	t.Helper()
	deadline := time.After(failoverWait)
	for {
		w.mu.Lock()
		all := true
		for _, ch := range chans {
			all = all && slices.Contains(w.seen[ch], id)
		}
		w.mu.Unlock()
		if all {
			return
		}
		select {
		case <-w.c:
		case <-deadline:
			w.mu.Lock()
			defer w.mu.Unlock()
			t.Fatalf("%s not seen on every channel: %v\nthe node's bus:\n%s", id, w.seen, w.logs.String())
		}
	}
}

// check asserts that every channel saw every acknowledged event, in order,
// once per stretch between gap notices; an event may be missing only where
// a gap notice says so.
func (w *watcher) check(t testing.TB, name string, chans []string, acked []string) (gaps int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range chans {
		seen := w.seen[ch]
		gapped := slices.Contains(seen, "gap")
		if gapped {
			gaps++
		}
		last := -1
		got := map[string]bool{}
		for _, id := range seen {
			if id == "gap" {
				last = -1
				clear(got)
				continue
			}
			n, _ := strconv.Atoi(strings.TrimPrefix(id, "e-"))
			if got[id] || n <= last {
				t.Errorf("%s %s: %s again or out of order without a gap: %v", name, ch, id, seen)
				break
			}
			got[id], last = true, n
		}
		for _, id := range acked {
			if !slices.Contains(seen, id) && !gapped {
				t.Errorf("%s %s: %s silently lost: %v", name, ch, id, seen)
				break
			}
		}
	}
	return gaps
}

// publisher publishes numbered events to every channel, retrying each
// until it is acknowledged, as the Kafka consumer does.
type publisher struct {
	bus   *Bus
	chans []string
	mu    sync.Mutex
	acked []string
	ackAt map[string]time.Time
	// startAt is when each event's first publish attempt began.
	startAt map[string]time.Time
	errs    atomic.Int64
	next    atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	paused  atomic.Bool
}

func startPublisher(b *Bus, chans []string) *publisher {
	p := &publisher{bus: b, chans: chans, ackAt: map[string]time.Time{}, startAt: map[string]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *publisher) run() {
	defer close(p.done)
	for i := 1; ; i++ {
		e := ev(i)
		p.mu.Lock()
		p.startAt[e.ID] = time.Now()
		p.mu.Unlock()
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			// A short attempt, retried: how soon the publisher goes on
			// after a failover is then the failover's cost, not this
			// timeout's.
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			err := p.bus.Publish(ctx, p.chans, e)
			cancel()
			if err == nil {
				break
			}
			p.errs.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
		p.mu.Lock()
		p.acked = append(p.acked, e.ID)
		p.ackAt[e.ID] = time.Now()
		p.mu.Unlock()
		p.next.Store(int64(i))
		time.Sleep(5 * time.Millisecond)
	}
}

// waitPublished waits until n more events were acknowledged, and returns
// the last one's ID.
func (p *publisher) waitPublished(t testing.TB, n int) string {
	t.Helper()
	want := p.next.Load() + int64(n)
	deadline := time.Now().Add(failoverWait)
	for p.next.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the publisher is stuck at %d (%d errors)", p.next.Load(), p.errs.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "e-" + strconv.FormatInt(want, 10)
}

func (p *publisher) halt() []string {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.acked)
}

// waitHealth polls b.Healthy until it says want (an error or not), and
// returns when the call that said so began (a call may wait out its
// timeout before it fails).
func waitHealth(t testing.TB, b *Bus, healthy bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(failoverWait)
	for {
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		err := b.Healthy(ctx)
		cancel()
		if (err == nil) == healthy {
			return began
		}
		if time.Now().After(deadline) {
			t.Fatalf("Healthy is still %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClusterShards: on a real 3-master Cluster, every key of a channel
// lies in one slot, appends and history work on channels of every master,
// and announcements are shard messages: a classic SUBSCRIBE hears nothing,
// an SSUBSCRIBE on the channel's master hears them.
func TestClusterShards(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	chans, masters := spread(t, c, 2)
	ctx := t.Context()
	cc := c.Client()
	defer cc.Close()

	b := &Bus{cfg: Config{Prefix: DefaultPrefix}}
	for _, ch := range chans {
		meta, log, live := b.keys(ch)
		var slots []int64
		for _, k := range []string{meta, log, live, b.idsKey(ch)} {
			s, err := cc.ClusterKeySlot(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			slots = append(slots, s)
		}
		if len(slices.Compact(slices.Clone(slots))) != 1 {
			t.Errorf("%s: keys in slots %v", ch, slots)
		}
	}

	// A classic subscriber and a shard subscriber of the first channel.
	b1 := startNode(t, c.Client(), DefaultPrefix, chans)
	b2 := startNode(t, c.Client(), DefaultPrefix, chans)
	classic := masters[chans[0]].Client()
	defer classic.Close()
	cps := classic.Subscribe(ctx, b.liveName(chans[0]))
	defer cps.Close()
	if _, err := cps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	sps := masters[chans[0]].Client().SSubscribe(ctx, b.liveName(chans[0]))
	defer sps.Close()
	if _, err := sps.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	for i := 1; i <= 20; i++ {
		if err := b1.bus.Publish(ctx, chans, ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	b1.w.waitFor(t, chans, "e-20")
	b2.w.waitFor(t, chans, "e-20")
	var acked []string
	for i := 1; i <= 20; i++ {
		acked = append(acked, "e-"+strconv.Itoa(i))
	}
	if b1.w.check(t, "node 1", chans, acked)+b2.w.check(t, "node 2", chans, acked) != 0 {
		t.Error("a gap without a failover")
	}
	for _, ch := range chans {
		r, err := b2.bus.Read(ctx, ch, &hub.Position{Epoch: mustTop(t, b2.bus, ch).Epoch, Offset: 15})
		if err != nil || r.Gap || len(r.Entries) != 5 || r.Entries[4].Event.ID != "e-20" {
			t.Fatalf("%s: history after 15: %+v %v", ch, r, err)
		}
	}
	msg, err := sps.ReceiveTimeout(ctx, failoverWait)
	if m, ok := msg.(*redis.Message); err != nil || !ok || !strings.Contains(m.Payload, "e-1") {
		t.Fatalf("shard subscriber: %v %v", msg, err)
	}
	// The classic subscriber heard nothing: a PING comes back first.
	if err := cps.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if msg, err := cps.Receive(ctx); err != nil {
		t.Fatal(err)
	} else if _, ok := msg.(*redis.Pong); !ok {
		t.Fatalf("a classic subscriber heard %v", msg)
	}
}

func mustTop(t testing.TB, b *Bus, ch string) hub.Position {
	t.Helper()
	r, err := b.Read(t.Context(), ch, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Top
}

// failoverFigures are what a failover cost, for the logs and the
// benchmark.
type failoverFigures struct {
	unhealthy, healthy, delivered time.Duration
	gaps, publishErrors           int
	// logs is what each node's bus logged, for a failure's message.
	logs string
}

// runFailover runs three nodes over rdbs (one client each), subscribers on
// every node to chans, a publisher on the first node; kills the master of
// the busy channel with kill; and checks that every subscriber saw every
// acknowledged event once, or a gap notice for what the new master lost.
func runFailover(t testing.TB, newClient func() redis.UniversalClient, chans []string, kill func()) failoverFigures {
	t.Helper()
	return runSwitch(t, newClient, chans, kill, true)
}

// runSwitch is runFailover; with down false the switch (a manual
// failover) need not make Healthy fail.
func runSwitch(t testing.TB, newClient func() redis.UniversalClient, chans []string, kill func(), down bool) failoverFigures {
	t.Helper()
	var nodes []*node
	for range 3 {
		nodes = append(nodes, startNode(t, newClient(), DefaultPrefix, chans))
	}
	p := startPublisher(nodes[0].bus, chans)
	p.waitPublished(t, 30)

	killed := time.Now()
	kill()
	unhealthyAt := killed
	if down {
		unhealthyAt = waitHealth(t, nodes[1].bus, false)
	}
	healthyAt := waitHealth(t, nodes[1].bus, true)
	p.waitPublished(t, 30)
	acked := p.halt()
	for _, n := range nodes {
		n.w.waitFor(t, chans, acked[len(acked)-1])
	}
	f := failoverFigures{unhealthy: unhealthyAt.Sub(killed), healthy: healthyAt.Sub(killed), publishErrors: int(p.errs.Load())}
	// The first event published after the kill, seen on the channel of
	// the killed master by the last node.
	p.mu.Lock()
	first := ""
	for _, id := range acked {
		if p.startAt[id].After(killed) {
			first = id
			break
		}
	}
	p.mu.Unlock()
	w := nodes[2].w
	w.mu.Lock()
	if at, ok := w.at[first+"@"+chans[0]]; ok {
		f.delivered = at.Sub(killed)
	}
	w.mu.Unlock()
	for i, n := range nodes {
		f.gaps += n.w.check(t, fmt.Sprintf("node %d", i+1), chans, acked)
		f.logs += fmt.Sprintf("node %d's bus:\n%s", i+1, n.logs.String())
	}
	for i, n := range nodes {
		if err := n.bus.Healthy(t.Context()); err != nil {
			t.Errorf("node %d: %v", i+1, err)
		}
	}
	return f
}

func (f failoverFigures) log(t testing.TB) {
	t.Logf("failover: a Healthy call begun %s after the kill failed, one begun %s after it succeeded; the first event published after the kill was delivered %s after it; %d channel streams got a gap notice; %d publish attempts failed",
		f.unhealthy.Round(time.Millisecond), f.healthy.Round(time.Millisecond), f.delivered.Round(time.Millisecond), f.gaps, f.publishErrors)
}

// TestClusterFailover: three nodes over a 3-master Cluster with a replica
// each; subscribers on every node to channels on every master; events
// flowing; the master of the first channel is killed (SIGKILL). Healthy
// fails, then recovers when its replica took over; the publisher goes on;
// every subscriber sees every acknowledged event once, or a gap notice.
func TestClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1)
	chans, masters := spread(t, c, 2)
	f := runFailover(t, optionsClient(t, Options{ClusterAddrs: c.Addrs()[:2], DialTimeout: time.Second}), chans, masters[chans[0]].Kill)
	f.log(t)
}

// optionsClient makes clients as the node does, from Options.
func optionsClient(t testing.TB, o Options) func() redis.UniversalClient {
	return func() redis.UniversalClient {
		rdb, err := NewClient(o)
		if err != nil {
			t.Fatal(err)
		}
		return rdb
	}
}

// TestSentinelFailover: the same over a primary, a replica and three
// sentinels; the primary is killed and the sentinels promote the replica.
func TestSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, 1)
	chans := []string{"reports", "item:1", "item:2", "takedowns"}
	primary := s.Primary(t)
	f := runFailover(t, optionsClient(t, Options{SentinelMaster: redistest.SentinelMaster, SentinelAddrs: s.Addrs(), DialTimeout: time.Second}), chans, primary.Kill)
	f.log(t)
	if s.Primary(t) == primary {
		t.Fatal("the sentinels still name the killed primary")
	}
}

// BenchmarkFailover measures what a failover costs: from the SIGKILL of a
// master to Healthy failing, to Healthy again, and to the first delivery
// of an event published after the kill. Run with -benchtime=1x.
func BenchmarkFailover(b *testing.B) {
	for _, kind := range []string{"cluster", "sentinel"} {
		b.Run(kind, func(b *testing.B) {
			var sum failoverFigures
			for range b.N {
				var f failoverFigures
				if kind == "cluster" {
					c := redistest.StartCluster(b, 3, 1)
					chans, masters := spread(b, c, 2)
					f = runFailover(b, func() redis.UniversalClient { return c.Client() }, chans, masters[chans[0]].Kill)
				} else {
					s := redistest.StartSentinel(b, 1)
					f = runFailover(b, func() redis.UniversalClient { return s.Client() }, []string{"reports", "item:1", "item:2", "takedowns"}, s.Primary(b).Kill)
				}
				f.log(b)
				sum.healthy += f.healthy
				sum.delivered += f.delivered
				sum.unhealthy += f.unhealthy
			}
			n := float64(b.N)
			b.ReportMetric(float64(sum.unhealthy.Milliseconds())/n, "ms-to-unhealthy")
			b.ReportMetric(float64(sum.healthy.Milliseconds())/n, "ms-to-healthy")
			b.ReportMetric(float64(sum.delivered.Milliseconds())/n, "ms-to-delivery")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestClusterSlotMigration: the slot of a busy channel moves to another
// master while events flow (as a reshard does). Redis unsubscribes the
// node's shard subscription; the bus subscribes again on the new master
// and resyncs, so every subscriber sees every event once, with no gap: a
// migration loses nothing.
func TestClusterSlotMigration(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	chans, masters := spread(t, c, 1)
	var nodes []*node
	for range 2 {
		nodes = append(nodes, startNode(t, c.Client(), DefaultPrefix, chans))
	}
	p := startPublisher(nodes[0].bus, chans)
	p.waitPublished(t, 20)

	b := &Bus{cfg: Config{Prefix: DefaultPrefix}}
	cc := c.Client()
	defer cc.Close()
	slot, err := cc.ClusterKeySlot(t.Context(), b.liveName(chans[0])).Result()
	if err != nil {
		t.Fatal(err)
	}
	from, to := masters[chans[0]], masters[chans[1]]
	c.MoveSlot(t, int(slot), from, to)
	if m := c.MasterOf(t, b.liveName(chans[0])); m != to {
		t.Fatalf("slot %d is on %s, want %s", slot, m.Addr, to.Addr)
	}
	p.waitPublished(t, 20)
	acked := p.halt()
	for i, n := range nodes {
		n.w.waitFor(t, chans, acked[len(acked)-1])
		if gaps := n.w.check(t, fmt.Sprintf("node %d", i+1), chans, acked); gaps != 0 {
			t.Errorf("node %d: %d gaps after a migration", i+1, gaps)
		}
	}
	// Both nodes listen on the new master now.
	tc := to.Client()
	defer tc.Close()
	subs, err := tc.PubSubShardNumSub(t.Context(), b.liveName(chans[0])).Result()
	if err != nil || subs[b.liveName(chans[0])] != 2 {
		t.Errorf("shard subscribers on the new master: %v %v", subs, err)
	}
}

// TestClusterManualFailover: the replica of a busy channel's master takes
// over by CLUSTER FAILOVER while events flow, the old master living on as
// its replica. Every subscriber sees every event once: Redis unsubscribes
// the nodes from the old master's shard channels, and they subscribe again
// on the new master (one whose reloaded slot map still names the old
// master lands there, fails the check and moves). A manual failover loses
// no write, so no gap either; and in the end the three nodes listen on the
// new master, none on the old one.
//
// The nodes' cluster-node-timeout is long: a coordinated switch does not
// wait on it, and with a short one a machine that stalls for a second
// (a busy CI runner) has the cluster fail a live master over on its own,
// which may lose the writes that master took meanwhile: gaps that are
// right, but not what this test is about. The test checks that one
// election took place, and no node was marked failing.
func TestClusterManualFailover(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1, redistest.NodeTimeout(switchNodeTimeout))
	chans, masters := spread(t, c, 2)
	old := masters[chans[0]]
	replica := c.ReplicaOf(t, old)
	b := &Bus{cfg: Config{Prefix: DefaultPrefix}}
	f := runSwitch(t, optionsClient(t, Options{ClusterAddrs: c.Addrs(), DialTimeout: time.Second}), chans, func() {
		rc := replica.Client()
		defer rc.Close()
		if err := rc.Do(t.Context(), "CLUSTER", "FAILOVER").Err(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(failoverWait)
		for c.MasterOf(t, b.liveName(chans[0])) != replica {
			if time.Now().After(deadline) {
				t.Fatalf("the replica did not take over\n%s", clusterLogs(c))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}, false)
	redisLogs := clusterLogs(c)
	won, failing := strings.Count(redisLogs, "Failover election won"), strings.Count(redisLogs, "as failing")
	if won != 1 || failing != 0 {
		t.Fatalf("%d elections won and %d nodes marked failing: not the one coordinated switch the test is about\n%s%s", won, failing, f.logs, redisLogs)
	}
	if f.gaps != 0 {
		t.Errorf("%d gaps after a manual failover\n%s%s", f.gaps, f.logs, redisLogs)
	}
	// The three nodes listen on the new master (a check in flight may
	// still be moving one).
	subs := func(node *redistest.Node) int64 {
		nc := node.Client()
		defer nc.Close()
		m, err := nc.PubSubShardNumSub(t.Context(), b.liveName(chans[0])).Result()
		if err != nil {
			t.Fatal(err)
		}
		return m[b.liveName(chans[0])]
	}
	deadline := time.Now().Add(failoverWait)
	for subs(replica) != 3 || subs(old) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d nodes listen to %s on the new master, %d on the old one; want 3 and 0\n%s", subs(replica), chans[0], subs(old), f.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clusterLogs is every node's log, for a failure's message.
func clusterLogs(c *redistest.Cluster) string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "redis %s:\n%s", n.Addr, n.Log())
	}
	return b.String()
}

// loggedClusterBus is a bus over c, as a node makes it, whose log is
// kept; it closes when the test ends.
func loggedClusterBus(t *testing.T, c *redistest.Cluster) (*Bus, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	rdb, err := NewClient(Options{ClusterAddrs: c.Addrs(), DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(t.Context(), rdb, Config{}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, logs
}

// TestClusterSubscriptionOnReplicaMoves: a slot map that is stale after a
// failover names a replica as a channel's master, three times in a row.
// The replica takes the SSUBSCRIBE (a replica serves its master's shard
// channels), but one its master does not know yet as a replica hears
// nothing. The bus's check after each confirmation reads a key of the
// slot there, gets MOVED, and subscribes again, until the subscription is
// on the master; its listener then resyncs and hears what is published.
func TestClusterSubscriptionOnReplicaMoves(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1)
	chans, masters := spread(t, c, 1)
	ch := chans[0]
	master := masters[ch]
	replica := c.ReplicaOf(t, master)
	// A client of the replica alone, as the stale map's node would be.
	rc := replica.Client()
	t.Cleanup(func() { rc.Close() }) // after the bus's Close
	b, logs := loggedClusterBus(t, c)
	stale := 3
	var mu sync.Mutex
	real := b.masterFor
	b.masterFor = func(ctx context.Context, key string) (*redis.Client, error) {
		mu.Lock()
		defer mu.Unlock()
		if stale == 0 {
			return real(ctx, key)
		}
		stale--
		return rc, nil
	}

	col := newCollector()
	cancel, err := b.Listen(t.Context(), ch, col.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	// Where the channel's subscription is, as the master and the
	// replica say.
	subs := func(n *redistest.Node) int64 {
		nc := n.Client()
		defer nc.Close()
		m, err := nc.PubSubShardNumSub(t.Context(), b.liveName(ch)).Result()
		if err != nil {
			t.Fatal(err)
		}
		return m[b.liveName(ch)]
	}
	deadline := time.Now().Add(failoverWait)
	for subs(master) != 1 || subs(replica) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the subscription is not on the master: %d there, %d on the replica\n%s", subs(master), subs(replica), logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	left := stale
	mu.Unlock()
	if left != 0 {
		t.Errorf("the slot map was asked %d times, want 4", 4-left)
	}
	if n := strings.Count(logs.String(), "does not serve their slots"); n != 3 {
		t.Errorf("%d moves logged, want 3\n%s", n, logs.String())
	}
	// The listener resyncs once it is on the master (one Resync per
	// confirmation after the first), then hears what is published.
	if err := b.Publish(t.Context(), []string{ch}, ev(1)); err != nil {
		t.Fatal(err)
	}
	got := col.wait(t, 4)
	for i, e := range got[:3] {
		if !e.Resync {
			t.Errorf("entry %d is %+v, want a Resync", i, e)
		}
	}
	if e := got[3]; e.Resync || e.Event == nil || e.Event.ID != "e-1" {
		t.Errorf("entry 3 is %+v, want e-1", e)
	}
}

// failChecks makes the first n checks (pipelines of EXISTS) of a client
// fail without an answer from Redis, as a timeout or a LOADING server
// does.
type failChecks struct {
	mu   sync.Mutex
	n    int
	seen int
}

func (f *failChecks) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *failChecks) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (f *failChecks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || cmds[0].Name() != "exists" {
			return next(ctx, cmds) // the subscription's own commands
		}
		f.mu.Lock()
		f.seen++
		fail := f.n > 0
		if fail {
			f.n--
		}
		f.mu.Unlock()
		if !fail {
			return next(ctx, cmds)
		}
		err := errors.New("LOADING Redis is loading the dataset in memory")
		for _, c := range cmds {
			c.SetErr(err)
		}
		return err
	}
}

// TestClusterCheckWithoutAnswer: a check that gets no answer (not MOVED)
// leaves the subscription where it is and checks again after a backoff;
// only after checkTries such checks in a row is the channel moved (here,
// back to the same master, whose next check answers).
func TestClusterCheckWithoutAnswer(t *testing.T) {
	c := redistest.StartCluster(t, 3, 0)
	chans, masters := spread(t, c, 1)
	for i, tc := range []struct {
		name           string
		fail           int
		moves, resyncs int
	}{
		{"answered at the fourth check", 3, 0, 0},
		{"moved after checkTries", checkTries, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := chans[i]
			mc := masters[ch].Client()
			t.Cleanup(func() { mc.Close() }) // after the bus's Close
			f := &failChecks{n: tc.fail}
			mc.AddHook(f)
			b, logs := loggedClusterBus(t, c)
			b.masterFor = func(context.Context, string) (*redis.Client, error) { return mc, nil }
			col := newCollector()
			cancel, err := b.Listen(t.Context(), ch, col.deliver)
			if err != nil {
				t.Fatal(err)
			}
			defer cancel()
			// Wait until a check got an answer.
			deadline := time.Now().Add(failoverWait)
			for {
				f.mu.Lock()
				done := f.seen > tc.fail
				f.mu.Unlock()
				if done {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no check answered\n%s", logs.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if n := strings.Count(logs.String(), "could not be checked"); n != tc.fail-tc.moves {
				t.Errorf("%d checks again logged, want %d\n%s", n, tc.fail-tc.moves, logs.String())
			}
			if n := strings.Count(logs.String(), "does not serve their slots"); n != tc.moves {
				t.Errorf("%d moves logged, want %d\n%s", n, tc.moves, logs.String())
			}
			if err := b.Publish(t.Context(), []string{ch}, ev(1)); err != nil {
				t.Fatal(err)
			}
			got := col.wait(t, tc.resyncs+1)
			for i, e := range got {
				if want := i < tc.resyncs; e.Resync != want {
					t.Errorf("entry %d is %+v, Resync %v wanted", i, e, want)
				}
			}
			if e := got[len(got)-1]; e.Event == nil || e.Event.ID != "e-1" {
				t.Errorf("last entry is %+v, want e-1", e)
			}
		})
	}
}
