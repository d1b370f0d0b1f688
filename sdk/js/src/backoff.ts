/**
 * Reconnect backoff: the policy the dispatcher hands out in every route reply (docs/api.md
 * §1.1), as sdk/python/pushwire_sdk/backoff.py:
 *
 *     delay(attempt) = min(maxMs, baseMs * factor**attempt) * (1 ± jitter), capped at maxMs
 *
 * Jitter spreads the reconnects of many clients that lost the same room at the same moment.
 * Pure: the random source is passed in.
 */

import { ProtocolError } from "./errors.js";

export interface Backoff {
  baseMs: number;
  factor: number;
  /** ± this fraction of each delay */
  jitter: number;
  maxMs: number;
}

/** The dispatcher's defaults, used before any route reply has been seen. */
export const DEFAULT_BACKOFF: Backoff = Object.freeze({ baseMs: 500, factor: 2, jitter: 0.5, maxMs: 60_000 });

/** The `backoff` object of a route reply; ProtocolError when a field is unusable. */
export function backoffOf(raw: Record<string, unknown>): Backoff {
  const policy = { baseMs: field(raw, "base_ms", DEFAULT_BACKOFF.baseMs, true),
                   factor: field(raw, "factor", DEFAULT_BACKOFF.factor, false),
                   jitter: field(raw, "jitter", DEFAULT_BACKOFF.jitter, false),
                   maxMs: field(raw, "max_ms", DEFAULT_BACKOFF.maxMs, true) };
  if (policy.baseMs < 0 || policy.factor < 1 || !(policy.jitter >= 0 && policy.jitter <= 1)
      || policy.maxMs < policy.baseMs) {
    throw new ProtocolError("bad backoff policy in route reply");
  }
  return policy;
}

/** One field: absent takes the default; a number, or a decimal text (`"300"`) as Python reads it. */
function field(raw: Record<string, unknown>, key: string, fallback: number, integer: boolean): number {
  const value = raw[key];
  if (value === undefined) return fallback;
  const pattern = integer ? /^\s*[+-]?\d+\s*$/ : /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;
  const number = typeof value === "number" ? value : typeof value === "string" && pattern.test(value)
    ? Number(value) : NaN;
  if (!Number.isFinite(number)) throw new ProtocolError("bad backoff policy in route reply");
  return integer ? Math.trunc(number) : number;
}

/** The delay before reconnect `attempt` (0 first), in ms; `rand()` in [0, 1), 0.5 nominal. */
export function delayMs(policy: Backoff, attempt: number, rand: () => number = Math.random): number {
  const growth = policy.factor ** Math.max(attempt, 0);          // Infinity once far past maxMs
  const nominal = policy.baseMs ? Math.min(policy.maxMs, policy.baseMs * growth) : 0;
  const jittered = nominal * (1 + policy.jitter * (2 * rand() - 1));
  return Math.min(Math.max(jittered, 0), policy.maxMs);
}
