package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sys/unix"
)

// The load client: a benchmark cannot hold both ends of 10k connections in
// one process (the file-descriptor limit is 20000), so it re-executes its
// own test binary with -test.run=^TestLoadClient$ and a loadSpec in
// loadClientEnv. The child opens the connections, says "LOADCLIENT READY",
// reads, and prints "LOADCLIENT DONE <loadSummary JSON>" when every
// connection has every event, or when its stdin closes. A child with Kafka
// set and no connections is the producer instead: it produces the events
// from the moment the parent writes "go" on its stdin, so the producer's
// work is not counted as the server's (a process of its own, since a
// producer among busy readers on one P falls behind its schedule). With
// CPUs set a child pins itself to those CPUs first.
const (
	loadClientEnv  = "SWITCHBOARD_LOADCLIENT"
	loadLinePrefix = "LOADCLIENT "
)

// loadSpec tells the child what to do.
type loadSpec struct {
	URL       string // the node's base URL, http://host:port
	Transport string // "ws" or "sse"
	Pack      bool   // WebSocket ?pack=1
	Conns     int
	Channel   string
	Token     string // sent as Authorization: Bearer
	// Events is how many events (data seq 0..Events-1) each connection
	// expects; 0 means idle: hold the connections until stdin closes.
	Events int
	// Kafka, when set, is the broker the child produces the Events to
	// (reportMsg, Rate per second) once the parent says "go"; it then
	// says DONE when it has produced them all (with Conns 0).
	Kafka string
	Rate  int
	// CPUs, when set, are the CPUs the child pins all its threads to,
	// with GOMAXPROCS set to their number.
	CPUs []int
}

// loadSummary is what the child reports.
type loadSummary struct {
	Conns       int
	Received    int64 // distinct expected events received, over all connections
	Duplicates  int64
	Missing     int64
	Disconnects int            // connections the server ended early
	CloseCodes  map[string]int `json:",omitempty"`
	Samples     int
	P50Ms       float64
	P90Ms       float64
	P99Ms       float64
	P999Ms      float64
	MaxMs       float64
	LastRecvNs  int64 // wall clock of the last delivery received
	// ReadCPUNs is the CPU time the child used from READY (from "go"
	// when it produces) to DONE.
	ReadCPUNs int64
	// ProduceStartNs is the wall clock of the first produce, ProduceNs how
	// long producing took, ProduceErr why it stopped early (Kafka set).
	ProduceStartNs int64
	ProduceNs      int64
	ProduceErr     string `json:",omitempty"`
	// CPUs are the CPUs the child pinned itself to (none: not pinned),
	// PinErr why pinning failed, Procs its GOMAXPROCS.
	CPUs   []int
	PinErr string `json:",omitempty"`
	Procs  int
}

