package node

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub/redisbus"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// scaleBenchCase is one configuration of BenchmarkScaleOut.
type scaleBenchCase struct {
	backplane string // "memory" or "redis"
	nodes     int
}

// Sizes of BenchmarkScaleOut, small enough for a 2-core machine.
const (
	scaleBenchSubs = 500 // SSE subscribers of reports, spread over the nodes
	scaleBenchRate = 50  // events per second, for steadyState
)

// BenchmarkScaleOut compares one node on the memory backplane with one and
// three nodes on Redis (the real server at 127.0.0.1:6379 when it answers,
// miniredis otherwise; the log says which): 500 SSE subscribers of
// reports, spread evenly over the nodes by one load-client child process
// per node, receive 50 item.reported events per second for 5 s, produced
// by a kafka-go writer. It reports deliveries/s, the worst child's p99
// produce→receive latency, and the Redis commands the nodes' buses sent
// per event and per delivery (plus the real server's own count of commands
// executed, scripts' inner commands included, when it is the real server:
// that count includes whatever else uses the server meanwhile).
//
// Run it with -benchtime=1x.
func BenchmarkScaleOut(b *testing.B) {
	for _, c := range []scaleBenchCase{{"memory", 1}, {"redis", 1}, {"redis", 3}} {
		b.Run(fmt.Sprintf("%s/nodes=%d", c.backplane, c.nodes), func(b *testing.B) { benchScaleOut(b, c) })
	}
}

func benchScaleOut(b *testing.B, c scaleBenchCase) {
	var nodes []*Node
	var broker string
	var srv redistest.Server
	if c.backplane == "memory" {
		a := startBenchApp(b, 0)
		nodes, broker = []*Node{a}, a.kafkaAddr
	} else {
		servers := redistest.Servers(b)
		srv = servers[len(servers)-1] // the real server when it answers
		env := newScaleEnv(b, srv.Name, srv.URL(), srv.Prefix)
		broker = env.broker
		for range c.nodes {
			nodes = append(nodes, startBenchNode(b, env))
		}
		b.Logf("Redis: %s at %s", srv.Name, srv.Addr)
	}
	w, closeWriter := newBenchWriter(broker)
	defer closeWriter()
	warmUpNodes(b, nodes, w)

	events := scaleBenchRate * int(steadyState/time.Second) * b.N
	var clients []*loadClient
	for i, a := range nodes {
		conns := scaleBenchSubs / len(nodes)
		if i < scaleBenchSubs%len(nodes) {
			conns++
		}
		clients = append(clients, startLoadClient(b, loadSpec{
			URL: strings.TrimSuffix(a.URL(), "/"), Transport: "sse", Conns: conns,
			Channel: "reports", Token: benchToken, Events: events,
		}))
	}
	busCmds := func() uint64 {
		var n uint64
		for _, a := range nodes {
			if bus, ok := a.bp.(*redisbus.Bus); ok {
				n += bus.Commands.Load()
			}
		}
		return n
	}
	cmds0, server0 := busCmds(), serverCommands(b, srv)
	interval := time.Second / time.Duration(scaleBenchRate)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for i := range events {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := w.WriteMessages(ctx, reportMsg(i, time.Now().UnixNano())); err != nil {
			b.Fatal(err)
		}
	}
	var received, missing, dups int64
	var p50, p99, maxMs float64
	var last int64
	for _, lc := range clients {
		sum, err := lc.summary(30 * time.Second)
		if err != nil {
			b.Fatal(err)
		}
		received += sum.Received
		missing += sum.Missing
		dups += sum.Duplicates
		p50, p99, maxMs = max(p50, sum.P50Ms), max(p99, sum.P99Ms), max(maxMs, sum.MaxMs)
		last = max(last, sum.LastRecvNs)
	}
	b.StopTimer()
	cmds, server := busCmds()-cmds0, serverCommands(b, srv)-server0
	span := time.Duration(last - start.UnixNano())
	b.ReportMetric(float64(received)/span.Seconds(), "deliveries/s")
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(maxMs, "max-ms")
	b.ReportMetric(float64(cmds)/float64(events), "bus-cmds/event")
	b.ReportMetric(float64(cmds)/float64(max(received, 1)), "bus-cmds/delivery")
	if srv.Name == "redis" {
		b.ReportMetric(float64(server)/float64(events), "server-cmds/event")
	}
	b.ReportMetric(float64(missing), "drops")
	b.ReportMetric(0, "ns/op")
	b.Logf("%s/nodes=%d: %d events, %d deliveries, p50 %.2f ms, p99 %.2f ms, max %.2f ms; bus commands %d, server commands %d; missing %d, duplicates %d",
		c.backplane, c.nodes, events, received, p50, p99, maxMs, cmds, server, missing, dups)
	if missing > 0 || dups > 0 {
		b.Errorf("%d missing deliveries, %d duplicates", missing, dups)
	}
}

// startBenchNode starts a node of env with the benchmarks' principal and
// connection limit.
func startBenchNode(b *testing.B, env *scaleEnv) *Node {
	b.Helper()
	return startTestNode(b, nodeSpec{
		config: func(cfg *config.Config) {
			cfg.Kafka.Brokers = []string{env.broker}
			cfg.Redis.URL = env.url
			cfg.ItemSvc.Enabled = false
			cfg.Auth.Principals = []config.Principal{{Name: "bench", Role: config.RoleModerator, Token: benchToken}}
			cfg.Limits.Connections = 20000
		},
		opts:     []Option{withRedisPrefix(env.prefix)},
		stopWait: time.Minute,
	})
}

// warmUpNodes produces warm-up records (seq -1, which load clients ignore)
// on every partition until every node's consumer has published one: the
// consumer group has then settled.
func warmUpNodes(b *testing.B, nodes []*Node, w *kafka.Writer) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; time.Now().Before(deadline); i++ {
		m := reportMsg(-1, time.Now().UnixNano())
		m.Key = []byte("warm-" + strconv.Itoa(i)) // spreads over the partitions
		if err := w.WriteMessages(context.Background(), m); err != nil {
			b.Fatal(err)
		}
		settled := true
		for _, a := range nodes {
			settled = settled && a.consumer.Stats().Published > 0
		}
		if settled {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatal("the consumer group never settled")
}

// serverCommands is the real server's total_commands_processed (0 for
// miniredis, which does not count).
func serverCommands(b *testing.B, srv redistest.Server) uint64 {
	if srv.Name != "redis" {
		return 0
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "stats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}
