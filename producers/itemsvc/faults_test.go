package itemsvc

import (
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/consumers/kafkatest"
)

// isvcResumeWait is how long the item service may take to answer again
// after a broker fault. It is generous, for a loaded machine; the service
// takes a few seconds.
const isvcResumeWait = 15 * time.Second

// newIsvcFaultHarness is newIsvcHarness with the broker behind a
// fault-injecting proxy: the service's reader and publisher, and the
// test's writer, all reach the broker through it.
func newIsvcFaultHarness(t *testing.T) (*isvcHarness, *kafkatest.Proxy) {
	t.Helper()
	b := kafkatest.StartBroker(t, 3, []string{isvcCommands, isvcEvents})
	h := &isvcHarness{t: t, brokers: b.Brokers(), pub: newProducer(t, b.Brokers()), tr: &kafka.Transport{}}
	h.w = &kafka.Writer{
		Addr:         kafka.TCP(b.Addr),
		Balancer:     &kafka.Hash{},
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		Transport:    h.tr,
	}
	t.Cleanup(func() {
		_ = h.w.Close()
		h.tr.CloseIdleConnections()
	})
	return h, b.Proxy
}

// sendEventually writes msgs, retrying while the broker's connections
// recover from a fault.
func (h *isvcHarness) sendEventually(msgs ...kafka.Message) {
	h.t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		err := h.w.WriteMessages(h.t.Context(), msgs...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("write %d commands: %v", len(msgs), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running fails the test if Run has returned.
func (rs *isvcRunning) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-rs.done:
		rs.done <- err // for stop
		t.Fatalf("Run returned %v during a broker fault; it must wait the fault out", err)
	default:
	}
}

// TestItemServiceRidesOutBrokerFaults breaks the connections to the
// broker in the ways a broker restart or a network does, and checks that
// the item service keeps running and answers the commands written after
// the fault, within seconds.
func TestItemServiceRidesOutBrokerFaults(t *testing.T) {
	faults := []struct {
		name  string
		fault func(*kafkatest.Proxy)
	}{
		{"reset", func(p *kafkatest.Proxy) { p.Reset() }},
		{"eof", func(p *kafkatest.Proxy) { p.Hangup() }},
		{"broker restart", func(p *kafkatest.Proxy) { p.Refuse(); time.Sleep(5 * time.Second); p.Heal() }},
		{"blackhole", func(p *kafkatest.Proxy) { p.Blackhole(); time.Sleep(5 * time.Second); p.Heal() }},
	}
	cat := DemoCatalogue()
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			h, proxy := newIsvcFaultHarness(t)
			svc := h.start(Config{})

			h.send(h.command("item-1", "c-before"))
			removed := int64(len(isvcContainers(t, cat, "item-1")))
			isvcWaitStats(t, svc.Service, Stats{Commands: 1, Confirmed: 1, Removed: removed})

			f.fault(proxy)
			healed := time.Now()
			var msgs []kafka.Message
			for i := 2; i <= 4; i++ {
				msgs = append(msgs, h.command(fmt.Sprintf("item-%d", i), fmt.Sprintf("c-after-%d", i)))
				removed += int64(len(isvcContainers(t, cat, fmt.Sprintf("item-%d", i))))
			}
			h.sendEventually(msgs...)
			deadline := time.Now().Add(isvcResumeWait)
			for svc.Stats().Confirmed < 4 {
				svc.running(t)
				if time.Now().After(deadline) {
					t.Fatalf("commands written after the fault not answered within %s: %+v", isvcResumeWait, svc.Stats())
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("%s: the commands written after the fault were answered %s after the fault ended (fetch errors: %d)",
				f.name, time.Since(healed).Round(10*time.Millisecond), svc.Stats().FetchErrors)
			svc.running(t)
			// A command answered but not yet committed when the fault struck
			// is read again after it: a duplicate, skipped.
			isvcWaitFor(t, "every command answered once", func() bool {
				st := svc.Stats()
				return st.Confirmed == 4 && st.Removed == removed && st.Rejected == 0 && st.Commands == 4+st.Duplicates
			})
			if err := svc.Healthy(t.Context()); err != nil {
				t.Errorf("Healthy after answering again = %v", err)
			}

			// The answers are on the events topic.
			got := isvcByCorr(isvcNext(t, h.eventReader(), isvcExpected(cat, "item-1", "item-2", "item-3", "item-4")))
			for i := 2; i <= 4; i++ {
				isvcCheck(t, cat, fmt.Sprintf("item-%d", i), fmt.Sprintf("c-after-%d", i), got[fmt.Sprintf("c-after-%d", i)], true)
			}
		})
	}
}