// TestLoadClient is the child side of the end-to-end and idle benchmarks;
// it is not a test of its own and skips unless a benchmark started it.
func TestLoadClient(t *testing.T) {
	raw := os.Getenv(loadClientEnv)
	if raw == "" {
		t.Skip("load client for the benchmarks: runs only when " + loadClientEnv + " is set")
	}
	var spec loadSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	var pinned []int
	var pinErr error
	if len(spec.CPUs) > 0 {
		if pinErr = pinThreads(spec.CPUs); pinErr == nil {
			pinned = spec.CPUs
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdinClosed := make(chan struct{})
	started := make(chan struct{})
	go func() { // "go" starts producing; stdin closing is the parent's "stop"
		var once sync.Once
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "go" {
				once.Do(func() { close(started) })
			}
		}
		cancel()
		close(stdinClosed)
	}()
	// The parent closes stdin once it has the summary: wait for that, so
	// the stdin reader is not left behind.
	defer func() { <-stdinClosed }()

	conns := make([]loadConn, spec.Conns)
	tr := &http.Transport{
		DialContext:         (&net.Dialer{}).DialContext,
		MaxIdleConnsPerHost: -1,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	sem := make(chan struct{}, 64)
	errc := make(chan error, 1)
	// Each connection reads as soon as it is subscribed, so it answers the
	// server's pings however long the others take to open.
	var opened, done sync.WaitGroup
	var finished atomic.Int64
	allDone := make(chan struct{})
	for i := range conns {
		sem <- struct{}{}
		opened.Add(1)
		go func() {
			defer opened.Done()
			defer func() { <-sem }()
			if err := conns[i].open(ctx, hc, &spec); err != nil {
				select {
				case errc <- fmt.Errorf("connection %d: %w", i, err):
				default:
				}
				cancel()
				return
			}
			done.Add(1)
			go func() {
				defer done.Done()
				conns[i].read(ctx, &spec)
				if finished.Add(1) == int64(len(conns)) {
					close(allDone)
				}
			}()
		}()
	}
	opened.Wait()
	defer func() {
		cancel()
		for i := range conns {
			conns[i].close() // unblocks readers still waiting
		}
		done.Wait()
	}()
	select {
	case err := <-errc:
		fmt.Printf("%sERROR %v\n", loadLinePrefix, err)
		t.Fatal(err)
	default:
	}
	fmt.Printf("%sREADY %d\n", loadLinePrefix, spec.Conns)
	cpu0 := processCPU()

	var prod produceResult
	produced := make(chan struct{})
	if spec.Kafka != "" {
		select {
		case <-started:
		case <-ctx.Done():
		}
		cpu0 = processCPU()
		go func() {
			defer close(produced)
			prod = produceEvents(ctx, &spec)
			if prod.err != nil || spec.Conns == 0 {
				cancel()
			}
		}()
	} else {
		close(produced)
	}

	select {
	case <-allDone:
	case <-ctx.Done():
	}
	cancel()
	<-produced
	for i := range conns {
		conns[i].close()
	}
	done.Wait()

	sum := summarize(conns, &spec)
	sum.ReadCPUNs = int64(processCPU() - cpu0)
	sum.ProduceStartNs, sum.ProduceNs = prod.start, int64(prod.took)
	if prod.err != nil {
		sum.ProduceErr = prod.err.Error()
	}
	sum.CPUs, sum.Procs = pinned, runtime.GOMAXPROCS(0)
	if pinErr != nil {
		sum.PinErr = pinErr.Error()
	}
	b, _ := json.Marshal(sum)
	fmt.Printf("%sDONE %s\n", loadLinePrefix, b)
}

type produceResult struct {
	start int64 // wall clock of the first produce
	took  time.Duration
	err   error
}

// produceEvents sends spec.Events records (seq 0..Events-1) to spec.Kafka at
// spec.Rate per second, each stamped with its produce time. It uses a
// franz-go client, which keeps the schedule when the broker answers
// slowly (records produced meanwhile go together in the next request);
// kafka-go's Writer sends one batch at a time per partition and falls
// behind a fixed rate once a round trip takes longer than the interval.
func produceEvents(ctx context.Context, spec *loadSpec) produceResult {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(spec.Kafka),
		kgo.RequiredAcks(kgo.LeaderAck()),
		kgo.DisableIdempotentWrite(),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		return produceResult{err: err}
	}
	defer cl.Close()
	var failed atomic.Pointer[error]
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.CompareAndSwap(nil, &err)
		}
	}
	interval := time.Second / time.Duration(spec.Rate)
	start := time.Now()
	for i := range spec.Events {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if p := failed.Load(); p != nil {
			return produceResult{start.UnixNano(), time.Since(start), *p}
		}
		m := reportMsg(i, time.Now().UnixNano())
		rec := &kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		cl.Produce(ctx, rec, done)
	}
	took := time.Since(start)
	err = cl.Flush(ctx)
	if p := failed.Load(); p != nil {
		err = *p
	}
	return produceResult{start.UnixNano(), took, err}
}

// pinThreads pins every thread of this process to cpus and sets
// GOMAXPROCS to their number.
func pinThreads(cpus []int) error {
	if err := pinProcess("self", cpus); err != nil {
		return err
	}
	runtime.GOMAXPROCS(len(cpus))
	return nil
}

// pinProcess pins every thread of the process pid ("self", or a number)
// to cpus. Threads started later inherit the mask of the thread that
// starts them, so once every thread is pinned (a second pass catches any
// started meanwhile) the process stays pinned.
func pinProcess(pid string, cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	done := map[int]bool{}
	for {
		ents, err := os.ReadDir("/proc/" + pid + "/task")
		if err != nil {
			return err
		}
		n := 0
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
			done[tid] = true
			n++
		}
		if n == 0 {
			return nil
		}
	}
}

