package node

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
)

// publishPost produces an item.posted event, as the platform's posting
// service would, to items.posted, which the node (with postsRoute) routes
// to group:<group_id> and feed:<author_id>.
func publishPost(t *testing.T, a *Node, id, group, item, author, title string) {
	t.Helper()
	produce(t, a.kafkaAddr, binaryMsg("items.posted", id, "item.posted", item, "", map[string]any{
		"item_id": item, "group_id": group, "author_id": author, "title": title,
		"posted_at": time.Now().UTC().Format(time.RFC3339Nano),
	}))
}

// TestDashboardTools drives the page's tools: the polite summary instead
// of a live feed, following a group, the reason filter, the chart from the
// server's counts (which a reload keeps, though the feed's history holds
// fewer), opening an item by ID, and the confirmation before a takedown.
func TestDashboardTools(t *testing.T) {
	chrome := chromiumPath(t)
	a := startTestApp(t, func(c *config.Config) {
		c.SSE.Retry = 300 * time.Millisecond
		c.Hub.History.Size = 5 // the feed gets back less than the counts hold
		c.ItemSvc.Enabled = true
		c.ItemSvc.Latency = 50 * time.Millisecond
		c.Kafka.Topics = append(c.Kafka.Topics, postsRoute)
	})
	waitReady(t, a)
	px := newCutProxy(t, a.ln.Addr().String())
	ctx := newBrowser(t, chrome)
	pageDo(t, ctx, chromedp.EmulateViewport(1440, 900))
	direct := openSSE(t, a.base()+"/v1/sse?channel=reports")
	signIn(t, ctx, px)

	// The feed is no live region; a polite status region sums up instead.
	if v := pageEval[string](t, ctx, `String(document.getElementById("feed").getAttribute("aria-live"))`); v != "null" {
		t.Fatalf("the feed has aria-live=%q", v)
	}
	if pageEval[int](t, ctx, `document.querySelectorAll('#feed [aria-live], .panel-feed [aria-live="assertive"]').length`) != 0 {
		t.Fatal("something in the feed is a live region")
	}
	region := pageEval[string](t, ctx, `(e => e.getAttribute("role") + " " + e.getAttribute("aria-live") + " " + e.getAttribute("aria-atomic"))(document.getElementById("feed-summary"))`)
	if region != "status polite true" {
		t.Fatalf("summary region: role, aria-live, aria-atomic = %q", region)
	}
	// Every summary said, in order.
	pageEval[bool](t, ctx, `(window.__said = [], new MutationObserver(() => {
		const s = document.getElementById("feed-summary").textContent; if (s) window.__said.push(s);
	}).observe(document.getElementById("feed-summary"), {childList: true, characterData: true, subtree: true}), true)`)

	// Follow a group: its posts, and only its, are listed.
	pageDo(t, ctx, chromedp.SetValue(chromedp.CSS("#group-id"), "bad id!"), chromedp.Click(chromedp.CSS("#group-follow")))
	waitPage(t, ctx, "the bad group ID refused", `document.getElementById("group-error").textContent.includes("group ID") && !document.getElementById("group-posts").dataset.group`)
	pageDo(t, ctx, chromedp.SetValue(chromedp.CSS("#group-id"), "group-7"), chromedp.Click(chromedp.CSS("#group-follow")))
	waitPage(t, ctx, "the group followed", `document.getElementById("group-posts").dataset.state === "live"`)
	publishPost(t, a, "post-1", "group-7", "item-501", "user-11", "Vintage bike, barely used")
	publishPost(t, a, "post-2", "group-8", "item-502", "user-12", "Not in this group")
	publishPost(t, a, "post-3", "group-7", "item-503", "user-13", "Sofa, free to collect")
	const posts = `[...document.querySelectorAll('#group-posts li')].map(li => li.dataset.eventId)`
	waitPage(t, ctx, "the group's posts", posts+`.length >= 2`)
	if got := pageEval[[]string](t, ctx, posts); !slices.Equal(got, []string{"post-3", "post-1"}) {
		t.Fatalf("group posts %v, want [post-3 post-1]", got)
	}
	if txt := pageEval[string](t, ctx, `document.getElementById("group-posts").innerText`); !strings.Contains(txt, "Sofa, free to collect") || !strings.Contains(txt, "user-11") {
		t.Fatalf("group posts read %q", txt)
	}

	// Reports: 6 spam, 4 scam, 2 counterfeit.
	reasons := []string{"spam", "scam", "spam", "counterfeit", "spam", "scam", "spam", "scam", "spam", "counterfeit", "spam", "scam"}
	var msgs []kafka.Message
	var ids []string
	now := time.Now()
	for i, r := range reasons {
		id := fmt.Sprintf("tool-%02d", i+1)
		ids = append(ids, id)
		msgs = append(msgs, pageReport(id, fmt.Sprintf("item-%d", 300+i), fmt.Sprintf("user-%d", i), r, now))
	}
	produce(t, a.kafkaAddr, msgs...)
	sawOnSSE(t, direct, ids...)
	waitPage(t, ctx, "every report in the feed", fmt.Sprintf(`%s.length === %d`, feedIDs, len(ids)))

	// The summary is said calmly, in a few messages, and adds up.
	waitPage(t, ctx, "the summary of all 12 reports",
		`window.__said.reduce((n, s) => n + parseInt(s, 10), 0) === 12 && window.__said.every(s => /^\d+ new reports?/.test(s))`)
	if said := pageEval[[]string](t, ctx, `window.__said`); len(said) > 3 {
		t.Fatalf("the summary spoke %d times for one burst: %v", len(said), said)
	}

	// The reason filter hides and shows rows.
	visible := `[...document.querySelectorAll('#feed li')].filter(li => !li.hidden && li.offsetParent !== null).map(li => li.dataset.reason)`
	opts := pageEval[[]string](t, ctx, `[...document.getElementById("reason-filter").options].map(o => o.value)`)
	if !slices.Equal(opts, []string{"", "counterfeit", "scam", "spam"}) {
		t.Fatalf("filter offers %q", opts)
	}
	pageEval[bool](t, ctx, `(s => (s.value = "scam", s.dispatchEvent(new Event("change")), true))(document.getElementById("reason-filter"))`)
	if got := pageEval[[]string](t, ctx, visible); !slices.Equal(got, []string{"scam", "scam", "scam", "scam"}) {
		t.Fatalf("with the scam filter the feed shows %v", got)
	}
	if meta := pageEval[string](t, ctx, `document.getElementById("feed-meta").textContent`); !strings.Contains(meta, "4 scam") {
		t.Fatalf("feed meta %q", meta)
	}
	// A new report of another reason arrives hidden.
	produce(t, a.kafkaAddr, pageReport("tool-13", "item-313", "user-13", "spam", time.Now()))
	waitPage(t, ctx, "the new report, hidden", `document.querySelector('#feed li[data-event-id="tool-13"]')?.hidden === true`)
	pageEval[bool](t, ctx, `(s => (s.value = "", s.dispatchEvent(new Event("change")), true))(document.getElementById("reason-filter"))`)
	if got := pageEval[[]string](t, ctx, visible); len(got) != 13 {
		t.Fatalf("with no filter the feed shows %d rows, want 13", len(got))
	}

	// The chart and the reasons draw the server's counts.
	checkChart := func(what string) {
		t.Helper()
		waitPage(t, ctx, what, `document.getElementById("stats").dataset.total === "13" &&
			[...document.querySelectorAll('#chart rect[data-count]')].reduce((n, r) => n + +r.dataset.count, 0) === 13`)
		if n := pageEval[int](t, ctx, `document.querySelectorAll('#chart rect[data-count]').length`); n != statsMinutes {
			t.Fatalf("%s: the chart has %d bars, want %d", what, n, statsMinutes)
		}
		got := pageEval[[]string](t, ctx, `[...document.querySelectorAll('#reasons li[data-reason]')].map(li => li.dataset.reason + "=" + li.dataset.count)`)
		if want := []string{"spam=7", "scam=4", "counterfeit=2"}; !slices.Equal(got, want) {
			t.Fatalf("%s: reasons %v, want %v", what, got, want)
		}
		if l := pageEval[string](t, ctx, `document.getElementById("chart-label").textContent`); !strings.Contains(l, "13 in the last hour") {
			t.Fatalf("%s: chart label %q", what, l)
		}
	}
	checkChart("the chart of 13 reports")
	resp, m := get(t, a, modToken, "/v1/stats/reports")
	if resp.StatusCode != http.StatusOK || m["total"] != 13.0 || m["last_hour"] != 13.0 {
		t.Fatalf("server counts: %d %v", resp.StatusCode, m)
	}
	saveScreenshot(t, ctx, "dashboard-tools.png")

	// A reload: history gives the feed back only 5 reports, the chart
	// still counts 13, and the group followed is followed again.
	pageDo(t, ctx, chromedp.Reload())
	waitPage(t, ctx, "signed in again", `document.body.dataset.signedIn === "mod" && document.getElementById("conn").dataset.state === "live"`)
	checkChart("the chart after the reload")
	waitPage(t, ctx, "the feed from history", feedIDs+`.length === 5`)
	waitPage(t, ctx, "the group followed again", `document.getElementById("group-posts").dataset.group === "group-7" && `+posts+`.length === 2`)

	// Open an item by its ID; a bad ID is refused with a message.
	pageDo(t, ctx, chromedp.SetValue(chromedp.CSS("#search-item"), "item 7"), chromedp.Focus(chromedp.CSS("#search-item")), chromedp.KeyEvent(kb.Enter))
	waitPage(t, ctx, "the bad ID refused", `document.getElementById("search-error").textContent !== "" && document.getElementById("search-item").getAttribute("aria-invalid") === "true"`)
	if pageEval[bool](t, ctx, `document.getElementById("item").open`) {
		t.Fatal("a bad ID opened the panel")
	}
	target := demoItemWith(t, 2)
	pageDo(t, ctx, chromedp.SetValue(chromedp.CSS("#search-item"), target), chromedp.Focus(chromedp.CSS("#search-item")), chromedp.KeyEvent(kb.Enter))
	waitPage(t, ctx, "the panel of the item searched", `document.getElementById("item").open && document.getElementById("item").dataset.item === "`+target+`" &&
		document.getElementById("item-title").textContent === "`+target+`" && document.getElementById("search-error").textContent === ""`)

	// A takedown needs a confirmation: nothing is posted until "Yes".
	pageEval[bool](t, ctx, `(window.__posts = 0, window.__fetch = window.__fetch || window.fetch,
		window.fetch = (u, o) => { if (String(u).endsWith("/v1/takedowns") && o?.method === "POST") window.__posts++; return window.__fetch(u, o); }, true)`)
	pageDo(t, ctx, chromedp.SetValue(chromedp.CSS("#td-reason"), "stolen goods"), chromedp.Click(chromedp.CSS("#td-submit")))
	waitPage(t, ctx, "the confirmation", `document.getElementById("confirm").open`)
	dlg := pageEval[string](t, ctx, `(d => [d.getAttribute("role"), document.getElementById(d.getAttribute("aria-labelledby")).textContent,
		document.getElementById(d.getAttribute("aria-describedby")).textContent, document.activeElement.id].join("|"))(document.getElementById("confirm"))`)
	if want := "alertdialog|Take down " + target + "?|"; !strings.HasPrefix(dlg, want) || !strings.Contains(dlg, "stolen goods") || !strings.HasSuffix(dlg, "|confirm-cancel") {
		t.Fatalf("confirmation: %q", dlg)
	}
	if n := pageEval[int](t, ctx, `window.__posts`); n != 0 {
		t.Fatalf("%d takedowns posted before the confirmation", n)
	}
	// Esc steps back to the panel with nothing sent.
	pageDo(t, ctx, chromedp.KeyEvent(kb.Escape))
	waitPage(t, ctx, "the confirmation cancelled", `!document.getElementById("confirm").open && document.getElementById("item").open && document.activeElement.id === "td-submit"`)
	// Cancel too.
	pageDo(t, ctx, chromedp.Click(chromedp.CSS("#td-submit")))
	waitPage(t, ctx, "the confirmation again", `document.getElementById("confirm").open`)
	pageDo(t, ctx, chromedp.Click(chromedp.CSS("#confirm-cancel")))
	waitPage(t, ctx, "the confirmation cancelled", `!document.getElementById("confirm").open && document.getElementById("item").open`)
	if n := pageEval[int](t, ctx, `window.__posts`); n != 0 || !pageEval[bool](t, ctx, `document.getElementById("td-progress").hidden`) {
		t.Fatalf("a cancelled takedown was posted (%d)", n)
	}
	confirmPageTakedown(t, ctx)
	waitPage(t, ctx, "the confirmed takedown", `document.getElementById("td-progress").dataset.status === "confirmed"`)
	if n := pageEval[int](t, ctx, `window.__posts`); n != 1 {
		t.Fatalf("%d takedowns posted, want 1", n)
	}
	corr := pageEval[string](t, ctx, `document.getElementById("td-progress").dataset.correlationId`)
	if resp, m := get(t, a, modToken, "/v1/takedowns/"+corr); resp.StatusCode != 200 || m["status"] != "confirmed" || m["item_id"] != target {
		t.Fatalf("GET takedown: %d %v", resp.StatusCode, m)
	}
}
