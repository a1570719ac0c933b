package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/static"
)

// The JavaScript SDK's tests: static/sdk/switchboard.test.mjs runs in
// Node's own test runner against a whole node, through a TCP proxy this test
// cuts when the script asks, with events the script asks for produced to
// the embedded broker by a real kafka-go writer.

// sdkScript is the SDK's Node test file, from this package's directory.
var sdkScript = filepath.Join("..", "..", "..", "..", "static", "sdk", "switchboard.test.mjs")

// nodeJS finds Node.js >= 20 and the flags its WebSocket needs: a missing
// or older one fails the test in CI and skips it elsewhere.
func nodeJS(t *testing.T) (string, []string) {
	t.Helper()
	missing := func(why string) {
		if os.Getenv("SWITCHBOARD_CI") != "" {
			t.Fatal(why + ": Node.js >= 20 is required in CI: apt-get install nodejs")
		}
		t.Skip(why)
	}
	path, err := exec.LookPath("node")
	if err != nil {
		missing("node not installed")
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		missing("node --version: " + err.Error())
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	if err != nil || major < 20 {
		missing("node " + v + " is older than 20")
	}
	if major < 22 {
		// Node 20 and 21 have a global WebSocket only behind this flag.
		return path, []string{"--experimental-websocket"}
	}
	return path, nil
}

// sdkEvent is an event the script asks to be produced.
type sdkEvent struct {
	Topic   string         `json:"topic"`
	ID      string         `json:"id"`
	Type    string         `json:"type"`
	Subject string         `json:"subject"`
	Corr    string         `json:"corr"`
	Data    map[string]any `json:"data"`
}

// sdkControl is the HTTP server the script drives the test through.
type sdkControl struct {
	a  *Node
	px *cutProxy

	mu   sync.Mutex
	once []string // correlation IDs whose command must be on the topic once
}

func (c *sdkControl) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /produce", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Events      []sdkEvent `json:"events"`
			WaitChannel string     `json:"wait_channel"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Events) == 0 {
			http.Error(w, "bad produce request", http.StatusBadRequest)
			return
		}
		var msgs []kafka.Message
		for _, e := range req.Events {
			if e.Topic == "" {
				e.Topic = "items.reported"
			}
			if e.Type == "" {
				e.Type = "item.reported"
			}
			msgs = append(msgs, binaryMsg(e.Topic, e.ID, e.Type, e.Subject, e.Corr, e.Data))
		}
		if err := c.produce(r.Context(), msgs); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if req.WaitChannel != "" {
			if err := c.held(r.Context(), req.WaitChannel, req.Events[len(req.Events)-1].ID); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /cut", func(w http.ResponseWriter, _ *http.Request) { c.px.cut(); w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /pause", func(w http.ResponseWriter, _ *http.Request) { c.px.pause(); w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /resume", func(w http.ResponseWriter, _ *http.Request) { c.px.resume(); w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /published-once", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.once = append(c.once, r.URL.Query().Get("correlation_id"))
		c.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// produce writes msgs with a real kafka-go writer.
func (c *sdkControl) produce(ctx context.Context, msgs []kafka.Message) error {
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(c.a.kafkaAddr), Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, Transport: tr}
	defer w.Close()
	return w.WriteMessages(ctx, msgs...)
}

// held waits until channel's history holds the event id: a direct SSE
// stream from the oldest event shows it.
func (c *sdkControl) held(ctx context.Context, channel, id string) error {
	ctx, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.a.base()+"/v1/sse?from=oldest&channel="+channel, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+modToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("SSE %s: %d", channel, resp.StatusCode)
	}
	found := false
	sseBlocks(resp.Body, func(b map[string]string) bool {
		found = strings.Contains(b["data"], `"id":"`+id+`"`)
		return !found
	})
	if !found {
		return fmt.Errorf("%s never reached %s", id, channel)
	}
	return nil
}

// TestJavaScriptSDK runs the SDK's Node tests: subscribe, resume after
// dropped connections with every event once and in order, gap, token
// rotation and 1008, and declared commands (confirmed, not found, an
// idempotency key published once, a call across a reconnect).
func TestJavaScriptSDK(t *testing.T) {
	node, flags := nodeJS(t)
	a := startTestApp(t, func(c *config.Config) {
		c.Hub.History.Size = 20
		c.ItemSvc.Enabled = true
		c.ItemSvc.Latency = 300 * time.Millisecond
		c.Limits.TakedownBurst = 100
	})
	waitReady(t, a)
	px := newCutProxy(t, a.ln.Addr().String())
	ctl := &sdkControl{a: a, px: px}
	srv := httptest.NewServer(ctl.handler())
	t.Cleanup(srv.Close)

	// A node with declared commands (GET /v1/commands) answers the call
	// frame: then the SDK must not fall back to the v1 takedown frame.
	callFrame := "0"
	if resp, _, err := call(t.Context(), nil, http.MethodGet, a.base()+"/v1/commands", bearer(modToken), ""); err == nil && resp.StatusCode == 200 {
		callFrame = "1"
	}

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	args := append(flags, "--test", "--test-reporter=spec", sdkScript)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Env = append(os.Environ(),
		"SB_URL="+px.url(),
		"SB_DIRECT="+a.base(),
		"SB_CONTROL="+srv.URL,
		"SB_TOKEN="+modToken,
		"SB_PARTNER_TOKEN="+acmeToken,
		"SB_CALL_FRAME="+callFrame,
		"NO_COLOR=1",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if testing.Verbose() {
		t.Logf("node --test:\n%s", out)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		// The spec reporter's summary: a run that ran nothing is a failure.
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[1] == "pass" && f[2] == "0" {
			t.Fatalf("node ran no test:\n%s", out)
		}
	}
	ctl.mu.Lock()
	once := ctl.once
	ctl.mu.Unlock()
	if len(once) == 0 {
		t.Fatal("the script named no takedown to check")
	}
	for _, corr := range once {
		if n := countCommands(t, a, corr); n != 1 {
			t.Errorf("takedown %s: %d commands on the topic, want 1", corr, n)
		}
	}
}

// TestSDKServed: the SDK is served as JavaScript to anyone, from any
// origin, with an ETag that answers 304.
func TestSDKServed(t *testing.T) {
	a := startTestApp(t, nil)
	url := a.base() + "/v1/sdk/switchboard.js"
	resp, body, err := call(t.Context(), nil, http.MethodGet, url, headers("", "Origin", "https://partner.example"), "")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") || string(body) != string(static.SDK) {
		t.Fatalf("GET %s: %d %q, %d bytes", url, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Cache-Control") == "" {
		t.Fatalf("headers %v", resp.Header)
	}
	resp, body, err = call(t.Context(), nil, http.MethodGet, url, headers("", "If-None-Match", etag), "")
	if err != nil || resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Fatalf("revalidation: %v %v %d bytes", resp, err, len(body))
	}
}

// TestSDKInBrowser: the module loads in Chromium, connects with the token
// as access_token, and delivers an event produced to the broker.
func TestSDKInBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	a := startTestApp(t, nil)
	waitReady(t, a)
	ctx := newBrowser(t, chrome)
	pageDo(t, ctx, chromedp.Navigate(a.base()+"/healthz"))
	script := fmt.Sprintf(`(async () => {
		const sb = await import("/v1/sdk/switchboard.js");
		window.__got = [];
		window.__client = new sb.Client(location.origin, { token: %q });
		const sub = window.__client.subscribe("item:sdk-browser", { onEvent: (ev, f) => window.__got.push(ev.id + "@" + f.channel) });
		await sub.ready;
		return sb.VERSION + " " + window.__client.state;
	})()`, modToken)
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](script, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("loading the SDK: %v", err)
	}
	if !strings.HasSuffix(v, " open") {
		t.Fatalf("the SDK in the page: %q", v)
	}
	produce(t, a.kafkaAddr, pageReport("sdk-b-1", "sdk-browser", "user-1", "spam", time.Now()))
	waitPage(t, ctx, "the event in the page", `window.__got.length >= 1`)
	if got := pageEval[[]string](t, ctx, `window.__got`); len(got) != 1 || got[0] != "sdk-b-1@item:sdk-browser" {
		t.Fatalf("the page got %v", got)
	}
	pageEval[bool](t, ctx, `(window.__client.close(), true)`)
}
