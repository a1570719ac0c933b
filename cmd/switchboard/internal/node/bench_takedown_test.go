package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/hub/redisbus/redistest"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
)

// benchPoliceToken is the bearer token of the takedown benchmarks' police
// principal.
const benchPoliceToken = "bench-only-police-token"

// takedownSteady is how long each phase of a round-trip case loops.
const takedownSteady = 3 * time.Second

// catalogueItems is the demo catalogue: item-1 … item-1000 (SPEC §6).
const catalogueItems = 1000

// heldTarget is how many requests BenchmarkTakedownHeld holds open.
const heldTarget = 10000

// startTakedownApp starts a whole node with the embedded broker on free
// ports, a police principal with benchPoliceToken, and connection and
// takedown rate limits above what the benchmarks need; mutate adjusts the
// rest.
func startTakedownApp(b *testing.B, mutate func(*config.Config), opts ...Option) *Node {
	b.Helper()
	return startTestNode(b, nodeSpec{
		opts: opts,
		config: func(cfg *config.Config) {
			cfg.Auth.Principals = []config.Principal{{Name: "bench-police", Role: config.RolePolice, Token: benchPoliceToken}}
			cfg.Limits.Connections = 20000
			cfg.Limits.TakedownRate = 1e9
			cfg.Limits.TakedownBurst = 1 << 30
			if mutate != nil {
				mutate(cfg)
			}
		},
		stopWait: time.Minute,
	})
}

func benchItem(seq int) string { return "item-" + strconv.Itoa(1+seq%catalogueItems) }

// postTakedown sends POST /v1/takedowns for item and returns the status
// and body.
func postTakedown(ctx context.Context, hc *http.Client, base, item string, hdr ...string) (int, []byte, error) {
	body := `{"item_id":"` + item + `","reason":"bench","authority_ref":"BENCH-1"}`
	resp, b, err := call(ctx, hc, http.MethodPost, base+"/v1/takedowns", jsonHeader(benchPoliceToken, hdr...), body)
	if resp == nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, err
}

// loopResult is what loadLoop measured.
type loopResult struct {
	lat     []time.Duration // sorted
	elapsed time.Duration   // first start to last answer
}

func (r loopResult) perSec() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r loopResult) quantileMs(q float64) float64 {
	if len(r.lat) == 0 {
		return 0
	}
	return float64(r.lat[min(int(q*float64(len(r.lat))), len(r.lat)-1)]) / float64(time.Millisecond)
}

// loadLoop runs n workers that each call op in a loop, each with the next
// sequence number, until d has passed, and returns every call's latency.
// The first error stops every worker; errStop stops only the worker that
// returned it.
func loadLoop(n int, d time.Duration, op func(ctx context.Context, seq int) error) (loopResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	lats := make([][]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range n {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				seq := int(next.Add(1) - 1)
				t0 := time.Now()
				if err := op(ctx, seq); err != nil {
					if errors.Is(err, errStop) {
						return // this worker is done; the others go on
					}
					if ctx.Err() == nil {
						errOnce.Do(func() { firstErr = err })
					}
					cancel()
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	res := loopResult{elapsed: time.Since(start), lat: slices.Concat(lats...)}
	slices.Sort(res.lat)
	return res, firstErr
}

// BenchmarkTakedownRoundTrip measures POST /v1/takedowns end to end on one
// node (embedded broker, simulated item service at latency 0): N concurrent
// HTTP clients loop for takedownSteady, and every answer must be 200. In
// the same node it then measures the raw Kafka round trip the adapter is
// built on: a kafka-go writer produces the same takedown.requested command
// and a kafka-go reader of the events topic waits for the item service's
// takedown.confirmed with its correlationid, at the same concurrency.
// overhead-% is the adapter's p50 over the raw p50.
//
// Every catalogue item is taken down once during the warm-up, so every
// measured command, adapter or raw, is answered by the item service with
// one takedown.confirmed (a repeat takedown: no item.removed events).
//
// Run it with -benchtime=1x: each case is a few seconds.
func BenchmarkTakedownRoundTrip(b *testing.B) {
	for _, n := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchTakedownRoundTrip(b, n, nil) })
	}
}

