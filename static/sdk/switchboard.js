// Switchboard JavaScript SDK: a WebSocket client for partners, and a small
// HTTP helper for synchronous commands. One ES module, no dependencies, no
// build step; it runs in browsers and in Node >= 20 (Node 22 has a global
// WebSocket; on Node 20 run with --experimental-websocket or pass a
// WebSocket constructor, such as the one of the `ws` package, as
// options.WebSocket). Served by every node at GET /v1/sdk/switchboard.js.
//
//   import { Client } from "https://switchboard.example/v1/sdk/switchboard.js";
//   const sb = new Client("https://switchboard.example", { token: async () => fetchToken() });
//   sb.subscribe("item:item-42", { onEvent: (ev, f) => console.log(ev.type, f.cursor) });
//   const res = await sb.call("takedowns", { item_id: "item-42", reason: "counterfeit" });
//
// The wire protocol is docs/contract.md ("WebSocket", subprotocol
// switchboard.v1) and docs/commands.md (declared commands).

/** The WebSocket subprotocol the SDK speaks. */
export const SUBPROTOCOL = "switchboard.v1";

/** The SDK's version. */
export const VERSION = "1.0.0";

/**
 * A CloudEvents 1.0 event as the hub delivers it (structured JSON).
 * @typedef {Object} CloudEvent
 * @property {string} specversion Always "1.0".
 * @property {string} id
 * @property {string} source
 * @property {string} type Such as "item.reported" or "takedown.confirmed".
 * @property {string} [subject] The item ID.
 * @property {string} [time] RFC 3339.
 * @property {string} [correlationid] The correlation ID of the command it belongs to.
 * @property {string} [datacontenttype]
 * @property {*} [data] The event's data (JSON).
 * @property {string} [data_base64] Binary data, base64.
 */

/**
 * An event frame: one event on one channel, with the cursor to resume after it.
 * @typedef {Object} EventFrame
 * @property {"event"} type
 * @property {string} channel
 * @property {string} cursor Opaque, URL-safe: the position after this event.
 * @property {CloudEvent} event
 */

/**
 * A gap notice: history could not cover a resume; the subscription goes on live.
 * @typedef {Object} GapFrame
 * @property {"gap"} type
 * @property {string} channel
 */

/**
 * The outcome of a command (the `result` frame).
 * @typedef {Object} Result
 * @property {"confirmed"|"rejected"|"timeout"|string} status
 * @property {string} correlation_id
 * @property {CloudEvent} [event] The terminal event (none on timeout).
 */

/**
 * Connection states, in the order a connection goes through them.
 * @typedef {"connecting"|"open"|"reconnecting"|"closed"} State
 */

/**
 * @typedef {Object} ClientOptions
 * @property {string|(() => string|Promise<string>)} [token] A bearer token, or a
 *   function returning one; the function is called before every connection
 *   attempt, so a rotated token is used on the next reconnect.
 * @property {typeof WebSocket} [WebSocket] The WebSocket constructor; default
 *   globalThis.WebSocket.
 * @property {boolean} [pack=true] Ask the server to pack queued frames into
 *   `batch` messages (?pack=1); the SDK unpacks them.
 * @property {number} [backoffInitial=500] First reconnect delay bound, ms.
 * @property {number} [backoffMax=30000] Largest reconnect delay bound, ms.
 * @property {number} [maxPendingCalls=1000] Calls in flight at once; more are refused.
 * @property {number} [maxBufferedBytes=1048576] Bytes the socket may hold unsent
 *   before call() refuses new calls.
 * @property {number} [maxSubscriptions=1000] Subscriptions at once; more are refused.
 * @property {number} [connectTimeout=15000] A connection not open after this many ms
 *   is given up and tried again.
 * @property {(state: State) => void} [onState]
 * @property {(info: {code: number, reason: string}) => void} [onClose] Called once,
 *   when the client stops for good (close(), or a close code it does not retry).
 * @property {(err: Error) => void} [onError] Errors with no caller to give them to
 *   (a refused resubscription, a token function that threw).
 */

