// Tests of the JavaScript SDK against a whole node. They are run by
// TestJavaScriptSDK (cmd/switchboard/internal/node/jssdk_test.go), which
// starts the node, a TCP proxy in front of it, and a control server this
// script drives: SB_URL (the node through the proxy), SB_DIRECT (the node),
// SB_CONTROL, SB_TOKEN (a moderator), SB_PARTNER_TOKEN.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Client, SwitchboardError, callHTTP, statusHTTP, wsURL } from "./switchboard.js";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run this through go test -run TestJavaScriptSDK`);
  return v;
};
const URL_ = env("SB_URL");
const DIRECT = env("SB_DIRECT");
const CONTROL = env("SB_CONTROL");
const TOKEN = env("SB_TOKEN");
const WAIT = 20000; // a bound against hangs, not a measure of speed

const fast = { backoffInitial: 50, backoffMax: 400, connectTimeout: 3000 };

async function control(path, body) {
  const res = await fetch(CONTROL + path, { method: "POST", body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) throw new Error(`control ${path}: ${res.status} ${await res.text()}`);
}

// produce writes item.reported events about subject; with wait, it returns
// once the channel's history holds the last one.
async function produce(subject, ids, wait = true) {
  const events = ids.map((id) => ({ id, subject, data: { item_id: subject, reporter_id: "user-1", reason: "spam", reported_at: new Date().toISOString() } }));
  await control("/produce", { events, wait_channel: wait ? "item:" + subject : "" });
}

async function until(what, cond) {
  const deadline = Date.now() + WAIT;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("never: " + what);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const range = (prefix, from, n) => Array.from({ length: n }, (_, i) => `${prefix}-${String(from + i).padStart(3, "0")}`);

test("wsURL", () => {
  assert.equal(wsURL("http://h:1").href, "ws://h:1/v1/ws");
  assert.equal(wsURL("https://h/base/").href, "wss://h/base/v1/ws");
  assert.equal(wsURL("ws://h/v1/ws").href, "ws://h/v1/ws");
  assert.throws(() => wsURL("ftp://h"));
});

// FakeV1 is a WebSocket to a v1 node, which knows no "call" frame: the
// only stand-in here, since every node this repository builds knows it.
class FakeV1 {
  static sent = [];
  static dialed = [];
  constructor(url, protocol) {
    FakeV1.dialed.push({ url, protocol });
    this.url = url;
    this.protocol = protocol;
    this.readyState = 0;
    this.bufferedAmount = 0;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }
  send(text) {
    const f = JSON.parse(text);
    FakeV1.sent.push(f);
    const reply = (g) => setTimeout(() => this.onmessage?.({ data: JSON.stringify(g) }));
    if (f.type === "call") reply({ type: "error", id: f.id, code: "bad_request", message: 'unknown frame type "call"' });
    if (f.type === "takedown") {
      reply({ type: "ack", id: f.id, correlation_id: "c-1" });
      reply({ type: "result", id: f.id, correlation_id: "c-1", status: "confirmed", event: { specversion: "1.0", id: "e", source: "/s", type: "takedown.confirmed" } });
    }
  }
  close() {
    this.readyState = 3;
  }
}

test("against a v1 node, a takedowns call goes as the v1 takedown frame, with its key", async () => {
  const sb = new Client("http://v1.invalid", { WebSocket: /** @type {any} */ (FakeV1), token: "t" });
  try {
    const res = await sb.call("takedowns", { item_id: "item-1", reason: "scam", authority_ref: "A-1" }, { idempotencyKey: "k-v1" });
    assert.equal(res.status, "confirmed");
    assert.equal(res.correlation_id, "c-1");
    assert.equal(sb.v1, true);
    const again = await sb.call("takedowns", { item_id: "item-2", reason: "scam" });
    assert.equal(again.status, "confirmed");
    assert.deepEqual(FakeV1.dialed, [{ url: "ws://v1.invalid/v1/ws?access_token=t&pack=1", protocol: "switchboard.v1" }]);
    const types = FakeV1.sent.map((f) => f.type);
    assert.deepEqual(types, ["call", "takedown", "takedown"]);
    assert.deepEqual(FakeV1.sent[1], { type: "takedown", id: FakeV1.sent[0].id, item_id: "item-1", reason: "scam", authority_ref: "A-1", idempotency_key: "k-v1" });
  } finally {
    sb.close();
  }
});

test("subscribe, then resume after dropped connections: every event once, in order", async () => {
  let tokenCalls = 0;
  const states = [];
  const t0 = Date.now();
  const sb = new Client(URL_, { ...fast, token: async () => (tokenCalls++, TOKEN), onState: (s) => (states.push(s), process.env.SB_DEBUG && console.log("state", s, Date.now() - t0)) });
  try {
    const got = [];
    const sub = sb.subscribe("item:sdk-order", {
      onEvent: (ev, f) => {
        assert.equal(f.type, "event");
        assert.equal(f.channel, "item:sdk-order");
        assert.equal(typeof f.cursor, "string");
        assert.equal(ev.specversion, "1.0");
        assert.equal(ev.type, "item.reported");
        assert.equal(ev.subject, "sdk-order");
        assert.equal(ev.data.item_id, "sdk-order");
        got.push(ev.id);
      },
    });
    await sub.ready;
    assert.equal(sb.state, "open");
    const want = range("ord", 1, 5);
    await produce("sdk-order", want);
    await until("the first events", () => got.length >= want.length);
    assert.deepEqual(got, want);

    // The server drops the connection while new ones wait; events produced
    // meanwhile arrive once each after the resume.
    await control("/pause");
    await control("/cut");
    await until("reconnecting", () => sb.state === "reconnecting");
    const missed = range("ord", 6, 10);
    await produce("sdk-order", missed);
    want.push(...missed);
    await control("/resume");
    await until("the missed events", () => got.length >= want.length);
    const marker = range("ord", 16, 1);
    await produce("sdk-order", marker);
    want.push(...marker);
    await until("a live event after the resume", () => got.includes(marker[0]));
    assert.deepEqual(got, want);

    // Cuts while events flow.
    let n = 17;
    for (let round = 0; round < 4; round++) {
      const batch = range("ord", n, 4);
      n += 4;
      want.push(...batch);
      await produce("sdk-order", batch, false);
      await control("/cut");
      await new Promise((r) => setTimeout(r, 30));
    }
    const last = range("ord", n, 1);
    await produce("sdk-order", last);
    want.push(...last);
    await until("every event after the cuts", () => got.includes(last[0]));
    assert.deepEqual(got, want);
    // The token function ran for every connection.
    assert.ok(tokenCalls >= 3, `token function called ${tokenCalls} times`);
    assert.ok(sub.cursor, "the subscription has a cursor");
    assert.ok(states.includes("reconnecting") && states.at(-1) === "open", states.join(","));
  } finally {
    sb.close();
  }
  assert.equal(sb.state, "closed");
});

test("a cursor resumes a new client; gap when history cannot cover the absence", async () => {
  const got = [];
  const gaps = [];
  const sb = new Client(URL_, { ...fast, token: TOKEN, pack: false }); // one frame per message here
  try {
    const sub = sb.subscribe("item:sdk-gap", { onEvent: (ev) => got.push(ev.id), onGap: (f) => gaps.push(f.channel) });
    await sub.ready;
    await produce("sdk-gap", ["gap-001", "gap-002"]);
    await until("the first events", () => got.length >= 2);
    await control("/pause");
    await control("/cut");
    await until("reconnecting", () => sb.state === "reconnecting");
    await produce("sdk-gap", range("gap", 3, 30)); // more than the 20 history keeps
    await control("/resume");
    await until("the gap", () => gaps.length > 0);
    assert.deepEqual(gaps, ["item:sdk-gap"]);
    await produce("sdk-gap", ["gap-100"]);
    await until("a live event after the gap", () => got.includes("gap-100"));
    assert.equal(new Set(got).size, got.length, "no duplicate: " + got);
    assert.deepEqual(got.slice(0, 2), ["gap-001", "gap-002"]);

    // A new client with the last cursor gets what came after it, once.
    const cursor = sub.cursor;
    await produce("sdk-gap", ["gap-101", "gap-102"]);
    await until("the later events", () => got.includes("gap-102"));
    const again = [];
    const other = new Client(DIRECT, { ...fast, token: TOKEN });
    try {
      other.subscribe("item:sdk-gap", { cursor, onEvent: (ev) => again.push(ev.id) });
      await until("the events after the cursor", () => again.length >= 2);
      await produce("sdk-gap", ["gap-103"]);
      await until("a live event", () => again.includes("gap-103"));
      assert.deepEqual(again, ["gap-101", "gap-102", "gap-103"]);
    } finally {
      other.close();
    }
  } finally {
    sb.close();
  }
});

test("1008: a token function that yields a new token reconnects; a fixed bad token stops", async () => {
  const tokens = ["not-a-token", TOKEN];
  let calls = 0;
  const sb = new Client(URL_, { ...fast, token: () => tokens[Math.min(calls++, tokens.length - 1)] });
  try {
    const sub = sb.subscribe("item:sdk-auth", {});
    await sub.ready;
    assert.equal(sb.state, "open");
    assert.ok(calls >= 2, `token function called ${calls} times`);
  } finally {
    sb.close();
  }

  let closed;
  let badCalls = 0;
  const bad = new Client(URL_, { ...fast, token: () => (badCalls++, "still-not-a-token"), onClose: (c) => (closed = c) });
  const sub = bad.subscribe("item:sdk-auth", {});
  await assert.rejects(sub.ready, (err) => err instanceof SwitchboardError && err.code === "closed");
  await until("closed", () => closed !== undefined);
  assert.equal(closed.code, 1008);
  assert.equal(bad.state, "closed");
  assert.equal(badCalls, 2, "asked once to connect and once after 1008");
  await assert.rejects(bad.call("takedowns", { item_id: "item-1", reason: "x" }), (err) => err.code === "closed");
});

test("a close code that is not transient (1009, a frame too big) stops the client", async () => {
  let closed;
  const sb = new Client(URL_, { ...fast, token: TOKEN, onClose: (c) => (closed = c) });
  const sub = sb.subscribe("item:sdk-big", {});
  await sub.ready;
  const big = sb.call("takedowns", { item_id: "item-1", reason: "x".repeat(70000) });
  await assert.rejects(big, (err) => err.code === "closed");
  assert.equal(closed.code, 1009);
  assert.equal(sb.state, "closed");
});

test("a handshake that hangs is given up and tried again", async () => {
  let calls = 0;
  await control("/pause");
  const sb = new Client(URL_, { ...fast, connectTimeout: 200, token: () => (calls++, TOKEN) });
  try {
    const sub = sb.subscribe("item:sdk-hang", {});
    await until("three attempts while the proxy holds them", () => calls >= 3);
    assert.equal(sb.state, "reconnecting");
    await control("/resume");
    await sub.ready;
    assert.equal(sb.state, "open");
  } finally {
    await control("/resume");
    sb.close();
  }
});

test("call: takedowns confirmed, not found, one command per idempotency key, across a reconnect", async () => {
  const sb = new Client(URL_, { ...fast, token: TOKEN });
  try {
    // Confirmed, with the progress on corr:<id>.
    let acked = "";
    const progress = [];
    const res = await sb.call(
      "takedowns",
      { item_id: "item-7", reason: "counterfeit" },
      { idempotencyKey: "sdk-key-1", onAck: (c) => (acked = c), onEvent: (ev) => progress.push(ev.type) },
    );
    assert.equal(res.status, "confirmed");
    assert.ok(res.correlation_id);
    assert.equal(acked, res.correlation_id);
    assert.equal(res.event.type, "takedown.confirmed");
    assert.equal(res.event.data.item_id, "item-7");
    assert.ok(Array.isArray(res.event.data.removed_from) && res.event.data.removed_from.length > 0);
    assert.ok(progress.includes("item.removed"), "progress: " + progress);

    // The same key again: the same takedown, answered from its record.
    const res2 = await sb.call("takedowns", { item_id: "item-7", reason: "counterfeit" }, { idempotencyKey: "sdk-key-1" });
    assert.equal(res2.correlation_id, res.correlation_id);
    assert.equal(res2.status, "confirmed");
    await control("/published-once?correlation_id=" + encodeURIComponent(res.correlation_id));

    // The same key with another body is refused.
    await assert.rejects(
      sb.call("takedowns", { item_id: "item-8", reason: "counterfeit" }, { idempotencyKey: "sdk-key-1" }),
      (err) => err instanceof SwitchboardError && err.code === "bad_request",
    );

    // An unknown item: rejected, not_found.
    const nf = await sb.call("takedowns", { item_id: "item-99999", reason: "scam" });
    assert.equal(nf.status, "rejected");
    assert.equal(nf.event.data.reason, "not_found");

    // A bad command: an error, the connection stays.
    await assert.rejects(sb.call("takedowns", { item_id: "", reason: "x" }), (err) => err.code === "bad_request");

    // The connection drops after the ack: the call is sent again with its
    // key on the next connection and resolves once, with one command.
    let cut = false;
    const across = await sb.call(
      "takedowns",
      { item_id: "item-9", reason: "scam" },
      {
        onAck: () => {
          if (!cut) {
            cut = true;
            control("/cut");
          }
        },
      },
    );
    assert.ok(cut);
    assert.equal(across.status, "confirmed");
    await control("/published-once?correlation_id=" + encodeURIComponent(across.correlation_id));

    // Calls in flight are bounded.
    const small = new Client(URL_, { ...fast, token: TOKEN, maxPendingCalls: 1 });
    try {
      const first = small.call("takedowns", { item_id: "item-10", reason: "scam" });
      await assert.rejects(small.call("takedowns", { item_id: "item-11", reason: "scam" }), (err) => err.code === "overloaded");
      assert.equal((await first).status, "confirmed");
    } finally {
      small.close();
    }

    // A partner calls takedowns too, and follows its own corr: channel.
    const partner = new Client(URL_, { ...fast, token: env("SB_PARTNER_TOKEN") });
    try {
      let corr = "";
      const pr = await partner.call("takedowns", { item_id: "item-14", reason: "scam" }, { onAck: (c) => (corr = c) });
      assert.equal(pr.status, "confirmed");
      assert.equal(pr.correlation_id, corr);
      const seen = [];
      const own = partner.subscribe("corr:" + corr, { from: "oldest", onEvent: (ev) => seen.push(ev.type) });
      await own.ready;
      await until("its takedown's events", () => seen.includes("takedown.confirmed"));
      await assert.rejects(partner.subscribe("takedowns", {}).ready, (err) => err.code === "forbidden");
    } finally {
      partner.close();
    }

    // An aborted wait rejects at once.
    const ac = new AbortController();
    const p = sb.call("takedowns", { item_id: "item-12", reason: "scam" }, { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, (err) => err.code === "aborted");

    await sb.ping();
    // A node that knows the call frame got it (no fallback to the v1 frame).
    assert.equal(sb.v1, process.env.SB_CALL_FRAME !== "1");
  } finally {
    sb.close();
  }
});

test("callHTTP and statusHTTP: a synchronous command over POST /v1/<name>", async () => {
  const res = await callHTTP(DIRECT, "takedowns", { item_id: "item-13", reason: "court order" }, { token: TOKEN, idempotencyKey: "sdk-http-1", wait: 20 });
  assert.equal(res.status, 200);
  assert.equal(res.body.status, "confirmed");
  const again = await callHTTP(DIRECT, "takedowns", { item_id: "item-13", reason: "court order" }, { token: TOKEN, idempotencyKey: "sdk-http-1" });
  assert.equal(again.body.correlation_id, res.body.correlation_id);
  const nf = await callHTTP(DIRECT, "takedowns", { item_id: "item-99998", reason: "court order" }, { token: () => TOKEN });
  assert.equal(nf.status, 404);
  assert.equal(nf.body.correlation_id !== undefined, true);
  const st = await statusHTTP(DIRECT, "takedowns", res.body.correlation_id, { token: TOKEN });
  assert.equal(st.status, 200);
  assert.equal(st.body.status, "confirmed");
  const unauth = await callHTTP(DIRECT, "takedowns", { item_id: "item-13", reason: "x" }, {});
  assert.equal(unauth.status, 401);
});
