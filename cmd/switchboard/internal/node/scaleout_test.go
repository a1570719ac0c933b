package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
	"github.com/switchboard/switchboard/producers"
)

// Scale-out: several nodes in one test process share one Kafka-protocol
// broker (owned by the test, not by a node) and one Redis. Every test runs
// on miniredis and, when it answers (always in CI), on the real server.
// Consumer-group rebalances take seconds with kfake, so the tests wait on
// conditions with generous deadlines and never assert on timing.

// scaleWait bounds each wait of the scale-out tests: rebalances are slow.
const scaleWait = 60 * time.Second

// scaleEnv is what the nodes of one test share.
type scaleEnv struct {
	redis  string // "miniredis", "redis", or "redis-own"
	broker string
	url    string // redis.url of every node
	prefix string // every node's Redis key prefix
}

func newScaleEnv(t testing.TB, name, redisURL, prefix string) *scaleEnv {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.Ports(0),
		kfake.SeedTopics(3, "items.reported", "takedown.commands", "takedown.events", "switchboard.dlq",
			producers.DemoItemCommandsTopic, producers.DemoItemEventsTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	return &scaleEnv{redis: name, broker: kc.ListenAddrs()[0], url: redisURL, prefix: prefix}
}

// forEachRedis runs body once per Redis of redistest.Servers, each time
// with a fresh broker and the server's own key prefix.
func forEachRedis(t *testing.T, body func(t *testing.T, env *scaleEnv)) {
	for _, srv := range redistest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) { body(t, newScaleEnv(t, srv.Name, srv.URL(), srv.Prefix)) })
	}
}

// node is one Switchboard node of a scale-out test.
type node struct {
	*Node
	name    string
	crashed bool
}

// nodeKind says what a node runs besides its doors.
type nodeKind int

const (
	// doorOnly nodes serve clients but consume nothing: their background
	// parts (the consumer) are stopped as soon as they start, before any
	// record exists, so whatever their clients receive was consumed by
	// another node and came through Redis. Their consumer is in a group of
	// its own, so its short life never stalls the shared group's
	// rebalance.
	doorOnly nodeKind = iota
	// consuming nodes also consume in the shared group.
	consuming
	// consumingWithItemSvc nodes also run the simulated item service.
	consumingWithItemSvc
)

func startNode(t *testing.T, env *scaleEnv, name string, kind nodeKind, opts ...Option) *node {
	t.Helper()
	n := &node{name: name}
	n.Node = startTestNode(t, nodeSpec{
		config: func(cfg *config.Config) {
			cfg.Kafka.Brokers = []string{env.broker}
			cfg.Redis.URL = env.url
			cfg.Limits.TakedownBurst = 1000
			cfg.ItemSvc.Enabled = kind == consumingWithItemSvc
			cfg.ItemSvc.Latency = 10 * time.Millisecond
			if kind == doorOnly {
				cfg.Kafka.GroupID = "door-only-" + name
			}
		},
		opts:     append([]Option{withRedisPrefix(env.prefix)}, opts...),
		stopWait: scaleWait,
		stopped: func(err error) {
			if err != nil && !n.crashed {
				t.Errorf("stopping node %s: %v", name, err)
			}
		},
	})
	if kind == doorOnly {
		n.cancel()
	}
	return n
}

// stop shuts n down gracefully, as on SIGTERM. It is idempotent.
func (n *node) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), scaleWait)
	defer cancel()
	return n.Shutdown(ctx)
}

// crash drops every HTTP connection of n at once, held requests included,
// as a killed process would, then stops the rest of it.
func (n *node) crash() {
	n.crashed = true
	n.srv.Close()
	n.takedowns.DropHeld() // held requests handed off from net/http
	n.stop()               // reports the listener Close already closed; nothing else
}

// ready waits until n's /readyz answers want.
func (n *node) readyIs(t *testing.T, want int) {
	t.Helper()
	readyzIs(t, n.Node, want, scaleWait)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, scaleWait, what, cond)
}

