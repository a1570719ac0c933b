package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/consumers/kafkatest"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/producers/itemsvc"
)

// The fault drills: the police path under a blackholed, paused or reset
// broker, killed nodes and forged outcomes. The broker is kfake behind a
// proxy (kafkatest) that every Kafka connection passes through; nodes that
// must die at once are child processes killed with SIGKILL.

// drillTopics are the default topics.
var drillTopics = []string{"items.reported", "takedown.commands", "takedown.events", "switchboard.dlq"}

// childNodeEnv carries a child node's spec (JSON) to TestChildNode.
const childNodeEnv = "SWITCHBOARD_CHILD_NODE"

// childSpec is what a child node needs beyond the defaults.
type childSpec struct {
	Brokers []string
	Redis   string
	Prefix  string
}

// TestChildNode is the child side of the drills: a whole node in its own
// process, so a drill can kill it with SIGKILL. It is not a test of its own
// and skips unless a drill started it.
func TestChildNode(t *testing.T) {
	raw := os.Getenv(childNodeEnv)
	if raw == "" {
		t.Skip("child node for the fault drills: runs only when " + childNodeEnv + " is set")
	}
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	a := startTestNode(t, nodeSpec{
		config:  drillConfig(spec.Brokers, spec.Redis),
		log:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		opts:    []Option{withRedisPrefix(spec.Prefix)},
		stopped: func(error) {},
	})
	// spawnChild consumes READY; the address follows it.
	fmt.Println(loadLinePrefix + "READY")
	fmt.Println(loadLinePrefix + "BASE " + a.base())
	io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop it, or kills it; the cleanup stops the node
}

// drillConfig is a node on brokers and Redis, without an item service of
// its own (the drills run one and count what it does).
func drillConfig(brokers []string, redisURL string) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Kafka.Brokers = brokers
		cfg.Redis.URL = redisURL
		cfg.Limits.TakedownBurst = 1000
		cfg.Limits.TakedownRate = 1000
		cfg.ItemSvc.Enabled = false
	}
}

// childNode is a node in a child process.
type childNode struct {
	lc   *loadClient
	base string
}

func startChildNode(t *testing.T, spec childSpec) *childNode {
	t.Helper()
	raw, _ := json.Marshal(spec)
	lc := spawnChild(t, []string{"-test.run=^TestChildNode$", "-test.count=1", "-test.timeout=10m"}, childNodeEnv+"="+string(raw))
	base, err := lc.next("BASE", time.Minute)
	if err != nil {
		t.Fatalf("%v\n%s", err, lc.outputString())
	}
	return &childNode{lc: lc, base: base}
}

// kill ends the child at once, as a crash would.
func (c *childNode) kill() {
	c.lc.cmd.Process.Kill()
	c.lc.stop()
}

// startDrillNode starts a node in this process on brokers and Redis.
func startDrillNode(t *testing.T, brokers []string, srv *redistest.Server, mutate func(*config.Config)) *Node {
	t.Helper()
	return startTestNode(t, nodeSpec{
		config: func(cfg *config.Config) {
			drillConfig(brokers, srv.URL())(cfg)
			if mutate != nil {
				mutate(cfg)
			}
		},
		opts:     []Option{withRedisPrefix(srv.Prefix)},
		stopWait: scaleWait,
		stopped:  func(error) {},
	})
}

// realRedis is the Redis server at 127.0.0.1:6379 (required in CI), with a
// key prefix of this test's own.
func realRedis(t *testing.T) *redistest.Server {
	t.Helper()
	srv := redistest.Real(t)
	return &srv
}

// drillItemService runs the simulated item service against brokers for the
// length of the test, so a drill can count its effects.
func drillItemService(t *testing.T, brokers []string, latency time.Duration) *itemsvc.Service {
	t.Helper()
	p, err := producers.New(producers.Config{Brokers: brokers}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := itemsvc.New(itemsvc.Config{
		Brokers: brokers, Latency: latency, Decode: decodeCommand,
	}, p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; p.Close() })
	return svc
}

// answer is one HTTP answer of a drill.
type answer struct {
	status int
	body   map[string]any
	err    error
}

// postKeyed posts a police takedown to base with an Idempotency-Key.
func postKeyed(ctx context.Context, base, item, key string) answer {
	body := fmt.Sprintf(`{"item_id":%q,"reason":"court order"}`, item)
	resp, b, err := call(ctx, nil, http.MethodPost, base+"/v1/takedowns", jsonHeader(policeToken, "Idempotency-Key", key), body)
	if resp == nil {
		return answer{err: err}
	}
	var m map[string]any
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	return answer{status: resp.StatusCode, body: m, err: err}
}

