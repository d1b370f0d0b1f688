// Close codes -> what the client does (src/close.ts, docs/protocol.md §7).
import assert from "node:assert/strict";
import test from "node:test";
import { closeAction } from "../../dist/close.js";

test("close codes: 40xx and drops reconnect, 4101 renews, other 41xx stop", () => {
  assert.deepEqual([1000, 1006, 4000, 4003, 4099].map(closeAction), Array(5).fill("reconnect"));
  assert.equal(closeAction(4101), "renew_token");
  assert.equal(closeAction(4101, false), "stop");      // no token callback
  assert.deepEqual([4100, 4102, 4106, 4199].map(closeAction), Array(4).fill("stop"));
});