// loadCPUs returns the CPUs the load client should run on: the online
// CPUs this process may not use, when it is pinned to some of them
// (taskset); nil when it is not pinned or that cannot be told.
func loadCPUs() []int {
	var own unix.CPUSet
	if err := unix.SchedGetaffinity(0, &own); err != nil {
		return nil
	}
	raw, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil
	}
	var out []int
	for part := range strings.SplitSeq(strings.TrimSpace(string(raw)), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil {
			return nil
		}
		for c := a; c <= b; c++ {
			if !own.IsSet(c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// loadConn is one connection of the child and what it saw.
type loadConn struct {
	ws   *websocket.Conn
	body io.ReadCloser
	br   *bufio.Reader

	seen      []bool // by seq
	got       int
	dups      int64
	lat       []int32 // produce->receive, microseconds
	lastRecv  int64
	ended     bool // the server ended the connection before it had everything
	closeCode int
	closeOnce sync.Once
	msgBuf    []byte
}

func (c *loadConn) open(ctx context.Context, hc *http.Client, spec *loadSpec) error {
	if spec.Events > 0 {
		c.seen = make([]bool, spec.Events)
		c.lat = make([]int32, 0, spec.Events)
	}
	switch spec.Transport {
	case "ws":
		u := "ws" + strings.TrimPrefix(spec.URL, "http") + "/v1/ws"
		if spec.Pack {
			u += "?pack=1"
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		conn, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{
			HTTPClient:   hc,
			HTTPHeader:   http.Header{"Authorization": {"Bearer " + spec.Token}},
			Subprotocols: []string{"switchboard.v1"},
		})
		if err != nil {
			return err
		}
		c.ws = conn
		conn.SetReadLimit(1 << 20)
		if err := conn.Write(dctx, websocket.MessageText, []byte(`{"type":"subscribe","id":"1","channel":"`+spec.Channel+`"}`)); err != nil {
			return err
		}
		_, b, err := conn.Read(dctx)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte(`"type":"ack"`)) {
			return fmt.Errorf("want an ack, got %s", b)
		}
		return nil
	case "sse":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, spec.URL+"/v1/sse?channel="+spec.Channel, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+spec.Token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		c.body = resp.Body
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		c.br = bufio.NewReaderSize(resp.Body, 4096)
		// The stream starts with retry: and the id where it starts.
		for {
			line, err := c.br.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(line) == 1 {
				return nil
			}
		}
	}
	return fmt.Errorf("unknown transport %q", spec.Transport)
}

func (c *loadConn) close() {
	c.closeOnce.Do(func() {
		if c.ws != nil {
			c.ws.CloseNow()
		}
		if c.body != nil {
			c.body.Close()
		}
	})
}

// read reads until the connection has every expected event, the server
// ends it, or ctx ends.
func (c *loadConn) read(ctx context.Context, spec *loadSpec) {
	complete := func() bool { return spec.Events > 0 && c.got == spec.Events }
	switch {
	case c.ws != nil:
		for !complete() {
			_, r, err := c.ws.Reader(ctx)
			if err == nil {
				c.msgBuf, err = readAllInto(c.msgBuf[:0], r)
			}
			if err != nil {
				if ctx.Err() == nil {
					c.ended = true
					c.closeCode = int(websocket.CloseStatus(err))
				}
				return
			}
			c.scan(c.msgBuf, time.Now().UnixNano())
		}
	case c.br != nil:
		for !complete() {
			line, err := c.br.ReadSlice('\n')
			if err != nil {
				if errors.Is(err, bufio.ErrBufferFull) {
					// A line longer than the buffer: keep its head only.
					c.scan(line, time.Now().UnixNano())
					for errors.Is(err, bufio.ErrBufferFull) {
						_, err = c.br.ReadSlice('\n')
					}
					if err == nil {
						continue
					}
				}
				if ctx.Err() == nil {
					c.ended = true
				}
				return
			}
			if bytes.HasPrefix(line, []byte("data: ")) {
				c.scan(line, time.Now().UnixNano())
			}
		}
	}
}

func readAllInto(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, max(512, cap(buf)))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

var (
	seqKey  = []byte(`"seq":`)
	sentKey = []byte(`"sent_ns":`)
)

// scan records every event of msg (one frame, a packed batch, or an SSE
// data line) whose data is {"seq":N,"sent_ns":T}.
func (c *loadConn) scan(msg []byte, now int64) {
	for {
		i := bytes.Index(msg, seqKey)
		if i < 0 {
			return
		}
		msg = msg[i+len(seqKey):]
		seq, rest := leadingInt(msg)
		j := bytes.Index(rest, sentKey)
		if j < 0 {
			return
		}
		sent, rest2 := leadingInt(rest[j+len(sentKey):])
		msg = rest2
		if seq < 0 || seq >= int64(len(c.seen)) {
			continue // a warm-up event
		}
		if c.seen[seq] {
			c.dups++
			continue
		}
		c.seen[seq] = true
		c.got++
		c.lastRecv = now
		c.lat = append(c.lat, int32(min((now-sent)/1000, 1<<31-1)))
	}
}

func leadingInt(b []byte) (int64, []byte) {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	n, _ := strconv.ParseInt(string(b[:i]), 10, 64)
	return n, b[i:]
}

func summarize(conns []loadConn, spec *loadSpec) loadSummary {
	s := loadSummary{Conns: len(conns), CloseCodes: map[string]int{}}
	var lat []int32
	for i := range conns {
		c := &conns[i]
		s.Received += int64(c.got)
		s.Duplicates += c.dups
		s.Missing += int64(spec.Events - c.got)
		if c.ended {
			s.Disconnects++
			s.CloseCodes[strconv.Itoa(c.closeCode)]++
		}
		s.LastRecvNs = max(s.LastRecvNs, c.lastRecv)
		lat = append(lat, c.lat...)
	}
	slices.Sort(lat)
	s.Samples = len(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)]) / 1000
	}
	s.P50Ms, s.P90Ms, s.P99Ms, s.P999Ms = q(0.50), q(0.90), q(0.99), q(0.999)
	if len(lat) > 0 {
		s.MaxMs = float64(lat[len(lat)-1]) / 1000
	}
	return s
}

