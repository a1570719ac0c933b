package node

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

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

// heldTarget is how many requests BenchmarkHeldTakedowns holds open.
const heldTarget = 10000

// startTakedownApp starts a whole node on free ports (with the embedded
// broker unless mutate sets kafka.brokers), a police principal with
// benchPoliceToken, and connection and takedown rate limits above what
// the benchmarks need; mutate adjusts the rest.
func startTakedownApp(b testing.TB, mutate func(*config.Config), opts ...Option) *Node {
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

// errStop, returned by a loadLoop op, stops only its worker.
var errStop = errors.New("stop")

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

// BenchmarkTakedown measures POST /v1/takedowns end to end beside a raw
// kafka-go request/reply through the same broker, at 1, 64 and 512
// clients, on the memory and on the Redis backplane (issue 14).
//
// This process is the server: run it pinned, taskset -c 0 env
// GOMAXPROCS=1 go test … (docs/benchmarks.md). A child process (the test
// binary re-run as TestTakedownLoadClient, pinned to the CPUs this process
// may not use) runs the Kafka-protocol broker the node uses as its
// kafka.brokers, and the closed-loop HTTP clients; it reports their
// latencies. The node runs its simulated item service at latency 0. The
// raw request/reply runs in this process: a requester and a zero-cost
// responder (rawReqReply) through the child's broker, at the same
// concurrency, right after the adapter phase. Every answer must be 200
// with "status":"confirmed".
//
// Every catalogue item is taken down once during the warm-up, so every
// measured takedown is a repeat, answered with one takedown.confirmed.
// cpu-us/rt is this process's CPU time (the server's, or the raw
// requester's and responder's) per round trip. On the Redis backplane,
// redis-cpu-us/rt is the Redis server's (INFO cpu), and the log line
// "redis per round trip" splits its time by command (INFO commandstats).
//
// Run it with -benchtime=1x: each case is a few seconds.
func BenchmarkTakedown(b *testing.B) {
	memory := map[int]float64{}    // round trips/s on the memory backplane, by clients
	memoryCPU := map[int]float64{} // the server's CPU µs per round trip there
	for _, backplane := range []string{"memory", "redis"} {
		b.Run(backplane, func(b *testing.B) {
			for _, n := range []int{1, 64, 512} {
				b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
					var rs *redistest.Server
					if backplane == "redis" {
						rs = takedownRedis(b)
					}
					rps, cpu := benchTakedown(b, backplane, takedown.TakedownsName, n, rs)
					if rs == nil {
						memory[n], memoryCPU[n] = rps, cpu
					} else if m := memory[n]; m > 0 {
						// Issue aim: the Redis backplane at least 1/2 of
						// the memory one (when both ran in this run).
						b.ReportMetric(rps/m, "x-memory")
						// The same from the server's CPU per round trip
						// alone: the ratio were the server's core the only
						// bound (Redis, the broker and the clients share
						// the other core here).
						b.ReportMetric(memoryCPU[n]/cpu, "x-memory-cpu")
					}
				})
			}
		})
	}
}

// takedownRedis is the Redis server of a Redis case: a redis-server of the
// benchmark's own, pinned with the broker and the HTTP clients to the CPUs
// the server may not use, so the server's core is the server's alone (as
// the broker is not on it either). Not pinned (no taskset), the shared
// server on 127.0.0.1:6379 does.
func takedownRedis(b *testing.B) *redistest.Server {
	cpus := loadCPUs()
	if len(cpus) == 0 {
		srv := redistest.Real(b)
		return &srv
	}
	n := redistest.StartServer(b)
	if err := pinProcess(strconv.Itoa(n.Pid()), cpus); err != nil {
		b.Fatalf("pin redis-server to CPUs %v: %v", cpus, err)
	}
	b.Logf("redis: a redis-server of its own on %s, pinned to CPUs %v", n.Addr, cpus)
	return &redistest.Server{Name: "redis", Addr: n.Addr, Prefix: "sbbench:"}
}

// BenchmarkCommands is BenchmarkTakedown's memory cases for the built-in
// takedowns and for a declared command, the demo's restores (SPEC §5.1,
// answered by the same simulated item service with one item.restored, as
// a repeat takedown is with one takedown.confirmed): the declared-command
// path against the takedown path, in one table.
func BenchmarkCommands(b *testing.B) {
	for _, cmd := range []string{takedown.TakedownsName, demoRestoresName} {
		b.Run("command="+cmd, func(b *testing.B) {
			for _, n := range []int{1, 64, 512} {
				b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
					benchTakedown(b, "memory", cmd, n, nil)
				})
			}
		})
	}
}

