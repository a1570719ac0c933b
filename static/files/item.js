// The item panel: a modal <dialog> (Esc closes it) with the item's whole
// history from its own channel, item:<id> with from=oldest, and the
// "Take down" action, which asks for confirmation in a second modal dialog
// (an alertdialog; Esc or Cancel step back) before it posts, and whose
// progress it follows on corr:<id> until the outcome.
import { $, h, when, label, num, shortID, eventTime } from "./dom.js";
import { Stream } from "./stream.js";
import { Verifier, isOutcome, strings } from "./verify.js";
import { callHTTP } from "/v1/sdk/switchboard.js";

const TIMEOUT = 15000; // ms without an outcome: "timed out", still listening

export class ItemPanel {
  constructor(deps) {
    this.deps = deps;
    this.dlg = $("item");
    this.id = "";
    this.stream = null; // item:<id>
    this.corr = null; // corr:<id>
    this.queue = [];
    this.reports = 0;
    this.reasons = new Map();
    this.timer = 0;
    // open() may reopen the dialog before this (queued) event runs.
    this.dlg.addEventListener("close", () => {
      if (!this.dlg.open) {
        this.closeConfirm();
        this.stop();
      }
    });
    $("item-close").addEventListener("click", () => this.dlg.close());
    // A click on the backdrop (outside the dialog's box) closes it too.
    this.dlg.addEventListener("click", (e) => {
      if (e.target === this.dlg) this.dlg.close();
    });
    $("takedown-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.askConfirm();
    });
    // The confirmation: only "Yes" posts; Cancel, Esc and a click beside
    // it go back to the panel with nothing sent.
    this.confirmDlg = $("confirm");
    this.confirmFor = null; // {id, reason} while the confirmation is open
    $("confirm-cancel").addEventListener("click", () => this.confirmDlg.close("cancel"));
    $("confirm-ok").addEventListener("click", () => this.confirmDlg.close("ok"));
    this.confirmDlg.addEventListener("click", (e) => {
      if (e.target === this.confirmDlg) this.confirmDlg.close("cancel");
    });
    this.confirmDlg.addEventListener("close", () => {
      const asked = this.confirmFor;
      this.confirmFor = null;
      if (!asked || !this.dlg.open || asked.id !== this.id) return;
      if (this.confirmDlg.returnValue === "ok") this.takeDown(asked.reason);
      else $("td-submit").focus();
    });
  }

  // askConfirm checks the reason, then asks to confirm the takedown.
  askConfirm() {
    const reason = $("td-reason").value.trim();
    if (!reason) {
      $("td-error").textContent = "Give a reason: it goes to the item service and the audit trail.";
      $("td-reason").focus();
      return;
    }
    $("td-error").textContent = "";
    if (this.confirmDlg.open) return;
    this.confirmFor = { id: this.id, reason };
    $("confirm-item").textContent = this.id;
    $("confirm-reason").textContent = reason;
    this.confirmDlg.returnValue = "";
    this.confirmDlg.showModal();
    $("confirm-cancel").focus(); // the safe choice first
  }

  closeConfirm() {
    this.confirmFor = null;
    if (this.confirmDlg.open) this.confirmDlg.close("cancel");
  }

  open(id) {
    this.closeConfirm();
    if (this.dlg.open) this.dlg.close();
    this.stop();
    this.id = id;
    this.queue = [];
    this.reports = 0;
    this.reasons = new Map();
    this.dlg.dataset.item = id;
    $("item-title").textContent = id;
    $("history").replaceChildren();
    $("history-empty").hidden = false;
    $("history-empty").textContent = "Loading the item's history…";
    $("history-count").textContent = "";
    $("td-progress").hidden = true;
    $("td-steps").replaceChildren();
    $("td-error").textContent = "";
    $("td-submit").disabled = false;
    const it = this.deps.items.get(id);
    $("td-reason").value = it ? label(this.deps.topReason(it)) : "";
    this.summary();
    this.dlg.showModal();
    this.stream = new Stream([`item:${id}`], {
      fromOldest: true,
      onEvent: (ev) => {
        this.queue.push(ev);
        this.deps.schedule();
      },
      onState: (s) => (this.dlg.dataset.state = s),
      onAuthLost: this.deps.onAuthLost,
    });
    this.stream.open();
    // An empty history says so once the stream is up.
    setTimeout(() => {
      if (this.id === id && !$("history").childElementCount) $("history-empty").textContent = "Nothing about this item yet.";
    }, 1500);
  }

  // stop closes the panel's streams; the dialog itself is closed already.
  stop() {
    this.stream?.close();
    this.corr?.close();
    this.stream = this.corr = null;
    clearTimeout(this.timer);
    this.id = "";
  }

  close() {
    this.closeConfirm();
    if (this.dlg.open) this.dlg.close();
    this.stop();
  }

  summary() {
    const parts = [];
    const n = this.reports || this.deps.items.get(this.id)?.count || 0;
    parts.push(n ? `Reported ${num(n)} time${n === 1 ? "" : "s"}` : "No report seen");
    let best = "";
    let c = 0;
    for (const [r, k] of this.reasons) if (k > c) [best, c] = [r, k];
    if (best) parts.push(`mostly ${label(best)}`);
    const td = this.deps.latestTakedown(this.id);
    if (td) parts.push(`takedown ${this.deps.statusText[this.deps.takedownStatus(td)].toLowerCase()}`);
    $("item-summary").textContent = parts.join(" · ");
  }

  flush() {
    if (!this.queue.length || !this.id) return;
    const list = $("history");
    const frag = document.createDocumentFragment();
    for (const ev of this.queue) {
      if (ev.type === "item.reported") {
        this.reports++;
        const r = ev.data?.reason;
        if (r) this.reasons.set(r, (this.reasons.get(r) || 0) + 1);
      }
      frag.append(historyRow(ev));
    }
    this.queue = [];
    list.append(frag); // oldest first, like a timeline
    $("history-empty").hidden = true;
    const n = list.childElementCount;
    $("history-count").textContent = `· ${num(n)} event${n === 1 ? "" : "s"}`;
    this.summary();
  }

  // takeDown posts the confirmed takedown.
  async takeDown(reason) {
    const id = this.id;
    $("td-error").textContent = "";
    $("td-submit").disabled = true;
    let res;
    try {
      // The SDK's HTTP call; the session cookie goes with it (same origin).
      res = await callHTTP(location.origin, "takedowns", { item_id: id, reason }, { respondAsync: true });
    } catch {
      $("td-error").textContent = "The server could not be reached. Try again.";
      $("td-submit").disabled = false;
      return;
    }
    if (this.id !== id) return; // the panel moved on
    if (res.status === 401) return this.deps.onAuthLost();
    const body = res.body && typeof res.body === "object" ? res.body : {};
    if (res.status < 200 || res.status > 299 || !body.correlation_id) {
      const why =
        res.status === 429
          ? "Too many takedowns in a short time: wait a moment and try again."
          : body.detail || body.title || `The takedown was refused (${res.status}).`;
      $("td-error").textContent = why;
      $("td-submit").disabled = false;
      return;
    }
    this.follow(body.correlation_id);
  }

  // follow shows one takedown's progress from its own channel until the
  // outcome, then closes that stream.
  follow(corr) {
    const box = $("td-progress");
    const steps = $("td-steps");
    box.hidden = false;
    box.dataset.correlationId = corr;
    box.dataset.status = "requested";
    $("td-corr").textContent = shortID(corr);
    $("td-corr").title = `correlation ID ${corr}`;
    steps.replaceChildren(step("requested", "Requested", "waiting for the item service"));
    this.corr?.close();
    const shown = new Set(); // containers with a step
    const kinds = new Map(); // container id -> kind, from item.removed events
    let s;
    // Outcome events only prompt a read of the server's state, which keeps
    // only trusted outcomes; the steps are drawn from that state.
    const verifier = new Verifier((id, st) => {
      if (id !== corr || box.dataset.correlationId !== corr || shown.has("\u0000final")) return;
      for (const c of st.removed_from) {
        if (shown.has(c)) continue;
        shown.add(c);
        box.dataset.status = box.dataset.status === "timed-out" ? "timed-out" : "removing";
        steps.append(step("removed", `Removed from ${c}`, kinds.get(c) || ""));
      }
      if (st.status === "confirmed") {
        const n = st.removed_from.length;
        box.dataset.status = "confirmed";
        steps.append(step("confirmed", "Confirmed", `gone from ${n} container${n === 1 ? "" : "s"}`));
      } else if (st.status === "rejected") {
        box.dataset.status = "rejected";
        steps.append(step("rejected", "Rejected", label(st.reason) || "no reason given"));
      } else {
        return;
      }
      shown.add("\u0000final");
      s.close();
      clearTimeout(this.timer);
      $("td-submit").disabled = false;
    });
    s = this.corr = new Stream([`corr:${corr}`], {
      fromOldest: true, // nothing of this takedown is missed, however fast it is
      onEvent: (ev) => {
        const d = ev.data && typeof ev.data === "object" ? ev.data : {};
        if (ev.type === "takedown.requested") {
          steps.firstElementChild.lastElementChild.textContent = `by ${typeof d.requested_by === "string" ? d.requested_by : "?"}`;
        } else if (isOutcome(ev.type) && ev.correlationid === corr) {
          if (ev.type === "item.removed" && typeof d.container_id === "string") kinds.set(d.container_id, String(d.container_kind || ""));
          verifier.check(corr);
        }
      },
      onAuthLost: this.deps.onAuthLost,
    });
    s.open();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (box.dataset.status === "confirmed" || box.dataset.status === "rejected") return;
      box.dataset.status = "timed-out";
      steps.append(step("timed-out", "No outcome after 15 s", "still listening: it will show here when it comes"));
      $("td-submit").disabled = false;
    }, TIMEOUT);
  }
}

