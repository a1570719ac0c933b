// The moderator page. One EventSource on reports + takedowns feeds the live
// feed, the most-reported list and the takedown board; the item panel opens
// its own on item:<id> (whole history) and, after "Take down", one on
// corr:<id> until the outcome; the group panel one on group:<id>. The chart
// draws the server's counts (stats.js). Updates are applied to small models
// at once and drawn once per animation frame. The feed itself is not a live
// region: a polite summary ("3 new reports") is announced at most every
// ANNOUNCE_EVERY.
import { $, h, when, label, num, validItem, shortID, eventTime } from "./dom.js";
import { Stream } from "./stream.js";
import { ItemPanel } from "./item.js";
import { Verifier, isOutcome, strings } from "./verify.js";
import { StatsPanel } from "./stats.js";
import { GroupPanel } from "./group.js";

const FEED_CAP = 500; // rows kept in the feed
const TOP_SHOWN = 25; // items shown in the most-reported list
const BOARD_CAP = 200; // takedowns kept on the board
const TAKEDOWN_TIMEOUT = 15000; // ms without an outcome: "timed out"
const ANNOUNCE_EVERY = 10000; // ms between two summaries of new reports
const ANNOUNCE_GATHER = 2000; // ms a summary waits for more reports
const REASONS_LISTED = 50; // reasons offered by the filter

const STATE_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  gap: "Live · missed events",
  offline: "Signed out",
};

const STATUS_TEXT = {
  requested: "Requested",
  removing: "Removing",
  confirmed: "Confirmed",
  rejected: "Rejected",
  "timed-out": "Timed out",
};

// ---- models ---------------------------------------------------------------

const model = {
  main: null, // Stream
  state: "connecting",
  gaps: new Set(), // channels that lost events, until dismissed
  feedQueue: [], // reports waiting for the next frame
  held: [], // reports held while the feed is paused
  paused: false,
  received: 0,
  items: new Map(), // item id -> {id, count, reasons: Map, last}
  topDirty: false,
  takedowns: new Map(), // correlation id -> takedown
  boardDirty: new Set(),
  frame: 0,
  tick: 0,
  filter: "", // the reason shown, or "" for all
  reasons: new Set(), // reasons offered by the filter
  unannounced: 0, // reports since the last summary
  announceTimer: 0,
  lastAnnounce: 0,
};

function schedule() {
  if (model.frame) return;
  const run = () => {
    model.frame = 0;
    flush();
  };
  // rAF does not run in a hidden tab: draw on a timer there instead.
  model.frame = document.hidden ? setTimeout(run, 250) : requestAnimationFrame(run);
}

function onMainEvent(ev) {
  if (ev.type === "item.reported") {
    model.received++;
    const d = ev.data || {};
    const id = d.item_id || ev.subject || "";
    let it = model.items.get(id);
    if (!it) model.items.set(id, (it = { id, count: 0, reasons: new Map(), last: null }));
    it.count++;
    if (d.reason) it.reasons.set(d.reason, (it.reasons.get(d.reason) || 0) + 1);
    it.last = eventTime(ev);
    model.topDirty = true;
    (model.paused ? model.held : model.feedQueue).push(ev);
    if (typeof d.reason === "string" && d.reason) offerReason(d.reason);
    model.unannounced++;
    scheduleAnnounce();
    stats.reported();
  } else {
    applyTakedown(ev);
  }
  schedule();
}

// applyTakedown folds a takedown command into its board row. An outcome
// event (item.removed, takedown.confirmed, takedown.rejected) is only a
// reason to read the takedown's state from the server, which keeps only
// trusted outcomes: a forged event never changes the board. Commands and
// outcomes travel on different topics, so they may come in any order.
function applyTakedown(ev) {
  const corr = ev.correlationid;
  if (!corr || typeof corr !== "string") return;
  const d = ev.data && typeof ev.data === "object" ? ev.data : {};
  if (isOutcome(ev.type)) {
    if (ev.type === "item.removed" && typeof d.container_id === "string") {
      kindOf.set(d.container_id, typeof d.container_kind === "string" ? d.container_kind : "");
    }
    verifier.check(corr);
    return;
  }
  if (ev.type !== "takedown.requested") return;
  const td = takedownRow(corr, typeof d.item_id === "string" ? d.item_id : ev.subject || "");
  td.requestedAt = eventTime(ev);
  td.started = Math.min(td.started, td.requestedAt.getTime());
  td.reason = typeof d.reason === "string" ? d.reason : "";
  td.by = typeof d.requested_by === "string" ? d.requested_by : "";
  td.ref = typeof d.authority_ref === "string" ? d.authority_ref : "";
  model.boardDirty.add(corr);
  model.topDirty = true; // the list shows each item's takedown state
  schedule();
}

