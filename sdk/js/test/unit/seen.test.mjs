// Dedupe by id (src/seen.ts).
import assert from "node:assert/strict";
import test from "node:test";
import { Seen } from "../../dist/seen.js";

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