// loadClient is the parent's handle on a child load client.
type loadClient struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	ready  string       // the rest of the child's READY line
	output bytes.Buffer // everything else the child printed, for errors
	mu     sync.Mutex
	once   sync.Once
	err    error
}

// startLoadClient starts a child load client and waits until every one of
// its connections is subscribed.
func startLoadClient(b *testing.B, spec loadSpec) *loadClient {
	b.Helper()
	if spec.CPUs == nil {
		spec.CPUs = loadCPUs()
	}
	raw, _ := json.Marshal(spec)
	args := []string{"-test.run=^TestLoadClient$", "-test.count=1", "-test.timeout=10m"}
	if prof := os.Getenv(loadClientEnv + "_CPUPROFILE"); prof != "" {
		args = append(args, "-test.cpuprofile="+prof) // the child's own profile
	}
	return spawnChild(b, args, loadClientEnv+"="+string(raw))
}

// spawnChild re-executes the test binary with args and the extra env, and
// waits until the child says READY. Lines it prints with loadLinePrefix come
// out of next; everything else is kept for errors.
func spawnChild(b testing.TB, args []string, env string) *loadClient {
	b.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env)
	lc := &loadClient{cmd: cmd, lines: make(chan string, 16)}
	cmd.Stderr = &lockedWriter{mu: &lc.mu, w: &lc.output}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if lc.stdin, err = cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() {
		defer close(lc.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, loadLinePrefix); ok {
				lc.lines <- rest
				continue
			}
			lc.mu.Lock()
			lc.output.WriteString(line + "\n")
			lc.mu.Unlock()
		}
	}()
	b.Cleanup(func() { lc.stop() })
	if lc.ready, err = lc.next("READY", 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	return lc
}

// next waits for the child's line starting with word and returns its rest.
func (lc *loadClient) next(word string, timeout time.Duration) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-lc.lines:
			if !ok {
				lc.stop()
				return "", fmt.Errorf("load client ended before %s: %v\n%s", word, lc.err, lc.outputString())
			}
			if rest, ok := strings.CutPrefix(line, word); ok {
				return strings.TrimSpace(rest), nil
			}
			if rest, ok := strings.CutPrefix(line, "ERROR"); ok {
				return "", fmt.Errorf("load client:%s", rest)
			}
		case <-timer.C:
			return "", fmt.Errorf("load client: no %s within %v", word, timeout)
		}
	}
}

// begin tells a child started with Kafka set to start producing.
func (lc *loadClient) begin() error {
	_, err := io.WriteString(lc.stdin, "go\n")
	return err
}

// summary waits up to timeout for the child to have everything, then stops
// it, and returns its summary.
func (lc *loadClient) summary(timeout time.Duration) (loadSummary, error) {
	rest, err := lc.next("DONE", timeout)
	if err != nil {
		lc.stdin.Close() // stop: the child reports what it has
		if rest, err = lc.next("DONE", time.Minute); err != nil {
			return loadSummary{}, err
		}
	}
	var s loadSummary
	err = json.Unmarshal([]byte(rest), &s)
	return s, err
}

// stop closes the child's stdin and waits for it to exit.
func (lc *loadClient) stop() {
	lc.once.Do(func() {
		lc.stdin.Close()
		timer := time.AfterFunc(time.Minute, func() { lc.cmd.Process.Kill() })
		for range lc.lines {
		}
		lc.err = lc.cmd.Wait()
		timer.Stop()
	})
}

func (lc *loadClient) outputString() string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.output.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
