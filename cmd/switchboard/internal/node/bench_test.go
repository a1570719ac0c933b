package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sys/unix"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
)

// steadyState is how long each end-to-end run produces at its fixed rate.
const steadyState = 5 * time.Second

// benchToken is the bearer token of the benchmarks' moderator principal.
const benchToken = "bench-only-token"

// startBenchApp starts a whole node with the embedded broker on free ports,
// a moderator principal with benchToken, and a connection limit above what
// the benchmarks open. clientQueue sets hub.client_queue when it is not 0.
func startBenchApp(b *testing.B, clientQueue int) *Node {
	b.Helper()
	return startTestNode(b, nodeSpec{
		config: func(cfg *config.Config) {
			cfg.Auth.Principals = []config.Principal{{Name: "bench", Role: config.RoleModerator, Token: benchToken}}
			cfg.Limits.Connections = 20000
			if clientQueue != 0 {
				cfg.Hub.ClientQueue = clientQueue
			}
		},
		stopWait: time.Minute,
	})
}

// reportMsg is an item.reported record in binary mode whose data carries
// its sequence number and its produce time, for the load client.
func reportMsg(seq int, sentNs int64) kafka.Message {
	item := fmt.Sprintf("item-%d", 1+(seq+1000)%1000)
	val := fmt.Sprintf(`{"item_id":%q,"reporter_id":"bench","reason":"spam","seq":%d,"sent_ns":%d}`, item, seq, sentNs)
	return kafka.Message{
		Topic: "items.reported",
		Key:   []byte(item),
		Value: []byte(val),
		Headers: []kafka.Header{
			{Key: "ce_specversion", Value: []byte("1.0")},
			{Key: "ce_id", Value: []byte(fmt.Sprintf("bench-%d-%d", seq, sentNs))},
			{Key: "ce_source", Value: []byte("/bench")},
			{Key: "ce_type", Value: []byte("item.reported")},
			{Key: "ce_subject", Value: []byte(item)},
			{Key: "content-type", Value: []byte("application/json")},
		},
	}
}

// newBenchWriter returns a kafka-go writer that sends each message at once
// and waits for the broker's ack, and a func that closes it and its
// transport.
func newBenchWriter(addr string) (*kafka.Writer, func()) {
	tr := &kafka.Transport{}
	w := &kafka.Writer{
		Addr:         kafka.TCP(addr),
		Balancer:     &kafka.Hash{},
		BatchSize:    1,
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireOne,
		Transport:    tr,
	}
	return w, func() {
		w.Close()
		tr.CloseIdleConnections()
	}
}

// warmUp produces warm-up records (seq -1, which load clients ignore) until
// one reaches a hub client on reports: the consumer group has then joined.
func warmUp(b *testing.B, a *Node, w *kafka.Writer) {
	b.Helper()
	ctx := context.Background()
	got := make(chan struct{}, 1)
	stop, _, err := a.hub.Follow(ctx, "reports", nil, func(ev *hub.Event) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if err := w.WriteMessages(ctx, reportMsg(-1, time.Now().UnixNano())); err != nil {
			b.Fatal(err)
		}
		select {
		case <-got:
			return
		case <-tick.C:
		}
	}
	b.Fatal("the consumer never delivered a warm-up event")
}

type e2eCase struct {
	transport string // "ws" or "sse"
	pack      bool
	subs      int
	rate      int // events per second
}

func (c e2eCase) name() string {
	t := c.transport
	if c.pack {
		t += "-pack"
	}
	return fmt.Sprintf("%s/subs=%d/rate=%d", t, c.subs, c.rate)
}

// BenchmarkEndToEnd measures Kafka to subscriber over loopback sockets: a
// kafka-go writer produces item.reported records to the embedded broker at
// a fixed rate; subscribers of channel reports, in a child process, record
// how long each event took from produce to receipt. It reports sustained
// deliveries per second, latency percentiles, and drops (missing events and
// slow-consumer disconnects), which must be zero.
//
// Run it with -benchtime=1x: each run is a few seconds of steady state.
func BenchmarkEndToEnd(b *testing.B) {
	cases := []e2eCase{
		{"ws", false, 1, 10}, // the floor: Kafka to one subscriber
		{"ws", false, 10000, 5},
		{"ws", false, 10000, 10}, // the target: p99 < 50 ms
		{"ws", true, 10000, 10},
		{"ws", false, 1000, 50},
		{"ws", false, 1000, 100},
		{"ws", false, 1000, 200},
		{"ws", true, 1000, 200},
		{"sse", false, 1000, 50},
		{"sse", false, 1000, 100},
		{"sse", false, 1000, 200},
	}
	for _, c := range cases {
		b.Run(c.name(), func(b *testing.B) { benchEndToEnd(b, c) })
	}
}

