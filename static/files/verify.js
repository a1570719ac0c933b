// An outcome event on a channel says what its producer claims; only the
// server's outcome store says what a takedown is. The store changes only on
// outcomes it trusts (from the declared outcome topic, a trusted source, a
// correlation ID this deployment published, about that takedown's item), so
// the page treats an outcome event as a reason to ask, never as the answer.
//
// Verifier asks GET /v1/takedowns/{correlation_id} at most once at a time
// per takedown; events that arrive meanwhile cause one more read after it.

import { statusHTTP } from "/v1/sdk/switchboard.js";

const OUTCOMES = new Set(["item.removed", "takedown.confirmed", "takedown.rejected"]);

/** @param {string} type */
export function isOutcome(type) {
  return OUTCOMES.has(type);
}

/**
 * The state of a takedown as the server keeps it.
 * @typedef {{correlation_id: string, item_id: string, status: "pending"|"confirmed"|"rejected",
 *            removed_from: string[], confirmed_at?: string, reason?: string}} TakedownState
 */

/** @param {any} v @returns {string[]} */
export function strings(v) {
  return Array.isArray(v) ? v.filter((s) => typeof s === "string") : [];
}

export class Verifier {
  /**
   * @param {(corr: string, state: TakedownState) => void} onState called with
   *   each state read; not called for a correlation ID the server does not know.
   */
  constructor(onState) {
    this.onState = onState;
    /** @type {Map<string, {again: boolean}>} */
    this.inFlight = new Map();
  }

  /** @param {string} corr */
  check(corr) {
    if (!corr) return;
    const f = this.inFlight.get(corr);
    if (f) {
      f.again = true;
      return;
    }
    const flight = { again: false };
    this.inFlight.set(corr, flight);
    this.read(corr).finally(() => {
      this.inFlight.delete(corr);
      if (flight.again) this.check(corr);
    });
  }

  /** @param {string} corr */
  async read(corr) {
    let res;
    try {
      // The SDK's HTTP status read; the session cookie goes with it.
      res = await statusHTTP(location.origin, "takedowns", corr);
    } catch {
      return; // offline: the next event, or the stream's resume, asks again
    }
    if (res.status !== 200) return; // 404: not a takedown of this deployment
    const st = res.body;
    if (!st || typeof st !== "object" || typeof st.status !== "string") return;
    st.removed_from = strings(st.removed_from);
    this.onState(corr, st);
  }
}
