// Stream wraps the browser's own EventSource on /v1/sse. EventSource
// resumes by itself with Last-Event-ID after a dropped connection, so the
// page neither dedupes nor replays anything: the server's cursor does it.
// Only when EventSource gives up (a non-200 answer, such as 503 during a
// node's shutdown) does Stream open a new one, carrying the last id it saw
// as ?last_event_id= so that resume is exact there too.

// The event types the page listens for (docs/contract.md, and the posts of a
// group's channel), plus the gap notice.
export const TYPES = ["item.reported", "takedown.requested", "item.removed", "takedown.confirmed", "takedown.rejected", "item.posted", "item.updated"];

export class Stream {
  // channels: channel names; opts: {fromOldest, onEvent(ev, msg),
  // onGap(channel), onState(state), onAuthLost()}.
  constructor(channels, opts) {
    this.channels = channels;
    this.opts = opts;
    this.lastID = "";
    this.es = null;
    this.timer = 0;
    this.backoff = 1000;
    this.closed = false;
    this.state = "";
  }

  url() {
    const q = new URLSearchParams();
    for (const ch of this.channels) q.append("channel", ch);
    if (this.opts.fromOldest) q.set("from", "oldest");
    if (this.lastID) q.set("last_event_id", this.lastID);
    return "/v1/sse?" + q;
  }

  setState(s) {
    if (s === this.state) return;
    this.state = s;
    this.opts.onState?.(s);
  }

  open() {
    if (this.closed) return;
    const es = new EventSource(this.url(), { withCredentials: true });
    this.es = es;
    this.setState(this.lastID ? "reconnecting" : "connecting");
    es.onopen = () => {
      this.backoff = 1000;
      this.setState("live");
    };
    es.onerror = () => {
      if (this.es !== es) return;
      if (es.readyState === EventSource.CONNECTING) {
        this.setState("reconnecting");
        return;
      }
      // EventSource gave up: find out why before trying again.
      es.close();
      this.es = null;
      this.setState("reconnecting");
      this.retry();
    };
    const deliver = (msg) => {
      if (msg.lastEventId) this.lastID = msg.lastEventId;
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch {
        return;
      }
      this.opts.onEvent?.(ev, msg);
    };
    for (const t of TYPES) es.addEventListener(t, deliver);
    es.addEventListener("message", deliver);
    es.addEventListener("gap", (msg) => {
      if (msg.lastEventId) this.lastID = msg.lastEventId;
      let ch = "";
      try {
        ch = JSON.parse(msg.data).channel;
      } catch {}
      this.opts.onGap?.(ch);
    });
  }

  async retry() {
    clearTimeout(this.timer);
    let signedIn = true;
    try {
      const res = await fetch("/v1/session", { credentials: "same-origin" });
      signedIn = res.status !== 401;
    } catch {
      // The node is unreachable: keep trying.
    }
    if (this.closed) return;
    if (!signedIn) {
      this.close();
      this.opts.onAuthLost?.();
      return;
    }
    this.timer = setTimeout(() => this.open(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 15000);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
  }
}