// confirmTakedown is one adapter round trip: POST /v1/takedowns for item,
// which must be answered 200 with "status":"confirmed".
func confirmTakedown(ctx context.Context, hc *http.Client, base, item string) error {
	return confirmCommand(ctx, hc, base, takedown.TakedownsName, item)
}

// confirmCommand is one round trip of command (takedowns, or the demo's
// restores) for item, which must be answered 200 with
// "status":"confirmed".
func confirmCommand(ctx context.Context, hc *http.Client, base, command, item string) error {
	var status int
	var body []byte
	var err error
	if command == "" || command == takedown.TakedownsName {
		status, body, err = postTakedown(ctx, hc, base, item)
	} else {
		var resp *http.Response
		resp, body, err = call(ctx, hc, http.MethodPost, base+"/v1/"+command, jsonHeader(benchPoliceToken), `{"item_id":"`+item+`","reason":"bench"}`)
		if resp != nil {
			status = resp.StatusCode
		}
	}
	if err != nil {
		return err
	}
	if status != http.StatusOK || !bytes.Contains(body, []byte(`"status":"confirmed"`)) {
		return fmt.Errorf("POST /v1/%s %s: %d %s", command, item, status, body)
	}
	return nil
}

// benchTakedown runs one case; it returns the adapter's round trips/s and
// the server's CPU µs per round trip.
func benchTakedown(b *testing.B, backplane, command string, n int, rs *redistest.Server) (float64, float64) {
	defaults, err := config.Load("", nil)
	if err != nil {
		b.Fatal(err)
	}
	partitions := defaults.Kafka.Embedded.Partitions
	child := startTakedownClient(b, takedownClientSpec{
		Partitions: partitions,
		Topics:     append(defaults.Topics(), rawCommandsTopic, rawRepliesTopic, producers.DemoItemCommandsTopic, producers.DemoItemEventsTopic),
		CPUs:       loadCPUs(),
	})
	pinned := len(child.ready.CPUs) > 0
	if pinned {
		b.Logf("pinning: server CPUs %s GOMAXPROCS=%d; broker and HTTP clients (child) CPUs %v GOMAXPROCS=%d",
			ownCPUs(), runtime.GOMAXPROCS(0), child.ready.CPUs, child.ready.Procs)
	} else {
		b.Logf("pinning: NOT PINNED, server and child run where the scheduler puts them (server CPUs %s GOMAXPROCS=%d, child GOMAXPROCS=%d%s); run under taskset -c 0 on a machine with a second CPU",
			ownCPUs(), runtime.GOMAXPROCS(0), child.ready.Procs, pinNote(child.ready.PinErr))
	}

	var opts []Option
	if rs != nil {
		opts = append(opts, withRedisPrefix(rs.Prefix))
	}
	if command == demoRestoresName {
		opts = append(opts, withCommands(demoRestores()))
	}
	a := startTakedownApp(b, func(c *config.Config) {
		c.Kafka.Brokers = []string{child.ready.Broker}
		c.ItemSvc.Enabled = true
		c.ItemSvc.Latency = 0
		if rs != nil {
			c.Redis.URL = rs.URL()
		}
	}, opts...)
	base := a.base()

	// The first confirmation needs both consumer groups joined: wait long.
	if status, body, err := postTakedown(context.Background(), http.DefaultClient, base, benchItem(0), "Prefer", "wait=55"); err != nil || status != http.StatusOK {
		b.Fatalf("first takedown: %d %s %v", status, body, err)
	}
	// Take every catalogue item down once; from here on each command is
	// answered with takedown.confirmed alone.
	child.run(b, takedownRun{URL: base, Clients: 64, Items: catalogueItems, Duration: time.Minute})
	if command != takedown.TakedownsName {
		// The first call of the command: the item service's reader of
		// its topic may still be joining.
		if err := confirmCommandWait(base, command); err != nil {
			b.Fatal(err)
		}
	}

	raw := newRawReqReply(b, child.ready.Broker, n, partitions)
	defer raw.close()
	// Warm the raw path (connections, fetch sessions) and the HTTP path at
	// this concurrency.
	if _, err := loadLoop(n, 500*time.Millisecond, raw.op); err != nil {
		b.Fatal(err)
	}
	child.run(b, takedownRun{URL: base, Command: command, Clients: n, Duration: 500 * time.Millisecond})

	name := fmt.Sprintf("%s-%s-clients%d", backplane, command, n)
	stopProfile := profileTakedown(b, "takedown-"+name)
	b.ResetTimer()
	redis0 := readRedisCPU(b, rs)
	cpu0, wait0, t0 := processCPU(), runQueueWait(), time.Now()
	ad := child.run(b, takedownRun{URL: base, Command: command, Clients: n, Duration: takedownSteady})
	adCPU, adWait, adWall := processCPU()-cpu0, runQueueWait()-wait0, time.Since(t0)
	redisUsed := readRedisCPU(b, rs).since(redis0)
	stopProfile()

	stopProfile = profileTakedown(b, "takedown-raw-"+name)
	childCPU0, childWait0 := child.cpu(b)
	cpu0, wait0, t0 = processCPU(), runQueueWait(), time.Now()
	rw, err := loadLoop(n, takedownSteady, raw.op)
	rawCPU, rawWait, rawWall := processCPU()-cpu0, runQueueWait()-wait0, time.Since(t0)
	childCPU1, childWait1 := child.cpu(b)
	rawChildCPU, rawChildWait := childCPU1-childCPU0, childWait1-childWait0
	stopProfile()
	var floor *floorResult
	if rs == nil {
		floor = httpFloor(b, child, base, command, n)
	}
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if err := raw.err(); err != nil {
		b.Fatal(err)
	}

	adRate := float64(ad.RoundTrips) / time.Duration(ad.ElapsedNs).Seconds()
	b.ReportMetric(adRate, "round-trips/s")
	b.ReportMetric(ad.P50Ms, "p50-ms")
	b.ReportMetric(ad.P99Ms, "p99-ms")
	b.ReportMetric(rw.perSec(), "raw-round-trips/s")
	b.ReportMetric(rw.quantileMs(0.50), "raw-p50-ms")
	b.ReportMetric(rw.quantileMs(0.99), "raw-p99-ms")
	// The adapter's round trips per raw one (issue aim: at least 1/3 at 64
	// and 512 clients).
	b.ReportMetric(adRate/rw.perSec(), "ratio")
	// The adapter's latency per raw latency (issue aims: p50 at most 3× at
	// one client, p99 at most 3× at 64 and 512).
	b.ReportMetric(ad.P50Ms/rw.quantileMs(0.50), "p50-x-raw")
	b.ReportMetric(ad.P99Ms/rw.quantileMs(0.99), "p99-x-raw")
	// The server process's CPU (100% = one core) and CPU time per round
	// trip; in the raw phase, that of the requester and responder.
	b.ReportMetric(float64(adCPU)/float64(adWall)*100, "server-cpu-%")
	b.ReportMetric(float64(rawCPU)/float64(rawWall)*100, "raw-server-cpu-%")
	b.ReportMetric(float64(adCPU.Microseconds())/float64(ad.RoundTrips), "cpu-us/rt")
	b.ReportMetric(float64(rawCPU.Microseconds())/float64(len(rw.lat)), "raw-cpu-us/rt")
	// The child's CPU (broker, and the HTTP clients in the adapter phase):
	// near 100% when pinned means the broker's core was the bound.
	b.ReportMetric(float64(ad.CPUNs)/float64(ad.ElapsedNs)*100, "child-cpu-%")
	b.ReportMetric(float64(rawChildCPU)/float64(rawWall)*100, "raw-child-cpu-%")
	// How long the threads of each process were ready to run but waited
	// for a CPU (other processes on the core): the share of the phase's
	// wall time; above a few % the figures measure the host's load.
	b.ReportMetric(float64(adWait)/float64(adWall)*100, "server-runq-%")
	b.ReportMetric(float64(rawWait)/float64(rawWall)*100, "raw-server-runq-%")
	b.ReportMetric(float64(ad.RunQNs)/float64(ad.ElapsedNs)*100, "child-runq-%")
	b.ReportMetric(float64(rawChildWait)/float64(rawWall)*100, "raw-child-runq-%")
	b.ReportMetric(boolMetric(pinned), "pinned")
	if rs != nil {
		// What Redis spent per round trip, on the load side's CPUs: a
		// bound on the load side's throughput, and in a lone request's
		// latency.
		b.ReportMetric(float64(redisUsed.cpu.Microseconds())/float64(ad.RoundTrips), "redis-cpu-us/rt")
		b.Logf("redis per round trip: %s", redisUsed.perCall(ad.RoundTrips))
	}
	if floor != nil {
		// net/http alone with the same clients: what a round trip of any
		// HTTP front costs this process, and what is left for the rest.
		b.ReportMetric(floor.rate, "floor-round-trips/s")
		b.ReportMetric(floor.cpuUs, "floor-cpu-us/rt")
		b.ReportMetric(float64(adCPU.Microseconds())/float64(ad.RoundTrips)-floor.cpuUs, "above-floor-cpu-us/rt")
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("%s clients=%d: adapter %d round trips in %v, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; raw %d in %v, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; writer %s",
		backplane, n, ad.RoundTrips, time.Duration(ad.ElapsedNs).Round(time.Millisecond), ad.P50Ms, ad.P90Ms, ad.P99Ms, ad.MaxMs,
		len(rw.lat), rw.elapsed.Round(time.Millisecond), rw.quantileMs(0.5), rw.quantileMs(0.9), rw.quantileMs(0.99), rw.quantileMs(1),
		raw.settings)
	return adRate, float64(adCPU.Microseconds()) / float64(ad.RoundTrips)
}

// redisCPU is a Redis server's CPU time (INFO cpu) and its time and calls
// by command (INFO commandstats).
type redisCPU struct {
	cpu time.Duration
	sys time.Duration
	// reads and writes: the socket reads and writes Redis made (INFO
	// stats); each costs it more than a command does
	reads, writes float64
	usec          map[string]float64
	calls         map[string]float64
}

// readRedisCPU reads rs's CPU figures; nothing without a Redis case.
func readRedisCPU(b *testing.B, rs *redistest.Server) redisCPU {
	var r redisCPU
	if rs == nil {
		return r
	}
	rdb := rs.Client()
	defer rdb.Close()
	info, err := rdb.Info(context.Background(), "cpu", "commandstats", "stats").Result()
	if err != nil {
		b.Fatal("redis INFO: ", err)
	}
	r.usec, r.calls = map[string]float64{}, map[string]float64{}
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch {
		case k == "used_cpu_sys" || k == "used_cpu_user":
			f, _ := strconv.ParseFloat(v, 64)
			r.cpu += time.Duration(f * float64(time.Second))
			if k == "used_cpu_sys" {
				r.sys = time.Duration(f * float64(time.Second))
			}
		case k == "total_reads_processed":
			r.reads, _ = strconv.ParseFloat(v, 64)
		case k == "total_writes_processed":
			r.writes, _ = strconv.ParseFloat(v, 64)
		case strings.HasPrefix(k, "cmdstat_"):
			for field := range strings.SplitSeq(v, ",") {
				name, val, _ := strings.Cut(field, "=")
				f, _ := strconv.ParseFloat(val, 64)
				switch name {
				case "calls":
					r.calls[k[len("cmdstat_"):]] = f
				case "usec":
					r.usec[k[len("cmdstat_"):]] = f
				}
			}
		}
	}
	return r
}