// BenchmarkTakedownRoundTripRedis is BenchmarkTakedownRoundTrip on the
// Redis backplane and outcome store (the real server on 127.0.0.1:6379,
// under a key prefix of its own): each takedown follows its corr: channel
// through Redis, and its record lives there.
func BenchmarkTakedownRoundTripRedis(b *testing.B) {
	for _, n := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			srv := redistest.Real(b)
			benchTakedownRoundTrip(b, n, &srv)
		})
	}
}

func benchTakedownRoundTrip(b *testing.B, n int, rs *redistest.Server) {
	var opts []Option
	if rs != nil {
		opts = append(opts, withRedisPrefix(rs.Prefix))
	}
	a := startTakedownApp(b, func(c *config.Config) {
		c.ItemSvc.Enabled = true
		c.ItemSvc.Latency = 0
		if rs != nil {
			c.Redis.URL = rs.URL()
		}
	}, opts...)
	base := a.base()
	tr := &http.Transport{
		DialContext:         (&net.Dialer{}).DialContext,
		MaxIdleConns:        n + 64,
		MaxIdleConnsPerHost: n + 64,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	// The first confirmation needs both consumer groups joined: wait long.
	ctx := context.Background()
	if status, body, err := postTakedown(ctx, hc, base, benchItem(0), "Prefer", "wait=55"); err != nil || status != http.StatusOK {
		b.Fatalf("first takedown: %d %s %v", status, body, err)
	}
	// Take every catalogue item down once; from here on each command is
	// answered with takedown.confirmed alone.
	adapterOp := func(ctx context.Context, seq int) error {
		status, body, err := postTakedown(ctx, hc, base, benchItem(seq))
		if err != nil {
			return err
		}
		if status != http.StatusOK || !bytes.Contains(body, []byte(`"status":"confirmed"`)) {
			return fmt.Errorf("POST /v1/takedowns %s: %d %s", benchItem(seq), status, body)
		}
		return nil
	}
	var wseq atomic.Int64
	if _, err := loadLoop(64, time.Minute, func(ctx context.Context, _ int) error {
		seq := int(wseq.Add(1) - 1)
		if seq >= catalogueItems {
			return errStop
		}
		return adapterOp(ctx, seq)
	}); err != nil {
		b.Fatal(err)
	}

	raw := newRawTakedown(b, a)
	defer raw.close()
	// Warm the raw path (connections, fetch sessions) and the HTTP path at
	// this concurrency.
	if _, err := loadLoop(n, 500*time.Millisecond, raw.op); err != nil {
		b.Fatal(err)
	}
	if _, err := loadLoop(n, 500*time.Millisecond, adapterOp); err != nil {
		b.Fatal(err)
	}

	stopProfile := profileTakedown(b, fmt.Sprintf("takedown-clients%d", n))
	b.ResetTimer()
	cpu0 := processCPU()
	ad, err := loadLoop(n, takedownSteady, adapterOp)
	adCPU := processCPU() - cpu0
	stopProfile()
	if err != nil {
		b.Fatal(err)
	}
	stopProfile = profileTakedown(b, fmt.Sprintf("takedown-raw-clients%d", n))
	cpu0 = processCPU()
	rw, err := loadLoop(n, takedownSteady, raw.op)
	rawCPU := processCPU() - cpu0
	stopProfile()
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}

	b.ReportMetric(ad.perSec(), "round-trips/s")
	b.ReportMetric(ad.quantileMs(0.50), "p50-ms")
	b.ReportMetric(ad.quantileMs(0.99), "p99-ms")
	b.ReportMetric(rw.perSec(), "raw-round-trips/s")
	b.ReportMetric(rw.quantileMs(0.50), "raw-p50-ms")
	b.ReportMetric(rw.quantileMs(0.99), "raw-p99-ms")
	b.ReportMetric((ad.quantileMs(0.50)-rw.quantileMs(0.50))/rw.quantileMs(0.50)*100, "overhead-%")
	// The adapter's round trips per raw one (issue aim: at least 1/3).
	b.ReportMetric(ad.perSec()/rw.perSec(), "ratio")
	// The adapter's latency per raw latency (issue aims: p50 at most 3× at
	// one client, p99 at most 3× at 64 and 512).
	b.ReportMetric(ad.quantileMs(0.50)/rw.quantileMs(0.50), "p50-x-raw")
	b.ReportMetric(ad.quantileMs(0.99)/rw.quantileMs(0.99), "p99-x-raw")
	// CPU of the whole process (node, broker and clients), 100% = one core.
	b.ReportMetric(float64(adCPU)/float64(ad.elapsed)*100, "cpu-%")
	b.ReportMetric(float64(rawCPU)/float64(rw.elapsed)*100, "raw-cpu-%")
	// CPU time per round trip: steadier than latency on a shared machine.
	b.ReportMetric(float64(adCPU.Microseconds())/float64(len(ad.lat)), "cpu-us/rt")
	b.ReportMetric(float64(rawCPU.Microseconds())/float64(len(rw.lat)), "raw-cpu-us/rt")
	b.ReportMetric(0, "ns/op")
	b.Logf("clients=%d: adapter %d round trips in %v, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms, cpu %.0f%%; raw %d in %v, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms, cpu %.0f%%",
		n, len(ad.lat), ad.elapsed.Round(time.Millisecond), ad.quantileMs(0.5), ad.quantileMs(0.9), ad.quantileMs(0.99), ad.quantileMs(1),
		float64(adCPU)/float64(ad.elapsed)*100,
		len(rw.lat), rw.elapsed.Round(time.Millisecond), rw.quantileMs(0.5), rw.quantileMs(0.9), rw.quantileMs(0.99), rw.quantileMs(1),
		float64(rawCPU)/float64(rw.elapsed)*100)
}

