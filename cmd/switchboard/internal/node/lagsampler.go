package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/switchboard/switchboard/consumers"
)

// lagSampleInterval is how often the node asks the brokers how far its
// consumer group is behind. /metrics shows the last sample, so a scrape
// makes no Kafka call and the lag it shows is at most this old, plus the
// time one sample takes. Prometheus scrapes every 15 s or more by default.
const lagSampleInterval = 5 * time.Second

// lagSampleTimeout bounds one sample.
const lagSampleTimeout = 2 * time.Second

// lagSampler samples the consumer group's lag in the background; its
// last sample is what /metrics reads.
type lagSampler struct {
	lag      func(context.Context) ([]consumers.PartitionLag, error)
	interval time.Duration
	log      *slog.Logger

	mu   sync.Mutex
	last []consumers.PartitionLag // replaced whole, never changed in place
}

// Run samples at once, then every interval, until ctx ends.
func (s *lagSampler) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.sample(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sample asks for the lag once. A failed sample clears the last one, so
// /metrics shows no lag rather than an old one.
func (s *lagSampler) sample(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, lagSampleTimeout)
	defer cancel()
	lags, err := s.lag(ctx)
	if err != nil {
		s.log.Debug("consumer lag not sampled", "err", err)
		lags = nil
	}
	s.mu.Lock()
	s.last = lags
	s.mu.Unlock()
}

// Last returns the last sample: nil before the first one and after a
// failed one. The caller must not change it.
func (s *lagSampler) Last() []consumers.PartitionLag {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}