// scaleMsg is item.reported number n for item; its CloudEvents id is "so-<n>".
func scaleMsg(n int, item string) kafka.Message {
	return binaryMsg("items.reported", fmt.Sprintf("so-%d", n), "item.reported", item, "",
		map[string]any{"item_id": item, "reporter_id": "u", "reason": "spam", "n": n})
}

// received is one event as a subscriber saw it.
type received struct {
	channel string // WebSocket only: SSE sends an event once per stream
	id      string // CloudEvents id
	subject string
	n       int
}

// frame is one thing read from a subscriber's connection.
type frame struct {
	kind    string // "event", "cursor" (an SSE id-only block), "ack", "gap", "other"
	cursor  string // SSE: the stream id; WebSocket: the channel's cursor
	reqID   string // WebSocket ack
	channel string
	ev      received
}

// subscriber is one client that can move between nodes with its cursors:
// an SSE stream that resumes with Last-Event-ID (kept as EventSource keeps
// it: the id of the last block read, event or not), or a WebSocket whose
// subscribe frames carry each channel's last cursor.
type subscriber struct {
	ws       bool
	channels []string

	lastID  string            // SSE
	from    string            // SSE: ?from= of a stream with no Last-Event-ID
	cursors map[string]string // WebSocket, by channel
	pending []received        // WebSocket events read while waiting for acks

	frames chan frame
	stop   func() // ends the connection and waits for its reader
}

func newSubscriber(ws bool, channels ...string) *subscriber {
	return &subscriber{ws: ws, channels: channels, cursors: map[string]string{}}
}

func (s *subscriber) String() string {
	if s.ws {
		return "ws" + fmt.Sprint(s.channels)
	}
	return "sse" + fmt.Sprint(s.channels)
}

// connect opens a connection to a, resuming after the cursors s holds, and
// returns once every subscription is active.
func (s *subscriber) connect(ctx context.Context, a *Node) error {
	ctx, cancel := context.WithCancel(ctx)
	s.frames = make(chan frame, 4096)
	done := make(chan struct{})
	s.stop = func() { cancel(); <-done }
	var err error
	if s.ws {
		err = s.connectWS(ctx, a, done)
	} else {
		err = s.connectSSE(ctx, a, done)
	}
	if err != nil {
		s.stop()
	}
	return err
}

func (s *subscriber) connectSSE(ctx context.Context, a *Node, done chan struct{}) error {
	q := url.Values{"channel": s.channels}
	if s.from != "" && s.lastID == "" {
		q.Set("from", s.from)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.base()+"/v1/sse?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+modToken)
	if s.lastID != "" {
		req.Header.Set("Last-Event-ID", s.lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		close(done)
		return err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		close(done)
		return fmt.Errorf("SSE status %d", resp.StatusCode)
	}
	go func() {
		defer close(done)
		defer close(s.frames)
		defer resp.Body.Close()
		go func() { <-ctx.Done(); resp.Body.Close() }()
		sseBlocks(resp.Body, func(block map[string]string) bool {
			f := frame{kind: "other", cursor: block["id"]}
			switch {
			case block["event"] == "gap":
				f.kind = "gap"
			case block["data"] != "":
				f.kind = "event"
				f.ev = decodeCE([]byte(block["data"]))
			case block["id"] != "":
				f.kind = "cursor"
			}
			select {
			case s.frames <- f:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	return nil
}

func (s *subscriber) connectWS(ctx context.Context, a *Node, done chan struct{}) error {
	u := a.wsURL("")
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{"switchboard.v1"},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + modToken}}})
	if err != nil {
		close(done)
		return err
	}
	go func() {
		defer close(done)
		defer close(s.frames)
		defer c.CloseNow()
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			var m struct {
				Type, ID, Channel, Cursor string
				Event                     json.RawMessage
			}
			if json.Unmarshal(b, &m) != nil {
				continue
			}
			f := frame{kind: m.Type, cursor: m.Cursor, reqID: m.ID, channel: m.Channel}
			if m.Type == "event" {
				f.ev = decodeCE(m.Event)
				f.ev.channel = m.Channel
			}
			select {
			case s.frames <- f:
			case <-ctx.Done():
				return
			}
		}
	}()
	// One subscription at a time: each is active once acked.
	s.pending = nil
	for i, ch := range s.channels {
		sub := map[string]string{"type": "subscribe", "id": fmt.Sprint(i), "channel": ch}
		if cur := s.cursors[ch]; cur != "" {
			sub["cursor"] = cur
		}
		b, _ := json.Marshal(sub)
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			return err
		}
		for acked := false; !acked; {
			f, ok, err := s.read(scaleWait)
			switch {
			case err != nil:
				return err
			case !ok:
				return errors.New("connection ended before the ack")
			case f.kind == "ack" && f.reqID == fmt.Sprint(i):
				s.cursors[ch] = f.cursor
				acked = true
			case f.kind == "error":
				return fmt.Errorf("subscribe %s refused", ch)
			case f.kind == "event":
				s.pending = append(s.pending, f.ev)
			}
		}
	}
	return nil
}

