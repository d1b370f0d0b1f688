// The packet codec (src/wire.ts) against docs/protocol.md §2.
import assert from "node:assert/strict";
import test from "node:test";
import { decode, encode, encodeBatch, Op, readPacket } from "../../dist/wire.js";
import { ProtocolError } from "../../dist/errors.js";

const hex = (bytes) => Buffer.from(bytes).toString("hex");

test("a packet is a 16-byte big-endian header then the body", () => {
  const packet = encode(Op.HEARTBEAT, 7, new Uint8Array([0xaa, 0xbb]));
  assert.equal(hex(packet), "00000012" + "0010" + "0001" + "00000002" + "00000007" + "aabb");
  assert.deepEqual(decode(packet), [{ op: 2, seq: 7, ver: 1, body: new Uint8Array([0xaa, 0xbb]) }]);
});

test("a BATCH is flattened; its packets keep their order", () => {
  const batch = encodeBatch([encode(Op.PUSH, 0, new Uint8Array([1])), encode(Op.HEARTBEAT_REPLY, 3)]);
  assert.deepEqual(decode(batch).map((p) => [p.op, p.seq, hex(p.body)]), [[9, 0, "01"], [3, 3, ""]]);
});

test("a longer header is skipped; the version is reported as found", () => {
  const packet = Buffer.from("00000015" + "0014" + "0002" + "00000003" + "00000001" + "deadbeef" + "ff", "hex");
  const [read, end] = readPacket(new Uint8Array(packet), 0);
  assert.equal(end, 21);
  assert.equal(read.ver, 2);
  assert.equal(hex(read.body), "ff");
});

for (const [name, bytes, message] of [
  ["truncated header", "00000010000100", "truncated packet header"],
  ["header length below 16", "00000010000f0001000000020000000000", "bad header length"],
  ["packLen below headerLen", "0000000f001000010000000200000000", "bad header length"],
  ["truncated body", "00000014001000010000000200000000aa", "truncated packet body"],
  ["unknown op", "00000010001000010000006300000000", "unknown op 99"],
  ["bytes after the packet", "0000001000100001000000020000000000", "1 bytes after the packet"],
  ["nested BATCH", "00000030001000010000000b00000000" + "00000020001000010000000b00000000" +
    "00000010001000010000000200000000", "nested BATCH"],
]) {
  test(`refused: ${name}`, () => {
    assert.throws(() => decode(new Uint8Array(Buffer.from(bytes, "hex"))),
                  (error) => error instanceof ProtocolError && error.code === 1002 && error.message.startsWith(message));
  });
}
