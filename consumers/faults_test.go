package consumers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/consumers/kafkagroup"
	"github.com/switchboard/switchboard/consumers/kafkatest"
	"github.com/switchboard/switchboard/hub"
	"github.com/switchboard/switchboard/producers"
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
	// Every connection closed by the broker's side (FIN): the client
	// reads EOF; new ones work.
	{"eof", func(p *kafkatest.Proxy) { p.Hangup() }},
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

// byKey puts a record on the partition its key names ("0", "1", ...).
type byKey struct{}

func (byKey) Balance(m kafka.Message, partitions ...int) int {
	return partitions[int(m.Key[0]-'0')%len(partitions)]
}

// printingHub is the hub of the helper process: it prints the id of every
// event it accepts, one per line.
type printingHub struct{}

func (printingHub) Publish(_ context.Context, _ []string, ev *hub.Event) error {
	_, err := fmt.Println(ev.ID)
	return err
}

// TestHelperConsumerProcess is not a test: TestConsumerKilledNode runs the
// test binary again with it, as a consumer that can be killed.
func TestHelperConsumerProcess(t *testing.T) {
	broker := os.Getenv("SWITCHBOARD_TEST_HELPER_BROKER")
	if broker == "" {
		return // not the helper
	}
	cfg := testConfig([]string{broker}, os.Getenv("SWITCHBOARD_TEST_HELPER_GROUP"))
	dlq, err := producers.New(producers.Config{Brokers: cfg.Brokers}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, printingHub{}, dlq, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Run(context.Background()) // until killed
}

// TestConsumerKilledNode kills a node (SIGKILL: it neither leaves the group
// nor commits) and checks that the surviving node reads the dead node's
// partitions within seconds: within the session timeout and a rebalance,
// well inside takedown.timeout (10 s). With kafka-go's 30 s session, they
// stayed unread for about 33 s.
func TestConsumerKilledNode(t *testing.T) {
	b := faultBroker(t)
	w := newWriter(t, b.Brokers(), byKey{})
	const group = "killed"

	// The node to kill, in its own process.
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperConsumerProcess$")
	helper.Env = append(os.Environ(), "SWITCHBOARD_TEST_HELPER_BROKER="+b.Addr, "SWITCHBOARD_TEST_HELPER_GROUP="+group)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	helperGot := map[string]bool{}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			helperGot[sc.Text()] = true
			mu.Unlock()
		}
	}()
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = helper.Process.Kill()
			<-scanned
			_ = helper.Wait()
		}
	}
	t.Cleanup(kill)

	h := newFakeHub()
	_, _ = start(t, testConfig(b.Brokers(), group), h, newDLQ(t, b.Brokers()))

	// Both nodes in the group: each partition of the topic is read by one
	// of them. Write to every partition until the helper has some.
	deadline := time.Now().Add(waitLong)
	for round := 0; ; round++ {
		var ids []string
		for p := range 3 {
			id := fmt.Sprintf("before-%d-%d", round, p)
			ids = append(ids, id)
			write(t, w, binaryRecord(topicEvents, id, "item.removed", strconv.Itoa(p), "", `{}`))
		}
		waitFor(t, "the events of round "+strconv.Itoa(round), func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if len(h.byID(id)) == 0 && !helperGot[id] {
					return false
				}
			}
			return true
		})
		mu.Lock()
		split := helperGot[ids[0]] || helperGot[ids[1]] || helperGot[ids[2]]
		mu.Unlock()
		if split && len(h.byID(ids[0]))+len(h.byID(ids[1]))+len(h.byID(ids[2])) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the two nodes never shared the partitions")
		}
		time.Sleep(500 * time.Millisecond)
	}

	kill()
	killedAt := time.Now()
	for p := range 3 {
		write(t, w, binaryRecord(topicEvents, fmt.Sprintf("after-%d", p), "item.removed", strconv.Itoa(p), "", `{}`))
	}
	took := waitWithin(t, resumeWait, "the surviving node to read every partition", func() bool {
		for p := range 3 {
			if len(h.byID(fmt.Sprintf("after-%d", p))) == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("the killed node's partitions were read again %s after the kill (%s after the last write)", time.Since(killedAt).Round(10*time.Millisecond), took.Round(10*time.Millisecond))
}
