package redisbus

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
)

// BenchmarkBusPublish measures appends (one script per channel: append,
// trims, dedupe set, expiries, announcement) on one server and on a
// 3-master Cluster, from 8 concurrent publishers over 300 channels, with a
// node listening to every channel: appends/s, and the servers' CPU per
// append (INFO cpu, summed over the masters), which sizes a shard.
//
//	go test ./hub/redisbus -run '^$' -bench BusPublish -benchtime=20000x
func BenchmarkBusPublish(b *testing.B) {
	for _, kind := range []string{"server", "cluster"} {
		b.Run(kind, func(b *testing.B) {
			var masters []*redistest.Node
			var mk func() redis.UniversalClient
			if kind == "server" {
				n := redistest.StartServer(b)
				masters = []*redistest.Node{n}
				mk = func() redis.UniversalClient { return n.Client() }
			} else {
				c := redistest.StartCluster(b, 3, 0)
				masters = c.Nodes
				mk = func() redis.UniversalClient { return c.Client() }
			}
			pub, err := New(b.Context(), mk(), Config{}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer pub.Close()
			sub, err := New(b.Context(), mk(), Config{}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			const channels = 300
			var heard atomic.Int64
			for i := range channels {
				cancel, err := sub.Listen(b.Context(), "item:"+strconv.Itoa(i), func(hub.Entry) { heard.Add(1) })
				if err != nil {
					b.Fatal(err)
				}
				defer cancel()
			}
			cpu0 := serverCPU(b, masters)
			var n atomic.Int64
			b.SetParallelism(4) // 8 publishers on 2 cores
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					e := ev(int(i))
					if err := pub.Publish(context.Background(), []string{"item:" + strconv.FormatInt(i%channels, 10)}, e); err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			cpu := serverCPU(b, masters) - cpu0
			deadline := time.Now().Add(failoverWait)
			for heard.Load() < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if heard.Load() < int64(b.N) {
				b.Fatalf("heard %d of %d announcements", heard.Load(), b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
			b.ReportMetric(cpu.Seconds()*1e6/float64(b.N), "server-cpu-us/append")
		})
	}
}

// BenchmarkBusPublishBatch measures what a consumer's batches cost Redis:
// PublishBatch of 16 events, each routed as a takedown's is (a static
// channel, item:<id> and a new corr:<id>), from 4 concurrent publishers on
// one server: appends/s and the server's CPU per append.
//
//	go test ./hub/redisbus -run '^$' -bench BusPublishBatch -benchtime=20000x
func BenchmarkBusPublishBatch(b *testing.B) {
	n := redistest.StartServer(b)
	pub, err := New(b.Context(), n.Client(), Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	const perBatch, items = 16, 500
	var next atomic.Int64
	cpu0 := serverCPU(b, []*redistest.Node{n})
	b.SetParallelism(2) // 4 publishers on 2 cores
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		batch := make([]hub.Publication, 0, perBatch)
		flush := func() {
			if err := pub.PublishBatch(context.Background(), batch); err != nil {
				b.Error(err)
			}
			batch = batch[:0]
		}
		for pb.Next() {
			i := int(next.Add(1))
			e := ev(i)
			batch = append(batch, hub.Publication{Event: e, Channels: []string{"takedowns", "item:" + strconv.Itoa(i%items), "corr:" + strconv.Itoa(i)}})
			if len(batch) == perBatch {
				flush()
			}
		}
		if len(batch) > 0 {
			flush()
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := serverCPU(b, []*redistest.Node{n}) - cpu0
	appends := float64(3 * b.N)
	b.ReportMetric(appends/elapsed.Seconds(), "appends/s")
	b.ReportMetric(cpu.Seconds()*1e6/appends, "server-cpu-us/append")
}

// serverCPU sums used_cpu_user and used_cpu_sys of the nodes.
func serverCPU(b *testing.B, nodes []*redistest.Node) time.Duration {
	b.Helper()
	var total float64
	for _, n := range nodes {
		c := n.Client()
		info, err := c.Info(b.Context(), "cpu").Result()
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}