// since is what Redis spent from before to r.
func (r redisCPU) since(before redisCPU) redisCPU {
	d := redisCPU{cpu: r.cpu - before.cpu, sys: r.sys - before.sys, reads: r.reads - before.reads, writes: r.writes - before.writes, usec: map[string]float64{}, calls: map[string]float64{}}
	for k, v := range r.usec {
		d.usec[k] = v - before.usec[k]
		d.calls[k] = r.calls[k] - before.calls[k]
	}
	return d
}

// perCall names the commands that took Redis time, with their calls and
// µs per round trip, the costliest first.
func (r redisCPU) perCall(roundTrips int) string {
	names := slices.Collect(maps.Keys(r.usec))
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(r.usec[b], r.usec[a]) })
	var out []string
	for _, k := range names {
		if r.usec[k] <= 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s %.2f calls %.1f µs", k, r.calls[k]/float64(roundTrips), r.usec[k]/float64(roundTrips)))
	}
	n := float64(roundTrips)
	return fmt.Sprintf("CPU %.0f µs (system %.0f µs); socket reads %.2f, writes %.2f; by command: %s", float64(r.cpu.Microseconds())/n,
		float64(r.sys.Microseconds())/n, r.reads/n, r.writes/n, strings.Join(out, "; "))
}

// floorResult is what the HTTP floor phase measured.
type floorResult struct {
	rate  float64 // round trips/s
	cpuUs float64 // this process's CPU µs per round trip
}

