/**
 * The client side of docs/protocol.md, sans-I/O, as sdk/python/pushwire_sdk/protocol.py:
 * `events(message)` turns one binary WebSocket message from the room into events, the
 * builders return whole packets. No socket, no clock: client.ts is the shell around it.
 *
 * Bodies are the messages of proto/pushwire/wire.proto (field numbers below); message ids
 * and broadcast cursors are uint64 and stay decimal strings here, never numbers.
 */

import { ProtocolError } from "./errors.js";
import { fields, packedVarints, text, Writer } from "./pb.js";
import { decode, encode, Op, type Packet } from "./wire.js";

export const SUBPROTOCOL = "pushwire.v1";

export type Kind = "unicast" | "topic" | "broadcast";
const KINDS: Kind[] = ["unicast", "topic", "broadcast"];

/** One push as the application sees it. `id` is a decimal string: ids exceed 2**53. */
export interface Message {
  id: string;
  app: string;
  data: Uint8Array;
  kind: Kind;
  topic: string;
  createdMs: number;
}

export interface AuthRequest {
  app: string;
  uid: string;
  device: string;
  token: string;
  heartbeatS: number;
  resume: string;
  broadcastCursor: string;
  net: string;
}

export interface AuthReply {
  sessionId: string;
  heartbeatS: number;
  resumeToken: string;
  room: string;
  resumed: boolean;
}

/** What became of an UP: the webhook's outcome and HTTP status (docs/protocol.md §6). */
export interface UpReply {
  outcome: "delivered" | "rejected" | "failed";
  status: number;
  detail: string;
}
const OUTCOMES: UpReply["outcome"][] = ["delivered", "rejected", "failed"];

/** What the room said; replies carry the seq of their request (§3). */
export type Event =
  | { type: "authed"; seq: number; reply: AuthReply }
  | { type: "pushed"; message: Message }
  | { type: "replied"; op: number; seq: number; body: Uint8Array }
  | { type: "kicked"; code: number; reason: string }
  | { type: "moved"; endpoints: string[]; afterMs: number; reason: string }
  | { type: "failed"; seq: number; code: number; message: string; fatal: boolean };

const REPLIES = new Set<number>([Op.HEARTBEAT_REPLY, Op.UP_REPLY, Op.BIND_REPLY, Op.UNBIND_REPLY]);

/** The events of one binary message from the room (a BATCH flattened). */
export function events(message: Uint8Array): Event[] {
  return decode(message).map(eventOf);
}

function eventOf(packet: Packet): Event {
  const { op, seq, body } = packet;
  if (op === Op.PUSH) return { type: "pushed", message: pushOf(body) };
  if (REPLIES.has(op)) return { type: "replied", op, seq, body };
  if (op === Op.AUTH_REPLY) return { type: "authed", seq, reply: authReplyOf(body) };
  if (op === Op.KICK) {
    const kick = read(body, { 1: 0, 2: "" });
    return { type: "kicked", code: kick[1], reason: kick[2] };
  }
  if (op === Op.RECONNECT) {
    const move = read(body, { 1: [] as string[], 2: 0, 3: "" });
    return { type: "moved", endpoints: move[1], afterMs: move[2], reason: move[3] };
  }
  if (op === Op.ERROR) {
    const error = read(body, { 1: 0, 2: "", 3: false });
    return { type: "failed", seq, code: error[1], message: error[2], fatal: error[3] };
  }
  throw new ProtocolError(`op ${op} is not a room op`);
}

export function pushOf(body: Uint8Array): Message {
  const push = read(body, { 1: 0n, 2: "", 3: new Uint8Array(0), 4: 0n, 5: 0, 6: "" });
  return { id: push[1].toString(), app: push[2], data: push[3], createdMs: Number(BigInt.asIntN(64, push[4])),
           kind: KINDS[push[5]] ?? "unicast", topic: push[6] };
}

