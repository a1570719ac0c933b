package producers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// BenchmarkWriter measures synchronous publishes against the embedded
// broker (3 partitions, keys spread over them): N goroutines each publish
// in a loop for one second, through the Producer's group-commit writer and,
// for comparison, through a kafka.Writer with kafka-go's 1 ms batch timeout
// (what the Producer used before). records/request is the writer's mean
// batch. Run it with -benchtime=1x.
func BenchmarkWriter(b *testing.B) {
	for _, n := range []int{1, 64, 512} {
		for _, kind := range []string{"group-commit", "kafka.Writer"} {
			b.Run(fmt.Sprintf("%s/clients=%d", kind, n), func(b *testing.B) { benchPublish(b, kind, n) })
		}
	}
}

func benchPublish(b *testing.B, kind string, n int) {
	const topic = "bench"
	brokers := newCluster(b, topic)
	var publish func(ctx context.Context, key string) error
	var requests atomic.Int64
	switch kind {
	case "group-commit":
		p := newProducer(b, brokers)
		real := p.w.produce
		p.w.produce = func(ctx context.Context, req *kafka.ProduceRequest) (*kafka.ProduceResponse, error) {
			requests.Add(1)
			return real(ctx, req)
		}
		publish = func(ctx context.Context, key string) error {
			return p.Publish(ctx, topic, key, NewEvent("/bench", "x", key, "", nil))
		}
	default:
		tr := &kafka.Transport{}
		w := &kafka.Writer{Addr: kafka.TCP(brokers...), Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond,
			RequiredAcks: kafka.RequireAll, Transport: tr}
		b.Cleanup(func() { w.Close(); tr.CloseIdleConnections() })
		publish = func(ctx context.Context, key string) error {
			m, err := Message(topic, key, NewEvent("/bench", "x", key, "", nil))
			if err != nil {
				return err
			}
			return w.WriteMessages(ctx, m)
		}
	}
	run := func(d time.Duration) []time.Duration {
		var wg sync.WaitGroup
		lats := make([][]time.Duration, n)
		deadline := time.Now().Add(d)
		for i := range n {
			wg.Go(func() {
				key := "item-" + strconv.Itoa(i)
				for time.Now().Before(deadline) {
					t0 := time.Now()
					if err := publish(b.Context(), key); err != nil {
						b.Error(err)
						return
					}
					lats[i] = append(lats[i], time.Since(t0))
				}
			})
		}
		wg.Wait()
		all := slices.Concat(lats...)
		slices.Sort(all)
		return all
	}
	run(200 * time.Millisecond) // connections, metadata
	requests.Store(0)
	b.ResetTimer()
	const d = time.Second
	lat := run(d)
	b.StopTimer()
	if len(lat) == 0 {
		b.Fatal("nothing published")
	}
	q := func(f float64) float64 {
		return float64(lat[min(int(f*float64(len(lat))), len(lat)-1)]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(len(lat))/d.Seconds(), "publishes/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	if r := requests.Load(); r > 0 {
		b.ReportMetric(float64(len(lat))/float64(r), "records/request")
	}
	b.ReportMetric(0, "ns/op")
}