/**
 * @typedef {Object} SubscribeOptions
 * @property {string} [cursor] Resume after this cursor.
 * @property {"oldest"} [from] With no cursor: start at the oldest event history holds.
 * @property {(event: CloudEvent, frame: EventFrame) => void} [onEvent]
 * @property {(frame: GapFrame) => void} [onGap]
 * @property {(err: SwitchboardError) => void} [onError] The server refused the
 *   subscription (then it is dropped).
 */

/**
 * @typedef {Object} CallOptions
 * @property {string} [idempotencyKey] Default: a random key, so that a call in
 *   flight when the connection drops can be sent again and is done once.
 * @property {AbortSignal} [signal] Stop waiting (the command goes on server-side).
 * @property {(correlationId: string) => void} [onAck] The command was accepted.
 * @property {(event: CloudEvent, frame: EventFrame) => void} [onEvent] Progress
 *   events on the command's corr: channel (best effort across reconnects).
 */

/** An error frame, a refused call, or a client that stopped. */
export class SwitchboardError extends Error {
  /**
   * @param {string} code "bad_request", "forbidden", "not_found", "rate_limited",
   *   "unavailable" (from the server), or "closed", "overloaded", "aborted" (the SDK's).
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
  }
}

// Close codes that mean "come back with your cursors".
const RETRY_CODES = new Set([1001, 1005, 1006, 1011, 1012, 1013, 1014, 4000]);
const POLICY_VIOLATION = 1008;

/**
 * The WebSocket URL of a node: http(s) becomes ws(s); a URL that does not
 * already end in /v1/ws gets it.
 * @param {string|URL} url
 * @returns {URL}
 */
export function wsURL(url) {
  const u = new URL(String(url), globalThis.location?.href);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError("switchboard: not an http(s) or ws(s) URL: " + u.protocol);
  if (!u.pathname.endsWith("/v1/ws")) u.pathname = u.pathname.replace(/\/+$/, "") + "/v1/ws";
  return u;
}

/** One subscription; its cursor moves with every event delivered. */
export class Subscription {
  /** @param {Client} client @param {string} channel @param {SubscribeOptions} opts */
  constructor(client, channel, opts) {
    this.client = client;
    /** @type {string} */
    this.channel = channel;
    /** @type {string} The position to resume after ("" until the first ack or event). */
    this.cursor = opts.cursor || "";
    this.from = opts.from;
    this.opts = opts;
    /** @type {string} The id of the subscribe frame in flight, if any. */
    this.pendingID = "";
    let resolve, reject;
    /** @type {Promise<void>} Settles at the first ack (or refusal). */
    this.ready = new Promise((res, rej) => ((resolve = res), (reject = rej)));
    this.ready.catch(() => {}); // a refusal goes to onError as well
    this._resolve = resolve;
    this._reject = reject;
  }

  /** Stops the subscription. */
  unsubscribe() {
    this.client._unsubscribe(this);
  }
}

/**
 * A WebSocket client of a Switchboard node. It connects at once, and
 * reconnects with exponential backoff and full jitter on close codes 1001,
 * 4000, 1006 (and other transient ones), resuming every subscription from
 * its last cursor. On 1008 (not authorised, or an expired token) it
 * reconnects only if the token function gives a different token.
 */
export class Client {
  /**
   * @param {string|URL} url The node's base URL (http(s) or ws(s)).
   * @param {ClientOptions} [options]
   */
  constructor(url, options = {}) {
    this.url = wsURL(url);
    this.opts = options;
    this.WS = options.WebSocket || globalThis.WebSocket;
    if (typeof this.WS !== "function") {
      throw new TypeError("switchboard: no WebSocket: pass options.WebSocket (Node 20: run with --experimental-websocket, or use the ws package)");
    }
    this.pack = options.pack !== false;
    this.backoffInitial = options.backoffInitial ?? 500;
    this.backoffMax = options.backoffMax ?? 30000;
    this.maxPendingCalls = options.maxPendingCalls ?? 1000;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 1 << 20;
    this.maxSubscriptions = options.maxSubscriptions ?? 1000;
    this.connectTimeout = options.connectTimeout ?? 15000;
    /** @type {Map<string, Subscription>} by channel */
    this.subs = new Map();
    /** @type {Map<string, any>} calls in flight, by request id */
    this.calls = new Map();
    /** @type {Map<string, any>} pings in flight, by request id */
    this.pings = new Map();
    this.seq = 0;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = false;
    this.lastToken = undefined;
    this.v1 = false; // the node knows no "call" frame (v1): takedowns go as "takedown"
    /** @type {State} */
    this.state = "connecting";
    this._connect(undefined);
  }