func decodeCE(b []byte) received {
	var ce struct {
		ID, Subject string
		Data        struct{ N int }
	}
	json.Unmarshal(b, &ce)
	return received{id: ce.ID, subject: ce.Subject, n: ce.Data.N}
}

// read returns the next frame, keeping the cursors up to date; ok is false
// when the connection ended. A gap is an error: history must cover every
// resume of these tests.
func (s *subscriber) read(timeout time.Duration) (frame, bool, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f, ok := <-s.frames:
		if !ok {
			return f, false, nil
		}
		if f.kind == "gap" {
			return f, true, fmt.Errorf("%v: gap notice %+v", s, f)
		}
		switch {
		case !s.ws && f.cursor != "":
			s.lastID = f.cursor
		case s.ws && f.kind == "event":
			s.cursors[f.channel] = f.cursor
		}
		return f, true, nil
	case <-t.C:
		return frame{}, true, fmt.Errorf("%v: nothing within %v", s, timeout)
	}
}

// next returns the next event; ok is false when the connection ended.
func (s *subscriber) next(timeout time.Duration) (received, bool, error) {
	if len(s.pending) > 0 {
		ev := s.pending[0]
		s.pending = s.pending[1:]
		return ev, true, nil
	}
	for {
		f, ok, err := s.read(timeout)
		if err != nil || !ok {
			return received{}, ok, err
		}
		if f.kind == "event" {
			return f.ev, true, nil
		}
	}
}

// tally counts what a subscriber received, to check exactly once and
// per-item order.
type tally struct {
	mu     sync.Mutex
	count  map[string]int // by channel|id
	lastN  map[string]int // by channel|subject
	errs   []string
	events int
}

func newTally() *tally { return &tally{count: map[string]int{}, lastN: map[string]int{}} }

func (tl *tally) add(ev received) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events++
	tl.count[ev.channel+"|"+ev.id]++
	k := ev.channel + "|" + ev.subject
	if last, ok := tl.lastN[k]; ok && ev.n <= last {
		tl.errs = append(tl.errs, fmt.Sprintf("%s after n=%d: out of order or twice", ev.id, last))
	}
	tl.lastN[k] = ev.n
}

func (tl *tally) has(keys []string) bool { return len(tl.missing(keys)) == 0 }

// missing returns the keys of want not received yet.
func (tl *tally) missing(want []string) []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var out []string
	for _, k := range want {
		if tl.count[k] == 0 {
			out = append(out, k)
		}
	}
	return out
}

