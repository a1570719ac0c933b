// The "Reports, last hour" panel: a bar chart of reports per minute and a
// breakdown by reason, drawn in plain SVG and HTML from the server's own
// counts (GET /v1/stats/reports), so they are the same after a reload and
// on every node. It reads them when the page opens, every 15 s, and a
// moment after reports arrive (at most once per 2 s).
import { $, h, label, num } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const EVERY = 15000; // ms between reads while nothing happens
const AFTER_REPORTS = 2000; // ms after a report before the next read
const H = 150; // the chart's height; its width is the box's own, so text is never stretched
const PAD = { left: 34, right: 6, top: 10, bottom: 22 };

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

// niceMax rounds a count up to 1, 2 or 5 times a power of ten, so the
// axis reads well.
function niceMax(n) {
  if (n <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

export class StatsPanel {
  // opts: {onAuthLost()}
  constructor(opts) {
    this.opts = opts;
    this.timer = 0;
    this.soon = 0;
    this.busy = false;
    this.again = false;
    this.stopped = true;
    this.last = null; // the last counts drawn, redrawn when the box resizes
    this.width = 0;
    new ResizeObserver(() => {
      const w = Math.round($("chart").clientWidth);
      if (w && w !== this.width && this.last) this.drawChart(...this.last);
    }).observe($("chart"));
  }

  start() {
    this.stopped = false;
    this.read();
    this.timer = setInterval(() => this.read(), EVERY);
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.soon);
    this.timer = this.soon = 0;
    $("chart").replaceChildren();
    this.last = null;
    $("reasons").replaceChildren();
    $("chart-label").textContent = "Loading the counts…";
    $("stats-meta").textContent = "";
    $("stats-error").textContent = "";
    delete $("stats").dataset.total;
    delete $("stats").dataset.lastHour;
  }

  // reported says reports came: read the counts again shortly.
  reported() {
    if (this.stopped || this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = 0;
      this.read();
    }, AFTER_REPORTS);
  }

  async read() {
    if (this.stopped) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    try {
      const res = await fetch("/v1/stats/reports", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (this.stopped) return;
      if (res.status === 401) return this.opts.onAuthLost?.();
      if (!res.ok) {
        $("stats-error").textContent =
          res.status === 403 ? "The counts are for moderators." : `The counts could not be read (${res.status}).`;
        return;
      }
      const st = await res.json();
      if (!this.stopped) this.draw(st);
    } catch {
      if (!this.stopped) $("stats-error").textContent = "The counts could not be read: the server is unreachable.";
    } finally {
      this.busy = false;
      if (this.again) {
        this.again = false;
        this.read();
      }
    }
  }

  draw(st) {
    $("stats-error").textContent = "";
    const minutes = Array.isArray(st.minutes) ? st.minutes : [];
    const counts = minutes.map((m) => (Number.isFinite(m?.count) ? m.count : 0));
    const lastHour = counts.reduce((a, b) => a + b, 0);
    const total = Number.isFinite(st.total) ? st.total : 0;
    $("stats").dataset.total = total;
    $("stats").dataset.lastHour = lastHour;
    $("stats-meta").textContent = `${num(lastHour)} in the hour · ${num(total)} in all`;
    this.drawChart(minutes, counts, lastHour);
    this.drawReasons(Array.isArray(st.reasons) ? st.reasons : [], total);
  }

  drawChart(minutes, counts, lastHour) {
    this.last = [minutes, counts, lastHour];
    const chart = $("chart");
    const W = (this.width = Math.max(240, Math.round(chart.clientWidth) || 620));
    chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const n = Math.max(counts.length, 1);
    const peak = Math.max(0, ...counts);
    const top = niceMax(peak);
    const iw = W - PAD.left - PAD.right;
    const ih = H - PAD.top - PAD.bottom;
    const bw = iw / n;
    const y = (v) => PAD.top + ih - (ih * v) / top;
    const parts = [];
    // Grid lines and the axis: 0, half, top.
    for (const v of [0, top / 2, top]) {
      parts.push(svg("line", { class: "grid-line", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
      parts.push(svg("text", { class: "axis", x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, num(v)));
    }
    const bars = svg("g", { class: "bars" });
    minutes.forEach((m, i) => {
      const c = counts[i];
      const start = new Date(m?.start);
      const when = Number.isNaN(start.getTime()) ? "" : timeFmt.format(start);
      const hgt = c ? Math.max(1.5, (ih * c) / top) : 0;
      bars.append(
        svg(
          "rect",
          {
            class: "bar-rect",
            x: PAD.left + i * bw + 1,
            y: PAD.top + ih - hgt,
            width: Math.max(1, bw - 2),
            height: hgt,
            rx: 1.5,
            "data-start": m?.start || "",
            "data-count": c,
          },
          svg("title", {}, `${when}: ${num(c)} report${c === 1 ? "" : "s"}`),
        ),
      );
    });
    parts.push(bars);
    // Time marks every 15 minutes, counted back from now.
    for (let i = 0; i < n; i += 15) {
      const start = new Date(minutes[i]?.start);
      if (Number.isNaN(start.getTime())) continue;
      parts.push(svg("text", { class: "axis", x: PAD.left + i * bw, y: H - 6, "text-anchor": "start" }, timeFmt.format(start)));
    }
    parts.push(svg("text", { class: "axis", x: W - PAD.right, y: H - 6, "text-anchor": "end" }, "now"));
    chart.replaceChildren(...parts);
    let peakAt = "";
    if (peak) {
      const i = counts.lastIndexOf(peak);
      const start = new Date(minutes[i]?.start);
      if (!Number.isNaN(start.getTime())) peakAt = ` at ${timeFmt.format(start)}`;
    }
    $("chart-label").textContent = lastHour
      ? `Reports per minute: ${num(lastHour)} in the last hour, at most ${num(peak)} in a minute${peakAt}.`
      : "Reports per minute: none in the last hour.";
  }

  drawReasons(reasons, total) {
    const list = $("reasons");
    const max = reasons.reduce((a, r) => Math.max(a, Number.isFinite(r?.count) ? r.count : 0), 0) || 1;
    list.replaceChildren(
      ...reasons
        .filter((r) => typeof r?.reason === "string" && Number.isFinite(r.count))
        .map((r) => {
          const pct = total ? Math.round((100 * r.count) / total) : 0;
          return h(
            "li",
            { class: "reason-row", "data-reason": r.reason, "data-count": r.count },
            h("span", { class: "reason-name" }, label(r.reason)),
            h("span", { class: "reason-count" }, `${num(r.count)}`, h("span", { class: "muted" }, ` · ${pct}%`)),
            h("span", { class: "bar", "aria-hidden": "true" }, h("span", { class: "fill", style: `width:${Math.max(2, (100 * r.count) / max)}%` })),
          );
        }),
    );
    if (!list.childElementCount) list.append(h("li", { class: "empty" }, "No report yet."));
  }
}