// httpFloor runs the adapter phase's clients against a bare net/http
// server in this process that reads each request's body and answers with
// the bytes of a real answer (one taken from the node at base): the cost
// of HTTP alone, which no work behind the handler can go below.
func httpFloor(b *testing.B, child *takedownClient, base, command string, n int) *floorResult {
	b.Helper()
	status, answer, err := postTakedown(context.Background(), http.DefaultClient, base, benchItem(0))
	if err != nil || status != http.StatusOK {
		b.Fatalf("takedown for the floor's answer: %d %s %v", status, answer, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
			w.Write(answer)
		}),
	}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String()
	child.run(b, takedownRun{URL: url, Command: command, Clients: n, Duration: 500 * time.Millisecond})
	cpu0 := processCPU()
	res := child.run(b, takedownRun{URL: url, Command: command, Clients: n, Duration: takedownSteady})
	cpu := processCPU() - cpu0
	return &floorResult{
		rate:  float64(res.RoundTrips) / time.Duration(res.ElapsedNs).Seconds(),
		cpuUs: float64(cpu.Microseconds()) / float64(res.RoundTrips),
	}
}

// The raw request/reply's topics, seeded in the child's broker.
const (
	rawCommandsTopic = "bench.raw.commands"
	rawRepliesTopic  = "bench.raw.replies"
)