var errStop = errors.New("stop")

// rawTakedown is the baseline: the adapter's Kafka round trip without the
// adapter. A kafka.Writer (Hash balancer, kafka-go's 1 ms batch timeout,
// RequireAll: what producers.Producer used before its group-commit writer;
// the item service in between answers through that writer) sends the
// command the adapter would send (producers.Message, same topic, key,
// headers and data) and one kafka-go reader per partition of the events
// topic (configured like the hub's consumer) hands each
// takedown.confirmed to the waiter of its correlationid.
type rawTakedown struct {
	w       *kafka.Writer
	tr      *kafka.Transport
	readers []*kafka.Reader
	topic   string
	waiters sync.Map // correlation ID -> chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newRawTakedown(b *testing.B, a *Node) *rawTakedown {
	b.Helper()
	tr := &kafka.Transport{}
	commandsTopic, outcomesTopic := a.cfg.TakedownTopics()
	r := &rawTakedown{
		tr:    tr,
		topic: commandsTopic,
		w: &kafka.Writer{
			Addr:         kafka.TCP(a.kafkaAddr),
			Balancer:     &kafka.Hash{},
			BatchTimeout: time.Millisecond, // kafka-go's default
			WriteTimeout: producers.DefaultWriteTimeout,
			ReadTimeout:  producers.DefaultWriteTimeout,
			MaxAttempts:  producers.DefaultMaxAttempts,
			RequiredAcks: kafka.RequireAll,
			Transport:    tr,
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	for p := range a.cfg.Kafka.Embedded.Partitions {
		rd := kafka.NewReader(kafka.ReaderConfig{
			Brokers:   []string{a.kafkaAddr},
			Topic:     outcomesTopic,
			Partition: p,
			MaxWait:   consumers.DefaultMaxWait,
		})
		// From the start: nothing produced from here on can be missed,
		// whenever the reader's first fetch happens; older events match
		// no waiter.
		if err := rd.SetOffset(kafka.FirstOffset); err != nil {
			b.Fatal(err)
		}
		r.readers = append(r.readers, rd)
		r.wg.Go(func() {
			for {
				m, err := rd.ReadMessage(ctx)
				if err != nil {
					return
				}
				var typ, corr string
				for _, h := range m.Headers {
					switch h.Key {
					case "ce_type":
						typ = string(h.Value)
					case "ce_correlationid":
						corr = string(h.Value)
					}
				}
				if typ != takedown.TypeConfirmed || corr == "" {
					continue
				}
				if ch, ok := r.waiters.LoadAndDelete(corr); ok {
					ch.(chan struct{}) <- struct{}{}
				}
			}
		})
	}
	return r
}

// op is one raw round trip: produce the command, wait for its confirmation.
func (r *rawTakedown) op(ctx context.Context, seq int) error {
	item := benchItem(seq)
	corr := uuid.NewString()
	ch := make(chan struct{}, 1)
	r.waiters.Store(corr, ch)
	data := map[string]string{"item_id": item, "reason": "bench", "requested_by": "bench-police", "authority_ref": "BENCH-1"}
	m, err := producers.Message(r.topic, item, producers.NewEvent(takedown.Source, takedown.TypeRequested, item, corr, data))
	if err != nil {
		return err
	}
	if err := r.w.WriteMessages(ctx, m); err != nil {
		r.waiters.Delete(corr)
		return err
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		r.waiters.Delete(corr)
		return fmt.Errorf("raw takedown of %s (%s): no takedown.confirmed in 10s", item, corr)
	case <-ctx.Done():
		r.waiters.Delete(corr)
		return ctx.Err()
	}
}

func (r *rawTakedown) close() {
	r.cancel()
	r.wg.Wait()
	for _, rd := range r.readers {
		rd.Close()
	}
	r.w.Close()
	r.tr.CloseIdleConnections()
}

// profileTakedown writes a CPU profile of one measured phase (adapter or
// raw) when SWITCHBOARD_BENCH_CPUPROFILE names a directory, and its block
// and mutex profiles (name-block.prof, name-mutex.prof) when
// SWITCHBOARD_BENCH_BLOCKPROFILE does: where goroutines wait, which shows
// a serialised stage that a CPU profile does not.
func profileTakedown(b *testing.B, name string) func() {
	stopCPU := cpuProfile(b, name)
	stopBlock := blockProfileTakedown(b, name)
	return func() {
		stopCPU()
		stopBlock()
	}
}

// blockProfileTakedown records blocking events of 10 µs and more and one
// mutex contention in 5 during the phase only. The runtime's profiles are
// cumulative, so it resets them first by writing them away.
func blockProfileTakedown(b *testing.B, name string) func() {
	dir := os.Getenv("SWITCHBOARD_BENCH_BLOCKPROFILE")
	if dir == "" {
		return func() {}
	}
	base := map[string]*bytes.Buffer{"block": {}, "mutex": {}}
	for kind, buf := range base {
		pprof.Lookup(kind).WriteTo(buf, 0)
	}
	runtime.SetBlockProfileRate(int(10 * time.Microsecond))
	runtime.SetMutexProfileFraction(5)
	return func() {
		runtime.SetBlockProfileRate(0)
		runtime.SetMutexProfileFraction(0)
		for kind, before := range base {
			// The phase's profile, and the one before it: compare them
			// with go tool pprof -diff_base name-KIND-before.prof.
			for suffix, write := range map[string]func(io.Writer) error{
				"":        func(w io.Writer) error { return pprof.Lookup(kind).WriteTo(w, 0) },
				"-before": func(w io.Writer) error { _, err := w.Write(before.Bytes()); return err },
			} {
				f, err := os.Create(filepath.Join(dir, name+"-"+kind+suffix+".prof"))
				if err != nil {
					b.Fatal(err)
				}
				if err := write(f); err != nil {
					b.Error(err)
				}
				f.Close()
			}
		}
	}
}

// BenchmarkTakedownHeld measures what a held POST /v1/takedowns costs the
// server: heldTarget requests, sent by a child process (10k client sockets
// and 10k server sockets do not fit one process's 20000 descriptors), are
// held open with the item service off and takedown.timeout at 30 min. It
// reports the growth of HeapInuse+StackInuse and of goroutines per held
// request after two GCs, then has the child hang up and checks that every
// wait is freed (Held() back to 0). residual-bytes/takedown is what stays
// after that: the takedown's record in the outcome store and its corr:
// channel's history, kept for takedown.result_ttl and hub.history.ttl.
func BenchmarkTakedownHeld(b *testing.B) {
	a := startTakedownApp(b, func(c *config.Config) {
		c.ItemSvc.Enabled = false
		c.Takedown.Timeout = 30 * time.Minute
		c.Takedown.MaxWait = 30 * time.Minute
	})
	// Warm the producer: respond-async answers 202 once the command is in.
	tr := &http.Transport{DisableCompression: true}
	hc := &http.Client{Transport: tr}
	for i := range 10 {
		status, body, err := postTakedown(context.Background(), hc, a.base(), benchItem(i), "Prefer", "respond-async")
		if err != nil || status != http.StatusAccepted {
			b.Fatalf("warm-up: %d %s %v", status, body, err)
		}
	}
	tr.CloseIdleConnections()

	before := idleSnapshot()
	b.ResetTimer()
	hold := startHoldClient(b, holdSpec{URL: a.base(), Token: benchPoliceToken, Requests: heldTarget})
	if err := waitHeld(a, heldTarget, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	// A held request waits takedown.DefaultHandOffAfter in its handler
	// before it is handed off from net/http: measure the requests held
	// long, as the takedowns that are not answered at once are.
	time.Sleep(2 * takedown.DefaultHandOffAfter)
	after := idleSnapshot()
	b.StopTimer()
	writeHeapProfile(b, "takedown-held.heap")
	sum, err := hold.finish()
	if err != nil {
		b.Fatal(err)
	}
	if sum.Answered > 0 {
		b.Fatalf("%d requests were answered while they should have been held: %v", sum.Answered, sum.Statuses)
	}
	if err := waitHeld(a, 0, time.Minute); err != nil {
		b.Fatal("after the clients hung up: ", err)
	}
	released := idleSnapshot()
	writeHeapProfile(b, "takedown-released.heap")

	n := float64(heldTarget)
	b.ReportMetric(float64(after.inuse-before.inuse)/n, "bytes/held")
	b.ReportMetric(float64(after.heap-before.heap)/n, "heap-bytes/held")
	b.ReportMetric(float64(after.stack-before.stack)/n, "stack-bytes/held")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/held")
	b.ReportMetric(float64(released.inuse-before.inuse)/n, "residual-bytes/takedown")
	b.ReportMetric(0, "ns/op")
	b.Logf("held %d: +%d goroutines, +%d B heap, +%d B stack; after release: %d goroutines over the start, %d B over the start; hub clients now %d",
		heldTarget, after.goroutines-before.goroutines, after.heap-before.heap, after.stack-before.stack,
		released.goroutines-before.goroutines, released.inuse-before.inuse, a.hub.Clients())
}

// writeHeapProfile writes the heap profile to name in the directory
// SWITCHBOARD_BENCH_HEAPPROFILE names, if it is set.
func writeHeapProfile(b *testing.B, name string) {
	dir := os.Getenv("SWITCHBOARD_BENCH_HEAPPROFILE")
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		b.Fatal(err)
	}
	err = pprof.Lookup("heap").WriteTo(f, 0)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
}

// waitHeld polls the adapter until want requests are held.
func waitHeld(a *Node, want int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got := a.takedowns.Held()
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d takedown requests held after %v, want %d", got, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The hold client: the child side of BenchmarkTakedownHeld, started like
// the load client (the test binary re-executed, a holdSpec in holdClientEnv,
// lines prefixed with loadLinePrefix). It sends every POST, says "READY"
// once each request is written, and when its stdin closes cancels them all
// and says "DONE <holdSummary JSON>".
const holdClientEnv = "SWITCHBOARD_HOLDCLIENT"

type holdSpec struct {
	URL      string
	Token    string
	Requests int
}

type holdSummary struct {
	Requests int
	Answered int            // requests answered before the hang-up (should be 0)
	Statuses map[string]int `json:",omitempty"`
}

// TestTakedownHoldClient is not a test of its own: it skips unless
// BenchmarkTakedownHeld started it.
func TestTakedownHoldClient(t *testing.T) {
	raw := os.Getenv(holdClientEnv)
	if raw == "" {
		t.Skip("hold client for BenchmarkTakedownHeld: runs only when " + holdClientEnv + " is set")
	}
	var spec holdSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
		close(stdinClosed)
	}()
	defer func() { <-stdinClosed }()

	tr := &http.Transport{
		DialContext:         (&net.Dialer{}).DialContext,
		MaxIdleConnsPerHost: -1,
		DisableKeepAlives:   true,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	// At most 64 requests are being connected and written at once, so the
	// server's accept backlog never overflows.
	sem := make(chan struct{}, 64)
	var mu sync.Mutex
	sum := holdSummary{Requests: spec.Requests, Statuses: map[string]int{}}
	var wrote, wg sync.WaitGroup
	for i := range spec.Requests {
		sem <- struct{}{}
		wrote.Add(1)
		wg.Go(func() {
			var once sync.Once
			written := func() { once.Do(func() { <-sem; wrote.Done() }) }
			defer written()
			trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { written() }}
			rctx := httptrace.WithClientTrace(ctx, trace)
			status, _, err := postTakedown(rctx, hc, spec.URL, benchItem(i))
			if err != nil {
				if ctx.Err() == nil {
					mu.Lock()
					sum.Answered++
					sum.Statuses["error: "+err.Error()]++
					mu.Unlock()
				}
				return
			}
			mu.Lock()
			sum.Answered++
			sum.Statuses[strconv.Itoa(status)]++
			mu.Unlock()
		})
	}
	wrote.Wait()
	fmt.Printf("%sREADY %d\n", loadLinePrefix, spec.Requests)
	<-ctx.Done()
	wg.Wait()
	b, _ := json.Marshal(sum)
	fmt.Printf("%sDONE %s\n", loadLinePrefix, b)
}

// holdClient is the parent's handle on a child hold client; it reuses the
// load client's plumbing.
type holdClient struct{ lc *loadClient }

// startHoldClient starts a child hold client and waits until it has
// written every request.
func startHoldClient(b *testing.B, spec holdSpec) *holdClient {
	b.Helper()
	raw, _ := json.Marshal(spec)
	lc := spawnChild(b, []string{"-test.run=^TestTakedownHoldClient$", "-test.count=1", "-test.timeout=10m"}, holdClientEnv+"="+string(raw))
	return &holdClient{lc: lc}
}

// finish has the child hang up every request and returns its summary.
func (h *holdClient) finish() (holdSummary, error) {
	h.lc.stdin.Close()
	rest, err := h.lc.next("DONE", time.Minute)
	if err != nil {
		return holdSummary{}, err
	}
	var s holdSummary
	err = json.Unmarshal([]byte(rest), &s)
	h.lc.stop()
	return s, err
}