// commandIdentities reads the whole command topic: for each correlation
// ID, the distinct CloudEvents (source, id) of its commands, and how many
// records it has.
func commandIdentities(t *testing.T, brokers []string) (ids map[string]map[string]bool, records map[string]int) {
	t.Helper()
	ids, records = map[string]map[string]bool{}, map[string]int{}
	conn, err := kafka.Dial("tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions("takedown.commands")
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		lc, err := kafka.DialLeader(t.Context(), "tcp", brokers[0], "takedown.commands", p.ID)
		if err != nil {
			t.Fatal(err)
		}
		last, err := lc.ReadLastOffset()
		lc.Close()
		if err != nil {
			t.Fatal(err)
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "takedown.commands", Partition: p.ID, MaxWait: 50 * time.Millisecond})
		for off := int64(0); off < last; off++ {
			ctx, cancel := context.WithTimeout(t.Context(), waitFor)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				r.Close()
				t.Fatal(err)
			}
			ev, err := consumers.Decode(m)
			if err != nil {
				continue
			}
			if ids[ev.CorrelationID] == nil {
				ids[ev.CorrelationID] = map[string]bool{}
			}
			ids[ev.CorrelationID][ev.Source+" "+ev.ID] = true
			records[ev.CorrelationID]++
		}
		r.Close()
	}
	return ids, records
}

// drillItems are the items of the blackhole drill: catalogue items and two
// the item service does not know.
func drillItems(n int) []string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("item-%d", 100+i)
	}
	items[n-1], items[n-2] = "unknown-1", "unknown-2"
	return items
}