// rawReqReply is the baseline of issue 14: a raw kafka-go request/reply
// in this process, with no item service. op produces the record the
// adapter would send (producers.Message of a takedown.requested with a
// fresh correlationid, keyed by the item) to rawCommandsTopic and waits
// for its reply. The responder costs nothing beyond Kafka: one reader per
// partition of rawCommandsTopic produces, for each command, a reply keyed
// by its correlation ID to rawRepliesTopic through an asynchronous writer
// (the reader never waits for the broker's ack); one reader per partition
// of rawRepliesTopic wakes the requester waiting for that key. Both
// writers are kafka.Writers with the settings of the raw figures
// (rawWriterSettings).
type rawReqReply struct {
	req, resp *kafka.Writer
	tr        *kafka.Transport
	readers   []*kafka.Reader
	waiters   sync.Map // correlation ID -> chan struct{}
	settings  string
	failed    atomic.Pointer[error] // the responder's first write error
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// rawWriterSettings sets w up for n concurrent requesters, as the issue's
// raw figures were measured: BatchSize 1 for one (a lone record goes out
// at once instead of waiting for the batch timer), kafka-go's default
// batch of 100 with BatchTimeout 1 ms under concurrency.
func rawWriterSettings(w *kafka.Writer, n int) string {
	if n == 1 {
		w.BatchSize = 1
		return "kafka.Writer BatchSize 1"
	}
	w.BatchTimeout = time.Millisecond
	return "kafka.Writer BatchTimeout 1ms"
}

func newRawReqReply(b *testing.B, broker string, n, partitions int) *rawReqReply {
	b.Helper()
	tr := &kafka.Transport{}
	writer := func(async bool) *kafka.Writer {
		return &kafka.Writer{
			Addr:         kafka.TCP(broker),
			Balancer:     &kafka.Hash{},
			WriteTimeout: producers.DefaultWriteTimeout,
			ReadTimeout:  producers.DefaultWriteTimeout,
			MaxAttempts:  producers.DefaultMaxAttempts,
			RequiredAcks: kafka.RequireAll,
			Async:        async,
			Transport:    tr,
		}
	}
	r := &rawReqReply{tr: tr, req: writer(false), resp: writer(true)}
	r.settings = rawWriterSettings(r.req, n)
	rawWriterSettings(r.resp, n)
	r.resp.Completion = func(_ []kafka.Message, err error) {
		if err != nil {
			r.failed.CompareAndSwap(nil, &err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	read := func(topic string, each func(kafka.Message)) {
		for p := range partitions {
			rd := kafka.NewReader(kafka.ReaderConfig{
				Brokers:   []string{broker},
				Topic:     topic,
				Partition: p,
				MaxWait:   consumers.DefaultMaxWait,
			})
			// From the start: nothing produced from here on can be
			// missed, whenever the reader's first fetch happens.
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
					each(m)
				}
			})
		}
	}
	// The responder.
	read(rawCommandsTopic, func(m kafka.Message) {
		for _, h := range m.Headers {
			if h.Key == "ce_correlationid" {
				r.resp.WriteMessages(ctx, kafka.Message{Topic: rawRepliesTopic, Key: h.Value, Value: []byte(`{"status":"confirmed"}`)})
				return
			}
		}
	})
	// The requester's reply reader.
	read(rawRepliesTopic, func(m kafka.Message) {
		if ch, ok := r.waiters.LoadAndDelete(string(m.Key)); ok {
			ch.(chan struct{}) <- struct{}{}
		}
	})
	return r
}

// op is one raw round trip: produce the command, wait for its reply.
func (r *rawReqReply) op(ctx context.Context, seq int) error {
	item := benchItem(seq)
	corr := uuid.NewString()
	ch := make(chan struct{}, 1)
	r.waiters.Store(corr, ch)
	data := map[string]string{"item_id": item, "reason": "bench", "requested_by": "bench-police", "authority_ref": "BENCH-1"}
	m, err := producers.Message(rawCommandsTopic, item, producers.NewEvent(takedown.Source, takedown.TypeRequested, item, corr, data))
	if err != nil {
		return err
	}
	if err := r.req.WriteMessages(ctx, m); err != nil {
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
		return fmt.Errorf("raw request %s (%s): no reply in 10s (responder: %v)", item, corr, r.err())
	case <-ctx.Done():
		r.waiters.Delete(corr)
		return ctx.Err()
	}
}

// err is the responder's first write error.
func (r *rawReqReply) err() error {
	if p := r.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (r *rawReqReply) close() {
	r.cancel()
	r.wg.Wait()
	for _, rd := range r.readers {
		rd.Close()
	}
	r.req.Close()
	r.resp.Close()
	r.tr.CloseIdleConnections()
}

// The takedown load client: the child side of BenchmarkTakedown, started
// like the load client (the test binary re-executed, a takedownClientSpec
// in takedownClientEnv, lines prefixed with loadLinePrefix). It pins
// itself to spec.CPUs, starts a Kafka-protocol broker (kfake, one broker,
// the topics of the spec) on a free loopback port and says
// "READY <takedownClientReady JSON>". Then, for each line on its stdin:
// "run <takedownRun JSON>" runs closed-loop POST /v1/takedowns clients and
// says "RESULT <takedownRunResult JSON>"; "cpu" says "CPU <ns> <ns>", its
// CPU time so far and how long its threads waited for a CPU. It stops when its stdin closes.
const takedownClientEnv = "SWITCHBOARD_TAKEDOWNCLIENT"

type takedownClientSpec struct {
	Partitions int
	Topics     []string
	CPUs       []int // pin to these; none: not pinned
}

type takedownClientReady struct {
	Broker string // host:port of the broker
	CPUs   []int  // the CPUs it pinned itself to; none: not pinned
	PinErr string `json:",omitempty"`
	Procs  int    // its GOMAXPROCS
}

// takedownRun is one phase of closed-loop clients.
type takedownRun struct {
	URL string
	// Command is the command called: takedowns when empty.
	Command  string
	Clients  int
	Duration time.Duration
	// Items, when set, takes item-1 … item-Items down once each and
	// stops (Duration still bounds it).
	Items int
}

type takedownRunResult struct {
	RoundTrips int
	ElapsedNs  int64 // first start to last answer
	P50Ms      float64
	P90Ms      float64
	P99Ms      float64
	MaxMs      float64
	CPUNs      int64  // the child's CPU time during the run
	RunQNs     int64  // how long its threads waited for a CPU during the run
	Err        string `json:",omitempty"`
}

// TestTakedownLoadClient is not a test of its own: it skips unless
// BenchmarkTakedown started it.
func TestTakedownLoadClient(t *testing.T) {
	raw := os.Getenv(takedownClientEnv)
	if raw == "" {
		t.Skip("broker and load client for BenchmarkTakedown: runs only when " + takedownClientEnv + " is set")
	}
	var spec takedownClientSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	var ready takedownClientReady
	if len(spec.CPUs) > 0 {
		if err := pinThreads(spec.CPUs); err != nil {
			ready.PinErr = err.Error()
		} else {
			ready.CPUs = spec.CPUs
		}
	}
	ready.Procs = runtime.GOMAXPROCS(0)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ready.Broker = ln.Addr().String()
	_, port, _ := net.SplitHostPort(ready.Broker)
	p, _ := strconv.Atoi(port)
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(p),
		kfake.ListenFn(func(string, string) (net.Listener, error) { return ln, nil }),
		kfake.SeedTopics(int32(spec.Partitions), spec.Topics...),
	)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	defer cluster.Close()
	line, _ := json.Marshal(ready)
	fmt.Printf("%sREADY %s\n", loadLinePrefix, line)

	tr := &http.Transport{
		DialContext:         (&net.Dialer{}).DialContext,
		MaxIdleConnsPerHost: 1024,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "cpu":
			fmt.Printf("%sCPU %d %d\n", loadLinePrefix, processCPU(), runQueueWait())
		case "run":
			var r takedownRun
			var res takedownRunResult
			if err := json.Unmarshal([]byte(arg), &r); err != nil {
				res.Err = err.Error()
			} else {
				res = runTakedownLoad(hc, r)
			}
			line, _ := json.Marshal(res)
			fmt.Printf("%sRESULT %s\n", loadLinePrefix, line)
		}
	}
}

