// Backoff, dedupe and close-code decisions (src/backoff.ts, src/seen.ts, src/close.ts, src/route.ts).
import assert from "node:assert/strict";
import test from "node:test";
import { backoffOf, DEFAULT_BACKOFF, delayMs } from "../../dist/backoff.js";
import { closeAction } from "../../dist/close.js";
import { ProtocolError } from "../../dist/errors.js";
import { errorOf, hostport, routeOf, routeUrl } from "../../dist/route.js";
import { Seen } from "../../dist/seen.js";
import { maxId } from "../../dist/storage.js";

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

test("close codes: 40xx and drops reconnect, 4101 renews, other 41xx stop", () => {
  assert.deepEqual([1000, 1006, 4000, 4003, 4099].map(closeAction), Array(5).fill("reconnect"));
  assert.equal(closeAction(4101), "renew_token");
  assert.equal(closeAction(4101, false), "stop");      // no token callback
  assert.deepEqual([4100, 4102, 4106, 4199].map(closeAction), Array(4).fill("stop"));
});

test("dedupe: a copy is reported once seen, and the oldest is forgotten first", () => {
  const seen = new Seen(2);
  assert.equal(seen.add("demo", "1"), true);
  assert.equal(seen.add("demo", "1"), false);
  assert.equal(seen.add("other", "1"), true);       // per app
  seen.advance("demo", "1", "acked");
  assert.equal(seen.add("demo", "1"), false);       // refreshed: now the newest
  assert.equal(seen.add("demo", "2"), true);        // forgets ("other", "1")
  assert.equal(seen.stage("other", "1"), undefined);
  assert.equal(seen.stage("demo", "1"), "acked");
  assert.equal(seen.size, 2);
  seen.forget("demo", "1");
  assert.equal(seen.add("demo", "1"), true);        // handed out again
});

test("route requests report failed endpoints as host:port and the attempt", () => {
  const url = new URL(routeUrl("https://d.example/", { app: "demo", uid: "u 1", net: "cell",
    failed: ["wss://r1:443/", "r2:80", "ws://r1:443"], attempt: 3 }));
  assert.equal(url.pathname, "/v1/route");
  assert.deepEqual(Object.fromEntries(url.searchParams),
                   { app: "demo", uid: "u 1", net: "cell", failed: "r1:443,r2:80", attempt: "3" });
  assert.equal(hostport("wss://push.example.com:443"), "push.example.com:443");
});

test("route replies and errors are read as the dispatcher sends them", () => {
  const route = routeOf({ endpoints: ["ws://a/"], ttl_s: 60, heartbeat: { min_s: 30, max_s: 600, default_s: 240 } });
  assert.deepEqual(route.heartbeat, { defaultS: 240, minS: 30, maxS: 600 });
  assert.equal(route.backoff, DEFAULT_BACKOFF);
  assert.throws(() => routeOf({ endpoints: [] }), ProtocolError);
  assert.equal(errorOf(404, { error: { code: 1006, message: "unknown app" } }).name, "NotFound");
  assert.equal(errorOf(503, {}).name, "Unavailable");
});

test("broadcast cursors compare as 64-bit numbers, not as text or doubles", () => {
  assert.equal(maxId("385601934519717891", "385601934519717900"), "385601934519717900");
  assert.equal(maxId("99", "100"), "100");
});
