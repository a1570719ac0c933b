package node

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchboard/switchboard/consumers"
)

// TestLagSampler: the sampler asks for the lag at once and then every
// lagSampleInterval, reading it costs no call, a failed sample clears
// the last one, and Run ends with its context.
func TestLagSampler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		fail := atomic.Bool{}
		s := &lagSampler{interval: lagSampleInterval, log: slog.New(slog.DiscardHandler),
			lag: func(context.Context) ([]consumers.PartitionLag, error) {
				n := calls.Add(1)
				if fail.Load() {
					return nil, errors.New("broker away")
				}
				return []consumers.PartitionLag{{Topic: "t", Partition: 0, Lag: n}}, nil
			}}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()

		synctest.Wait()
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d calls at start, want 1", n)
		}
		for range 100 {
			if l := s.Last(); len(l) != 1 || l[0].Lag != 1 {
				t.Fatalf("Last = %v, want the first sample", l)
			}
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d calls after reading the sample 100 times, want 1", n)
		}

		time.Sleep(lagSampleInterval)
		synctest.Wait()
		if l := s.Last(); calls.Load() != 2 || len(l) != 1 || l[0].Lag != 2 {
			t.Fatalf("after one interval: %d calls, Last = %v; want 2 calls and the second sample", calls.Load(), l)
		}

		fail.Store(true)
		time.Sleep(lagSampleInterval)
		synctest.Wait()
		if l := s.Last(); l != nil {
			t.Errorf("after a failed sample Last = %v, want nil", l)
		}

		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}

// TestMetricsScrapeMakesNoKafkaCall: /metrics shows the sampled lag, and
// scraping it does not ask the brokers.
func TestMetricsScrapeMakesNoKafkaCall(t *testing.T) {
	var calls atomic.Int64
	a := startTestNode(t, nodeSpec{opts: []Option{withLagSampler(func(s *lagSampler) {
		lag := s.lag
		s.lag = func(ctx context.Context) ([]consumers.PartitionLag, error) {
			calls.Add(1)
			return lag(ctx)
		}
	})}})
	eventually(t, "a lag sample", func() bool { return len(a.lag.Last()) > 0 })
	const scrapes = 20
	before := calls.Load()
	for range scrapes {
		if _, ok := scrape(t, a)[`switchboard_consumer_lag{partition=0,topic=items.reported}`]; !ok {
			t.Fatal("no switchboard_consumer_lag in /metrics")
		}
	}
	// The sampler may have taken a sample meanwhile, but not one a scrape.
	if n := calls.Load() - before; n >= scrapes {
		t.Errorf("%d scrapes made %d lag calls", scrapes, n)
	}
}
