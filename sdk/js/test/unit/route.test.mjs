// Route requests and replies (src/route.ts, docs/api.md §1.1).
import assert from "node:assert/strict";
import test from "node:test";
import { DEFAULT_BACKOFF } from "../../dist/backoff.js";
import { ProtocolError } from "../../dist/errors.js";
import { errorOf, hostport, routeOf, routeUrl } from "../../dist/route.js";

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