// exactlyOnce checks that every expected key came once and nothing else came.
func (tl *tally) exactlyOnce(t *testing.T, who string, want []string) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, e := range tl.errs {
		t.Errorf("%s: %s", who, e)
	}
	for _, k := range want {
		if n := tl.count[k]; n != 1 {
			t.Errorf("%s: %s received %d times", who, k, n)
		}
	}
	if tl.events != len(want) {
		t.Errorf("%s: %d events received, want %d", who, tl.events, len(want))
	}
}

// expected lists the tally keys a subscriber of channels must receive for
// the events numbered in ns, whose items itemOf gives.
func expected(ws bool, channels []string, ns []int, itemOf func(int) string) []string {
	var out []string
	for _, n := range ns {
		item := itemOf(n)
		for _, ch := range channels {
			if ch == "reports" || ch == "item:"+item {
				if ws {
					out = append(out, ch+"|"+fmt.Sprintf("so-%d", n))
				} else {
					out = append(out, "|"+fmt.Sprintf("so-%d", n))
					break
				}
			}
		}
	}
	return out
}

func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// drain reads s into tl until want is all there.
func drain(t *testing.T, s *subscriber, tl *tally, want []string) {
	t.Helper()
	deadline := time.Now().Add(scaleWait)
	for !tl.has(want) {
		if time.Now().After(deadline) {
			t.Fatalf("%v: not every event arrived", s)
		}
		ev, ok, err := s.next(scaleWait)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("%v: connection ended", s)
		}
		tl.add(ev)
	}
}

// TestScaleOutMoveBetweenNodes: a subscriber on node A receives events that
// only node B consumes; it drops in the middle of the flow, events go on,
// and it resumes on node C with its cursor (SSE Last-Event-ID, WebSocket
// cursors): it misses nothing and sees nothing twice.
func TestScaleOutMoveBetweenNodes(t *testing.T) {
	for _, ws := range []bool{false, true} {
		name := "sse"
		if ws {
			name = "ws"
		}
		t.Run(name, func(t *testing.T) {
			forEachRedis(t, func(t *testing.T, env *scaleEnv) {
				a := startNode(t, env, "A", doorOnly)
				b := startNode(t, env, "B", consuming)
				c := startNode(t, env, "C", doorOnly)
				itemOf := func(n int) string { return fmt.Sprintf("item-%d", 1+n%2) }
				msgs := func(ns []int) []kafka.Message {
					var out []kafka.Message
					for _, n := range ns {
						out = append(out, scaleMsg(n, itemOf(n)))
					}
					return out
				}
				chans := []string{"reports", "item:item-1"} // overlapping: item-1 events travel on both
				s := newSubscriber(ws, chans...)
				tl := newTally()
				if err := s.connect(t.Context(), a.Node); err != nil {
					t.Fatal(err)
				}
				produce(t, env.broker, msgs(seq(1, 10))...)
				// Read six of the ten on A, then drop: the rest are in flight.
				for range 6 {
					ev, ok, err := s.next(scaleWait)
					if err != nil || !ok {
						t.Fatalf("on A: %v (connection open %v)", err, ok)
					}
					tl.add(ev)
				}
				s.stop()
				produce(t, env.broker, msgs(seq(11, 20))...)
				// Resume only once Redis holds them all: they come from history.
				waitUntil(t, "B published 20 events", func() bool { return b.consumer.Stats().Published == 20 })
				if err := s.connect(t.Context(), c.Node); err != nil {
					t.Fatal(err)
				}
				defer s.stop()
				produce(t, env.broker, msgs(seq(21, 25))...)
				drain(t, s, tl, expected(ws, chans, seq(1, 25), itemOf))
				// A duplicate would come before these last two, one per channel.
				produce(t, env.broker, msgs(seq(26, 27))...)
				want := expected(ws, chans, seq(1, 27), itemOf)
				drain(t, s, tl, want)
				tl.exactlyOnce(t, s.String(), want)
				if got := a.consumer.Stats().Fetched + c.consumer.Stats().Fetched; got != 0 {
					t.Fatalf("door-only nodes fetched %d records", got)
				}
			})
		})
	}
}

