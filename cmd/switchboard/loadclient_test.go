package main

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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The load client: a benchmark cannot hold both ends of 10k connections in
// one process (the file-descriptor limit is 20000), so it re-executes its
// own test binary with -test.run=^TestLoadClient$ and a loadSpec in
// loadClientEnv. The child opens the connections, says "LOADCLIENT READY",
// reads, and prints "LOADCLIENT DONE <loadSummary JSON>" when every
// connection has every event, or when its stdin closes.
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
	ReadCPUNs   int64 // CPU time the child used from READY to DONE
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdinClosed := make(chan struct{})
	go func() { // stdin closing is the parent's "stop"
		io.Copy(io.Discard, os.Stdin)
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

	select {
	case <-allDone:
	case <-ctx.Done():
	}
	cancel()
	for i := range conns {
		conns[i].close()
	}
	done.Wait()

	sum := summarize(conns, &spec)
	sum.ReadCPUNs = int64(processCPU() - cpu0)
	b, _ := json.Marshal(sum)
	fmt.Printf("%sDONE %s\n", loadLinePrefix, b)
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
	output bytes.Buffer // everything else the child printed, for errors
	mu     sync.Mutex
	once   sync.Once
	err    error
}

// startLoadClient starts a child load client and waits until every one of
// its connections is subscribed.
func startLoadClient(b *testing.B, spec loadSpec) *loadClient {
	b.Helper()
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
	if _, err := lc.next("READY", 2*time.Minute); err != nil {
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