function step(kind, title, detail, ev) {
  return h(
    "li",
    { "data-step": kind, "data-event-id": ev?.id },
    h("strong", {}, title),
    ev ? when(eventTime(ev)) : "",
    h("span", { class: "muted" }, detail || ""),
  );
}

const HISTORY_TEXT = {
  "item.reported": (d) => [`Reported: ${label(d.reason) || "no reason"}`, `by ${d.reporter_id || "unknown"}`],
  "takedown.requested": (d) => ["Takedown requested", `by ${d.requested_by || "?"}${d.reason ? ` · “${d.reason}”` : ""}${d.authority_ref ? ` · ${d.authority_ref}` : ""}`],
  "item.removed": (d) => [`Removed from ${d.container_id}`, d.container_kind || ""],
  "takedown.confirmed": (d) => ["Takedown confirmed", `gone from ${strings(d.removed_from).join(", ")}`],
  "takedown.rejected": (d) => ["Takedown rejected", label(d.reason)],
};

function historyRow(ev) {
  const d = ev.data || {};
  const [title, detail] = (HISTORY_TEXT[ev.type] || (() => [ev.type, ""]))(d);
  return h(
    "li",
    { class: "hist", "data-event-id": ev.id, "data-type": ev.type, "data-correlation-id": ev.correlationid },
    when(eventTime(ev)),
    h("span", { class: "hist-title" }, title),
    h("span", { class: "muted" }, detail),
  );
}
