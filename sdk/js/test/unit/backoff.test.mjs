// The reconnect backoff (src/backoff.ts): the route's policy, parsed and applied.
import assert from "node:assert/strict";
import test from "node:test";
import { backoffOf, DEFAULT_BACKOFF, delayMs } from "../../dist/backoff.js";
import { ProtocolError } from "../../dist/errors.js";

test("backoff grows by the factor, is capped, and jitter spreads it both ways", () => {
  const nominal = [0, 1, 2, 3, 7, 8, 200].map((a) => delayMs(DEFAULT_BACKOFF, a, () => 0.5));
  assert.deepEqual(nominal, [500, 1000, 2000, 4000, 60_000, 60_000, 60_000]);
  assert.equal(delayMs(DEFAULT_BACKOFF, 1, () => 0), 500);
  assert.equal(delayMs(DEFAULT_BACKOFF, 1, () => 0.75), 1250);
  assert.equal(delayMs(DEFAULT_BACKOFF, 10, () => 0.999), 60_000);     // never above max_ms
  assert.equal(delayMs({ baseMs: 0, factor: 2, jitter: 0.5, maxMs: 0 }, 5000, () => 0.5), 0);
});

test("a route's backoff policy is parsed and checked", () => {
  assert.deepEqual(backoffOf({ base_ms: 100 }), { ...DEFAULT_BACKOFF, baseMs: 100 });
  for (const bad of [{ factor: 0.5 }, { jitter: 2 }, { base_ms: "x" }, { base_ms: 10, max_ms: 5 }]) {
    assert.throws(() => backoffOf(bad), ProtocolError);
  }
});
