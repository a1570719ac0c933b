package node

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub/redisbus"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// scaleBenchCase is one configuration of BenchmarkScaleOut.
type scaleBenchCase struct {
	backplane string // "memory", "redis" (one server) or "cluster" (3 masters)
	nodes     int
}

// Sizes of BenchmarkScaleOut, small enough for a 2-core machine.
const (
	scaleBenchSubs = 1000 // SSE subscribers of reports per node
	scaleBenchRate = 20   // events per second, for steadyState
)

// BenchmarkScaleOut compares one node on the memory backplane with three
// nodes on one Redis server and three on a 3-master Redis Cluster (both
// child processes the benchmark starts, so nothing else uses them): 1,000
// SSE subscribers of reports per node, each node's in one load-client child
// process, receive 20 item.reported events per second for 5 s, produced by
// a kafka-go writer. It reports deliveries/s, the worst child's p99
// produce→receive latency, the CPU time of the test process (every node,
// the broker and the writer) per delivery, the Redis servers' CPU time per
// event, and the Redis commands per event: as the nodes' buses sent them
// (a script is one) and as the servers ran them (a script's inner commands
// each count).
//
// Run it with -benchtime=1x.
func BenchmarkScaleOut(b *testing.B) {
	for _, c := range []scaleBenchCase{{"memory", 1}, {"redis", 3}, {"cluster", 3}} {
		b.Run(fmt.Sprintf("%s/nodes=%d", c.backplane, c.nodes), func(b *testing.B) { benchScaleOut(b, c) })
	}
}

// benchRedis starts the Redis of backplane ("redis" or "cluster") and
// returns how a node's configuration points at it and its servers.
func benchRedis(b *testing.B, backplane string) (func(*config.Config), []*redistest.Node) {
	b.Helper()
	if backplane == "cluster" {
		c := redistest.StartCluster(b, 3, 0)
		return func(cfg *config.Config) { cfg.Redis.Cluster.Addrs = c.Addrs() }, c.Nodes
	}
	srv := redistest.StartServer(b)
	return func(cfg *config.Config) { cfg.Redis.URL = "redis://" + srv.Addr + "/0" }, []*redistest.Node{srv}
}

