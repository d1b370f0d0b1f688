// Broadcast cursors (src/storage.ts).
import assert from "node:assert/strict";
import test from "node:test";
import { maxId } from "../../dist/storage.js";

test("broadcast cursors compare as 64-bit numbers, not as text or doubles", () => {
  assert.equal(maxId("385601934519717891", "385601934519717900"), "385601934519717900");
  assert.equal(maxId("99", "100"), "100");
});