export function authReplyOf(body: Uint8Array): AuthReply {
  const reply = read(body, { 1: "", 2: 0, 3: "", 4: "", 5: false });
  return { sessionId: reply[1], heartbeatS: reply[2], resumeToken: reply[3], room: reply[4],
           resumed: reply[5] };
}

/** Decode an UP_REPLY body. */
export function upReplyOf(body: Uint8Array): UpReply {
  const reply = read(body, { 1: 0, 2: 0, 3: "" });
  return { outcome: OUTCOMES[reply[1]] ?? "failed", status: reply[2] | 0, detail: reply[3] };
}

/** The topics a BIND_REPLY / UNBIND_REPLY names. */
export function bindReplyOf(body: Uint8Array): string[] {
  return read(body, { 1: "", 2: [] as string[] })[2];
}

// Packet builders.

export function auth(seq: number, request: AuthRequest): Uint8Array {
  const body = new Writer().string(1, request.app).string(2, request.uid)
    .string(3, request.device).string(4, request.token).uint(5, request.heartbeatS)
    .string(6, request.resume).uint(7, BigInt(request.broadcastCursor || 0))
    .string(8, request.net).finish();
  return encode(Op.AUTH, seq, body);
}

export function heartbeat(seq: number): Uint8Array {
  return encode(Op.HEARTBEAT, seq);
}

export function ack(app: string, ids: readonly string[]): Uint8Array {
  return encode(Op.ACK, 0, new Writer().string(1, app).packed(2, ids.map(BigInt)).finish());
}

export function up(seq: number, app: string, type: string, body: Uint8Array): Uint8Array {
  return encode(Op.UP, seq, new Writer().string(1, app).string(2, type).bytesField(3, body).finish());
}

export function bind(seq: number, app: string, token: string, topics: readonly string[],
                     cursor = "0"): Uint8Array {
  return encode(Op.BIND, seq, bindBody(app, token, topics).uint(4, BigInt(cursor || 0)).finish());
}

export function unbind(seq: number, app: string, topics: readonly string[]): Uint8Array {
  return encode(Op.UNBIND, seq, bindBody(app, "", topics).finish());
}

function bindBody(app: string, token: string, topics: readonly string[]): Writer {
  const writer = new Writer().string(1, app).string(2, token);
  for (const topic of topics) writer.string(3, topic);
  return writer;
}

// Decoding: a message is read into a record of defaults, keyed by field number; the type of
// each default says how its field is read (repeated fields are arrays, accumulated).

type Value = number | bigint | string | boolean | Uint8Array | string[] | bigint[];

function read<T extends Record<number, Value>>(body: Uint8Array, defaults: T): T {
  const out: Record<number, Value> = { ...defaults };
  for (const f of fields(body)) {
    const current = out[f.field];
    if (current === undefined) continue;                    // a field this SDK does not know
    if ((f.type === 2) !== isLengthDelimited(current)) {
      throw new ProtocolError(`bad packet body: field ${f.field} has the wrong wire type`);
    }
    if (typeof current === "number") out[f.field] = Number(BigInt.asUintN(32, f.varint));
    else if (typeof current === "bigint") out[f.field] = f.varint;
    else if (typeof current === "boolean") out[f.field] = f.varint !== 0n;
    else if (typeof current === "string") out[f.field] = text(f.bytes);
    else if (current instanceof Uint8Array) out[f.field] = f.bytes.slice();
    else (current as string[]).push(text(f.bytes));
  }
  return out as T;
}

function isLengthDelimited(value: Value): boolean {
  return typeof value === "string" || typeof value === "object";
}

/** The ids of an ACK body (packed or not); used by tests and conformance checks. */
export function ackOf(body: Uint8Array): { app: string; ids: string[] } {
  let app = "";
  const ids: string[] = [];
  for (const f of fields(body)) {
    if (f.field === 1) app = text(f.bytes);
    else if (f.field === 2) {
      const values = f.type === 2 ? packedVarints(f.bytes) : [f.varint];
      ids.push(...values.map(String));
    }
  }
  return { app, ids };
}
