/**
 * UTF-8 for protobuf strings: the platform's TextEncoder / TextDecoder where they exist
 * (browsers, Node), else the small codec below (React Native's Hermes has no TextDecoder).
 * Decoding is strict: bytes that are not UTF-8 are a ProtocolError, as in protobuf.
 */

import { ProtocolError } from "./errors.js";

const platformEncoder = typeof TextEncoder === "function" ? new TextEncoder() : undefined;
const platformDecoder = typeof TextDecoder === "function" ? new TextDecoder("utf-8", { fatal: true }) : undefined;

export function encodeUtf8(text: string): Uint8Array {
  return platformEncoder ? platformEncoder.encode(text) : encodeUtf8Portable(text);
}

export function decodeUtf8(bytes: Uint8Array): string {
  if (!platformDecoder) return decodeUtf8Portable(bytes);
  try {
    return platformDecoder.decode(bytes);
  } catch {
    throw new ProtocolError("bad packet body: a string is not UTF-8");
  }
}

/** UTF-8 of a string; a lone surrogate becomes U+FFFD, as TextEncoder does. */
export function encodeUtf8Portable(text: string): Uint8Array {
  const out: number[] = [];
  for (const char of text) {
    let code = char.codePointAt(0)!;
    if (code >= 0xd800 && code <= 0xdfff) code = 0xfffd;
    if (code < 0x80) out.push(code);
    else if (code < 0x800) out.push(0xc0 | (code >> 6), 0x80 | (code & 63));
    else if (code < 0x10000) out.push(0xe0 | (code >> 12), 0x80 | ((code >> 6) & 63), 0x80 | (code & 63));
    else out.push(0xf0 | (code >> 18), 0x80 | ((code >> 12) & 63), 0x80 | ((code >> 6) & 63), 0x80 | (code & 63));
  }
  return Uint8Array.from(out);
}

// per lead byte: sequence length and the smallest code point it may encode (no overlongs)
const SEQUENCES: [number, number, number][] = [[0xc0, 2, 0x80], [0xe0, 3, 0x800], [0xf0, 4, 0x10000]];

/** Strict UTF-8 decoding: truncated, overlong, surrogate or out-of-range sequences throw. */
export function decodeUtf8Portable(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length;) {
    const lead = bytes[i]!;
    if (lead < 0x80) {
      text += String.fromCharCode(lead);
      i += 1;
      continue;
    }
    const sequence = SEQUENCES.find(([prefix, length]) => lead >> (7 - length) === prefix >> (7 - length));
    if (!sequence || i + sequence[1] > bytes.length) throw new ProtocolError("bad packet body: a string is not UTF-8");
    const [, length, smallest] = sequence;
    let code = lead & (0x7f >> length);
    for (let k = 1; k < length; k++) {
      const next = bytes[i + k]!;
      if ((next & 0xc0) !== 0x80) throw new ProtocolError("bad packet body: a string is not UTF-8");
      code = (code << 6) | (next & 63);
    }
    if (code < smallest || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      throw new ProtocolError("bad packet body: a string is not UTF-8");
    }
    text += String.fromCodePoint(code);
    i += length;
  }
  return text;
}
