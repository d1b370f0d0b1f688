/**
 * Errors of the SDK, one tree (as sdk/python/pushwire_protocol/errors.py):
 *
 *     PushwireError (code: a pushwire error code, docs/protocol.md §7)
 *     ├── ProtocolError   1002  the room (or dispatcher) sent something this SDK cannot read
 *     ├── BadRequest      1003  a request field is invalid
 *     ├── AuthError       1004  a token was refused (BIND of another app)
 *     ├── LimitError      1005  a bound was hit (UP rate, requests in flight)
 *     ├── NotFound        1006  unknown app, topic, message
 *     ├── Unavailable     1007  no connection, a timeout, a dependency down: retry later
 *     │   └── Overloaded  1008
 *     └── ClientClosed          the room said not to reconnect (4100-4199 or KICK)
 */

export class PushwireError extends Error {
  readonly code: number;
  constructor(message: string, code = 1000) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

export class ProtocolError extends PushwireError {
  constructor(message: string) { super(message, 1002); }
}
export class BadRequest extends PushwireError {
  constructor(message: string) { super(message, 1003); }
}
export class AuthError extends PushwireError {
  constructor(message: string) { super(message, 1004); }
}
export class LimitError extends PushwireError {
  constructor(message: string) { super(message, 1005); }
}
export class NotFound extends PushwireError {
  constructor(message: string) { super(message, 1006); }
}
export class Unavailable extends PushwireError {
  constructor(message: string, code = 1007) { super(message, code); }
}
export class Overloaded extends Unavailable {
  constructor(message: string) { super(message, 1008); }
}

/**
 * The room closed with a "do not reconnect" code (4100-4199) or kicked the session:
 * reconnecting with the same settings would fail again. `closeCode` says why.
 */
export class ClientClosed extends PushwireError {
  readonly closeCode: number;
  readonly reason: string;
  constructor(closeCode: number, reason = "") {
    super(`closed by the room with ${closeCode}` + (reason ? `: ${reason}` : ""), 0);
    this.closeCode = closeCode;
    this.reason = reason;
  }
}

const BY_CODE: Record<number, new (message: string) => PushwireError> = {
  1002: ProtocolError, 1003: BadRequest, 1004: AuthError, 1005: LimitError, 1006: NotFound,
  1007: Unavailable, 1008: Overloaded, 1010: AuthError,
};

/** The error an ERROR packet or an HTTP error body with `code` stands for. */
export function fromCode(code: number, message: string): PushwireError {
  const Class = BY_CODE[code];
  return Class ? new Class(message) : new PushwireError(message, code);
}
