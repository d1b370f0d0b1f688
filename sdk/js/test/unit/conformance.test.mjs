// The SDK against the language-neutral vectors of conformance/ (at the repository's top;
// conformance/README.md says what each file pins): packets and BATCH as hex, invalid input,
// close code -> decision, RECONNECT -> candidates, backoff sequences and policies.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";
import { backoffOf, delayMs } from "../../dist/backoff.js";
import { closeAction, ending } from "../../dist/close.js";
import { ProtocolError } from "../../dist/errors.js";
import { fields, text } from "../../dist/pb.js";
import * as protocol from "../../dist/protocol.js";
import { candidates } from "../../dist/route.js";
import { decode, encode, Op } from "../../dist/wire.js";

const DIR = new URL("../../../../conformance/", import.meta.url);
const load = (name) => JSON.parse(readFileSync(new URL(`${name}.json`, DIR), "utf8"));
const vectors = (file, section) => load(file)[section];

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const bytes = (text) => new Uint8Array(Buffer.from(text, "hex"));
const KINDS = { unicast: "UNICAST", topic: "TOPIC", broadcast: "BROADCAST" };
const OUTCOMES = { delivered: "DELIVERED", rejected: "REJECTED", failed: "FAILED" };

/** A room packet as this SDK reads it, in the vectors' JSON form (.proto names, every field). */
function asVector(event) {
  switch (event.type) {
    case "pushed": {
      const m = event.message;
      return { id: m.id, app: m.app, data: hex(m.data), created_ms: String(m.createdMs),
               kind: KINDS[m.kind], topic: m.topic };
    }
    case "authed": {
      const r = event.reply;
      return { session_id: r.sessionId, heartbeat_s: r.heartbeatS, resume_token: r.resumeToken,
               room: r.room, resumed: r.resumed };
    }
    case "kicked": return { code: event.code, reason: event.reason };
    case "moved": return { endpoints: event.endpoints, after_ms: event.afterMs, reason: event.reason };
    case "failed": return { code: event.code, message: event.message, fatal: event.fatal };
    case "replied": return replyBody(event.op, event.body);
  }
}

function replyBody(op, body) {
  if (op === Op.UP_REPLY) {
    const r = protocol.upReplyOf(body);
    return { outcome: OUTCOMES[r.outcome], status: r.status, detail: r.detail };
  }
  if (op === Op.BIND_REPLY || op === Op.UNBIND_REPLY) {
    const app = [...fields(body)].filter((f) => f.field === 1).map((f) => text(f.bytes)).pop() ?? "";
    return { app, topics: protocol.bindReplyOf(body) };     // the SDK itself needs the topics only
  }
  return null;             // HEARTBEAT_REPLY: no body
}

/** A client packet built with this SDK's builders from a vector's fields. */
function build(vector) {
  const b = vector.body;
  switch (vector.op_name) {
    case "HEARTBEAT": return protocol.heartbeat(vector.seq);
    case "AUTH": return protocol.auth(vector.seq, { app: b.app, uid: b.uid, device: b.device, token: b.token,
      heartbeatS: b.heartbeat_s, resume: b.resume, broadcastCursor: b.broadcast_cursor, net: b.net });
    case "ACK": return vector.seq === 0 ? protocol.ack(b.app, b.ids) : undefined;
    case "UP": return protocol.up(vector.seq, b.app, b.type, bytes(b.body));
    case "BIND": return protocol.bind(vector.seq, b.app, b.token, b.topics, b.broadcast_cursor);
    case "UNBIND": return b.token || b.broadcast_cursor !== "0" ? undefined : protocol.unbind(vector.seq, b.app, b.topics);
    default: return undefined;
  }
}

test("ops are numbered as the vectors say", () => {
  for (const [name, op] of Object.entries(load("packets").ops)) assert.equal(Op[name], op.op, name);
});

for (const vector of [...vectors("packets", "packets"),
                      ...vectors("packets", "batches").flatMap((b) => b.packets)]) {
  test(`packet ${vector.name}: header and body read as given`, () => {
    const [packet] = decode(bytes(vector.hex));
    assert.deepEqual([packet.op, packet.seq, packet.ver, hex(packet.body)],
                     [vector.op, vector.seq, vector.ver, vector.body_hex]);
    if (vector.from === "room") {
      assert.deepEqual(asVector(protocol.events(bytes(vector.hex))[0]), vector.body);
    }
  });
  if (vector.from === "client" && vector.canonical) {
    const built = build(vector);
    test(`packet ${vector.name}: built byte for byte`, { skip: built ? false : "no builder for it" },
         () => assert.equal(hex(built), vector.hex));
  }
}

for (const vector of vectors("packets", "batches")) {
  test(`batch ${vector.name}: its packets in order`, () => {
    const packets = decode(bytes(vector.hex));
    assert.deepEqual(packets.map((p) => [p.op, p.seq, hex(p.body)]),
                     vector.packets.map((p) => [p.op, p.seq, p.body_hex]));
  });
}

for (const vector of vectors("packets", "invalid").filter((v) => v.client)) {
  test(`invalid ${vector.name}: refused with ${vector.client.error}`, () => {
    assert.throws(() => protocol.events(bytes(vector.hex)),
                  (error) => error instanceof ProtocolError && error.code === vector.client.code);
  });
}

for (const vector of vectors("close_codes", "codes")) {
  test(`close ${vector.code} ${vector.name}: ${vector.decision}`, () => {
    assert.equal(closeAction(vector.code, true), vector.decision);
    assert.equal(closeAction(vector.code, false), vector.decision_without_token_callback);
  });
}

for (const vector of vectors("close_codes", "decisions")) {
  test(`ending ${vector.name}: ${vector.decision}`, () => {
    assert.deepEqual(ending(vector.close_code, vector.kick, vector.token_callback),
                     { decision: vector.decision, reportedCode: vector.reported_code });
  });
}

for (const vector of vectors("close_codes", "reconnect")) {
  test(`RECONNECT ${vector.name}: where and when`, () => {
    const [event] = protocol.events(bytes(vector.packet_hex));
    assert.deepEqual(asVector(event), vector.reconnect);
    assert.equal(event.afterMs, vector.delay_ms);
    assert.deepEqual(candidates(event.endpoints, vector.route_endpoints, vector.last_good, new Set(vector.failed)),
                     vector.candidates);
  });
}

for (const vector of vectors("backoff", "sequences")) {
  test(`backoff ${vector.name}`, () => {
    const policy = backoffOf(vector.policy);
    for (const step of vector.steps) {
      const delay = delayMs(policy, step.attempt, () => step.draw);
      assert.ok(Math.abs(delay - step.delay_ms) <= 1e-6, `attempt ${step.attempt}: ${delay} != ${step.delay_ms}`);
    }
  });
}

for (const vector of vectors("backoff", "policies")) {
  test(`backoff policy ${vector.name}: ${vector.valid ? "valid" : "refused"}`, () => {
    if (!vector.valid) return assert.throws(() => backoffOf(vector.json), ProtocolError);
    const p = backoffOf(vector.json);
    assert.deepEqual({ base_ms: p.baseMs, factor: p.factor, jitter: p.jitter, max_ms: p.maxMs }, vector.policy);
  });
}

test("the default policy is the vectors'", () => {
  const p = backoffOf({});
  const d = load("backoff").default_policy;
  assert.deepEqual({ base_ms: p.baseMs, factor: p.factor, jitter: p.jitter, max_ms: p.maxMs }, d);
});