// TestScaleOutTakedownAnsweredAcrossNodes: a police request held on node A
// is answered 200 when node B consumes the confirmation. A runs no consumer
// (doorOnly: stopped before any record existed), so B, the only member of
// the group, consumes every event; A learns the outcome only through Redis.
// Node C, also door-only, then reads the outcome from the shared store.
func TestScaleOutTakedownAnsweredAcrossNodes(t *testing.T) {
	forEachRedis(t, func(t *testing.T, env *scaleEnv) {
		a := startNode(t, env, "A", doorOnly)
		b := startNode(t, env, "B", consumingWithItemSvc)
		c := startNode(t, env, "C", doorOnly)
		resp, m := post(t, t.Context(), a.Node, policeToken, `{"item_id":"item-1","reason":"court order"}`, "Prefer", "wait=50")
		if resp.StatusCode != 200 || m["status"] != "confirmed" || m["item_id"] != "item-1" {
			t.Fatalf("%d %v", resp.StatusCode, m)
		}
		got, want := strs(m["removed_from"]), containersOf(t, "item-1")
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("removed_from %v, want %v", got, want)
		}
		if n := a.consumer.Stats().Fetched; n != 0 {
			t.Fatalf("node A fetched %d records", n)
		}
		// B consumed the command, one item.removed per container and the
		// confirmation (its counter moves once the hub call returns, which
		// may be just after A answered).
		eventually(t, "node B published every event of the takedown", func() bool {
			return b.consumer.Stats().Published >= uint64(2+len(want))
		})
		corr := m["correlation_id"].(string)
		resp, m = get(t, c.Node, policeToken, "/v1/takedowns/"+corr)
		if resp.StatusCode != 200 || m["status"] != "confirmed" {
			t.Fatalf("GET on C: %d %v", resp.StatusCode, m)
		}
	})
}

// TestScaleOutTakedownRetryOnAnotherNode: node A dies while it holds a police
// request (no item service runs yet, so there is no outcome); the client
// retries on node C with the same Idempotency-Key and gets the
// confirmation, and the command topic holds exactly one command.
func TestScaleOutTakedownRetryOnAnotherNode(t *testing.T) {
	forEachRedis(t, func(t *testing.T, env *scaleEnv) {
		a := startNode(t, env, "A", consuming)
		b := startNode(t, env, "B", consuming)
		c := startNode(t, env, "C", consuming)
		body := `{"item_id":"item-7","reason":"court order"}`
		errc := make(chan error, 1)
		go func() {
			resp, _, err := call(t.Context(), nil, http.MethodPost, a.base()+"/v1/takedowns",
				jsonHeader(policeToken, "Idempotency-Key", "scale-k1", "Prefer", "wait=50"), body)
			if resp != nil {
				err = fmt.Errorf("answered %d", resp.StatusCode)
			}
			errc <- err
		}()
		waitUntil(t, "the request held on A", func() bool { return a.takedowns.Held() == 1 })
		// Crash A only once its command is on the topic.
		var corr string
		waitUntil(t, "the command published", func() bool {
			id, err := c.bus().Client().Get(t.Context(), env.prefix+"idem:{police}:scale-k1").Result()
			corr = id
			return err == nil && countCommands(t, &Node{kafkaAddr: env.broker}, corr) == 1
		})
		a.crash()
		if err := <-errc; err == nil || strings.HasPrefix(err.Error(), "answered") {
			t.Fatalf("the client of the crashed node got %v, want a broken connection", err)
		}
		// The item service comes up (beside node B) and answers the command.
		runItemService(t, b.Node, env.broker)

		resp, m := post(t, t.Context(), c.Node, policeToken, body, "Idempotency-Key", "scale-k1", "Prefer", "wait=50")
		if resp.StatusCode != 200 || m["status"] != "confirmed" || m["correlation_id"] != corr {
			t.Fatalf("retry on C: %d %v (correlation %s)", resp.StatusCode, m, corr)
		}
		if n := countCommands(t, &Node{kafkaAddr: env.broker}, corr); n != 1 {
			t.Fatalf("%d commands for the key, want 1", n)
		}
	})
}