// runTakedownLoad runs r's closed-loop clients: each takes the next
// catalogue item down, and every answer must be 200 confirmed.
func runTakedownLoad(hc *http.Client, r takedownRun) takedownRunResult {
	cpu0, wait0 := processCPU(), runQueueWait()
	res, err := loadLoop(r.Clients, r.Duration, func(ctx context.Context, seq int) error {
		if r.Items > 0 && seq >= r.Items {
			return errStop
		}
		return confirmCommand(ctx, hc, r.URL, r.Command, benchItem(seq))
	})
	out := takedownRunResult{
		RoundTrips: len(res.lat),
		ElapsedNs:  int64(res.elapsed),
		P50Ms:      res.quantileMs(0.50),
		P90Ms:      res.quantileMs(0.90),
		P99Ms:      res.quantileMs(0.99),
		MaxMs:      res.quantileMs(1),
		CPUNs:      int64(processCPU() - cpu0),
		RunQNs:     int64(runQueueWait() - wait0),
	}
	if err != nil {
		out.Err = err.Error()
	}
	return out
}

// takedownClient is the parent's handle on the takedown load client.
type takedownClient struct {
	lc    *loadClient
	ready takedownClientReady
}

// startTakedownClient starts the child and waits for its broker.
func startTakedownClient(b *testing.B, spec takedownClientSpec) *takedownClient {
	b.Helper()
	raw, _ := json.Marshal(spec)
	lc := spawnChild(b, []string{"-test.run=^TestTakedownLoadClient$", "-test.count=1", "-test.timeout=30m"}, takedownClientEnv+"="+string(raw))
	c := &takedownClient{lc: lc}
	if err := json.Unmarshal([]byte(lc.ready), &c.ready); err != nil {
		b.Fatalf("takedown load client: READY %q: %v", lc.ready, err)
	}
	return c
}

