package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
)

// The dashboard test drives the moderator page in Debian's Chromium, headless,
// through a TCP proxy the test can cut and pause, against a whole node with
// the embedded broker and the simulated item service.

// browserWait bounds one wait for the page; generous, since CI machines are
// small and nothing here asserts timing.
const browserWait = 45 * time.Second

// chromiumPath finds Chromium: a missing one fails the test in CI and skips
// it elsewhere.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("SWITCHBOARD_CI") != "" {
		t.Fatal("chromium is required in CI: apt-get install chromium")
	}
	t.Skip("chromium not installed")
	return ""
}

// newBrowser starts a headless Chromium that reaches nothing but this
// machine, and returns its first tab. Cleanup closes it and waits for it.
func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	}
	// Not t.Context(): the browser must outlive the test body until Cleanup
	// closes it gracefully.
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(func(string, ...any) {}))
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		_ = chromedp.Cancel(cctx)
		cancel()
		acancel() // waits for the browser process
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// newTab opens another tab of the same browser.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// cutProxy sits between the browser and the node: cut drops every open
// connection at once (the server dropping the SSE stream mid-flight), and
// pause holds new connections unanswered until resume.
type cutProxy struct {
	ln     net.Listener
	target string
	done   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	gate  chan struct{} // non-nil while paused; closed by resume
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *cutProxy) handle(c net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-p.done:
			c.Close()
			return
		}
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var copies sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer copies.Done()
		io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	copies.Add(2)
	go pipe(up, c)
	go pipe(c, up)
	copies.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// cut closes every connection the proxy carries.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *cutProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