  /**
   * Subscribes to a channel. Events go to opts.onEvent, in order, once each,
   * across reconnects (while history covers the absence; otherwise onGap).
   * @param {string} channel
   * @param {SubscribeOptions} [opts]
   * @returns {Subscription}
   */
  subscribe(channel, opts = {}) {
    if (this.stopped) throw new SwitchboardError("closed", "switchboard: the client is closed");
    if (this.subs.has(channel)) throw new Error("switchboard: already subscribed to " + channel);
    if (this.subs.size >= this.maxSubscriptions) throw new SwitchboardError("overloaded", `switchboard: over ${this.maxSubscriptions} subscriptions`);
    const sub = new Subscription(this, channel, opts);
    this.subs.set(channel, sub);
    if (this._open()) this._sendSubscribe(sub);
    return sub;
  }

  /**
   * Calls a declared command (docs/commands.md) and resolves with its result
   * frame. A call in flight when the connection drops is sent again, with
   * the same idempotency key, when it is back: the server does it once.
   * It rejects with a SwitchboardError on an error frame, on close(), when
   * too many calls are in flight, or when opts.signal aborts.
   * @param {string} command Such as "takedowns".
   * @param {Object<string, *>} data The command's fields.
   * @param {CallOptions} [opts]
   * @returns {Promise<Result>}
   */
  call(command, data, opts = {}) {
    if (this.stopped) return Promise.reject(new SwitchboardError("closed", "switchboard: the client is closed"));
    if (this.calls.size >= this.maxPendingCalls) {
      return Promise.reject(new SwitchboardError("overloaded", `switchboard: over ${this.maxPendingCalls} calls in flight`));
    }
    if (this.ws && this.ws.bufferedAmount > this.maxBufferedBytes) {
      return Promise.reject(new SwitchboardError("overloaded", "switchboard: the connection is not draining"));
    }
    if (opts.signal?.aborted) return Promise.reject(new SwitchboardError("aborted", "switchboard: aborted"));
    const id = this._id();
    /** @type {Object<string, *>} */
    let frame = {
      type: "call",
      id,
      command,
      data,
      idempotency_key: opts.idempotencyKey || randomKey(),
    };
    if (this.v1 && command === "takedowns") frame = v1Takedown(frame);
    return new Promise((resolve, reject) => {
      const c = { id, frame, opts, resolve, reject, correlationID: "" };
      const done = () => {
        this.calls.delete(id);
        opts.signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        done();
        reject(new SwitchboardError("aborted", "switchboard: aborted"));
      };
      c.done = done;
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      this.calls.set(id, c);
      if (this._open()) this._send(frame);
    });
  }

  /**
   * An application-level ping; resolves at the pong.
   * @returns {Promise<void>}
   */
  ping() {
    if (!this._open()) return Promise.reject(new SwitchboardError("unavailable", "switchboard: not connected"));
    const id = this._id();
    return new Promise((resolve, reject) => {
      this.pings.set(id, { resolve, reject });
      this._send({ type: "ping", id });
    });
  }

  /** Closes the connection and stops reconnecting; calls in flight reject. */
  close() {
    this._stop(1000, "closed by the client");
  }

  // ---- internals ----------------------------------------------------------