// run runs one phase in the child and returns its result; any failed
// round trip fails the benchmark.
func (c *takedownClient) run(b *testing.B, r takedownRun) takedownRunResult {
	b.Helper()
	line, _ := json.Marshal(r)
	if _, err := io.WriteString(c.lc.stdin, "run "+string(line)+"\n"); err != nil {
		b.Fatal(err)
	}
	rest, err := c.lc.next("RESULT", r.Duration+2*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	var res takedownRunResult
	if err := json.Unmarshal([]byte(rest), &res); err != nil {
		b.Fatal(err)
	}
	if res.Err != "" {
		b.Fatalf("takedown load client: %s", res.Err)
	}
	return res
}

// cpu is the child's CPU time so far, and how long its threads have
// waited for a CPU.
func (c *takedownClient) cpu(b *testing.B) (cpu, runq time.Duration) {
	b.Helper()
	if _, err := io.WriteString(c.lc.stdin, "cpu\n"); err != nil {
		b.Fatal(err)
	}
	rest, err := c.lc.next("CPU", time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	a, w, _ := strings.Cut(rest, " ")
	cpuNs, err1 := strconv.ParseInt(a, 10, 64)
	waitNs, err2 := strconv.ParseInt(w, 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	return time.Duration(cpuNs), time.Duration(waitNs)
}

// profileTakedown writes a CPU profile of one measured phase (adapter or
// raw) when SWITCHBOARD_BENCH_CPUPROFILE names a directory, and its block
// and mutex profiles (name-block.prof, name-mutex.prof) when
// SWITCHBOARD_BENCH_BLOCKPROFILE does: where goroutines wait, which shows
// a serialised stage that a CPU profile does not.
func profileTakedown(b *testing.B, name string) func() {
	stopCPU := cpuProfile(b, name)
	stopBlock := blockProfileTakedown(b, name)
	stopAllocs := allocProfileTakedown(b, name)
	return func() {
		stopCPU()
		stopBlock()
		stopAllocs()
	}
}

// allocProfileTakedown writes the heap profile at the start and at the end
// of the phase (name-allocs-before.prof, name-allocs.prof) when
// SWITCHBOARD_BENCH_ALLOCPROFILE names a directory: the phase's
// allocations alone are go tool pprof -sample_index=alloc_objects
// -diff_base name-allocs-before.prof name-allocs.prof. Run with
// -test.memprofilerate 4096 (or lower) for enough samples.
func allocProfileTakedown(b *testing.B, name string) func() {
	dir := os.Getenv("SWITCHBOARD_BENCH_ALLOCPROFILE")
	if dir == "" {
		return func() {}
	}
	write := func(file string) {
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			b.Error(err)
		}
		f.Close()
	}
	write(name + "-allocs-before.prof")
	return func() { write(name + "-allocs.prof") }
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

// BenchmarkHeldTakedowns measures what a held POST /v1/takedowns costs the
// server: heldTarget requests, sent by a child process (10k client sockets
// and 10k server sockets do not fit one process's 20000 descriptors), are
// held open with the item service off and takedown.timeout at 30 min. It
// reports the growth of HeapInuse+StackInuse and of goroutines per held
// request after two GCs, then has the child hang up and checks that every
// wait is freed (Held() back to 0). residual-bytes/takedown is what stays
// after that: the takedown's record in the outcome store and its corr:
// channel's history, kept for takedown.result_ttl and hub.history.ttl.
func BenchmarkHeldTakedowns(b *testing.B) {
	// The broker runs in the child of BenchmarkTakedown (not pinned here),
	// as a deployment's brokers run elsewhere: its copy of the 10k
	// commands is not the server's memory.
	defaults, err := config.Load("", nil)
	if err != nil {
		b.Fatal(err)
	}
	broker := startTakedownClient(b, takedownClientSpec{Partitions: defaults.Kafka.Embedded.Partitions, Topics: defaults.Topics()})
	a := startTakedownApp(b, func(c *config.Config) {
		c.Kafka.Brokers = []string{broker.ready.Broker}
		c.ItemSvc.Enabled = false
		c.Takedown.Timeout = 30 * time.Minute
		c.Takedown.MaxWait = 30 * time.Minute
		// 10k commands at once on a loaded host can take longer than the
		// default to be acknowledged; a 503 here is not what is measured.
		c.Takedown.PublishTimeout = 2 * time.Minute
		// The hold client's 10k connections can come in faster than a
		// busy node reads their first request: past 1,024 waiting at once
		// the HTTP guard refuses new ones (reset by peer), as it should
		// under a flood, but that is not what is measured.
		c.Limits.UnauthenticatedConnections = 20000
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
		sum, ferr := hold.finish() // what the child saw: answers, errors
		b.Fatalf("%v; hold client: %+v %v", err, sum, ferr)
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
	b.Logf("held %d: +%d goroutines, +%d B heap, +%d B stack; after release: %d goroutines over the start, %d B over the start; hub clients now %d, watches %d",
		heldTarget, after.goroutines-before.goroutines, after.heap-before.heap, after.stack-before.stack,
		released.goroutines-before.goroutines, released.inuse-before.inuse, a.hub.Clients(), a.hub.Watchers())
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

// The hold client: the child side of BenchmarkHeldTakedowns, started like
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
// BenchmarkHeldTakedowns started it.
func TestTakedownHoldClient(t *testing.T) {
	raw := os.Getenv(holdClientEnv)
	if raw == "" {
		t.Skip("hold client for BenchmarkHeldTakedowns: runs only when " + holdClientEnv + " is set")
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

// confirmCommandWait calls command once for the first catalogue item,
// retrying a 504 for up to a minute (the first call waits for the item
// service's reader of the command's topic to join its group).
func confirmCommandWait(base, command string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := confirmCommand(context.Background(), http.DefaultClient, base, command, benchItem(0))
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}
