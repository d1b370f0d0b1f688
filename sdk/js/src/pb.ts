/**
 * The little of protobuf (proto3) that proto/pushwire/wire.proto needs: varints (uint32,
 * uint64 as bigint, int64, bool, enums), length-delimited strings, bytes and packed repeated
 * uint64; unknown fields are skipped as the encoding requires. 64-bit values never pass
 * through a double.
 */

import { ProtocolError } from "./errors.js";
import { decodeUtf8, encodeUtf8 } from "./utf8.js";

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/** Builds one message; fields at their default value (0, "", empty) are left out. */
export class Writer {
  private bytes: number[] = [];

  uint(field: number, value: number | bigint): this {
    if (value) {
      this.tag(field, VARINT);
      this.varint(BigInt(value));
    }
    return this;
  }

  bool(field: number, value: boolean): this {
    return this.uint(field, value ? 1 : 0);
  }

  string(field: number, value: string): this {
    return value ? this.bytesField(field, encodeUtf8(value)) : this;
  }

  bytesField(field: number, value: Uint8Array): this {
    if (value.length) {
      this.tag(field, LEN);
      this.varint(BigInt(value.length));
      for (const byte of value) this.bytes.push(byte);
    }
    return this;
  }

  /** A packed repeated uint64 (the proto3 default for repeated scalars). */
  packed(field: number, values: readonly bigint[]): this {
    if (!values.length) return this;
    const inner = new Writer();
    for (const value of values) inner.varint(value);
    return this.bytesField(field, inner.finish());
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }

  private tag(field: number, wireType: number): void {
    this.varint(BigInt((field << 3) | wireType));
  }

  private varint(value: bigint): void {
    let rest = BigInt.asUintN(64, value);
    while (rest > 0x7fn) {
      this.bytes.push(Number(rest & 0x7fn) | 0x80);
      rest >>= 7n;
    }
    this.bytes.push(Number(rest));
  }
}

/** One field as read: its number, wire type and value (a varint or the bytes). */
export interface Field {
  field: number;
  /** 0: varint, 2: length-delimited */
  type: number;
  varint: bigint;
  bytes: Uint8Array;
}

/** The fields of one message body in order; throws ProtocolError on a malformed body. */
export function* fields(data: Uint8Array): Generator<Field> {
  const reader = { data, offset: 0 };
  while (reader.offset < data.length) {
    const key = readVarint(reader);
    const field = Number(key >> 3n);
    const type = Number(key & 7n);
    if (field < 1) throw new ProtocolError("bad packet body: field 0");
    if (type === VARINT) {
      yield { field, type, varint: readVarint(reader), bytes: EMPTY };
    } else if (type === LEN) {
      const length = Number(readVarint(reader));
      yield { field, type, varint: 0n, bytes: take(reader, length) };
    } else if (type === I64 || type === I32) {
      take(reader, type === I64 ? 8 : 4);        // no such field in wire.proto: skipped
    } else {
      throw new ProtocolError(`bad packet body: wire type ${type}`);
    }
  }
}

/** The varints of a packed repeated field (or of one unpacked element). */
export function packedVarints(bytes: Uint8Array): bigint[] {
  const reader = { data: bytes, offset: 0 };
  const values: bigint[] = [];
  while (reader.offset < bytes.length) values.push(readVarint(reader));
  return values;
}

export function text(bytes: Uint8Array): string {
  return decodeUtf8(bytes);
}

const EMPTY = new Uint8Array(0);

interface Reader {
  data: Uint8Array;
  offset: number;
}

function readVarint(reader: Reader): bigint {
  let value = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (reader.offset >= reader.data.length) throw new ProtocolError("bad packet body: truncated");
    const byte = reader.data[reader.offset++]!;
    value |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return BigInt.asUintN(64, value);
  }
  throw new ProtocolError("bad packet body: varint too long");
}

function take(reader: Reader, length: number): Uint8Array {
  const end = reader.offset + length;
  if (end > reader.data.length) throw new ProtocolError("bad packet body: truncated");
  const bytes = reader.data.subarray(reader.offset, end);
  reader.offset = end;
  return bytes;
}