// kindOf remembers each container's kind from item.removed events, to label
// the containers the server lists.
const kindOf = new Map();

function takedownRow(corr, item) {
  let td = model.takedowns.get(corr);
  if (!td) {
    td = {
      corr,
      item,
      started: Date.now(),
      requestedAt: null,
      reason: "",
      by: "",
      ref: "",
      containers: new Map(), // container id -> kind
      outcome: "", // confirmed | rejected
      outcomeReason: "",
      outcomeAt: null,
      timedOut: false,
    };
    model.takedowns.set(corr, td);
  }
  return td;
}

// The server's state of a takedown, read after one of its outcome events.
const verifier = new Verifier((corr, st) => {
  const td = takedownRow(corr, typeof st.item_id === "string" ? st.item_id : "");
  for (const c of strings(st.removed_from)) if (!td.containers.has(c)) td.containers.set(c, kindOf.get(c) || "");
  if (st.status === "confirmed" || st.status === "rejected") {
    if (!td.outcome) {
      const at = new Date(st.confirmed_at || "");
      td.outcomeAt = isNaN(at.getTime()) ? new Date() : at;
    }
    td.outcome = st.status;
    td.outcomeReason = typeof st.reason === "string" ? st.reason : "";
  }
  model.boardDirty.add(corr);
  model.topDirty = true;
  schedule();
});

function takedownStatus(td) {
  if (td.outcome) return td.outcome;
  if (td.timedOut) return "timed-out";
  return td.containers.size ? "removing" : "requested";
}

// latestTakedown returns the newest takedown of an item, if any.
function latestTakedown(item) {
  let best = null;
  for (const td of model.takedowns.values()) if (td.item === item && (!best || td.started >= best.started)) best = td;
  return best;
}

function checkTimeouts() {
  const now = Date.now();
  for (const td of model.takedowns.values()) {
    if (!td.outcome && !td.timedOut && now - td.started > TAKEDOWN_TIMEOUT) {
      td.timedOut = true;
      model.boardDirty.add(td.corr);
      model.topDirty = true;
    }
  }
  if (model.boardDirty.size) schedule();
}

// ---- drawing --------------------------------------------------------------

function flush() {
  drawFeed();
  if (model.topDirty) drawTop();
  if (model.boardDirty.size) drawBoard();
  panel.flush();
}

// ---- reason filter and summary ---------------------------------------------

// offerReason adds a reason to the filter's choices, in order.
function offerReason(r) {
  if (model.reasons.has(r) || model.reasons.size >= REASONS_LISTED) return;
  model.reasons.add(r);
  const sel = $("reason-filter");
  const opt = h("option", { value: r }, label(r));
  const after = [...sel.options].slice(1).find((o) => o.value > r);
  sel.insertBefore(opt, after || null);
}

function shownBy(li) {
  return !model.filter || li.dataset.reason === model.filter;
}

function setFilter(r) {
  model.filter = r;
  $("reason-filter").value = r;
  for (const li of $("feed").children) li.hidden = !shownBy(li);
  $("feed").dataset.filter = r;
  drawFeed();
}

function scheduleAnnounce() {
  if (model.announceTimer) return;
  const wait = Math.max(ANNOUNCE_GATHER, model.lastAnnounce + ANNOUNCE_EVERY - Date.now());
  model.announceTimer = setTimeout(announce, wait);
}

// announce says, politely, how many reports came since it last spoke.
function announce() {
  model.announceTimer = 0;
  const n = model.unannounced;
  if (!n) return;
  model.unannounced = 0;
  model.lastAnnounce = Date.now();
  let text = `${num(n)} new report${n === 1 ? "" : "s"}`;
  if (model.paused) text += ", held while the feed is paused";
  else if (model.filter) text += `; the feed shows ${label(model.filter)} only`;
  const region = $("feed-summary");
  // Cleared first, so the same words are announced again.
  region.textContent = "";
  setTimeout(() => (region.textContent = text), 100);
}