// BenchmarkClasses runs the four load classes that issue 13 compares with
// Centrifugo: WebSocket one frame per message, 1k subscribers × 200 ev/s;
// WebSocket 5k × 10 ev/s; packed WebSocket (?pack=1) 1k × 800 ev/s; SSE
// 1k × 600 ev/s. Run it pinned (docs/benchmarks.md): the server on one
// core with GOMAXPROCS=1, the load client on the others.
func BenchmarkClasses(b *testing.B) {
	cases := []e2eCase{
		{"ws", false, 1000, 200},
		{"ws", false, 5000, 10},
		{"ws", true, 1000, 800},
		{"sse", false, 1000, 600},
	}
	for _, c := range cases {
		b.Run(c.name(), func(b *testing.B) { benchEndToEnd(b, c) })
	}
}

func benchEndToEnd(b *testing.B, c e2eCase) {
	a := startBenchApp(b, 0)
	w, closeWriter := newBenchWriter(a.kafkaAddr)
	warmUp(b, a, w)
	closeWriter()

	events := c.rate * int(steadyState/time.Second) * b.N
	lc := startLoadClient(b, loadSpec{
		URL:       strings.TrimSuffix(a.URL(), "/"),
		Transport: c.transport,
		Pack:      c.pack,
		Conns:     c.subs,
		Channel:   "reports",
		Token:     benchToken,
		Events:    events,
	})
	// A child process produces the events, so the producer's CPU and
	// write calls are not counted as the server's.
	pc := startLoadClient(b, loadSpec{Events: events, Kafka: a.kafkaAddr, Rate: c.rate})
	slow0 := a.hub.Stats().SlowConsumers

	stopProfile := profileSteadyState(b, c)
	b.ResetTimer()
	cpu0, syscw0, wait0 := processCPU(), writeSyscalls(), runQueueWait()
	if err := pc.begin(); err != nil {
		b.Fatal(err)
	}
	sum, err := lc.summary(time.Duration(b.N)*steadyState + 30*time.Second)
	serverCPU, syscw, wait := processCPU()-cpu0, writeSyscalls()-syscw0, runQueueWait()-wait0
	b.StopTimer()
	stopProfile()
	if err != nil {
		b.Fatal(err)
	}
	psum, err := pc.summary(30 * time.Second)
	if err != nil {
		b.Fatal(err)
	}
	if psum.ProduceErr != "" {
		b.Fatalf("producer: %s", psum.ProduceErr)
	}
	slow := a.hub.Stats().SlowConsumers - slow0

	pinned := len(sum.CPUs) > 0
	b.Logf("pinning: server CPUs %s GOMAXPROCS=%d; load client CPUs %v GOMAXPROCS=%d (pinned: %v%s)",
		ownCPUs(), runtime.GOMAXPROCS(0), sum.CPUs, sum.Procs, pinned, pinNote(sum.PinErr))
	span := time.Duration(sum.LastRecvNs - psum.ProduceStartNs)
	deliveries := float64(max(sum.Received, 1))
	// 100% is one core.
	b.ReportMetric(float64(serverCPU)/float64(span)*100, "server-cpu-%")
	b.ReportMetric(float64(sum.ReadCPUNs+psum.ReadCPUNs)/float64(span)*100, "client-cpu-%")
	// How long the server was ready to run but waited for its CPU (other
	// processes on it): high means the latencies are those of a starved
	// server.
	b.ReportMetric(float64(wait)/float64(span)*100, "server-wait-%")
	b.ReportMetric(float64(serverCPU)/1e3/deliveries, "cpu-us/delivery")
	b.ReportMetric(float64(syscw)/deliveries, "syscw/delivery")
	b.ReportMetric(float64(sum.Received)/span.Seconds(), "deliveries/s")
	b.ReportMetric(float64(events)/time.Duration(psum.ProduceNs).Seconds(), "events/s")
	b.ReportMetric(sum.P50Ms, "p50-ms")
	b.ReportMetric(sum.P99Ms, "p99-ms")
	b.ReportMetric(sum.MaxMs, "max-ms")
	b.ReportMetric(float64(sum.Missing), "drops")
	b.ReportMetric(float64(slow), "slow-consumers")
	b.ReportMetric(boolMetric(pinned), "pinned")
	b.ReportMetric(0, "ns/op")
	b.Logf("%s: %d events, %d deliveries, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms; missing %d, duplicates %d, disconnects %d %v",
		c.name(), events, sum.Received, sum.P50Ms, sum.P90Ms, sum.P99Ms, sum.P999Ms, sum.MaxMs, sum.Missing, sum.Duplicates, sum.Disconnects, sum.CloseCodes)
	if sum.Missing > 0 || slow > 0 || sum.Duplicates > 0 {
		b.Errorf("drops: %d missing deliveries, %d slow-consumer disconnects, %d duplicates", sum.Missing, slow, sum.Duplicates)
	}
}