  _id() {
    this.seq = (this.seq + 1) % Number.MAX_SAFE_INTEGER;
    return String(this.seq);
  }

  _open() {
    return this.ws !== null && this.ws.readyState === 1 && this.state === "open";
  }

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit(this.opts.onState, s);
  }

  _error(err) {
    if (this.opts.onError) this._emit(this.opts.onError, err);
  }

  // _emit calls a callback of the caller's; one that throws is reported
  // and does not stop the frames after it (its cursor has already moved).
  _emit(fn, ...args) {
    if (typeof fn !== "function") return;
    try {
      fn(...args);
    } catch (err) {
      if (fn !== this.opts.onError && typeof this.opts.onError === "function") this._error(err);
      else console.error("switchboard: a callback threw:", err);
    }
  }

  async _token() {
    const t = this.opts.token;
    return typeof t === "function" ? await t() : t;
  }

  // _connect opens a connection, with token if given (already fetched),
  // else with a fresh one from the token function.
  async _connect(token) {
    if (this.stopped) return;
    this._setState(this.attempt === 0 && this.lastToken === undefined ? "connecting" : "reconnecting");
    if (token === undefined) {
      try {
        token = await this._token();
      } catch (err) {
        this._error(new SwitchboardError("unavailable", "switchboard: the token function failed: " + (err?.message || err)));
        this._retry();
        return;
      }
      if (this.stopped) return;
    }
    this.lastToken = token;
    const u = new URL(this.url);
    if (token) u.searchParams.set("access_token", token);
    if (this.pack) u.searchParams.set("pack", "1");
    let ws;
    try {
      ws = new this.WS(u.toString(), SUBPROTOCOL);
    } catch (err) {
      this._error(err);
      this._retry();
      return;
    }
    this.ws = ws;
    clearTimeout(this.giveUp);
    const giveUp = (this.giveUp = setTimeout(() => {
      // A handshake that hangs (a node or proxy that accepts and says
      // nothing, or a connection that dropped mid-handshake, which Node
      // 20's WebSocket does not report): give it up and retry.
      if (this.ws === ws && ws.readyState === 0) {
        this.ws = null;
        try {
          ws.close();
        } catch {}
        this._closed(1006, "connect timeout");
      }
    }, this.connectTimeout));
    ws.onopen = () => {
      clearTimeout(giveUp);
      if (this.ws !== ws) return;
      this._setState("open");
      for (const sub of this.subs.values()) this._sendSubscribe(sub);
      for (const c of this.calls.values()) this._send(c.frame);
    };
    ws.onmessage = (m) => {
      if (this.ws !== ws) return;
      this.attempt = 0; // the server speaks: the next drop starts the backoff afresh
      if (typeof m.data !== "string") return;
      let f;
      try {
        f = JSON.parse(m.data);
      } catch {
        return;
      }
      if (f && f.type === "batch" && Array.isArray(f.frames)) {
        for (const g of f.frames) this._frame(g);
      } else {
        this._frame(f);
      }
    };
    ws.onerror = () => {
      // Open, a close event follows with the code. Still connecting, the
      // attempt failed: Node 20's WebSocket fires no close event then.
      if (this.ws !== ws || ws.readyState !== 0) return;
      clearTimeout(giveUp);
      this.ws = null;
      try {
        ws.close();
      } catch {}
      this._closed(1006, "could not connect");
    };
    ws.onclose = (ev) => {
      clearTimeout(giveUp);
      if (this.ws !== ws) return;
      this.ws = null;
      this._closed(ev.code, ev.reason || "");
    };
  }