function feedRow(ev) {
  const d = ev.data || {};
  const item = d.item_id || ev.subject || "";
  return h(
    "li",
    { class: "report", "data-event-id": ev.id, "data-item": item, "data-reason": typeof d.reason === "string" ? d.reason : "" },
    when(eventTime(ev)),
    h("button", { type: "button", class: "item-link", "data-open-item": item, "aria-label": `Open ${item}` }, item),
    h("span", { class: "chip", "data-reason": d.reason || "" }, label(d.reason) || "no reason"),
    h("span", { class: "reporter" }, h("span", { class: "muted" }, "by "), d.reporter_id || "unknown"),
  );
}

function drawFeed() {
  const feed = $("feed");
  const q = model.feedQueue;
  if (q.length) {
    model.feedQueue = [];
    const frag = document.createDocumentFragment();
    // Newest first: the last event received goes on top.
    for (let i = q.length - 1, n = 0; i >= 0 && n < FEED_CAP; i--, n++) {
      const li = feedRow(q[i]);
      li.hidden = !shownBy(li);
      frag.append(li);
    }
    feed.prepend(frag);
    let extra = feed.childElementCount - FEED_CAP;
    while (extra-- > 0) feed.lastElementChild.remove();
    $("feed-empty").hidden = true;
  }
  const shown = feed.childElementCount;
  let meta = model.received
    ? `${num(model.received)} received${model.received > shown ? ` · newest ${num(shown)} kept` : ""}`
    : "";
  let hidden = false;
  if (model.filter && shown) {
    const visible = feed.querySelectorAll(":scope > li:not([hidden])").length;
    meta += ` · ${num(visible)} ${label(model.filter)}`;
    hidden = visible === 0;
  }
  $("feed-meta").textContent = meta;
  $("feed-filtered").hidden = !hidden;
  const pending = $("feed-pending");
  pending.hidden = !model.paused;
  pending.textContent = model.held.length
    ? `Paused · show ${num(model.held.length)} new report${model.held.length === 1 ? "" : "s"}`
    : "Paused · no new report yet";
}

const topRows = new Map(); // item id -> <li>

function topReason(it) {
  let best = "";
  let n = 0;
  for (const [r, c] of it.reasons) if (c > n) [best, n] = [r, c];
  return best;
}