// idleConns is how many idle connections the idle benchmarks hold.
const idleConns = 5000

// BenchmarkIdleWS measures what an idle WebSocket subscriber costs the
// server: heap and stack in use, and goroutines, per connection.
func BenchmarkIdleWS(b *testing.B) { benchIdle(b, "ws") }

// BenchmarkIdleSSE measures what an idle SSE subscriber costs the server.
func BenchmarkIdleSSE(b *testing.B) { benchIdle(b, "sse") }

// benchIdle opens idleConns connections from a child process, each
// subscribed to reports, and reports the server process's growth:
// bytes/conn is HeapInuse+StackInuse after two GCs; sys-bytes/conn is the
// growth of Sys, what the runtime took from the OS, which is meaningful only
// when the benchmark runs alone (Sys does not shrink after earlier runs).
func benchIdle(b *testing.B, transport string) {
	a := startBenchApp(b, 0)
	before := idleSnapshot()
	lc := startLoadClient(b, loadSpec{
		URL:       strings.TrimSuffix(a.URL(), "/"),
		Transport: transport,
		Conns:     idleConns,
		Channel:   "reports",
		Token:     benchToken,
	})
	if n := a.doorClients(); n != idleConns {
		b.Fatalf("hub has %d clients, want %d", n, idleConns)
	}
	// Idle means no traffic: the writers that sent the subscription acks
	// linger a moment for more, then exit.
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > before.goroutines+idleConns+idleConns/100 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	after := idleSnapshot()
	if dir := os.Getenv("SWITCHBOARD_BENCH_HEAPPROFILE"); dir != "" {
		// What the idle connections hold, by allocation site.
		f, err := os.Create(filepath.Join(dir, "idle-"+transport+".heap"))
		if err != nil {
			b.Fatal(err)
		}
		err = pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	lc.stop()

	n := float64(idleConns)
	b.ReportMetric(float64(after.inuse-before.inuse)/n, "bytes/conn")
	b.ReportMetric(float64(after.heap-before.heap)/n, "heap-bytes/conn")
	b.ReportMetric(float64(after.stack-before.stack)/n, "stack-bytes/conn")
	b.ReportMetric(float64(after.sys-before.sys)/n, "sys-bytes/conn")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/conn")
	b.ReportMetric(0, "ns/op")
}

// profileSteadyState writes a CPU profile of the server process during the
// steady state only (not connection set-up) when SWITCHBOARD_BENCH_CPUPROFILE
// names a directory; the file is named after the case.
func profileSteadyState(b *testing.B, c e2eCase) func() {
	return cpuProfile(b, strings.NewReplacer("/", "_", "=", "").Replace(c.name()))
}

// cpuProfile writes a CPU profile to name.prof in the directory
// SWITCHBOARD_BENCH_CPUPROFILE names, from now until the returned func
// runs; nothing without the variable.
func cpuProfile(b *testing.B, name string) func() {
	dir := os.Getenv("SWITCHBOARD_BENCH_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name+".prof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err) // -test.cpuprofile is on: use one or the other
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// writeSyscalls returns how many write system calls this process has made
// (syscw of /proc/self/io), or 0 where that cannot be read.
func writeSyscalls() int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "syscw:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// runQueueWait returns how long this process's threads have been ready to
// run but waited for a CPU (the second field of each thread's
// /proc/self/task/*/schedstat), or 0 where that cannot be read. Threads
// that have exited are not counted.
func runQueueWait() time.Duration {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	var sum int64
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "schedstat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(raw))
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		sum += n
	}
	return time.Duration(sum)
}

// ownCPUs describes the CPUs this process may run on.
func ownCPUs() string {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return "unknown"
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return fmt.Sprint(cpus)
}

func pinNote(err string) string {
	if err == "" {
		return ""
	}
	return "; " + err
}

func boolMetric(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// processCPU returns the CPU time (user+system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type memSnapshot struct {
	heap, stack, inuse, sys int64
	goroutines              int
}

func idleSnapshot() memSnapshot {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSnapshot{
		heap:       int64(ms.HeapInuse),
		stack:      int64(ms.StackInuse),
		inuse:      int64(ms.HeapInuse + ms.StackInuse),
		sys:        int64(ms.Sys),
		goroutines: runtime.NumGoroutine(),
	}
}
