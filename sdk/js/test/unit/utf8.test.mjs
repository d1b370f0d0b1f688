// The portable UTF-8 codec (src/utf8.ts, for platforms without TextDecoder) agrees with the
// platform's, and refuses what a strict decoder refuses.
import assert from "node:assert/strict";
import test from "node:test";
import { decodeUtf8Portable, encodeUtf8Portable } from "../../dist/utf8.js";
import { ProtocolError } from "../../dist/errors.js";

const SAMPLES = ["", "demo", "é", "€100", "日本語", "emoji 😀 ok", "\u0000\u007f\u0080\u07ff\u0800\uffff", "\u{10ffff}",
                 "lone \ud800 surrogate"];

test("encodes as TextEncoder does", () => {
  for (const sample of SAMPLES) assert.deepEqual(encodeUtf8Portable(sample), new TextEncoder().encode(sample), sample);
});

test("decodes what it encodes", () => {
  for (const sample of SAMPLES) {
    assert.equal(decodeUtf8Portable(new TextEncoder().encode(sample)), new TextDecoder().decode(new TextEncoder().encode(sample)));
  }
});

for (const [name, bytes] of [["a lone continuation byte", [0x80]], ["a truncated sequence", [0xe6, 0x97]],
                             ["an overlong slash", [0xc0, 0xaf]], ["a surrogate", [0xed, 0xa0, 0x80]],
                             ["above U+10FFFF", [0xf4, 0x90, 0x80, 0x80]], ["0xff", [0xff]]]) {
  test(`refuses ${name}`, () => {
    assert.throws(() => new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(bytes)));
    assert.throws(() => decodeUtf8Portable(new Uint8Array(bytes)), ProtocolError);
  });
}
