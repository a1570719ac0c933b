package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/hub"
)

// The test harness: the one way the tests of this package start a node,
// send an HTTP request, and read an SSE stream.

// nodeSpec says how startTestNode starts a node. The zero value is a node
// on free ports with the embedded broker, the test principals and a quiet
// log, shut down at cleanup within waitFor, failing the test if that
// fails.
type nodeSpec struct {
	// config adjusts the configuration; the result must pass validation,
	// as at a real start.
	config func(*config.Config)
	// log is the node's logger; nil discards.
	log *slog.Logger
	// opts are the start options, such as withRedisPrefix.
	opts []Option
	// stopWait bounds the Shutdown at cleanup; zero means waitFor.
	stopWait time.Duration
	// stopped, if set, is given Shutdown's error at cleanup instead of
	// failing the test with it.
	stopped func(error)
}

// startTestNode starts a whole node as spec says and shuts it down at
// cleanup.
func startTestNode(tb testing.TB, spec nodeSpec) *Node {
	tb.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Kafka.Embedded.Addr = "127.0.0.1:0"
	cfg.Auth.Principals = testPrincipals
	if spec.config != nil {
		spec.config(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	log := spec.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a, err := Start(tb.Context(), cfg, log, spec.opts...)
	if err != nil {
		tb.Fatal(err)
	}
	wait := spec.stopWait
	if wait == 0 {
		wait = waitFor
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		err := a.Shutdown(ctx)
		switch {
		case spec.stopped != nil:
			spec.stopped(err)
		case err != nil:
			tb.Error(err)
		}
	})
	return a
}

// runItemService runs the simulated item service of a's configuration
// (answering the restores command too when a declares it) against broker, publishing through a's producer, until the test ends.
func runItemService(t *testing.T, a *Node, broker string) {
	t.Helper()
	svc, err := itemServiceFor(a.cfg, restoreCommand(a.takedowns.Commands()), []string{broker}, a.producer, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// startTestApp is startTestNode with the configuration adjusted by mutate.
func startTestApp(t *testing.T, mutate func(*config.Config)) *Node {
	t.Helper()
	return startTestNode(t, nodeSpec{config: mutate})
}

// doorClients is how many hub clients the node has besides its own
// report-stats follower: the connections and held requests.
func (a *Node) doorClients() int { return a.hub.Clients() - a.stats.following() }

// base is the node's URL without the trailing slash.
func (a *Node) base() string { return strings.TrimSuffix(a.URL(), "/") }

// wsURL is a's WebSocket door with query (empty, or from "?" on).
func (a *Node) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(a.base(), "http") + "/v1/ws" + query
}

// dialWS opens a moderator's WebSocket to a, which must be accepted.
func dialWS(t *testing.T, a *Node) *websocket.Conn {
	t.Helper()
	return dialWSWith(t, t, a.wsURL(""), bearer(modToken))
}

// dialWSWith opens a WebSocket at url with hdr, speaking the hub's
// subprotocol, which must be accepted; it lives as long as life.
func dialWSWith(t, life *testing.T, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(life.Context(), url, &websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}, HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", url, err, resp)
	}
	life.Cleanup(func() { c.CloseNow() })
	return c
}

// headers is a request header: a bearer token unless tok is empty, then
// the name, value pairs of kv.
func headers(tok string, kv ...string) http.Header {
	h := http.Header{}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// jsonHeader is a JSON request's header, with tok as bearer unless empty,
// then the pairs of kv.
func jsonHeader(tok string, kv ...string) http.Header {
	return headers(tok, append([]string{"Content-Type", "application/json"}, kv...)...)
}

// bearer is a header with tok as bearer token.
func bearer(tok string) http.Header { return headers(tok) }

// call sends one request and reads the whole answer. hc nil means
// http.DefaultClient, whose transport checks every answer against
// docs/openapi.yaml (see TestMain). It takes no testing.T, so
// benchmarks' goroutines and drills that count failures use it too.
func call(ctx context.Context, hc *http.Client, method, url string, hdr http.Header, body string) (*http.Response, []byte, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// sseBlocks reads an SSE stream block by block (a block ends at an empty
// line) and gives each block's fields, by name, to each until it returns
// false or the stream ends. Comment lines are left out.
func sseBlocks(r io.Reader, each func(block map[string]string) bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	block := map[string]string{}
	for sc.Scan() {
		line := sc.Text()
		if line != "" {
			if k, v, ok := strings.Cut(line, ": "); ok && k != "" {
				block[k] = v
			}
			continue
		}
		if !each(block) {
			return
		}
		block = map[string]string{}
	}
}

// sseStream reads one SSE stream's events (not comments, not id-only blocks).
type sseStream struct {
	body   io.ReadCloser
	events chan map[string]string
}

// readSSE reads a stream's events in the background.
func readSSE(body io.ReadCloser) *sseStream {
	s := &sseStream{body: body, events: make(chan map[string]string, 1000)}
	go func() {
		defer close(s.events)
		sseBlocks(body, func(b map[string]string) bool {
			if _, ok := b["data"]; ok {
				s.events <- b
			}
			return true
		})
	}()
	return s
}

// openSSE opens a moderator's stream at url, which must be accepted.
func openSSE(t *testing.T, url string) *sseStream {
	t.Helper()
	return openSSEWith(t, t, nil, url, bearer(modToken))
}

// openSSEWith opens a stream at url with hdr through hc (nil: the default
// client), which must be accepted; it lives as long as life.
func openSSEWith(t, life *testing.T, hc *http.Client, url string, hdr http.Header) *sseStream {
	t.Helper()
	if hc == nil {
		hc = http.DefaultClient
	}
	r, err := http.NewRequestWithContext(life.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		r.Header[k] = v
	}
	resp, err := hc.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	life.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("SSE %s: status %d %q: %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return readSSE(resp.Body)
}

// next returns the stream's next event, failing the test if none comes.
func (s *sseStream) next(t *testing.T) map[string]string {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("SSE stream ended")
		}
		return ev
	case <-time.After(waitFor):
		t.Fatal("no SSE event in time")
	}
	return nil
}

// eventually waits, up to waitFor, until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, waitFor, what, cond)
}

// eventuallyWithin waits for cond; d is a deadline against hangs, not a
// bound on speed.
func eventuallyWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readyzIs waits, up to d, until a's /readyz answers want.
func readyzIs(t *testing.T, a *Node, want int, d time.Duration) {
	t.Helper()
	eventuallyWithin(t, d, fmt.Sprintf("%s/readyz %d", a.base(), want), func() bool {
		resp, _, err := call(t.Context(), nil, http.MethodGet, a.base()+"/readyz", nil, "")
		return err == nil && resp.StatusCode == want
	})
}

// waitReady waits until a is ready.
func waitReady(t *testing.T, a *Node) {
	t.Helper()
	readyzIs(t, a, http.StatusOK, waitFor)
}