func (p *cutProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

func (p *cutProxy) close() {
	p.ln.Close()
	close(p.done)
	p.cut()
	p.wg.Wait()
}

// pageEval runs a JavaScript expression in the page and decodes its value.
func pageEval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitPage polls a JavaScript condition until it is true; on timeout it
// fails with what the page shows.
func waitPage(t *testing.T, ctx context.Context, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(browserWait)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+cond+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText.slice(0, 3000)`))
			state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](pageState))
			t.Fatalf("waiting for %s (%s): %v\nstate: %s\npage:\n%s", what, cond, err, state, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pageState is what a failed wait reports of the takedown controls, beside
// the page's text: enough to tell a takedown never posted from one posted
// and never answered.
const pageState = `JSON.stringify({
	posts: window.__posts,
	confirm: document.getElementById("confirm")?.returnValue,
	submitDisabled: document.getElementById("td-submit")?.disabled,
	error: document.getElementById("td-error")?.textContent,
	progress: {...(document.getElementById("td-progress")?.dataset || {})},
	progressHidden: document.getElementById("td-progress")?.hidden,
})`

func pageDo(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(actx, actions...); err != nil {
		t.Fatal(err)
	}
}

const feedIDs = `[...document.querySelectorAll('#feed li[data-event-id]')].map(e => e.dataset.eventId)`

// assertFeedOnce checks the feed holds every id of want exactly once and
// nothing else.
func assertFeedOnce(t *testing.T, ctx context.Context, want []string) {
	t.Helper()
	got := pageEval[[]string](t, ctx, feedIDs)
	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
	}
	var dup, missing, extra []string
	for id, n := range seen {
		if n > 1 {
			dup = append(dup, fmt.Sprintf("%s×%d", id, n))
		}
		if !slices.Contains(want, id) {
			extra = append(extra, id)
		}
	}
	for _, id := range want {
		if seen[id] == 0 {
			missing = append(missing, id)
		}
	}
	if len(got) != len(want) || len(dup)+len(missing)+len(extra) > 0 {
		t.Fatalf("feed has %d rows, want %d: duplicated %v, missing %v, unexpected %v", len(got), len(want), dup, missing, extra)
	}
}

// pageReport is an item.reported record as the platform would send it.
func pageReport(id, item, reporter, reason string, at time.Time) kafka.Message {
	return binaryMsg("items.reported", id, "item.reported", item, "", map[string]any{
		"item_id": item, "reporter_id": reporter, "reason": reason, "reported_at": at.UTC().Format(time.RFC3339Nano),
	})
}

// sawOnSSE reads a direct SSE stream (not through the proxy) until it has
// seen every id: then the hub holds them.
func sawOnSSE(t *testing.T, s *sseStream, ids ...string) {
	t.Helper()
	left := map[string]bool{}
	for _, id := range ids {
		left[id] = true
	}
	for len(left) > 0 {
		ev := s.next(t)
		for id := range left {
			if strings.Contains(ev["data"], `"id":"`+id+`"`) {
				delete(left, id)
			}
		}
	}
}

// demoItemWith returns the first demo catalogue item posted to n containers.
func demoItemWith(t *testing.T, n int, not ...string) string {
	t.Helper()
	for i := 1; i <= 1000; i++ {
		item := fmt.Sprintf("item-%d", i)
		if len(containersOf(t, item)) == n && !slices.Contains(not, item) {
			return item
		}
	}
	t.Fatalf("no demo item with %d containers", n)
	return ""
}

func signIn(t *testing.T, ctx context.Context, p *cutProxy) {
	t.Helper()
	pageDo(t, ctx, chromedp.Navigate(p.url()+"/?access_token="+modToken))
	waitPage(t, ctx, "the page signed in and live",
		`document.body.dataset.signedIn === "mod" && document.getElementById("conn").dataset.state === "live"`)
	if href := pageEval[string](t, ctx, `location.href`); strings.Contains(href, "access_token") || strings.Contains(href, modToken) {
		t.Fatalf("the token is still in the address: %s", href)
	}
	if who := pageEval[string](t, ctx, `document.getElementById("who").textContent`); who != "mod" {
		t.Fatalf("signed in as %q, want mod", who)
	}
	// The session cookie is HttpOnly: the page's script cannot read it.
	if c := pageEval[string](t, ctx, `document.cookie`); strings.Contains(c, "switchboard_session") {
		t.Fatalf("the session cookie is readable by script: %q", c)
	}
}

// colorScheme emulates prefers-color-scheme.
func colorScheme(v string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: v}},
		})
		return err
	})
}

// saveScreenshot writes the page as PNG to $SWITCHBOARD_ARTIFACTS (or the
// temporary directory); with SWITCHBOARD_UPDATE_SCREENSHOT set it also
// refreshes docs/dashboard.png, the README's picture.
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("SWITCHBOARD_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	if name == "dashboard.png" && os.Getenv("SWITCHBOARD_UPDATE_SCREENSHOT") != "" {
		if err := os.WriteFile(filepath.Join("..", "..", "..", "..", "docs", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// confirmPageTakedown asks for the open item's takedown and confirms it.
func confirmPageTakedown(t *testing.T, ctx context.Context) {
	t.Helper()
	pageDo(t, ctx, chromedp.Click(chromedp.CSS("#td-submit")))
	waitPage(t, ctx, "the takedown confirmation", `document.getElementById("confirm").open`)
	// The button's own click (the handler a pointer click reaches): on a
	// loaded host a pointer click at coordinates taken a moment before can
	// land beside it, on the dialog's backdrop, which cancels.
	pageEval[bool](t, ctx, `(document.getElementById("confirm-ok").click(), true)`)
	waitPage(t, ctx, "the confirmation closed", `!document.getElementById("confirm").open`)
	waitPage(t, ctx, "the takedown posted or refused", `!document.getElementById("td-progress").hidden || document.getElementById("td-error").textContent !== ""`)
}

// TestDashboard drives the moderator page end to end: sign-in, the live
// feed, the most-reported list, the item panel, takedowns to their outcome,
// resume after dropped connections, and the gap notice.
func TestDashboard(t *testing.T) {
	chrome := chromiumPath(t)
	a := startTestApp(t, func(c *config.Config) {
		c.SSE.Retry = 300 * time.Millisecond
		c.ItemSvc.Enabled = true
		c.ItemSvc.Latency = 150 * time.Millisecond
		c.Limits.TakedownBurst = 100
		c.Kafka.Topics = append(c.Kafka.Topics, postsRoute)
	})
	waitReady(t, a)
	px := newCutProxy(t, a.ln.Addr().String())
	browser := newBrowser(t, chrome)
	ctx := browser
	pageDo(t, ctx, chromedp.EmulateViewport(1440, 900))
	direct := openSSE(t, a.base()+"/v1/sse?channel=reports")

	signIn(t, ctx, px)

	// The live feed and the most-reported list.
	hot := demoItemWith(t, 3)
	warm := demoItemWith(t, 2, hot)
	other := demoItemWith(t, 1)
	const unknown = "item-4711" // not in the catalogue: its takedown is rejected
	plan := []struct {
		item   string
		reason string
	}{
		{hot, "counterfeit"}, {warm, "scam"}, {hot, "counterfeit"}, {other, "spam"}, {hot, "prohibited_item"},
		{warm, "scam"}, {unknown, "offensive"}, {hot, "counterfeit"}, {warm, "spam"}, {hot, "counterfeit"},
		{other, "duplicate"}, {warm, "scam"}, {hot, "scam"}, {"item-512", "wrong_category"},
	}
	var want, hotIDs []string
	var msgs []kafka.Message
	start := time.Now().Add(-time.Duration(len(plan)) * 7 * time.Second)
	for i, p := range plan {
		id := fmt.Sprintf("rep-%02d", i+1)
		want = append(want, id)
		if p.item == hot {
			hotIDs = append(hotIDs, id)
		}
		msgs = append(msgs, pageReport(id, p.item, fmt.Sprintf("user-%d", 1000+i*37), p.reason, start.Add(time.Duration(i)*7*time.Second)))
	}
	produce(t, a.kafkaAddr, msgs...)
	waitPage(t, ctx, "every report in the feed", fmt.Sprintf(`%s.length >= %d`, feedIDs, len(want)))
	assertFeedOnce(t, ctx, want)
	sawOnSSE(t, direct, want...)
	top := pageEval[[]string](t, ctx, `[...document.querySelectorAll('#top li')].slice(0, 2).map(li => li.dataset.item + "=" + li.dataset.count)`)
	if wantTop := []string{hot + "=6", warm + "=4"}; !slices.Equal(top, wantTop) {
		t.Fatalf("most reported %v, want %v", top, wantTop)
	}
	row := pageEval[string](t, ctx, fmt.Sprintf(`document.querySelector('#feed li[data-event-id="rep-05"]').innerText`))
	for _, s := range []string{hot, "prohibited item", "user-1148"} {
		if !strings.Contains(row, s) {
			t.Fatalf("feed row %q lacks %q", row, s)
		}
	}

	// Keyboard: Enter on the most-reported item opens its panel with the
	// item's whole history from item:<id>.
	pageDo(t, ctx, chromedp.Focus(chromedp.CSS(`#top li[data-item="`+hot+`"] button`)), chromedp.KeyEvent(kb.Enter))
	waitPage(t, ctx, "the item panel with its history", fmt.Sprintf(
		`document.getElementById("item").open && document.querySelectorAll('#history li[data-type="item.reported"]').length >= %d`, len(hotIDs)))
	hist := pageEval[[]string](t, ctx, `[...document.querySelectorAll('#history li[data-type="item.reported"]')].map(e => e.dataset.eventId)`)
	if !slices.Equal(hist, hotIDs) {
		t.Fatalf("history of %s: %v, want %v", hot, hist, hotIDs)
	}

	// Take down: 202 at once, then the progress on corr:<id>, and the board
	// row goes to confirmed listing every container.
	pageDo(t, ctx,
		chromedp.SetValue(chromedp.CSS("#td-reason"), "counterfeit goods, confirmed by trust & safety"))
	confirmPageTakedown(t, ctx)
	waitPage(t, ctx, "the takedown confirmed in the panel", `document.getElementById("td-progress").dataset.status === "confirmed"`)
	corr := pageEval[string](t, ctx, `document.getElementById("td-progress").dataset.correlationId`)
	boardRow := `#board li[data-correlation-id="` + corr + `"]`
	waitPage(t, ctx, "the board row confirmed", fmt.Sprintf(`document.querySelector('%s')?.dataset.status === "confirmed"`, boardRow))
	got := pageEval[[]string](t, ctx, fmt.Sprintf(`[...document.querySelectorAll('%s [data-container-id]')].map(e => e.dataset.containerId)`, boardRow))
	wantC := containersOf(t, hot)
	slices.Sort(got)
	slices.Sort(wantC)
	if !slices.Equal(got, wantC) {
		t.Fatalf("board lists containers %v, want %v", got, wantC)
	}
	if item := pageEval[string](t, ctx, fmt.Sprintf(`document.querySelector('%s').dataset.item`, boardRow)); item != hot {
		t.Fatalf("board row item %q, want %q", item, hot)
	}
	steps := pageEval[int](t, ctx, `document.querySelectorAll('#td-steps li[data-step="removed"]').length`)
	if steps != len(wantC) {
		t.Fatalf("panel shows %d removals, want %d", steps, len(wantC))
	}
	// The server agrees.
	if resp, m := get(t, a, modToken, "/v1/takedowns/"+corr); resp.StatusCode != 200 || m["status"] != "confirmed" {
		t.Fatalf("GET takedown: %d %v", resp.StatusCode, m)
	}
	saveScreenshot(t, ctx, "dashboard-item.png")
	// Esc closes the panel.
	pageDo(t, ctx, chromedp.KeyEvent(kb.Escape))
	waitPage(t, ctx, "the panel closed", `!document.getElementById("item").open`)

	// An unknown item's takedown ends rejected.
	pageDo(t, ctx, chromedp.Click(chromedp.CSS(`#feed li[data-item="`+unknown+`"] button`)))
	waitPage(t, ctx, "the unknown item's panel", `document.getElementById("item").open && document.getElementById("item").dataset.item === "`+unknown+`"`)
	confirmPageTakedown(t, ctx)
	waitPage(t, ctx, "the rejection on the board", `document.querySelector('#board li[data-item="`+unknown+`"]')?.dataset.status === "rejected"`)
	pageDo(t, ctx, chromedp.KeyEvent(kb.Escape))
	waitPage(t, ctx, "the panel closed", `!document.getElementById("item").open`)

	// A takedown someone else (the police) asks for shows up live too.
	resp, m := post(t, t.Context(), a, policeToken, `{"item_id":"`+warm+`","reason":"court order","authority_ref":"NL-2026-114"}`, "Prefer", "respond-async")
	if resp.StatusCode != 202 {
		t.Fatalf("police takedown: %d %v", resp.StatusCode, m)
	}
	waitPage(t, ctx, "the police takedown confirmed on the board",
		fmt.Sprintf(`document.querySelector('#board li[data-correlation-id="%s"]')?.dataset.status === "confirmed"`, m["correlation_id"]))

	// The server drops every connection while new ones wait: events
	// produced meanwhile arrive once each after the resume.
	px.pause()
	px.cut()
	waitPage(t, ctx, "the badge reconnecting", `document.getElementById("conn").dataset.state === "reconnecting"`)
	msgs = msgs[:0]
	var missed []string
	for i := range 8 {
		id := fmt.Sprintf("rep-%02d", len(want)+1)
		want = append(want, id)
		missed = append(missed, id)
		item := []string{warm, other, "item-77", "item-640"}[i%4]
		msgs = append(msgs, pageReport(id, item, fmt.Sprintf("user-%d", 2000+i*53), []string{"spam", "scam", "duplicate", "counterfeit"}[i%4], time.Now()))
	}
	produce(t, a.kafkaAddr, msgs...)
	sawOnSSE(t, direct, missed...)
	px.resume()
	waitPage(t, ctx, "the missed reports after the resume", fmt.Sprintf(`%s.length >= %d && document.getElementById("conn").dataset.state === "live"`, feedIDs, len(want)))
	// A live report after the resume: a duplicate resent before it would
	// have reached the page once it shows.
	marker := fmt.Sprintf("rep-%02d", len(want)+1)
	want = append(want, marker)
	produce(t, a.kafkaAddr, pageReport(marker, other, "user-4242", "spam", time.Now()))
	waitPage(t, ctx, "a live report after the resume", `document.querySelector('#feed li[data-event-id="`+marker+`"]')`)
	assertFeedOnce(t, ctx, want)

	// Cut mid-stream, three times, while reports flow.
	cutDone := make(chan struct{})
	go func() {
		defer close(cutDone)
		for range 3 {
			time.Sleep(120 * time.Millisecond)
			px.cut()
		}
	}()
	for b := range 6 {
		msgs = msgs[:0]
		var batch []string
		for i := range 5 {
			id := fmt.Sprintf("rep-%02d", len(want)+1)
			want = append(want, id)
			batch = append(batch, id)
			n := b*5 + i
			item := fmt.Sprintf("item-%d", 100+n%9*31)
			msgs = append(msgs, pageReport(id, item, fmt.Sprintf("user-%d", 3000+n*17), []string{"spam", "duplicate", "wrong_category", "scam", "offensive"}[n%5], time.Now()))
		}
		produce(t, a.kafkaAddr, msgs...)
		sawOnSSE(t, direct, batch...)
		time.Sleep(60 * time.Millisecond)
	}
	<-cutDone
	// One more report after the last cut: anything resent before it (a
	// duplicate) has reached the page once it shows.
	last := fmt.Sprintf("rep-%02d", len(want)+1)
	want = append(want, last)
	produce(t, a.kafkaAddr, pageReport(last, hot, "user-9001", "counterfeit", time.Now()))
	waitPage(t, ctx, "every report after the cuts", fmt.Sprintf(`document.querySelector('#feed li[data-event-id="%s"]') && document.getElementById("conn").dataset.state === "live"`, last))
	time.Sleep(300 * time.Millisecond) // let one more frame draw
	assertFeedOnce(t, ctx, want)

	// A group followed, for the picture.
	pageDo(t, ctx, chromedp.SetValue(chromedp.CSS("#group-id"), "group-11"), chromedp.Click(chromedp.CSS("#group-follow")))
	waitPage(t, ctx, "the group followed", `document.getElementById("group-posts").dataset.state === "live"`)
	publishPost(t, a, "post-a", "group-11", "item-640", "user-3021", "Mountain bike, 21 gears")
	publishPost(t, a, "post-b", "group-11", "item-77", "user-1187", "Designer handbag, new with tags")
	publishPost(t, a, "post-c", "group-11", "item-131", "user-2210", "Concert tickets, two seats")
	waitPage(t, ctx, "the group's posts", `document.querySelectorAll("#group-posts li").length === 3 && document.getElementById("stats").dataset.total`)
	pageEval[bool](t, ctx, `(window.scrollTo(0, 0), document.activeElement?.blur(), true)`)
	saveScreenshot(t, ctx, "dashboard.png")
	pageDo(t, ctx, colorScheme("dark"))
	saveScreenshot(t, ctx, "dashboard-dark.png")
	pageDo(t, ctx, colorScheme("light"))

	// The same page at a phone's width: no horizontal scrolling.
	pageDo(t, ctx, chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2)))
	if w := pageEval[int](t, ctx, `document.documentElement.scrollWidth`); w > 375 {
		wide := pageEval[[]string](t, ctx, `[...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > 376 && e.getClientRects().length).slice(0, 8).map(e => e.tagName + "#" + e.id + "." + e.className + " " + Math.round(e.getBoundingClientRect().right))`)
		t.Fatalf("the page is %d px wide at a 375 px viewport: %v", w, wide)
	}
	pageEval[bool](t, ctx, `(window.scrollTo(0, 0), true)`)
	saveScreenshot(t, ctx, "dashboard-phone.png")
	pageDo(t, ctx, chromedp.EmulateViewport(1440, 900))

	// Sign out: back to the sign-in form, and the session is gone.
	pageDo(t, ctx, chromedp.Click(chromedp.CSS("#signout")))
	waitPage(t, ctx, "the sign-in form", `!document.getElementById("signin-view").hidden && document.getElementById("app").hidden`)
	st, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch("/v1/session").then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || st != http.StatusUnauthorized {
		t.Fatalf("after sign-out GET /v1/session: %d %v, want 401", st, err)
	}

	t.Run("gap", func(t *testing.T) {
		testDashboardGap(t, browser)
	})
	t.Run("signed out in another tab", func(t *testing.T) {
		testDashboardSignedOutElsewhere(t, browser)
	})
}