// TestScaleOutCommandRetryOnAnotherNode is TestScaleOutTakedownRetryOnAnotherNode
// for a declared command: a restore held on node A, whose node crashes
// once its command is on the topic, is retried with its Idempotency-Key
// on node C, which follows the same call: one command on the topic.
func TestScaleOutCommandRetryOnAnotherNode(t *testing.T) {
	forEachRedis(t, func(t *testing.T, env *scaleEnv) {
		restores := withCommands(demoRestores())
		a := startNode(t, env, "A", consuming, restores)
		b := startNode(t, env, "B", consuming, restores)
		c := startNode(t, env, "C", consuming, restores)
		body := `{"item_id":"item-7"}`
		errc := make(chan error, 1)
		go func() {
			resp, _, err := call(t.Context(), nil, http.MethodPost, a.base()+"/v1/restores",
				jsonHeader(policeToken, "Idempotency-Key", "scale-r1", "Prefer", "wait=50"), body)
			if resp != nil {
				err = fmt.Errorf("answered %d", resp.StatusCode)
			}
			errc <- err
		}()
		waitUntil(t, "the request held on A", func() bool { return a.takedowns.Held() == 1 })
		var corr string
		broker := &Node{kafkaAddr: env.broker}
		waitUntil(t, "the command published", func() bool {
			id, err := c.bus().Client().Get(t.Context(), env.prefix+"idem:{police}/restores:scale-r1").Result()
			corr = id
			return err == nil && restoresOf(t, broker, corr) == 1
		})
		a.crash()
		if err := <-errc; err == nil || strings.HasPrefix(err.Error(), "answered") {
			t.Fatalf("the client of the crashed node got %v, want a broken connection", err)
		}
		runItemService(t, b.Node, env.broker)
		resp, m := postCommand(t, c.Node, "restores", policeToken, body, "Idempotency-Key", "scale-r1", "Prefer", "wait=50")
		if resp.StatusCode != 200 || m["status"] != "confirmed" || m["correlation_id"] != corr {
			t.Fatalf("retry on C: %d %v (correlation %s)", resp.StatusCode, m, corr)
		}
		if n := restoresOf(t, broker, corr); n != 1 {
			t.Fatalf("%d commands for the key, want 1", n)
		}
	})
}

// bus returns the node's Redis backplane.
func (n *node) bus() interface{ Client() redis.UniversalClient } {
	return n.bp.(interface{ Client() redis.UniversalClient })
}

// roamer is a subscriber that, whenever its node ends its connection,
// resumes on another live node with its cursor, until stopped.
type roamer struct {
	s      *subscriber
	tl     *tally
	moves  int
	err    error
	failed chan struct{} // closed when err is set
	stop   context.CancelFunc
	done   chan struct{}
}

// complete reports whether r has every key of want, or has failed.
func (r *roamer) complete(want []string) bool {
	select {
	case <-r.failed:
		return true
	default:
		return r.tl.has(want)
	}
}

// cluster is the set of live nodes, changing during a rolling restart.
type cluster struct {
	mu    sync.Mutex
	nodes []*node
}

