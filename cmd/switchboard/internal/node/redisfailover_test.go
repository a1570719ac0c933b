package node

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// Redis failovers under whole nodes: three nodes share one broker and a
// Redis Cluster (3 masters with a replica each) or a Sentinel setup (a
// primary, a replica, three sentinels), all child processes started by the
// test. Subscribers on every node read channels spread over the shards
// while events flow from Kafka; the master of the busiest channel is killed
// with SIGKILL, the Redis being told to fail over only once every node's
// /readyz answered 503 (so the test sees that window rather than races
// it: a readiness call may otherwise span the whole failover, its PING
// retried until the new master answers). Every subscriber then has every
// event exactly once, or a gap notice on the channel that lost some (only
// channels of the killed master may); /readyz goes back to 200; a takedown
// held across the failover is answered, and its retry with the same
// Idempotency-Key is confirmed, with one command on the topic. Each test
// runs twice: with the replica in sync, and with the replica cut off while
// events flow, so its new master lost writes and the subscribers of
// reports must get a gap notice.

// failoverPrefix starts the Redis keys of the failover tests' nodes.
const failoverPrefix = "sbfo:"

// failoverSetup is one Redis of TestRedisFailoverNodes.
type failoverSetup struct {
	// redis points a node's configuration at the Redis.
	redis func(*config.Config)
	// items are the items whose channels the subscribers read.
	items []string
	// kill kills the master of the "reports" channel.
	kill func()
	// hold makes the Redis wait before it fails over, until release:
	// /readyz is then seen at 503 on every node, not raced.
	hold, release func()
	// replica, when set, is the replica that takes over, and master the
	// one it replaces: the replica is stopped (SIGSTOP) and cut off (see
	// cutOff) while events flow, so the master holds writes it never got,
	// and continued (SIGCONT) once the master is killed.
	replica, master *redistest.Node
	// lossy are the channels on the killed master: only they may get a
	// gap notice.
	lossy []string
}

// failoverModes are the two runs of each failover test: the replica in
// sync when the master dies, or behind it (lost writes).
var failoverModes = []string{"synced", "lost-writes"}

// TestClusterFailoverNodes runs the failover drill on a 3-master Cluster
// with a replica per master; the item channels lie on the three masters
// (asserted with CLUSTER KEYSLOT), and the master of "reports", which
// carries every event, is killed.
//
// In the lost-writes run the replica is stopped while events flow, so the
// new master lacks the last ones: the subscribers of its channels get a gap
// notice.
func TestClusterFailoverNodes(t *testing.T) {
	for _, mode := range failoverModes {
		t.Run(mode, func(t *testing.T) { clusterFailoverNodes(t, mode == "lost-writes") })
	}
}