// testDashboardSignedOutElsewhere: two tabs share one session; signing out
// in one ends the other's live stream (the node ends the session's open
// connections), and that tab shows the sign-in form too.
func testDashboardSignedOutElsewhere(t *testing.T, browser context.Context) {
	a := startTestApp(t, nil)
	waitReady(t, a)
	px := newCutProxy(t, a.ln.Addr().String())
	one := newTab(t, browser)
	signIn(t, one, px)
	two := newTab(t, browser)
	// The second tab's count reads would also find the session gone (401,
	// every 15 s): blocked, only its stream can tell it.
	pageDo(t, two, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetBlockedURLs, network.SetBlockedURLsParams{
			URLPatterns: []*network.BlockPattern{{URLPattern: px.url() + "/v1/stats/*", Block: true}},
		})
		return err
	}))
	pageDo(t, two, chromedp.Navigate(px.url()+"/"))
	waitPage(t, two, "the second tab signed in by the cookie and live",
		`document.body.dataset.signedIn === "mod" && document.getElementById("conn").dataset.state === "live"`)
	pageDo(t, one, chromedp.Click(chromedp.CSS("#signout")))
	waitPage(t, two, "the second tab back at the sign-in form",
		`!document.getElementById("signin-view").hidden && document.getElementById("app").hidden`)
}