func (c *cluster) pick(not *Node) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []*Node
	for _, n := range c.nodes {
		if n.Node != not {
			live = append(live, n.Node)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return live[rand.IntN(len(live))]
}

func (c *cluster) replace(old, nw *node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.nodes {
		if n == old {
			c.nodes[i] = nw
		}
	}
}

func roam(t *testing.T, cl *cluster, first *Node, s *subscriber) *roamer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &roamer{s: s, tl: newTally(), stop: cancel, done: make(chan struct{}), failed: make(chan struct{})}
	if err := s.connect(ctx, first); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(r.done)
		on := first
		for ctx.Err() == nil {
			ev, ok, err := s.next(time.Hour)
			if ok && err != nil {
				r.err = err
				close(r.failed)
				s.stop()
				return
			}
			if ok {
				r.tl.add(ev)
				continue
			}
			// The node ended the connection: resume elsewhere.
			s.stop()
			for ctx.Err() == nil {
				nxt := cl.pick(on)
				if nxt != nil && s.connect(ctx, nxt) == nil {
					on = nxt
					r.moves++
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		s.stop()
	}()
	t.Cleanup(r.end)
	return r
}

// wait waits until r has every key of want, then stops it.
func (r *roamer) wait(t *testing.T, want []string) {
	t.Helper()
	deadline := time.Now().Add(scaleWait)
	for !r.complete(want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.end()
	if r.err != nil {
		t.Fatal(r.err)
	}
	if m := r.tl.missing(want); len(m) > 0 {
		t.Fatalf("%v (moved %d times, cursor %q %v) never received %v", r.s, r.moves, r.s.lastID, r.s.cursors, m)
	}
}

// end stops the roamer and waits for it. It is idempotent.
func (r *roamer) end() {
	r.stop()
	<-r.done
}

// flow produces item.reported events numbered from 1 at about rate per
// second until stop is closed, then returns how many it produced.
func flow(addr string, rate int, itemOf func(int) string, stop <-chan struct{}) (int, error) {
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, Transport: tr}
	defer w.Close()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-stop:
			return n - 1, nil
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), scaleWait)
		err := w.WriteMessages(ctx, scaleMsg(n, itemOf(n)))
		cancel()
		if err != nil {
			return n - 1, err
		}
	}
}