// settle retries a takedown with its key on the nodes in turn until it has
// its final answer (200 or 404), and returns that answer, or the last one
// with ok false if none came in time. It may run on any goroutine.
func settle(ctx context.Context, bases []string, item, key string) (last answer, ok bool) {
	deadline := time.Now().Add(2 * scaleWait)
	for i := 0; time.Now().Before(deadline); i++ {
		last = postKeyed(ctx, bases[i%len(bases)], item, key)
		if last.err == nil && (last.status == 200 || last.status == 404) {
			return last, true
		}
		if last.err != nil || last.status == 503 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	return last, false
}

// settleAll settles every key on the nodes at once and fails the test,
// with what the nodes say of themselves, for those that got no final
// answer.
func settleAll(t *testing.T, nodes []*Node, keys map[string]string) map[string]answer {
	t.Helper()
	var bases []string
	for _, n := range nodes {
		bases = append(bases, n.base())
	}
	answers := map[string]answer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := false
	for key, item := range keys {
		wg.Go(func() {
			a, ok := settle(t.Context(), bases, item, key)
			mu.Lock()
			defer mu.Unlock()
			answers[key] = a
			if !ok {
				failed = true
				t.Errorf("%s (%s): no final answer; last %d %v %v", key, item, a.status, a.body, a.err)
			}
		})
	}
	wg.Wait()
	if failed {
		for _, n := range nodes {
			resp, err := http.Get(n.base() + "/readyz")
			var body []byte
			if err == nil {
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			lag, _ := n.consumer.Lag(context.Background())
			t.Logf("node %s: consumer %+v, untrusted %v, lag %+v, /readyz %s %v", n.base(), n.consumer.Stats(), n.recorder.Untrusted(), lag, body, err)
		}
		logGroup(t, nodes[0].cfg.Kafka.Brokers)
		t.FailNow()
	}
	return answers
}

// checkOneIdentity asserts that every answered takedown has exactly one
// command identity on the topic, and that the item service applied each
// command once.
func checkOneIdentity(t *testing.T, brokers []string, answers map[string]answer, svc *itemsvc.Service, known int, removed int) {
	t.Helper()
	ids, records := commandIdentities(t, brokers)
	corrs := map[string]bool{}
	for key, a := range answers {
		corr, _ := a.body["correlation_id"].(string)
		corrs[corr] = true
		if n := len(ids[corr]); n != 1 {
			t.Errorf("%s: %d command identities on the topic for %s (%d records), want 1", key, n, corr, records[corr])
		}
	}
	if len(corrs) != len(answers) {
		t.Errorf("%d correlation IDs for %d keys", len(corrs), len(answers))
	}
	waitUntil(t, "the item service has answered every command", func() bool {
		st := svc.Stats()
		return st.Confirmed+st.Rejected >= int64(len(answers))
	})
	st := svc.Stats()
	if st.Commands-st.Duplicates != int64(len(answers)) || st.Confirmed != int64(known) || st.Rejected != int64(len(answers)-known) || st.Removed != int64(removed) {
		t.Errorf("item service effects %+v: want %d commands applied, %d confirmed, %d rejected, %d item.removed", st, len(answers), known, len(answers)-known, removed)
	}
	dup, recs, statuses := 0, 0, map[int]int{}
	for corr, n := range records {
		if corrs[corr] {
			dup += n - 1
			recs += n
		}
	}
	for _, a := range answers {
		statuses[a.status]++
	}
	t.Logf("%d takedowns: answers by status %v; %d correlation IDs, %d command records (%d beyond one per takedown), one identity each; item service %d commands read, %d duplicates skipped, %d applied (%d confirmed, %d rejected), %d item.removed",
		len(answers), statuses, len(corrs), recs, dup, st.Commands, st.Duplicates, st.Commands-st.Duplicates, st.Confirmed, st.Rejected, st.Removed)
}

// TestDrillBlackholeThenKill: twenty takedowns on node A while its path to
// the broker is a black hole; A is killed 0.7 s later, before any publish
// could time out; the same requests are retried with the same keys on B and
// C. Every key ends confirmed or rejected, with exactly one command identity
// on the topic and one effect in the item service.
func TestDrillBlackholeThenKill(t *testing.T) { blackholeDrill(t, true) }

// TestDrillBlackholeThenKillSwept is TestDrillBlackholeThenKill with no
// client retrying: B's and C's sweeps publish the commands A reserved and
// never saw acknowledged, and the item service answers them all; only then
// are the keys asked again, and each answers its outcome.
func TestDrillBlackholeThenKillSwept(t *testing.T) { blackholeDrill(t, false) }

func blackholeDrill(t *testing.T, retry bool) {
	srv := realRedis(t)
	br := kafkatest.StartBroker(t, 3, drillTopics)
	svc := drillItemService(t, br.Brokers(), 0)
	b := startDrillNode(t, br.Brokers(), srv, nil)
	c := startDrillNode(t, br.Brokers(), srv, nil)
	nodeA := startChildNode(t, childSpec{Brokers: br.Brokers(), Redis: srv.URL(), Prefix: srv.Prefix})
	for _, base := range []string{nodeA.base, b.base(), c.base()} {
		waitUntil(t, base+" ready", func() bool {
			resp, err := http.Get(base + "/readyz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == 200
		})
	}

	items := drillItems(20)
	waitUntil(t, "three members own partitions", func() bool { return ownersOf(t, br.Brokers(), "takedown.events") == 3 })
	logGroup(t, br.Brokers())
	br.Proxy.Blackhole()
	var wg sync.WaitGroup
	for i, item := range items {
		wg.Go(func() { postKeyed(t.Context(), nodeA.base, item, fmt.Sprintf("bh-%d", i)) })
	}
	time.Sleep(700 * time.Millisecond)
	if !retry {
		// Nobody retries: only what A reserved can be swept. On a loaded
		// host A may not have reserved all twenty within 0.7 s.
		rdb := srv.Client()
		defer rdb.Close()
		waitUntil(t, "A reserved every takedown", func() bool {
			keys, err := rdb.Keys(t.Context(), srv.Prefix+"td:{*").Result()
			return err == nil && len(keys) == len(items)
		})
	}
	nodeA.kill()
	wg.Wait()
	br.Proxy.Heal()

	keys := map[string]string{}
	known, removed := 0, 0
	for i, item := range items {
		keys[fmt.Sprintf("bh-%d", i)] = item
		if !strings.HasPrefix(item, "unknown") {
			known++
			removed += len(containersOf(t, item))
		}
	}
	if !retry {
		waitUntil(t, "the sweeps published every command and the item service answered it", func() bool {
			st := svc.Stats()
			return st.Confirmed+st.Rejected >= int64(len(items))
		})
		swept, _ := b.takedowns.Republished()
		sweptC, _ := c.takedowns.Republished()
		t.Logf("with no retry, B's and C's sweeps republished %d+%d commands", swept, sweptC)
	}
	answers := settleAll(t, []*Node{b, c}, keys)
	for i, item := range items {
		a := answers[fmt.Sprintf("bh-%d", i)]
		if want := map[bool]int{true: 404, false: 200}[strings.HasPrefix(item, "unknown")]; a.status != want {
			t.Errorf("%s: %d %v, want %d", item, a.status, a.body, want)
		}
	}
	checkOneIdentity(t, br.Brokers(), answers, svc, known, removed)
}

// TestDrillPauseThen503: the broker path paused 3.5 s. The takedown gets
// 503 with Retry-After and its correlation ID after takedown.publish_timeout;
// the command kafka-go still held is written when the broker answers; the
// retry with the same key is that same takedown: one command identity, one
// effect.
func TestDrillPauseThen503(t *testing.T) {
	srv := realRedis(t)
	br := kafkatest.StartBroker(t, 3, drillTopics)
	svc := drillItemService(t, br.Brokers(), 0)
	a := startDrillNode(t, br.Brokers(), srv, nil)
	waitReady(t, a)

	br.Proxy.Pause()
	paused := time.Now()
	first := postKeyed(t.Context(), a.base(), "item-7", "pause-1")
	if first.status != 503 || first.body["correlation_id"] == nil {
		t.Fatalf("while paused: %d %v, want 503 with a correlation_id", first.status, first.body)
	}
	time.Sleep(3500*time.Millisecond - time.Since(paused))
	br.Proxy.Resume()
	again := settleAll(t, []*Node{a}, map[string]string{"pause-1": "item-7"})["pause-1"]
	if again.status != 200 || again.body["correlation_id"] != first.body["correlation_id"] {
		t.Fatalf("retry: %d %v, want 200 for %v", again.status, again.body, first.body["correlation_id"])
	}
	checkOneIdentity(t, br.Brokers(), map[string]answer{"pause-1": again}, svc, 1, len(containersOf(t, "item-7")))
}

// TestDrillForgedOutcomes: while a police request and a partner's
// WebSocket takedown are pending, three forgeries of each one's outcome are
// produced — from the wrong topic with the right source, from a foreign
// source on the outcome topic, and about another item — plus one for a
// correlation ID nobody published. None answers the request, sends the
// partner a result, changes the stored state, or makes a record; the real
// outcome decides both.
func TestDrillForgedOutcomes(t *testing.T) {
	a := startTestApp(t, func(c *config.Config) { c.ItemSvc.Enabled = false })
	waitReady(t, a)
	forgedDrill(t, a, a, a.kafkaAddr)
}

// TestDrillForgedOutcomesAcrossNodes is TestDrillForgedOutcomes on two
// nodes sharing the real Redis: the requests wait on node B, which
// consumes nothing; node A consumes every outcome, forged or real, and
// both reach B through the backplane, where the record in the shared
// outcome store decides.
func TestDrillForgedOutcomesAcrossNodes(t *testing.T) {
	srv := realRedis(t)
	env := newScaleEnv(t, "redis", srv.URL(), srv.Prefix)
	a := startNode(t, env, "A", consuming)
	b := startNode(t, env, "B", doorOnly)
	a.readyIs(t, http.StatusOK)
	forgedDrill(t, b.Node, a.Node, env.broker)
}

// forgedDrill holds a police request and a partner's WebSocket takedown on
// door, produces the forgeries and then the real outcomes to broker, and
// checks what door answers; consumer is the node that consumes them.
func forgedDrill(t *testing.T, door, consumer *Node, broker string) {
	t.Helper()
	a := door
	type result struct {
		resp *http.Response
		body map[string]any
	}
	done := make(chan result, 1)
	go func() {
		resp, m := post(t, t.Context(), a, policeToken, `{"item_id":"item-1","reason":"court order"}`, "Prefer", "wait=50")
		done <- result{resp, m}
	}()
	ws := dialWSWith(t, t, a.wsURL(""), bearer(acmeToken))
	defer ws.CloseNow()
	ws.Write(t.Context(), websocket.MessageText, []byte(`{"type":"takedown","id":"w","item_id":"item-4","reason":"counterfeit"}`))
	ack := wsFrame(t, ws)
	wsCorr, _ := ack["correlation_id"].(string)
	if ack["type"] != "ack" || wsCorr == "" {
		t.Fatalf("ack %v", ack)
	}
	var corr string
	waitUntil(t, "the police command on the topic", func() bool {
		ids, _ := commandIdentities(t, []string{broker})
		for c := range ids {
			if c != wsCorr {
				corr = c
			}
		}
		return corr != ""
	})

	src := producers.ItemServiceSource
	forged := func(topic, id, source, item, key, corrID string) kafka.Message {
		m := withSource(binaryMsg(topic, id, "takedown.confirmed", item, corrID,
			map[string]any{"item_id": item, "removed_from": []string{"nowhere"}, "confirmed_at": "2000-01-01T00:00:00Z"}), source)
		return withKey(m, key)
	}
	forge := func(tag, item, other, corrID string) []kafka.Message {
		return []kafka.Message{
			forged("items.reported", tag+"-1", src, item, item, corrID),
			forged("takedown.events", tag+"-2", "/forger", item, item, corrID),
			forged("takedown.events", tag+"-3", src, other, item, corrID),
		}
	}
	msgs := append(forge("police", "item-1", "item-2", corr), forge("partner", "item-4", "item-5", wsCorr)...)
	msgs = append(msgs, forged("takedown.events", "unknown-1", src, "item-1", "item-1", "never-published"))
	produce(t, broker, msgs...)
	waitUntil(t, "seven untrusted outcomes counted", func() bool {
		n := consumer.recorder.Untrusted()
		return n[takedown.ReasonTopic] == 2 && n[takedown.ReasonSource] == 2 && n[takedown.ReasonItem] == 2 && n[takedown.ReasonUnknown] == 1
	})

	// The partner sees the forged events (they are events like any other),
	// and no result: not right behind them, and not after a ping's pong.
	seen := map[string]bool{}
	for len(seen) < 3 {
		f := wsFrame(t, ws)
		if f["type"] == "result" {
			t.Fatalf("a forgery sent the partner a result: %v", f)
		}
		if ev, ok := f["event"].(map[string]any); ok && strings.HasPrefix(fmt.Sprint(ev["id"]), "partner-") {
			seen[fmt.Sprint(ev["id"])] = true
		}
	}
	ws.Write(t.Context(), websocket.MessageText, []byte(`{"type":"ping","id":"p"}`))
	for f := wsFrame(t, ws); f["type"] != "pong"; f = wsFrame(t, ws) {
		if f["type"] == "result" {
			t.Fatalf("a forgery sent the partner a result: %v", f)
		}
	}
	select {
	case r := <-done:
		t.Fatalf("a forgery answered the held request: %d %v", r.resp.StatusCode, r.body)
	default:
	}
	for _, c := range []string{corr, wsCorr} {
		if resp, st := get(t, a, modToken, "/v1/takedowns/"+c); resp.StatusCode != 200 || st["status"] != "pending" {
			t.Fatalf("after the forgeries %s is %d %v, want pending", c, resp.StatusCode, st)
		}
	}
	if resp, _ := get(t, a, modToken, "/v1/takedowns/never-published"); resp.StatusCode != 404 {
		t.Fatalf("a forged outcome made a record: %d", resp.StatusCode)
	}

	real := func(id, item, c string) kafka.Message {
		return withSource(binaryMsg("takedown.events", id, "takedown.confirmed", item, c,
			map[string]any{"item_id": item, "removed_from": []string{"group-1"}, "confirmed_at": "2026-12-01T00:00:00Z"}), src)
	}
	produce(t, broker, real("real-1", "item-1", corr), real("real-2", "item-4", wsCorr))
	r := <-done
	if r.resp.StatusCode != 200 || fmt.Sprint(r.body["removed_from"]) != "[group-1]" || r.body["correlation_id"] != corr {
		t.Fatalf("the real outcome must decide: %d %v", r.resp.StatusCode, r.body)
	}
	for f := wsFrame(t, ws); ; f = wsFrame(t, ws) {
		if f["type"] != "result" {
			continue
		}
		ev, _ := f["event"].(map[string]any)
		if f["status"] != "confirmed" || f["correlation_id"] != wsCorr || ev["id"] != "real-2" {
			t.Fatalf("partner result %v, want the real confirmation", f)
		}
		break
	}
	t.Logf("forged outcomes: %d forgeries produced, untrusted by reason %v; 0 answered a request, sent a result or changed a record; the 2 real outcomes decided",
		len(msgs), consumer.recorder.Untrusted())
}

// TestDrillReadyzNamesKafka: with the broker path a black hole, /readyz is
// 503 and names Kafka, not the backplane that still answers; it is 200
// again once the path heals.
func TestDrillReadyzNamesKafka(t *testing.T) {
	srv := realRedis(t)
	br := kafkatest.StartBroker(t, 3, drillTopics)
	a := startDrillNode(t, br.Brokers(), srv, nil)
	waitReady(t, a)
	br.Proxy.Blackhole()
	var body struct {
		Status string
		Failed []string
		Checks map[string]string
	}
	resp, err := http.Get(a.base() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 503 || fmt.Sprint(body.Failed) != "[kafka]" || body.Checks["backplane"] != "ok" {
		t.Fatalf("/readyz with Kafka hanging: %d %+v", resp.StatusCode, body)
	}
	br.Proxy.Heal()
	waitReady(t, a)
}

// TestDrillKilledNodeHeldTakedowns: fifty takedowns held on node A (the item
// service answers after two seconds); A is killed with SIGKILL; every
// request is retried at once on node B with its key. A's consumer-group
// partitions move to B within kafka.session_timeout, so B consumes the
// outcomes A no longer can, and every retry is answered within
// takedown.timeout: no retry gets 504.
func TestDrillKilledNodeHeldTakedowns(t *testing.T) {
	srv := realRedis(t)
	br := kafkatest.StartBroker(t, 3, drillTopics)
	svc := drillItemService(t, br.Brokers(), 2*time.Second)
	nodeA := startChildNode(t, childSpec{Brokers: br.Brokers(), Redis: srv.URL(), Prefix: srv.Prefix})
	b := startDrillNode(t, br.Brokers(), srv, nil)
	waitUntil(t, "A ready", func() bool {
		resp, err := http.Get(nodeA.base + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	waitReady(t, b)
	waitUntil(t, "both nodes own partitions of takedown.events", func() bool { return ownersOf(t, br.Brokers(), "takedown.events") == 2 })

	const n = 50
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for i := range n {
		go postKeyed(ctx, nodeA.base, fmt.Sprintf("item-%d", 200+i), fmt.Sprintf("kill-%d", i))
	}
	waitUntil(t, "A holds every request", func() bool {
		resp, err := http.Get(nodeA.base + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), fmt.Sprintf("\nswitchboard_takedowns_held %d\n", n))
	})
	nodeA.kill()
	killed := time.Now()

	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			answers[i] = postKeyed(t.Context(), b.base(), fmt.Sprintf("item-%d", 200+i), fmt.Sprintf("kill-%d", i))
		})
	}
	wg.Wait()
	statuses := map[int]int{}
	for i, a := range answers {
		statuses[a.status]++
		if a.err != nil || a.status != 200 {
			t.Errorf("retry %d on B: %d %v %v, want 200 within takedown.timeout", i, a.status, a.body, a.err)
		}
	}
	t.Logf("%d takedowns held on the killed node; retries on B answered by status %v, every one %v after the kill", n, statuses, time.Since(killed).Round(time.Millisecond))
	byKey, removed := map[string]answer{}, 0
	for i, a := range answers {
		byKey[fmt.Sprintf("kill-%d", i)] = a
		removed += len(containersOf(t, fmt.Sprintf("item-%d", 200+i)))
	}
	checkOneIdentity(t, br.Brokers(), byKey, svc, n, removed)
}

// ownersOf is how many members of the consumer group "switchboard" own a
// partition of topic.
func ownersOf(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{"switchboard"}})
	if err != nil || len(resp.Groups) != 1 {
		return 0
	}
	n := 0
	for _, m := range resp.Groups[0].Members {
		for _, a := range m.MemberAssignments.Topics {
			if a.Topic == topic && len(a.Partitions) > 0 {
				n++
			}
		}
	}
	return n
}

// logGroup logs the members of the consumer group "switchboard" and what
// each owns.
func logGroup(t *testing.T, brokers []string) {
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	resp, err := c.DescribeGroups(context.Background(), &kafka.DescribeGroupsRequest{GroupIDs: []string{"switchboard"}})
	if err != nil {
		t.Logf("describe group: %v", err)
		return
	}
	for _, g := range resp.Groups {
		t.Logf("group %s state %s", g.GroupID, g.GroupState)
		for _, m := range g.Members {
			t.Logf("  member %s %s: %+v", m.MemberID, m.ClientHost, m.MemberAssignments.Topics)
		}
	}
}

// watchedSub is a subscriber read to the end of the test: every event
// counted, gap notices counted apart, and whether its node ended it.
type watchedSub struct {
	s        *subscriber
	tl       *tally
	gaps     atomic.Int32
	ended    atomic.Bool // the connection ended before the test stopped it
	stopping atomic.Bool
	done     chan struct{}
}

func watchSub(t *testing.T, a *Node, s *subscriber) *watchedSub {
	t.Helper()
	if err := s.connect(t.Context(), a); err != nil {
		t.Fatalf("%v: %v", s, err)
	}
	w := &watchedSub{s: s, tl: newTally(), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for _, ev := range s.pending {
			w.tl.add(ev)
		}
		s.pending = nil
		for {
			f, ok, _ := s.read(time.Hour)
			switch {
			case !ok:
				w.ended.Store(!w.stopping.Load())
				return
			case f.kind == "gap":
				w.gaps.Add(1)
			case f.kind == "event":
				w.tl.add(f.ev)
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

// stop ends the subscriber's connection and waits for its reader.
func (w *watchedSub) stop() {
	if w.stopping.CompareAndSwap(false, true) {
		w.s.stop()
	}
	<-w.done
}

// TestDrillRedisRestartedEmpty: the Redis of two consuming nodes is killed
// (SIGKILL) while WebSocket and SSE subscribers are connected to both, and
// started again empty, as a Redis without persistence comes back. Events
// are produced before, during and after the outage. No subscriber is ended;
// each gets one gap notice for the new epoch, then every event consumed
// during and after the outage exactly once; a new subscriber reading the
// new epoch from its oldest event gets those too.
func TestDrillRedisRestartedEmpty(t *testing.T) {
	rs := redistest.StartOwn(t) // no dump, no AOF: it restarts empty
	env := newScaleEnv(t, "redis-own", rs.URL(), "sbtest:empty:")
	a := startNode(t, env, "A", consuming)
	b := startNode(t, env, "B", consuming)
	nodes := []*node{a, b}
	itemOf := func(n int) string { return fmt.Sprintf("item-%d", 1+n%3) }
	msgs := func(ns []int) []kafka.Message {
		var out []kafka.Message
		for _, n := range ns {
			out = append(out, scaleMsg(n, itemOf(n)))
		}
		return out
	}

	waitUntil(t, "both nodes own partitions of items.reported", func() bool { return ownersOf(t, []string{env.broker}, "items.reported") == 2 })

	const perKind = 5 // per node: WebSocket and SSE subscribers of reports
	var subs []*watchedSub
	for _, n := range nodes {
		for range perKind {
			subs = append(subs, watchSub(t, n.Node, newSubscriber(true, "reports")), watchSub(t, n.Node, newSubscriber(false, "reports")))
		}
	}
	has := func(w *watchedSub, ns []int) bool { return w.tl.has(expected(w.s.ws, w.s.channels, ns, itemOf)) }
	published := func() uint64 { return a.consumer.Stats().Published + b.consumer.Stats().Published }
	failures := func() uint64 { return a.consumer.Stats().PublishErrors + b.consumer.Stats().PublishErrors }

	produce(t, env.broker, msgs(seq(1, 10))...)
	for _, w := range subs {
		waitUntil(t, fmt.Sprintf("%v got events 1-10", w.s), func() bool { return has(w, seq(1, 10)) })
	}
	// Committed: a record handed to Redis but not committed would be read
	// again after the restart, a second time for these subscribers.
	waitUntil(t, "the group committed events 1-10", func() bool {
		lag, err := a.consumer.Lag(t.Context())
		if err != nil {
			return false
		}
		for _, l := range lag {
			if l.Lag != 0 {
				return false
			}
		}
		return true
	})

	before := published() // 10, or more if a rebalance handed an uncommitted record to the other node
	rs.Kill()
	for _, n := range nodes {
		n.readyIs(t, http.StatusServiceUnavailable)
	}
	produce(t, env.broker, msgs(seq(11, 20))...)
	waitUntil(t, "the consumers retrying", func() bool { return failures() > 0 })
	if n := published(); n != before {
		t.Fatalf("%d events published while Redis was down", n-before)
	}
	rs.Start(t) // empty
	for _, n := range nodes {
		n.readyIs(t, http.StatusOK)
	}
	produce(t, env.broker, msgs(seq(21, 30))...)

	all := seq(1, 30)
	for _, w := range subs {
		waitUntil(t, fmt.Sprintf("%v got events 1-30 or ended", w.s), func() bool { return w.ended.Load() || has(w, all) })
	}
	ended, gaps, delivered := 0, 0, 0
	for _, w := range subs {
		w.stop()
		if w.ended.Load() {
			ended++
			t.Errorf("%v ended by the Redis restart", w.s)
			continue
		}
		w.tl.exactlyOnce(t, w.s.String(), expected(w.s.ws, w.s.channels, all, itemOf))
		if g := w.gaps.Load(); g != 1 {
			t.Errorf("%v: %d gap notices, want 1 for the new epoch", w.s, g)
		}
		gaps += int(w.gaps.Load())
		delivered += w.tl.events
	}
	// A new subscriber from the oldest event reads the new epoch: what was
	// consumed during and after the outage.
	fresh := newSubscriber(false, "reports")
	fresh.from = "oldest"
	tl := newTally()
	if err := fresh.connect(t.Context(), b.Node); err != nil {
		t.Fatal(err)
	}
	defer fresh.stop()
	want := expected(false, fresh.channels, seq(11, 30), itemOf)
	drain(t, fresh, tl, want)
	tl.exactlyOnce(t, "fresh SSE from=oldest", want)
	t.Logf("redis restarted empty: 30 events produced (10 during the outage), %d subscribers, %d ended, %d deliveries (want %d), %d gap notices; %d hand-offs to Redis before the kill, consumer hand-offs retried %d times",
		len(subs), ended, delivered, 30*len(subs), gaps, before, failures())
}

// TestDrillItemServiceThroughReset: a node with its own item service (in
// process) answers takedowns; every connection to the broker is reset;
// the item service keeps running, and takedowns after the reset are
// answered 200, each applied once.
func TestDrillItemServiceThroughReset(t *testing.T) {
	srv := realRedis(t)
	br := kafkatest.StartBroker(t, 3, drillTopics)
	a := startDrillNode(t, br.Brokers(), srv, func(c *config.Config) { c.ItemSvc.Enabled = true })
	waitReady(t, a)
	if got := postKeyed(t.Context(), a.base(), "item-1", "reset-0"); got.status != 200 {
		t.Fatalf("before the reset: %d %v %v", got.status, got.body, got.err)
	}
	br.Proxy.Reset()
	keys := map[string]string{}
	for i := 1; i <= 5; i++ {
		keys[fmt.Sprintf("reset-%d", i)] = fmt.Sprintf("item-%d", 1+i)
	}
	answers := settleAll(t, []*Node{a}, keys)
	for key, got := range answers {
		if got.status != 200 {
			t.Errorf("%s after the reset: %d %v", key, got.status, got.body)
		}
	}
	var last string
	eventuallyWithin(t, scaleWait, "/readyz 200 after the reset", func() bool {
		resp, b, err := call(t.Context(), nil, http.MethodGet, a.base()+"/readyz", nil, "")
		if err != nil {
			return false
		}
		if last != string(b) {
			last = string(b)
			t.Logf("%s /readyz %d %s", time.Now().Format("15:04:05.000"), resp.StatusCode, b)
		}
		return resp.StatusCode == 200
	})
	st := a.itemsvc.Stats()
	if st.Commands-st.Duplicates != 6 || st.Confirmed != 6 {
		t.Errorf("item service %+v: want 6 commands applied and confirmed", st)
	}
	t.Logf("item service through a broker reset: 6 takedowns, %d confirmed, %d commands read (%d duplicates skipped), %d fetch errors",
		st.Confirmed, st.Commands, st.Duplicates, st.FetchErrors)
}

// TestDrillItemServiceAloneThroughReset: the item service run alone, as
// `switchboard itemsvc` runs it, answers a node's takedowns; every
// connection to the broker is reset; it keeps running (before, it
// returned and the command exited 1), and the takedowns after the reset
// are answered 200.
func TestDrillItemServiceAloneThroughReset(t *testing.T) {
	srv := realRedis(t)
	br := kafkatest.StartBroker(t, 3, drillTopics)
	a := startDrillNode(t, br.Brokers(), srv, nil)
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Brokers = br.Brokers()
	cfg.Log.Level = "error"
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- RunItemService(ctx, cfg) }()
	t.Cleanup(func() { cancel(); <-ran })
	waitReady(t, a)
	running := func() {
		t.Helper()
		select {
		case err := <-ran:
			ran <- err
			t.Fatalf("the item service returned %v", err)
		default:
		}
	}
	if got := settleAll(t, []*Node{a}, map[string]string{"alone-0": "item-1"})["alone-0"]; got.status != 200 {
		t.Fatalf("before the reset: %d %v", got.status, got.body)
	}
	br.Proxy.Reset()
	keys := map[string]string{}
	for i := 1; i <= 5; i++ {
		keys[fmt.Sprintf("alone-%d", i)] = fmt.Sprintf("item-%d", 1+i)
	}
	answers := settleAll(t, []*Node{a}, keys)
	statuses := map[int]int{}
	for key, got := range answers {
		statuses[got.status]++
		if got.status != 200 {
			t.Errorf("%s after the reset: %d %v", key, got.status, got.body)
		}
	}
	running()
	t.Logf("item service alone through a broker reset: 1 takedown before, 5 after, answered by status %v; still running", statuses)
}
