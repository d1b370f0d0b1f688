// Packet bodies (src/pb.ts, src/protocol.ts): 64-bit ids stay exact, unknown fields skipped.
import assert from "node:assert/strict";
import test from "node:test";
import * as protocol from "../../dist/protocol.js";
import { Writer } from "../../dist/pb.js";
import { decode, encode, Op } from "../../dist/wire.js";
import { ProtocolError } from "../../dist/errors.js";

const BIG = "385601934519717891";     // the id a double turns into …900 (issue #12)

test("a PUSH id above 2**53 arrives exact, as a string", () => {
  const body = new Writer().uint(1, BigInt(BIG)).string(2, "demo").bytesField(3, new Uint8Array([104, 105]))
    .uint(4, 1767225600123n).uint(5, 2).string(6, "").finish();
  const [event] = protocol.events(encode(Op.PUSH, 0, body));
  assert.deepEqual(event, { type: "pushed", message: {
    id: BIG, app: "demo", data: new Uint8Array([104, 105]), createdMs: 1767225600123, kind: "broadcast", topic: "" } });
});

test("an ACK carries the exact ids, packed", () => {
  const [packet] = decode(protocol.ack("demo", [BIG, "1", "18446744073709551615"]));
  assert.equal(packet.op, Op.ACK);
  assert.deepEqual(protocol.ackOf(packet.body), { app: "demo", ids: [BIG, "1", "18446744073709551615"] });
  assert.equal(Buffer.from(packet.body).toString("hex").slice(0, 14), "0a0464656d6f12");   // app, then field 2 LEN
});

test("AUTH encodes every field in field order; defaults are left out", () => {
  const [packet] = decode(protocol.auth(5, { app: "a", uid: "u", device: "", token: "t", heartbeatS: 0,
                                             resume: "", broadcastCursor: BIG, net: "wifi" }));
  assert.equal(packet.seq, 5);
  const expected = new Writer().string(1, "a").string(2, "u").string(4, "t").uint(7, BigInt(BIG))
    .string(8, "wifi").finish();
  assert.deepEqual(packet.body, expected);
});

test("fields this SDK does not know are skipped", () => {
  const body = new Writer().string(1, "s1").uint(2, 45).string(9, "future").uint(5, 1).finish();
  const [event] = protocol.events(encode(Op.AUTH_REPLY, 1, body));
  assert.deepEqual(event.reply, { sessionId: "s1", heartbeatS: 45, resumeToken: "", room: "", resumed: true });
});

test("RECONNECT, KICK, ERROR and UP_REPLY decode", () => {
  const move = new Writer().string(1, "ws://a/").string(1, "ws://b/").uint(2, 250).string(3, "drain").finish();
  assert.deepEqual(protocol.events(encode(Op.RECONNECT, 0, move))[0],
                   { type: "moved", endpoints: ["ws://a/", "ws://b/"], afterMs: 250, reason: "drain" });
  const kick = new Writer().uint(1, 4102).string(2, "bye").finish();
  assert.deepEqual(protocol.events(encode(Op.KICK, 0, kick))[0], { type: "kicked", code: 4102, reason: "bye" });
  const error = new Writer().uint(1, 1006).string(2, "no").bool(3, true).finish();
  assert.deepEqual(protocol.events(encode(Op.ERROR, 9, error))[0],
                   { type: "failed", seq: 9, code: 1006, message: "no", fatal: true });
  assert.deepEqual(protocol.upReplyOf(new Writer().uint(1, 1).uint(2, 404).finish()),
                   { outcome: "rejected", status: 404, detail: "" });
});

for (const [name, body] of [
  ["a truncated varint", [0x08, 0xff]],
  ["a string longer than the body", [0x0a, 0x05, 0x61]],
  ["a string where a number belongs", [0x12, 0x01, 0x61]],
  ["a string that is not UTF-8", [0x0a, 0x01, 0xff]],
]) {
  test(`a bad body is a ProtocolError: ${name}`, () => {
    assert.throws(() => protocol.events(encode(Op.AUTH_REPLY, 1, new Uint8Array(body))), ProtocolError);
  });
}

test("a client op from the room is refused", () => {
  assert.throws(() => protocol.events(encode(Op.AUTH, 1)), /not a room op/);
});