func benchScaleOut(b *testing.B, c scaleBenchCase) {
	var nodes []*Node
	var broker string
	var servers []*redistest.Node
	if c.backplane == "memory" {
		a := startBenchApp(b, 0)
		nodes, broker = []*Node{a}, a.kafkaAddr
	} else {
		var redisCfg func(*config.Config)
		redisCfg, servers = benchRedis(b, c.backplane)
		env := newScaleEnv(b, c.backplane, "", failoverPrefix)
		broker = env.broker
		for range c.nodes {
			nodes = append(nodes, startBenchNode(b, env, redisCfg))
		}
	}
	w, closeWriter := newBenchWriter(broker)
	defer closeWriter()
	warmUpNodes(b, nodes, w)

	events := scaleBenchRate * int(steadyState/time.Second) * b.N
	var clients []*loadClient
	for _, a := range nodes {
		clients = append(clients, startLoadClient(b, loadSpec{
			URL: strings.TrimSuffix(a.URL(), "/"), Transport: "sse", Conns: scaleBenchSubs,
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
	cmds0, server0, rcpu0 := busCmds(), serverStat(b, servers, "stats", "total_commands_processed"), serverCPU(b, servers)
	interval := time.Second / time.Duration(scaleBenchRate)
	ctx := context.Background()
	b.ResetTimer()
	cpu0 := processCPU()
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
	cpu := processCPU() - cpu0
	b.StopTimer()
	cmds, server, rcpu := busCmds()-cmds0, serverStat(b, servers, "stats", "total_commands_processed")-server0, serverCPU(b, servers)-rcpu0
	span := time.Duration(last - start.UnixNano())
	b.ReportMetric(float64(received)/span.Seconds(), "deliveries/s")
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(maxMs, "max-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(max(received, 1)), "cpu-us/delivery")
	b.ReportMetric(float64(cpu)/float64(span)*100/float64(len(nodes)), "cpu-%/node")
	if len(servers) > 0 {
		b.ReportMetric(float64(cmds)/float64(events), "bus-cmds/event")
		b.ReportMetric(float64(server)/float64(events), "server-cmds/event")
		b.ReportMetric(float64(rcpu.Microseconds())/float64(events), "redis-cpu-us/event")
	}
	b.ReportMetric(float64(missing), "drops")
	b.ReportMetric(0, "ns/op")
	b.Logf("%s/nodes=%d: %d events, %d deliveries in %v, p50 %.2f ms, p99 %.2f ms, max %.2f ms; process CPU %v; bus commands %d, server commands %d, Redis CPU %v; missing %d, duplicates %d",
		c.backplane, c.nodes, events, received, span.Round(time.Millisecond), p50, p99, maxMs, cpu.Round(time.Millisecond), cmds, server, rcpu.Round(time.Millisecond), missing, dups)
	if missing > 0 || dups > 0 {
		b.Errorf("%d missing deliveries, %d duplicates", missing, dups)
	}
}

// scaleTakedownTrips is how many round trips each case of
// BenchmarkScaleOutTakedown measures, one after the other.
const scaleTakedownTrips = 300

// BenchmarkScaleOutTakedown compares police takedown round trips (POST with
// Prefer: wait, answered 200 once the item service's confirmation comes
// back through the hub) on one node on the memory backplane with one node
// on a 3-master Redis Cluster (the Cluster's own cost), and with three
// nodes on one Redis server and on the Cluster (where the confirmation is
// mostly consumed by another node than the one holding the request),
// requests going to the nodes in turn
// and the item service (itemsvc.latency 1 ms) running beside the first
// node. Each case first makes round trips until one answers 200 (the
// consumer groups have settled), then 300 more one at a time, on items
// spread over the slots; it reports their p50 and p99, round trips per
// second, and the test process's CPU time per round trip.
//
// Run it with -benchtime=1x.
func BenchmarkScaleOutTakedown(b *testing.B) {
	for _, c := range []scaleBenchCase{{"memory", 1}, {"cluster", 1}, {"redis", 3}, {"cluster", 3}} {
		b.Run(fmt.Sprintf("%s/nodes=%d", c.backplane, c.nodes), func(b *testing.B) { benchScaleOutTakedown(b, c) })
	}
}

func benchScaleOutTakedown(b *testing.B, c scaleBenchCase) {
	tune := func(cfg *config.Config) {
		cfg.Limits.TakedownRate = 1e6
		cfg.Limits.TakedownBurst = 1e6
		cfg.ItemSvc.Latency = time.Millisecond
	}
	var nodes []*Node
	if c.backplane == "memory" {
		nodes = append(nodes, startTestNode(b, nodeSpec{config: func(cfg *config.Config) {
			tune(cfg)
			cfg.ItemSvc.Enabled = true
		}, stopWait: time.Minute}))
	} else {
		redisCfg, _ := benchRedis(b, c.backplane)
		env := newScaleEnv(b, c.backplane, "", failoverPrefix)
		for i := range c.nodes {
			nodes = append(nodes, startTestNode(b, nodeSpec{
				config: func(cfg *config.Config) {
					cfg.Kafka.Brokers = []string{env.broker}
					redisCfg(cfg)
					tune(cfg)
					cfg.ItemSvc.Enabled = i == 0
				},
				opts:     []Option{withRedisPrefix(failoverPrefix)},
				stopWait: time.Minute,
			}))
		}
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer hc.CloseIdleConnections()
	trip := func(i int) (time.Duration, error) {
		a := nodes[i%len(nodes)]
		body := fmt.Sprintf(`{"item_id":"item-%d","reason":"bench"}`, 1+i%1000)
		began := time.Now()
		resp, out, err := call(context.Background(), hc, http.MethodPost, a.base()+"/v1/takedowns", jsonHeader(policeToken, "Prefer", "wait=30"), body)
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%d %s", resp.StatusCode, out)
		}
		return time.Since(began), nil
	}
	// Warm up until every node answered one.
	deadline := time.Now().Add(2 * time.Minute)
	for i, ok := 0, 0; ok < len(nodes); i++ {
		if time.Now().After(deadline) {
			b.Fatal("no round trip succeeds")
		}
		if _, err := trip(i); err == nil {
			ok++
		}
	}
	b.ResetTimer()
	var times []time.Duration
	cpu0 := processCPU()
	start := time.Now()
	for i := range scaleTakedownTrips * b.N {
		d, err := trip(i)
		if err != nil {
			b.Fatal(err)
		}
		times = append(times, d)
	}
	span, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	slices.Sort(times)
	ms := func(q float64) float64 {
		return float64(times[min(len(times)-1, int(q*float64(len(times))))].Microseconds()) / 1e3
	}
	b.ReportMetric(float64(len(times))/span.Seconds(), "round-trips/s")
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(times)), "cpu-us/rt")
	b.ReportMetric(0, "ns/op")
	b.Logf("%s/nodes=%d: %d round trips in %v, p50 %.2f ms, p99 %.2f ms, max %.2f ms",
		c.backplane, c.nodes, len(times), span.Round(time.Millisecond), ms(0.5), ms(0.99), ms(1))
}

// startBenchNode starts a node of env on the Redis redisCfg names, with
// the benchmarks' principal and connection limit.
func startBenchNode(b *testing.B, env *scaleEnv, redisCfg func(*config.Config)) *Node {
	b.Helper()
	return startTestNode(b, nodeSpec{
		config: func(cfg *config.Config) {
			cfg.Kafka.Brokers = []string{env.broker}
			redisCfg(cfg)
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

// serverStat sums an integer field of INFO section over servers.
func serverStat(b *testing.B, servers []*redistest.Node, section, field string) uint64 {
	var n uint64
	for _, v := range serverInfo(b, servers, section, field) {
		u, _ := strconv.ParseUint(v, 10, 64)
		n += u
	}
	return n
}

// serverCPU sums the servers' CPU time (used_cpu_user + used_cpu_sys).
func serverCPU(b *testing.B, servers []*redistest.Node) time.Duration {
	var d time.Duration
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		for _, v := range serverInfo(b, servers, "cpu", f) {
			s, _ := strconv.ParseFloat(v, 64)
			d += time.Duration(s * float64(time.Second))
		}
	}
	return d
}

// serverInfo returns field of INFO section of each server.
func serverInfo(b *testing.B, servers []*redistest.Node, section, field string) []string {
	var out []string
	for _, srv := range servers {
		c := srv.Client()
		info, err := c.Info(context.Background(), section).Result()
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				out = append(out, v)
			}
		}
	}
	return out
}
