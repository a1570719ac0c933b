package consumers

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/consumers/kafkatest"
	"github.com/switchboard/switchboard/internal/kafkagroup"
)

// resumeWait is how long a consumer may take to deliver again after a
// broker fault. It is generous, for a loaded machine; the consumer takes
// a few seconds.
const resumeWait = 15 * time.Second

// faultBroker is an embedded broker with the default topics behind a
// fault-injecting proxy.
func faultBroker(t *testing.T) *kafkatest.Broker {
	t.Helper()
	return kafkatest.StartBroker(t, 3, []string{topicReports, topicCommands, topicEvents, topicDLQ})
}

// writeEventually writes msgs, retrying a failed write (the broker's
// connections may just have been reset) until it succeeds or waitLong
// passes.
func writeEventually(t *testing.T, w *kafka.Writer, msgs ...kafka.Message) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := w.WriteMessages(ctx, msgs...)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("write: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitWithin polls cond until it holds or d passes, and returns how long
// it took.
func waitWithin(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// faults are the broker faults a consumer must ride out: each breaks the
// connections in its way and, when it returns, they may work again.
var faults = []struct {
	name  string
	fault func(*kafkatest.Proxy)
}{
	// Every connection reset at once; new ones work.
	{"reset", func(p *kafkatest.Proxy) { p.Reset() }},
	// Connections reset and refused for 5 s, then accepted again. The
	// consumer rejoins the group as a new member, and the group waits for
	// the old member's session to expire: with kafka-go's 30 s default,
	// the partitions stayed unread 25 s after the broker was back.
	{"broker restart", func(p *kafkatest.Proxy) { p.Refuse(); time.Sleep(5 * time.Second); p.Heal() }},
	// Nothing answers for 5 s; then connections work again.
	{"blackhole", func(p *kafkatest.Proxy) { p.Blackhole(); time.Sleep(5 * time.Second); p.Heal() }},
}

// TestConsumerResumesAfterFaults breaks the connections to the broker, as
// a broker restart or a network fault does, and checks that an event
// written afterwards still reaches the hub within seconds. It logs how
// long that took.
func TestConsumerResumesAfterFaults(t *testing.T) {
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			b := faultBroker(t)
			w := newWriter(t, b.Brokers(), &kafka.Hash{})
			h := newFakeHub()
			c, _ := start(t, testConfig(b.Brokers(), "faults"), h, newDLQ(t, b.Brokers()))

			write(t, w, binaryRecord(topicEvents, "before", "item.removed", "item-1", "c-1", `{}`))
			waitFor(t, "the event before the fault", func() bool { return len(h.byID("before")) == 1 })

			f.fault(b.Proxy)
			ended := time.Now()
			writeEventually(t, w, binaryRecord(topicEvents, "after", "item.removed", "item-2", "c-2", `{}`))
			waitWithin(t, resumeWait, "the event written after the fault", func() bool { return len(h.byID("after")) == 1 })
			t.Logf("%s: the event written after the fault reached the hub %s after the fault ended (fetch errors: %d)",
				f.name, time.Since(ended).Round(10*time.Millisecond), c.Stats().FetchErrors)
			if err := c.Healthy(t.Context()); err != nil {
				t.Errorf("Healthy after delivering again = %v", err)
			}
		})
	}
}

// TestConsumerHealthy checks the health signal through a broker outage:
// healthy before, failing (ErrKafkaFailing) once the outage has lasted a
// moment, healthy again soon after the broker is back, with no event
// needed to tell.
func TestConsumerHealthy(t *testing.T) {
	b := faultBroker(t)
	w := newWriter(t, b.Brokers(), &kafka.Hash{})
	h := newFakeHub()
	c, _ := start(t, testConfig(b.Brokers(), "health"), h, newDLQ(t, b.Brokers()))
	write(t, w, binaryRecord(topicEvents, "first", "item.removed", "item-1", "c-1", `{}`))
	waitFor(t, "the first event", func() bool { return len(h.byID("first")) == 1 })
	if err := c.Healthy(t.Context()); err != nil {
		t.Fatalf("Healthy while reading = %v", err)
	}

	b.Proxy.Refuse()
	var failing error
	waitWithin(t, resumeWait, "Healthy to report the outage", func() bool { failing = c.Healthy(t.Context()); return failing != nil })
	if !errors.Is(failing, ErrKafkaFailing) {
		t.Errorf("Healthy = %v, want ErrKafkaFailing", failing)
	}
	var se *kafkagroup.StreakError
	if !errors.As(failing, &se) || se.Errors == 0 || se.Last == nil {
		t.Errorf("Healthy = %v, want a streak with its count and last error", failing)
	}

	b.Proxy.Heal()
	waitWithin(t, resumeWait, "Healthy to clear once the broker is back", func() bool { return c.Healthy(t.Context()) == nil })
}
