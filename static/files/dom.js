// Small DOM and formatting helpers. Everything from the network goes into
// the page as text, never as HTML.

export const $ = (id) => document.getElementById(id);

// h builds an element: h("li", {class: "x", "data-item": id}, "text", child).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

// when returns a <time> for an ISO timestamp (or a Date), as hh:mm:ss with
// the full date in its title.
export function when(v) {
  const d = v instanceof Date ? v : new Date(v);
  if (Number.isNaN(d.getTime())) return h("time", {}, "—");
  return h("time", { datetime: d.toISOString(), title: dateFmt.format(d) }, timeFmt.format(d));
}

// label turns a code such as prohibited_item into "prohibited item".
export const label = (s) => String(s || "").replaceAll("_", " ");

const nf = new Intl.NumberFormat();
export const num = (n) => nf.format(n);

// itemKey reports whether id fits a channel key (docs/contract.md), so item:<id> is
// a channel the page may open.
export const validItem = (id) => typeof id === "string" && /^[A-Za-z0-9._~-]{1,128}$/.test(id);

// shortID shortens a UUID for display; the full one stays in title and data.
export const shortID = (id) => (id && id.length > 13 ? id.slice(0, 8) + "…" : id || "");

// eventTime is when an event happened, as far as it says.
export function eventTime(ev) {
  const d = ev.data || {};
  const t = new Date(d.reported_at || d.posted_at || ev.time || d.confirmed_at || Date.now());
  return Number.isNaN(t.getTime()) ? new Date() : t;
}