function drawTop() {
  model.topDirty = false;
  const list = $("top");
  const ranked = [...model.items.values()].sort((a, b) => b.count - a.count || b.last - a.last).slice(0, TOP_SHOWN);
  const max = ranked.length ? ranked[0].count : 1;
  const focused = document.activeElement;
  const keep = new Set();
  ranked.forEach((it, i) => {
    keep.add(it.id);
    let li = topRows.get(it.id);
    if (!li) {
      li = h(
        "li",
        { class: "top-row", "data-item": it.id },
        h(
          "button",
          { type: "button", class: "top-open", "data-open-item": it.id },
          h("span", { class: "rank" }),
          h("span", { class: "top-name" }, h("span", { class: "item-id" }, it.id), h("span", { class: "top-reason muted" })),
          h("span", { class: "td-flag" }),
          h("span", { class: "bar", "aria-hidden": "true" }, h("span", { class: "fill" })),
          h("span", { class: "top-count" }),
        ),
      );
      topRows.set(it.id, li);
    }
    li.dataset.count = it.count;
    li.querySelector(".rank").textContent = i + 1;
    const reason = topReason(it);
    li.querySelector(".top-reason").textContent = reason ? `mostly ${label(reason)}` : "";
    li.querySelector(".top-count").textContent = num(it.count);
    li.querySelector(".fill").style.width = `${Math.max(4, (100 * it.count) / max)}%`;
    const td = latestTakedown(it.id);
    const flag = li.querySelector(".td-flag");
    const st = td ? takedownStatus(td) : "";
    flag.dataset.status = st;
    flag.textContent = st ? STATUS_TEXT[st] : "";
    li.querySelector(".top-open").setAttribute(
      "aria-label",
      `${it.id}, reported ${it.count} time${it.count === 1 ? "" : "s"}${reason ? `, mostly ${label(reason)}` : ""}${st ? `, takedown ${STATUS_TEXT[st]}` : ""}`,
    );
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  for (const [id, li] of topRows) {
    if (!keep.has(id)) {
      li.remove();
      topRows.delete(id);
    }
  }
  // Reordering takes focus from a moved button: give it back.
  if (focused && focused !== document.activeElement && document.contains(focused)) focused.focus({ preventScroll: true });
  $("top-empty").hidden = ranked.length > 0;
  $("top-meta").textContent = model.items.size ? `${num(model.items.size)} item${model.items.size === 1 ? "" : "s"}` : "";
}

const STEP = { requested: 1, removing: 2, "timed-out": 2, confirmed: 3, rejected: 3 };

function drawBoard() {
  const board = $("board");
  for (const corr of model.boardDirty) {
    const td = model.takedowns.get(corr);
    if (!td) continue;
    let li = td.el;
    if (!li) {
      li = td.el = h("li", { class: "td", "data-correlation-id": corr, "data-item": td.item });
      board.prepend(li);
    }
    const st = takedownStatus(td);
    li.dataset.status = st;
    const containers = h("ul", { class: "containers", "aria-label": "Removed from" });
    for (const [id, kind] of td.containers) {
      containers.append(
        h("li", { "data-container-id": id, "data-kind": kind }, h("span", { class: "ok", "aria-hidden": "true" }, "✓"), id, kind ? h("span", { class: "kind" }, kind) : null),
      );
    }
    let outcome = "";
    if (st === "confirmed") outcome = `Gone from ${td.containers.size} container${td.containers.size === 1 ? "" : "s"}`;
    else if (st === "rejected") outcome = `Rejected: ${label(td.outcomeReason) || "no reason given"}`;
    else if (st === "timed-out") outcome = "No outcome after 15 s · still listening";
    else if (st === "removing") outcome = "Removing…";
    else outcome = "Waiting for the item service…";
    li.replaceChildren(
      h(
        "div",
        { class: "td-head" },
        h("button", { type: "button", class: "item-link", "data-open-item": td.item }, td.item),
        h("span", { class: "pill", "data-status": st }, STATUS_TEXT[st]),
      ),
      h(
        "div",
        { class: "stepper", "aria-hidden": "true", "data-step": STEP[st] },
        h("span", {}),
        h("span", {}),
        h("span", {}),
      ),
      h(
        "p",
        { class: "td-meta muted" },
        td.requestedAt ? when(td.requestedAt) : "",
        td.by ? ` · by ${td.by}` : "",
        td.reason ? ` · “${td.reason}”` : "",
        td.ref ? ` · ${td.ref}` : "",
      ),
      td.containers.size ? containers : "",
      h(
        "p",
        { class: "td-outcome" },
        outcome,
        " ",
        h("code", { class: "corr muted", title: `correlation ID ${corr}` }, shortID(corr)),
      ),
    );
  }
  model.boardDirty.clear();
  while (board.childElementCount > BOARD_CAP) {
    const last = board.lastElementChild;
    model.takedowns.delete(last.dataset.correlationId);
    last.remove();
  }
  $("board-empty").hidden = board.childElementCount > 0;
  const open = [...model.takedowns.values()].filter((td) => !td.outcome).length;
  $("board-meta").textContent = model.takedowns.size ? `${num(open)} open · ${num(model.takedowns.size)} total` : "";
}

function setState(s) {
  model.state = s;
  const shown = s === "live" && model.gaps.size ? "gap" : s;
  const el = $("conn");
  el.dataset.state = shown;
  $("conn-text").textContent = STATE_TEXT[shown] || shown;
}

function onGap(channel) {
  model.gaps.add(channel || "a channel");
  const names = [...model.gaps].map((c) => `“${c}”`).join(" and ");
  $("gap-text").textContent =
    `The connection was away longer than the server's history reaches: some events on ${names} were missed, ` +
    "so the feed, counts and board may be incomplete. Everything from now on is live.";
  $("gap-notice").hidden = false;
  $("gap-notice").dataset.channels = [...model.gaps].join(" ");
  setState(model.state);
}

// ---- item panel -----------------------------------------------------------

const panel = new ItemPanel({
  items: model.items,
  topReason,
  latestTakedown,
  takedownStatus,
  schedule,
  statusText: STATUS_TEXT,
  onAuthLost: () => signedOut("Your session has ended. Sign in again."),
});

const stats = new StatsPanel({ onAuthLost: () => signedOut("Your session has ended. Sign in again.") });
const group = new GroupPanel({ onAuthLost: () => signedOut("Your session has ended. Sign in again.") });

// ---- session --------------------------------------------------------------

async function session(token) {
  const opts = token
    ? { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) }
    : { method: "GET" };
  try {
    const res = await fetch("/v1/session", { ...opts, credentials: "same-origin" });
    return res.ok ? res.json() : null;
  } catch {
    return null;
  }
}

function signedIn(who) {
  $("signin-view").hidden = true;
  $("app").hidden = false;
  $("who").textContent = who.name;
  $("who").title = who.role;
  document.body.dataset.signedIn = who.name;
  model.main = new Stream(["reports", "takedowns"], {
    fromOldest: true, // a fresh page starts with what the hub still holds
    onEvent: onMainEvent,
    onGap,
    onState: setState,
    onAuthLost: () => signedOut("Your session has ended. Sign in again."),
  });
  model.main.open();
  model.tick = setInterval(checkTimeouts, 1000);
  stats.start();
  group.resume();
}

function reset() {
  model.main?.close();
  model.main = null;
  clearInterval(model.tick);
  clearTimeout(model.announceTimer);
  panel.close();
  stats.stop();
  group.unfollow();
  Object.assign(model, { feedQueue: [], held: [], paused: false, received: 0, topDirty: false, unannounced: 0, announceTimer: 0 });
  model.reasons.clear();
  const sel = $("reason-filter");
  while (sel.options.length > 1) sel.lastElementChild.remove();
  setFilter("");
  $("feed-summary").textContent = "";
  model.items.clear();
  model.takedowns.clear();
  model.boardDirty.clear();
  model.gaps.clear();
  topRows.clear();
  for (const id of ["feed", "top", "board"]) $(id).replaceChildren();
  for (const id of ["feed-empty", "top-empty", "board-empty"]) $(id).hidden = false;
  $("gap-notice").hidden = true;
  $("pause").setAttribute("aria-pressed", "false");
  $("pause").textContent = "Pause";
  drawFeed();
}

function signedOut(message) {
  reset();
  delete document.body.dataset.signedIn;
  setState("offline");
  $("app").hidden = true;
  $("signin-view").hidden = false;
  $("signin-error").textContent = message || "";
  $("token").focus();
}

// ---- wiring ---------------------------------------------------------------

function wire() {
  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    const tok = $("token").value.trim();
    if (!tok) {
      $("signin-error").textContent = "Enter your moderator token.";
      return;
    }
    const btn = e.submitter;
    if (btn) btn.disabled = true;
    const who = await session(tok);
    if (btn) btn.disabled = false;
    $("token").value = "";
    if (who) {
      $("signin-error").textContent = "";
      signedIn(who);
    } else {
      $("signin-error").textContent = "That token was not accepted.";
    }
  });
  $("signout").addEventListener("click", async () => {
    try {
      await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" });
    } catch {}
    signedOut("");
  });
  $("gap-dismiss").addEventListener("click", () => {
    model.gaps.clear();
    $("gap-notice").hidden = true;
    setState(model.state);
  });
  $("pause").addEventListener("click", () => setPaused(!model.paused));
  $("reason-filter").addEventListener("change", (e) => setFilter(e.target.value));
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("search-item");
    const id = input.value.trim();
    if (!validItem(id)) {
      $("search-error").textContent = id ? "An item ID is 1 to 128 letters, digits, or . _ ~ -" : "Enter an item ID.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    $("search-error").textContent = "";
    input.removeAttribute("aria-invalid");
    panel.open(id);
  });
  $("feed-pending").addEventListener("click", () => setPaused(false));
  // One listener opens any item, wherever its button is.
  document.addEventListener("click", (e) => {
    const b = e.target.closest("[data-open-item]");
    if (b && validItem(b.dataset.openItem)) panel.open(b.dataset.openItem);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && model.frame) {
      clearTimeout(model.frame);
      model.frame = 0;
      schedule();
    }
  });
}

function setPaused(p) {
  model.paused = p;
  $("pause").setAttribute("aria-pressed", String(p));
  $("pause").textContent = p ? "Resume" : "Pause";
  if (!p && model.held.length) {
    model.feedQueue.push(...model.held);
    model.held = [];
  }
  schedule();
}

async function main() {
  wire();
  // A token in the address (as printed at start) becomes the session
  // cookie at once and leaves the address bar and the history.
  const params = new URLSearchParams(location.search);
  let who = null;
  let message = "";
  if (params.has("access_token")) {
    const tok = params.get("access_token");
    params.delete("access_token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    who = await session(tok);
    if (!who) message = "The sign-in link's token was not accepted.";
  }
  who = who || (await session());
  if (who) signedIn(who);
  else signedOut(message);
}

main();