func clusterFailoverNodes(t *testing.T, lost bool) {
	c := redistest.StartCluster(t, 3, 1)
	cc := c.Client()
	defer cc.Close()
	// Every key of a channel hashes to one slot.
	slotOf := func(ch string) int64 {
		t.Helper()
		var slots []int64
		for _, suffix := range []string{"meta", "log", "live", "ids"} {
			s, err := cc.ClusterKeySlot(t.Context(), failoverPrefix+"{"+ch+"}:"+suffix).Result()
			if err != nil {
				t.Fatal(err)
			}
			slots = append(slots, s)
		}
		if len(slices.Compact(slices.Clone(slots))) != 1 {
			t.Fatalf("%s: keys in slots %v", ch, slots)
		}
		return slots[0]
	}
	// One item channel on each master.
	var items []string
	masters := map[string]string{} // master address → item
	for i := 0; len(items) < 3; i++ {
		if i > 1000 {
			t.Fatalf("item channels do not spread over 3 masters: %v", masters)
		}
		item := "item-" + strconv.Itoa(i)
		slotOf("item:" + item)
		m := c.MasterOf(t, failoverPrefix+"{item:"+item+"}:live")
		if _, ok := masters[m.Addr]; ok {
			continue
		}
		masters[m.Addr] = item
		items = append(items, item)
	}
	slots := map[int64]bool{slotOf("reports"): true}
	for _, item := range items {
		slots[slotOf("item:"+item)] = true
	}
	t.Logf("channels in slots %v on masters %v", slots, masters)
	busy := c.MasterOf(t, failoverPrefix+"{reports}:live")
	// The failover waits for cluster-node-timeout on the live nodes.
	nodeTimeout := func(d time.Duration) func() {
		return func() {
			for _, n := range c.Nodes {
				if n == busy {
					continue
				}
				nc := n.Client()
				err := nc.ConfigSet(t.Context(), "cluster-node-timeout", strconv.FormatInt(d.Milliseconds(), 10)).Err()
				nc.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	fs := failoverSetup{
		redis:   func(cfg *config.Config) { cfg.Redis.Cluster.Addrs = c.Addrs()[:3] },
		items:   items,
		kill:    busy.Kill,
		hold:    nodeTimeout(time.Hour),
		release: nodeTimeout(redistest.ClusterNodeTimeout),
	}
	for addr, item := range masters {
		if addr == busy.Addr {
			fs.lossy = append(fs.lossy, "item:"+item)
		}
	}
	fs.lossy = append(fs.lossy, "reports")
	if lost {
		fs.replica, fs.master = c.ReplicaOf(t, busy), busy
	}
	runNodeFailover(t, fs)
	c.WaitOK(t)
	if m := c.MasterOf(t, failoverPrefix+"{reports}:live"); m == busy {
		t.Fatal("the killed master still serves reports")
	}
}

// TestSentinelFailoverNodes runs the failover drill on a primary with one
// replica and three sentinels; the primary is killed and the sentinels
// promote the replica, in sync or behind (lost writes) as in
// TestClusterFailoverNodes.
func TestSentinelFailoverNodes(t *testing.T) {
	for _, mode := range failoverModes {
		t.Run(mode, func(t *testing.T) { sentinelFailoverNodes(t, mode == "lost-writes") })
	}
}

func sentinelFailoverNodes(t *testing.T, lost bool) {
	s := redistest.StartSentinel(t, 1)
	primary := s.Primary(t)
	// The failover waits for down-after-milliseconds.
	downAfter := func(d time.Duration) func() {
		return func() {
			for _, sn := range s.Sentinels {
				sc := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
				err := sc.Set(t.Context(), redistest.SentinelMaster, "down-after-milliseconds", strconv.FormatInt(d.Milliseconds(), 10)).Err()
				sc.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	fs := failoverSetup{
		hold:    downAfter(time.Hour),
		release: downAfter(redistest.SentinelDownAfter),
		redis: func(cfg *config.Config) {
			cfg.Redis.Sentinel.Master = redistest.SentinelMaster
			cfg.Redis.Sentinel.Addrs = s.Addrs()
		},
		items: []string{"item-1", "item-2", "item-3"},
		kill:  primary.Kill,
	}
	fs.lossy = []string{"reports", "item:item-1", "item:item-2", "item:item-3"}
	if lost {
		fs.replica, fs.master = s.Servers[1], primary
	}
	runNodeFailover(t, fs)
	if s.Primary(t) == primary {
		t.Fatal("the sentinels still name the killed primary")
	}
}

// runNodeFailover is the drill of the failover tests.
func runNodeFailover(t *testing.T, fs failoverSetup) {
	start := time.Now()
	env := newScaleEnv(t, "failover", "", failoverPrefix)
	var nodes []*node
	for _, name := range []string{"A", "B", "C"} {
		n := &node{name: name}
		n.Node = startTestNode(t, nodeSpec{
			config: func(cfg *config.Config) {
				cfg.Kafka.Brokers = []string{env.broker}
				fs.redis(cfg)
				cfg.Limits.TakedownBurst = 1000
				cfg.ItemSvc.Enabled = false
				cfg.ItemSvc.Latency = 10 * time.Millisecond
			},
			opts:     []Option{withRedisPrefix(failoverPrefix)},
			stopWait: scaleWait,
		})
		nodes = append(nodes, n)
	}
	cl := &cluster{nodes: nodes}
	itemOf := func(n int) string { return fs.items[n%len(fs.items)] }

	// On every node: an SSE stream of reports, an SSE stream of one item,
	// a WebSocket of reports and the other two items.
	var watchers []*failWatcher
	for i, n := range nodes {
		others := []string{"reports"}
		for j, item := range fs.items {
			if j != i%len(fs.items) {
				others = append(others, "item:"+item)
			}
		}
		for _, s := range []*subscriber{
			newSubscriber(false, "reports"),
			newSubscriber(false, "item:"+fs.items[i%len(fs.items)]),
			newSubscriber(true, others...),
		} {
			watchers = append(watchers, watchFailover(t, cl, n.Node, s))
		}
	}
	published := func() uint64 {
		var p uint64
		for _, n := range nodes {
			p += n.consumer.Stats().Published
		}
		return p
	}
	stopFlow := make(chan struct{})
	type result struct {
		n   int
		err error
	}
	flowed := make(chan result, 1)
	go func() {
		n, err := flow(env.broker, 20, itemOf, stopFlow)
		flowed <- result{n, err}
	}()
	defer func() {
		select {
		case <-stopFlow:
		default:
			close(stopFlow)
			<-flowed
		}
	}()
	waitUntil(t, "events flowing", func() bool { return published() >= 20 })

	// A takedown held on B (no item service answers yet) whose command is
	// on the topic.
	body := `{"item_id":"item-9","reason":"court order"}`
	type answer struct {
		status int
		body   string
		err    error
	}
	held := make(chan answer, 1)
	go func() {
		resp, b, err := call(t.Context(), nil, http.MethodPost, nodes[1].base()+"/v1/takedowns",
			jsonHeader(policeToken, "Idempotency-Key", "failover-k1", "Prefer", "wait=30"), body)
		a := answer{body: string(b), err: err}
		if resp != nil {
			a.status = resp.StatusCode
		}
		held <- a
	}()
	waitUntil(t, "the takedown held on B", func() bool { return nodes[1].takedowns.Held() == 1 })
	broker := &Node{kafkaAddr: env.broker}
	waitUntil(t, "its command on the topic", func() bool { return countCommandsOf(t, broker, "item-9") == 1 })

	// Watch /readyz of every node across the kill.
	var pollers []*readyPoller
	for _, n := range nodes {
		p := pollReady(n.Node)
		t.Cleanup(p.stop)
		pollers = append(pollers, p)
	}
	before := published()
	fs.hold()
	var pid int
	if fs.replica != nil {
		pid = pidOf(t, fs.replica)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(pid, syscall.SIGCONT) // if the test stops before
		cutOff(t, fs.master)
		stalled := published()
		waitUntil(t, "events published the replica never got", func() bool { return published() >= stalled+10 })
	}
	killed := time.Now()
	fs.kill()
	if fs.replica != nil {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range pollers {
		p.waitSeen(t, nodes[i].name, http.StatusServiceUnavailable)
	}
	fs.release()
	for i, p := range pollers {
		p.waitSeen(t, nodes[i].name, http.StatusOK)
		p.stop()
	}
	recovered := time.Since(killed)
	waitUntil(t, "events flowing again", func() bool { return published() >= before+20 })

	// The item service comes up and answers the held takedown.
	runItemService(t, nodes[0].Node, env.broker)
	a := <-held
	if a.err != nil || (a.status != http.StatusOK && a.status != http.StatusGatewayTimeout) {
		t.Fatalf("the held takedown: %d %s %v", a.status, a.body, a.err)
	}
	resp, m := post(t, t.Context(), nodes[2].Node, policeToken, body, "Idempotency-Key", "failover-k1", "Prefer", "wait=30")
	if resp.StatusCode != http.StatusOK || m["status"] != "confirmed" {
		t.Fatalf("the retry: %d %v", resp.StatusCode, m)
	}
	corr, _ := m["correlation_id"].(string)
	if n := countCommands(t, broker, corr); n != 1 {
		t.Fatalf("%d commands for correlation %s, want 1", n, corr)
	}

	close(stopFlow)
	res := <-flowed
	if res.err != nil {
		t.Fatal(res.err)
	}
	// One last event per item, after which nothing is in flight.
	total := res.n + len(fs.items)
	var last []kafka.Message
	for n := res.n + 1; n <= total; n++ {
		last = append(last, scaleMsg(n, itemOf(n)))
	}
	produce(t, env.broker, last...)
	gaps := 0
	gapped := map[string]bool{}
	for _, w := range watchers {
		w.wait(t, total, itemOf, seq(res.n+1, total))
		for _, ch := range w.check(t, total, itemOf) {
			gaps++
			gapped[ch] = true
		}
	}
	for ch := range gapped {
		if !slices.Contains(fs.lossy, ch) {
			t.Errorf("a gap notice on %s, whose master was not killed", ch)
		}
	}
	if fs.replica != nil && !gapped["reports"] {
		t.Error("no subscriber of reports got a gap notice, though its new master lost writes")
	}
	t.Logf("%d events, /readyz 200 again on every node %v after the kill; held takedown answered %d; %d channel streams got a gap notice; %v in all",
		total, recovered.Round(time.Millisecond), a.status, gaps, time.Since(start).Round(time.Millisecond))
}

// cutOff makes master drop its replica, which must be stopped: a stopped
// process still receives into its socket buffer what it reads once
// continued, so the master's replica output buffer is limited to 1 MB and
// 32 MB written to a key of its own slot of "reports" (a hash tag no
// channel uses) fill the buffer past it.
func cutOff(t *testing.T, master *redistest.Node) {
	t.Helper()
	mc := master.Client()
	defer mc.Close()
	ctx := t.Context()
	if err := mc.ConfigSet(ctx, "client-output-buffer-limit", "replica 1mb 0 0").Err(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		repl, err := mc.Info(ctx, "replication").Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(repl, "connected_slaves:0") {
			return
		}
		if i >= 16 {
			t.Fatalf("the master still has its replica:\n%s", repl)
		}
		if err := mc.Set(ctx, "cutoff:{reports}:"+strconv.Itoa(i), strings.Repeat("x", 32<<20), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// pidOf returns the process ID of a redis-server.
func pidOf(t *testing.T, n *redistest.Node) int {
	t.Helper()
	c := n.Client()
	defer c.Close()
	info, err := c.Info(t.Context(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	t.Fatalf("%s: no process_id", n.Addr)
	return 0
}

// countCommandsOf counts the commands on takedown.commands for item.
func countCommandsOf(t *testing.T, broker *Node, item string) int {
	t.Helper()
	return countCommandsWhere(t, broker, func(ev *hub.Event) bool { return ev.Subject == item })
}

// readyPoller polls a node's /readyz until stopped, keeping the statuses
// seen.
type readyPoller struct {
	mu   sync.Mutex
	seen []int
	errs []string // of the calls that got no answer
	quit chan struct{}
	done chan struct{}
}

func pollReady(a *Node) *readyPoller {
	p := &readyPoller{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			resp, _, err := call(ctx, nil, http.MethodGet, a.base()+"/readyz", nil, "")
			cancel()
			p.mu.Lock()
			if err == nil {
				p.seen = append(p.seen, resp.StatusCode)
			} else {
				p.errs = append(p.errs, err.Error())
			}
			p.mu.Unlock()
			select {
			case <-p.quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return p
}

// waitSeen waits until the poller saw want after what it saw before.
func (p *readyPoller) waitSeen(t *testing.T, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(scaleWait)
	for {
		p.mu.Lock()
		i := slices.Index(p.seen, want)
		if i >= 0 {
			p.seen = p.seen[i:]
			p.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			defer p.mu.Unlock()
			t.Fatalf("node %s: /readyz never %d; it answered %d times %v, and failed %v", name, want, len(p.seen), p.seen[:min(len(p.seen), 20)], p.errs)
		}
		p.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *readyPoller) stop() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	<-p.done
}

// failWatcher is a subscriber that notes, per channel, each event and
// each gap notice, and resumes on a node with its cursors whenever its
// connection ends.
type failWatcher struct {
	s     *subscriber
	mu    sync.Mutex
	seen  map[string][]received // by channel; a gap notice has id "gap"
	moves int
	stop  context.CancelFunc
	done  chan struct{}
}

func watchFailover(t *testing.T, cl *cluster, first *Node, s *subscriber) *failWatcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &failWatcher{s: s, seen: map[string][]received{}, stop: cancel, done: make(chan struct{})}
	if err := s.connect(ctx, first); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		defer s.stop()
		for ctx.Err() == nil {
			for _, ev := range s.pending {
				w.note(ev.channel, ev)
			}
			s.pending = nil
			for f := range s.frames {
				switch {
				case !s.ws && f.cursor != "":
					s.lastID = f.cursor
				case s.ws && f.kind == "event" || s.ws && f.kind == "gap" && f.cursor != "":
					s.cursors[f.channel] = f.cursor
				}
				ch := f.channel
				if !s.ws {
					ch = s.channels[0]
				}
				switch f.kind {
				case "event":
					w.note(ch, f.ev)
				case "gap":
					w.note(ch, received{id: "gap"})
				}
			}
			// The connection ended: resume on a node, with the cursors.
			s.stop()
			for ctx.Err() == nil {
				if nxt := cl.pick(nil); s.connect(ctx, nxt) == nil {
					w.mu.Lock()
					w.moves++
					w.mu.Unlock()
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(w.end)
	return w
}

func (w *failWatcher) note(ch string, ev received) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen[ch] = append(w.seen[ch], ev)
}

func (w *failWatcher) end() {
	w.stop()
	<-w.done
}

// wants returns the numbers of the events of 1..total that channel ch
// carries.
func wants(ch string, total int, itemOf func(int) string) []int {
	var out []int
	for n := 1; n <= total; n++ {
		if ch == "reports" || ch == "item:"+itemOf(n) {
			out = append(out, n)
		}
	}
	return out
}

// wait waits until every channel of w has the events of tail it carries,
// and, if it got no gap notice, all of its events.
func (w *failWatcher) wait(t *testing.T, total int, itemOf func(int) string, tail []int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%v has every event", w.s), func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, ch := range w.s.channels {
			got := map[string]bool{}
			gapped := false
			for _, ev := range w.seen[ch] {
				got[ev.id] = true
				gapped = gapped || ev.id == "gap"
			}
			need := wants(ch, total, itemOf)
			if gapped {
				need = slices.DeleteFunc(slices.Clone(tail), func(n int) bool { return !slices.Contains(need, n) })
			}
			for _, n := range need {
				if !got[fmt.Sprintf("so-%d", n)] {
					return false
				}
			}
		}
		return true
	})
	w.end()
}

// check asserts that each channel of w saw each event at most once and
// each item's events in order, between gap notices, and every event of
// 1..total it carries unless a gap notice says some were lost. It returns
// the channels that got a gap notice.
func (w *failWatcher) check(t *testing.T, total int, itemOf func(int) string) (gappedChans []string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.s.channels {
		seen := w.seen[ch]
		got := map[string]bool{}
		lastN := map[string]int{}
		gapped := false
		for _, ev := range seen {
			if ev.id == "gap" {
				gapped = true
				clear(got)
				clear(lastN)
				continue
			}
			if got[ev.id] {
				t.Errorf("%v %s: %s twice without a gap notice", w.s, ch, ev.id)
			}
			if last, ok := lastN[ev.subject]; ok && ev.n <= last {
				t.Errorf("%v %s: %s after n=%d without a gap notice", w.s, ch, ev.id, last)
			}
			got[ev.id], lastN[ev.subject] = true, ev.n
		}
		if gapped {
			gappedChans = append(gappedChans, ch)
			continue
		}
		all := map[string]bool{}
		for _, ev := range seen {
			all[ev.id] = true
		}
		for _, n := range wants(ch, total, itemOf) {
			if !all[fmt.Sprintf("so-%d", n)] {
				t.Errorf("%v %s: so-%d silently lost", w.s, ch, n)
			}
		}
	}
	if w.moves > 0 {
		t.Logf("%v resumed %d times", w.s, w.moves)
	}
	return gappedChans
}