// testDashboardGap: a node that keeps three events per channel cannot cover
// a longer absence; the page says so and goes on live, with no duplicate.
func testDashboardGap(t *testing.T, browser context.Context) {
	a := startTestApp(t, func(c *config.Config) {
		c.SSE.Retry = 300 * time.Millisecond
		c.Hub.History.Size = 3
		c.ItemSvc.Enabled = false                     // takedowns here get no answer but the test's
		c.Takedown.OutcomeSources = []string{"/test"} // the test's answers
	})
	waitReady(t, a)
	px := newCutProxy(t, a.ln.Addr().String())
	ctx := newTab(t, browser)
	direct := openSSE(t, a.base()+"/v1/sse?channel=reports")
	signIn(t, ctx, px)

	var want []string
	report := func(n int) kafka.Message {
		id := fmt.Sprintf("gap-%02d", n)
		want = append(want, id)
		return pageReport(id, fmt.Sprintf("item-%d", n), "user-1", "spam", time.Now())
	}
	produce(t, a.kafkaAddr, report(1), report(2))
	sawOnSSE(t, direct, "gap-01", "gap-02")
	waitPage(t, ctx, "the first reports", feedIDs+`.length >= 2`)

	px.pause()
	px.cut()
	waitPage(t, ctx, "the badge reconnecting", `document.getElementById("conn").dataset.state === "reconnecting"`)
	var msgs []kafka.Message
	for n := 3; n <= 8; n++ { // six reports: more than history holds
		msgs = append(msgs, report(n))
	}
	produce(t, a.kafkaAddr, msgs...)
	sawOnSSE(t, direct, "gap-08")
	px.resume()
	waitPage(t, ctx, "the gap shown", `document.getElementById("conn").dataset.state === "gap" && !document.getElementById("gap-notice").hidden`)
	if ch := pageEval[string](t, ctx, `document.getElementById("gap-notice").dataset.channels`); ch != "reports" {
		t.Fatalf("gap notice names %q, want reports", ch)
	}
	// Live again: a new report arrives, and no row is there twice.
	produce(t, a.kafkaAddr, report(9))
	waitPage(t, ctx, "a live report after the gap", `document.querySelector('#feed li[data-event-id="gap-09"]')`)
	ids := pageEval[[]string](t, ctx, feedIDs)
	if len(ids) != len(slices.Compact(slices.Sorted(slices.Values(ids)))) {
		t.Fatalf("duplicate rows after the gap: %v", ids)
	}
	for _, id := range []string{"gap-01", "gap-02", "gap-09"} {
		if !slices.Contains(ids, id) {
			t.Fatalf("feed lacks %s: %v", id, ids)
		}
	}
	// Dismissing the notice brings the badge back to live.
	pageDo(t, ctx, chromedp.Click(chromedp.CSS("#gap-dismiss")))
	waitPage(t, ctx, "the badge live", `document.getElementById("conn").dataset.state === "live" && document.getElementById("gap-notice").hidden`)

	// With no item service, a takedown shows "timed out" after 15 s, and
	// still turns confirmed when the outcome comes later.
	pageDo(t, ctx, chromedp.Click(chromedp.CSS(`#feed li[data-event-id="gap-09"] button`)))
	waitPage(t, ctx, "the item panel", `document.getElementById("item").open`)
	confirmPageTakedown(t, ctx)
	waitPage(t, ctx, "the takedown timed out", `document.querySelector('#board li[data-item="item-9"]')?.dataset.status === "timed-out" &&
		document.getElementById("td-progress").dataset.status === "timed-out"`)
	corr := pageEval[string](t, ctx, `document.querySelector('#board li[data-item="item-9"]').dataset.correlationId`)
	// Forged outcomes first (keyed by item-9, so they come before the real
	// ones): from the reports topic with the trusted source, from a foreign
	// source on the outcome topic, and about another item. None may show.
	forged := func(topic, id, src, item string) kafka.Message {
		return withSource(binaryMsg(topic, id, "takedown.confirmed", item, corr,
			map[string]any{"item_id": item, "removed_from": []string{"nowhere"}, "confirmed_at": "2000-01-01T00:00:00Z"}), src)
	}
	produce(t, a.kafkaAddr,
		forged("items.reported", "forged-1", "/test", "item-9"),
		forged("takedown.events", "forged-2", "/forger", "item-9"),
		withKey(forged("takedown.events", "forged-3", "/test", "item-10"), "item-9"))
	waitUntil(t, "three untrusted outcomes counted", func() bool {
		n := a.recorder.Untrusted()
		return n["topic"] == 1 && n["source"] == 1 && n["item"] == 1
	})
	if resp, st := get(t, a, modToken, "/v1/takedowns/"+corr); resp.StatusCode != 200 || st["status"] != "pending" {
		t.Fatalf("after the forgeries the takedown is %d %v, want pending", resp.StatusCode, st)
	}
	produce(t, a.kafkaAddr,
		binaryMsg("takedown.events", "late-1", "item.removed", "item-9", corr, map[string]any{"item_id": "item-9", "container_id": "group-3", "container_kind": "group"}),
		binaryMsg("takedown.events", "late-2", "takedown.confirmed", "item-9", corr, map[string]any{"item_id": "item-9", "removed_from": []string{"group-3"}, "confirmed_at": time.Now().UTC().Format(time.RFC3339)}))
	waitPage(t, ctx, "the late confirmation", `document.querySelector('#board li[data-item="item-9"]').dataset.status === "confirmed" &&
		document.getElementById("td-progress").dataset.status === "confirmed"`)
	board := pageEval[[]string](t, ctx, `[...document.querySelectorAll('#board li[data-item="item-9"] [data-container-id]')].map(e => e.dataset.containerId)`)
	panel := pageEval[string](t, ctx, `document.getElementById("td-steps").innerText`)
	if !slices.Equal(board, []string{"group-3"}) || strings.Contains(panel, "nowhere") || pageEval[bool](t, ctx, `!!document.querySelector('#board li[data-item="item-10"]')`) {
		t.Fatalf("a forged outcome reached the page: board %v, panel %q", board, panel)
	}

	// Malformed outcome data (removed_from a string, an object; a numeric
	// container) is drawn without an error: the item's history shows each
	// event, and the page goes on.
	pageEval[bool](t, ctx, `(window.__errors = [], window.addEventListener("error", e => window.__errors.push(String(e.message))), true)`)
	produce(t, a.kafkaAddr,
		binaryMsg("takedown.events", "odd-1", "takedown.confirmed", "item-9", corr, map[string]any{"item_id": "item-9", "removed_from": "group-3"}),
		binaryMsg("takedown.events", "odd-2", "takedown.confirmed", "item-9", corr, map[string]any{"item_id": "item-9", "removed_from": map[string]any{"x": 1}}),
		binaryMsg("takedown.events", "odd-3", "item.removed", "item-9", corr, map[string]any{"item_id": "item-9", "container_id": 7}),
		report(10))
	waitPage(t, ctx, "the odd events in the item's history and a report after them",
		`["odd-1","odd-2","odd-3"].every(id => document.querySelector('#history li[data-event-id="' + id + '"]')) && document.querySelector('#feed li[data-event-id="gap-10"]')`)
	if errs := pageEval[[]string](t, ctx, `window.__errors`); len(errs) != 0 {
		t.Fatalf("the page threw on malformed outcome data: %v", errs)
	}
}

// withSource sets a binary-mode record's ce_source.
func withSource(m kafka.Message, src string) kafka.Message {
	for i, h := range m.Headers {
		if h.Key == "ce_source" {
			m.Headers[i].Value = []byte(src)
		}
	}
	return m
}

func withKey(m kafka.Message, key string) kafka.Message {
	m.Key = []byte(key)
	return m
}