  async _closed(code, reason) {
    for (const [id, p] of this.pings) {
      this.pings.delete(id);
      p.reject(new SwitchboardError("unavailable", "switchboard: the connection closed"));
    }
    for (const sub of this.subs.values()) sub.pendingID = "";
    if (this.stopped) return;
    if (code === POLICY_VIOLATION) {
      // Not authorised (or the token expired): only a new token helps.
      if (typeof this.opts.token === "function") {
        let t;
        try {
          t = await this._token();
        } catch (err) {
          this._error(err);
        }
        if (this.stopped) return;
        if (t !== undefined && t !== this.lastToken) {
          this._setState("reconnecting");
          this._retry(t);
          return;
        }
      }
      this._stop(code, reason);
      return;
    }
    if (RETRY_CODES.has(code)) {
      this._setState("reconnecting");
      this._retry();
      return;
    }
    this._stop(code, reason);
  }

  // _retry reconnects after a delay drawn with full jitter.
  _retry(token) {
    if (this.stopped) return;
    const bound = Math.min(this.backoffMax, this.backoffInitial * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    const delay = Math.random() * bound;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this._connect(token);
    }, delay);
  }

  _stop(code, reason) {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.giveUp);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= 1) {
      try {
        ws.close(1000);
      } catch {}
    }
    const err = new SwitchboardError("closed", `switchboard: closed (${code}${reason ? ": " + reason : ""})`);
    for (const c of [...this.calls.values()]) {
      c.done();
      c.reject(err);
    }
    for (const [id, p] of this.pings) {
      this.pings.delete(id);
      p.reject(err);
    }
    for (const sub of this.subs.values()) sub._reject(err);
    this._setState("closed");
    this._emit(this.opts.onClose, { code, reason });
  }

  _send(frame) {
    try {
      this.ws.send(JSON.stringify(frame));
    } catch (err) {
      this._error(err);
    }
  }

  _sendSubscribe(sub) {
    sub.pendingID = this._id();
    const f = { type: "subscribe", id: sub.pendingID, channel: sub.channel };
    if (sub.cursor) f.cursor = sub.cursor;
    else if (sub.from) f.from = sub.from;
    this._send(f);
  }

  _unsubscribe(sub) {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    if (this._open()) this._send({ type: "unsubscribe", id: this._id(), channel: sub.channel });
  }

  _subByID(id) {
    for (const sub of this.subs.values()) if (sub.pendingID === id) return sub;
    return null;
  }

  _frame(f) {
    if (!f || typeof f !== "object") return;
    switch (f.type) {
      case "event": {
        // An event before the subscription's ack is the tail of an earlier
        // subscription to that channel: the node queues the ack first.
        const sub = this.subs.get(f.channel);
        if (sub && !sub.pendingID) {
          if (f.cursor) sub.cursor = f.cursor;
          this._emit(sub.opts.onEvent, f.event, f);
        }
        if (typeof f.channel === "string" && f.channel.startsWith("corr:")) {
          const corr = f.channel.slice(5);
          for (const c of this.calls.values()) if (c.correlationID === corr) this._emit(c.opts.onEvent, f.event, f);
        }
        return;
      }
      case "gap": {
        const sub = this.subs.get(f.channel);
        if (sub && !sub.pendingID) this._emit(sub.opts.onGap, f);
        return;
      }
      case "ack": {
        const id = String(f.id ?? "");
        const sub = this._subByID(id);
        if (sub) {
          sub.pendingID = "";
          if (f.cursor) sub.cursor = f.cursor;
          sub._resolve();
          return;
        }
        const c = this.calls.get(id);
        if (c && f.correlation_id) {
          c.correlationID = f.correlation_id;
          this._emit(c.opts.onAck, f.correlation_id);
        }
        return;
      }
      case "result": {
        const c = this.calls.get(String(f.id ?? ""));
        if (!c) return;
        c.done();
        c.resolve({ status: f.status, correlation_id: f.correlation_id, event: f.event });
        return;
      }
      case "pong": {
        const p = this.pings.get(String(f.id ?? ""));
        if (p) {
          this.pings.delete(String(f.id));
          p.resolve();
        }
        return;
      }
      case "error": {
        const id = String(f.id ?? "");
        const err = new SwitchboardError(f.code || "bad_request", f.message || "refused");
        const sub = id && this._subByID(id);
        if (sub) {
          this.subs.delete(sub.channel);
          sub._reject(err);
          if (sub.opts.onError) this._emit(sub.opts.onError, err);
          else this._error(err);
          return;
        }
        const c = id && this.calls.get(id);
        if (c && f.code === "bad_request" && c.frame.type === "call" && c.frame.command === "takedowns" && /unknown frame type "call"/.test(f.message || "")) {
          // A v1 node: it knows takedowns only as the "takedown" frame.
          this.v1 = true;
          c.frame = v1Takedown(c.frame);
          this._send(c.frame);
          return;
        }
        if (c) {
          c.done();
          c.reject(err);
          return;
        }
        this._error(err);
        return;
      }
    }
  }
}

