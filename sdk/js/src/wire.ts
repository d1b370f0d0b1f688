/**
 * The packet codec of the client protocol (docs/protocol.md §2), as
 * sdk/python/pushwire_protocol/wire.py:
 *
 *     packLen u32 | headerLen u16 | ver u16 | op u32 | seq u32 | body      (big endian)
 *
 * packLen counts the whole packet, header included; a reader skips header bytes beyond 16.
 * One WebSocket message carries one packet, several travel in one BATCH. Pure functions.
 */

import { ProtocolError } from "./errors.js";

export const HEADER_LEN = 16;
export const VERSION = 1;

/** Operations; a request and its reply are consecutive numbers (docs/protocol.md §3). */
export const Op = {
  HEARTBEAT: 2,
  HEARTBEAT_REPLY: 3,
  AUTH: 7,
  AUTH_REPLY: 8,
  PUSH: 9,
  ACK: 10,
  BATCH: 11,
  UP: 12,
  UP_REPLY: 13,
  BIND: 14,
  BIND_REPLY: 15,
  UNBIND: 16,
  UNBIND_REPLY: 17,
  KICK: 18,
  RECONNECT: 19,
  ERROR: 20,
} as const;
export type Op = (typeof Op)[keyof typeof Op];

const OPS = new Set<number>(Object.values(Op));

export interface Packet {
  op: number;
  seq: number;
  body: Uint8Array;
  /** as received; `encode` always writes VERSION */
  ver: number;
}

/** Encode one packet. */
export function encode(op: number, seq = 0, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_LEN + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, out.length);
  view.setUint16(4, HEADER_LEN);
  view.setUint16(6, VERSION);
  view.setUint32(8, op);
  view.setUint32(12, seq >>> 0);
  out.set(body, HEADER_LEN);
  return out;
}

/** Wrap already-encoded packets into one BATCH packet. */
export function encodeBatch(packets: Uint8Array[]): Uint8Array {
  return encode(Op.BATCH, 0, concat(packets));
}

/**
 * The packets of one WebSocket message: its one packet, or the packets of its BATCH.
 * Throws ProtocolError on a truncated packet, a bad header length, an unknown op, a nested
 * BATCH or bytes after the packet.
 */
export function decode(message: Uint8Array): Packet[] {
  const [packet, end] = readPacket(message, 0);
  if (end !== message.length) {
    throw new ProtocolError(`${message.length - end} bytes after the packet: one packet per ` +
      "message, several only in a BATCH");
  }
  return packet.op === Op.BATCH ? unbatch(packet.body) : [packet];
}

/** The packets of a BATCH body, in order. */
export function unbatch(body: Uint8Array): Packet[] {
  const packets: Packet[] = [];
  let offset = 0;
  while (offset < body.length) {
    const [packet, end] = readPacket(body, offset);
    if (packet.op === Op.BATCH) throw new ProtocolError("nested BATCH");
    packets.push(packet);
    offset = end;
  }
  return packets;
}

/** The packet starting at `offset` and the offset after it (bytes may follow). */
export function readPacket(data: Uint8Array, offset: number): [Packet, number] {
  if (data.length - offset < HEADER_LEN) throw new ProtocolError("truncated packet header");
  const view = new DataView(data.buffer, data.byteOffset + offset, HEADER_LEN);
  const packLen = view.getUint32(0);
  const headerLen = view.getUint16(4);
  if (headerLen < HEADER_LEN || packLen < headerLen) throw new ProtocolError("bad header length");
  const end = offset + packLen;
  if (end > data.length) throw new ProtocolError("truncated packet body");
  const op = view.getUint32(8);
  if (!OPS.has(op)) throw new ProtocolError(`unknown op ${op}`);
  const body = data.subarray(offset + headerLen, end);
  return [{ op, seq: view.getUint32(12), body, ver: view.getUint16(6) }, end];
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
