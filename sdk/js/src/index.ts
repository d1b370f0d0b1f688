/** @pushwire/client: a pushwire client for browsers, Node ≥ 20 and React Native (docs/clients.md). */

export { PushClient, ACK_LINGER_MS, ACK_MAX, HEARTBEAT_REPLY_MS } from "./client.js";
export type { ClientOptions, State, StateChange, WebSocketClass, WebSocketLike } from "./client.js";
export type { AuthReply, Kind, Message, UpReply } from "./protocol.js";
export { type Backoff, DEFAULT_BACKOFF, delayMs } from "./backoff.js";
export { type CursorStorage, MemoryStorage } from "./storage.js";
export { decodeUtf8, encodeUtf8 } from "./utf8.js";
export { type Fetch, type Route } from "./route.js";
export { closeAction, type Decision, ending, type Ending } from "./close.js";
export {
  AuthError, BadRequest, ClientClosed, LimitError, NotFound, Overloaded, ProtocolError,
  PushwireError, Unavailable,
} from "./errors.js";