// v1Takedown is a takedowns call as the v1 "takedown" frame (docs/contract.md).
function v1Takedown(f) {
  const { item_id, reason, authority_ref } = f.data || {};
  return { type: "takedown", id: f.id, item_id, reason, authority_ref, idempotency_key: f.idempotency_key };
}

function randomKey() {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b = new Uint8Array(16);
  c.getRandomValues(b);
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/**
 * @typedef {Object} HTTPCallOptions
 * @property {string|(() => string|Promise<string>)} [token]
 * @property {string} [idempotencyKey]
 * @property {number} [wait] Prefer: wait=<seconds>.
 * @property {boolean} [respondAsync] Prefer: respond-async (202 at once).
 * @property {AbortSignal} [signal]
 * @property {typeof fetch} [fetch] Default: globalThis.fetch.
 */

/**
 * @typedef {Object} HTTPResult
 * @property {number} status The HTTP status: 200, 202, 404, 422, 504, ...
 * @property {*} body The JSON body (the outcome, or a problem+json).
 * @property {string|null} location The status URL (202, 504).
 * @property {string|null} retryAfter
 */

/**
 * A synchronous command over HTTP: POST /v1/<command> with data as JSON.
 * It resolves with the answer whatever its status (404 and 422 are outcomes,
 * not failures), and rejects only when the request could not be made.
 * @param {string|URL} base The node's base URL.
 * @param {string} command
 * @param {Object<string, *>} data
 * @param {HTTPCallOptions} [opts]
 * @returns {Promise<HTTPResult>}
 */
export async function callHTTP(base, command, data, opts = {}) {
  const headers = { "Content-Type": "application/json" };
  if (opts.idempotencyKey) headers["Idempotency-Key"] = opts.idempotencyKey;
  return httpJSON(base, "POST", "/v1/" + encodeURIComponent(command), headers, JSON.stringify(data), opts);
}

/**
 * A command's current state: GET /v1/<command>/<correlation_id>, holding
 * up to opts.wait seconds until it is final.
 * @param {string|URL} base
 * @param {string} command
 * @param {string} correlationId
 * @param {HTTPCallOptions} [opts]
 * @returns {Promise<HTTPResult>}
 */
export async function statusHTTP(base, command, correlationId, opts = {}) {
  return httpJSON(base, "GET", "/v1/" + encodeURIComponent(command) + "/" + encodeURIComponent(correlationId), {}, undefined, opts);
}

async function httpJSON(base, method, path, headers, body, opts) {
  const f = opts.fetch || globalThis.fetch;
  const u = new URL(String(base), globalThis.location?.href);
  u.pathname = u.pathname.replace(/\/+$/, "") + path;
  const t = typeof opts.token === "function" ? await opts.token() : opts.token;
  if (t) headers.Authorization = "Bearer " + t;
  const prefer = [];
  if (opts.wait !== undefined) prefer.push("wait=" + Math.max(0, Math.floor(opts.wait)));
  if (opts.respondAsync) prefer.push("respond-async");
  if (prefer.length) headers.Prefer = prefer.join(", ");
  const res = await f(u.toString(), { method, headers, body, signal: opts.signal });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {}
  return { status: res.status, body: parsed, location: res.headers.get("Location"), retryAfter: res.headers.get("Retry-After") };
}
