package producers

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard/switchboard/consumers/kafkatest"
)

// TestProducerRidesOutBrokerFaults breaks the connections to the broker in
// the ways a broker restart or a network does, with a write in flight, and
// checks that the producer writes again once the broker answers, without
// being rebuilt, and that Healthy clears.
func TestProducerRidesOutBrokerFaults(t *testing.T) {
	faults := []struct {
		name  string
		fault func(*kafkatest.Proxy)
		heal  func(*kafkatest.Proxy)
	}{
		{"reset", (*kafkatest.Proxy).Reset, func(*kafkatest.Proxy) {}},
		{"eof", (*kafkatest.Proxy).Hangup, func(*kafkatest.Proxy) {}},
		{"broker restart", (*kafkatest.Proxy).Refuse, (*kafkatest.Proxy).Heal},
		{"blackhole", (*kafkatest.Proxy).Blackhole, (*kafkatest.Proxy).Heal},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			b := kafkatest.StartBroker(t, 3, []string{"t"})
			p := newProducer(t, b.Brokers())
			ev := func(id string) CloudEvent {
				e := NewEvent("/s", "x", "k", "", nil)
				e.ID = id
				return e
			}
			if err := p.Publish(t.Context(), "t", "k", ev("before")); err != nil {
				t.Fatal(err)
			}
			f.fault(b.Proxy)
			// A write while the fault lasts: it may fail or, once the
			// broker answers, succeed; it must not wedge the producer.
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			during := p.Publish(ctx, "t", "k", ev("during"))
			cancel()
			f.heal(b.Proxy)
			healed := time.Now()
			attempts := 0
			for {
				attempts++
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				err := p.Publish(ctx, "t", "k", ev(fmt.Sprintf("after-%d", attempts)))
				cancel()
				if err == nil {
					break
				}
				if time.Since(healed) > waitLong {
					t.Fatalf("no write succeeded within %s of the fault's end: %v", waitLong, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := p.Healthy(t.Context()); err != nil {
				t.Errorf("Healthy after a write succeeded = %v", err)
			}
			t.Logf("%s: the write during the fault: %v; a write succeeded %s after the fault ended, at attempt %d",
				f.name, during, time.Since(healed).Round(10*time.Millisecond), attempts)
		})
	}
}