// TestScaleOutRollingRestart: all three nodes are replaced one after the
// other (a new node starts, then the old one stops as on SIGTERM) while
// events flow. SSE and WebSocket subscribers, started on every node, are
// ended by their node's shutdown and resume on a live node with their
// cursors: each receives every event exactly once, each item in order.
func TestScaleOutRollingRestart(t *testing.T) {
	forEachRedis(t, func(t *testing.T, env *scaleEnv) {
		cl := &cluster{}
		for _, name := range []string{"A", "B", "C"} {
			cl.nodes = append(cl.nodes, startNode(t, env, name, consuming))
		}
		itemOf := func(n int) string { return fmt.Sprintf("item-%d", 1+n%4) }
		specs := []struct {
			ws       bool
			channels []string
		}{
			{false, []string{"reports"}},
			{true, []string{"reports"}},
			{false, []string{"item:item-1", "item:item-2"}},
			{true, []string{"item:item-1", "item:item-2"}},
			{false, []string{"item:item-3"}},
			{true, []string{"reports", "item:item-4"}},
		}
		var roamers []*roamer
		for i, sp := range specs {
			roamers = append(roamers, roam(t, cl, cl.nodes[i%3].Node, newSubscriber(sp.ws, sp.channels...)))
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
		for i, old := range slices.Clone(cl.nodes) {
			time.Sleep(time.Second) // let events flow between restarts
			nw := startNode(t, env, fmt.Sprintf("%s%d", old.name, i+2), consuming)
			cl.replace(old, nw)
			if err := old.stop(); err != nil {
				t.Fatalf("stopping %s: %v", old.name, err)
			}
		}
		time.Sleep(time.Second)
		close(stopFlow)
		res := <-flowed
		if res.err != nil {
			t.Fatal(res.err)
		}
		// A duplicate from a rebalance would come before these last events.
		// (One per item, so one per partition used.)
		total := res.n + 4
		var last []kafka.Message
		for n := res.n + 1; n <= total; n++ {
			last = append(last, scaleMsg(n, itemOf(n)))
		}
		produce(t, env.broker, last...)
		t.Logf("%s: %d events while restarting", env.redis, total)
		for _, r := range roamers {
			want := expected(r.s.ws, r.s.channels, seq(1, total), itemOf)
			r.wait(t, want)
			if r.moves == 0 {
				t.Errorf("%v never moved", r.s)
			}
			r.tl.exactlyOnce(t, r.s.String(), want)
		}
	})
}

// TestScaleOutRedisRestart: the Redis every node uses stops while events
// flow and starts again. Meanwhile /readyz is 503, takedowns are refused
// with 503, and the consumers retry without committing; afterwards /readyz
// is 200 and every subscriber, connected throughout or not, receives every
// event exactly once, those consumed while Redis was down included.
//
// It runs its own redis-server (on a Unix socket, in a temporary directory)
// so it can stop it; the machine's shared server is never touched. The
// server keeps its data across the restart, as a Redis with persistence
// does (SHUTDOWN SAVE, then a start on the same dump): without persistence
// history is lost and resumes get a gap notice instead (docs/deployment.md).
func TestScaleOutRedisRestart(t *testing.T) {
	rs := redistest.StartOwn(t)
	env := newScaleEnv(t, "redis-own", rs.URL(), "sbtest:restart:")

	a := startNode(t, env, "A", consuming)
	b := startNode(t, env, "B", consuming)
	nodes := []*node{a, b}
	cl := &cluster{nodes: nodes}
	itemOf := func(n int) string { return fmt.Sprintf("item-%d", 1+n%3) }
	roamers := []*roamer{
		roam(t, cl, a.Node, newSubscriber(false, "reports")),
		roam(t, cl, b.Node, newSubscriber(true, "reports")),
		roam(t, cl, a.Node, newSubscriber(true, "item:item-1", "item:item-2")),
	}
	msgs := func(ns []int) []kafka.Message {
		var out []kafka.Message
		for _, n := range ns {
			out = append(out, scaleMsg(n, itemOf(n)))
		}
		return out
	}
	published := func() uint64 { return a.consumer.Stats().Published + b.consumer.Stats().Published }
	failures := func() uint64 { return a.consumer.Stats().PublishErrors + b.consumer.Stats().PublishErrors }
	produce(t, env.broker, msgs(seq(1, 10))...)
	waitUntil(t, "10 events published", func() bool { return published() == 10 })

	rs.StopSaving(t)
	for _, n := range nodes {
		n.readyIs(t, http.StatusServiceUnavailable)
	}
	if resp, _ := post(t, t.Context(), a.Node, policeToken, `{"item_id":"item-1","reason":"test"}`); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("takedown while Redis is down: %d %v", resp.StatusCode, resp.Header)
	}
	produce(t, env.broker, msgs(seq(11, 20))...)
	waitUntil(t, "the consumers retrying", func() bool { return failures() > 0 })
	if n := published(); n != 10 {
		t.Fatalf("%d events published while Redis was down", n)
	}

	rs.Start(t)
	for _, n := range nodes {
		n.readyIs(t, http.StatusOK)
	}
	produce(t, env.broker, msgs(seq(21, 30))...)
	total := 30
	for _, r := range roamers {
		want := expected(r.s.ws, r.s.channels, seq(1, total), itemOf)
		r.wait(t, want)
		r.tl.exactlyOnce(t, r.s.String(), want)
	}
	// A fresh subscriber on the restarted Redis reads the whole history.
	s := newSubscriber(false, "item:item-1")
	s.from = "oldest"
	tl := newTally()
	if err := s.connect(t.Context(), b.Node); err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	want := expected(false, s.channels, seq(1, total), itemOf)
	drain(t, s, tl, want)
	tl.exactlyOnce(t, "fresh SSE from=oldest", want)
	t.Logf("consumer retries while Redis was down: %d", failures())
}
