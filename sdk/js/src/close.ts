/**
 * What a client does when the room closes its connection with `code` (docs/protocol.md §7):
 *
 * - "reconnect": 4000-4099 (going away, slow consumer, heartbeat timeout, moved, overloaded)
 *   and anything outside 4000-4199 (1000, 1001, 1006 a dropped link, …): through the
 *   dispatcher, after the backoff (4003: after RECONNECT's `after_ms`, to its endpoints);
 * - "renew": 4101 token expired: get a new token, then reconnect (once; expired again: stop);
 * - "stop": the rest of 4100-4199 (bad token, kicked, protocol violation, limit, auth timeout,
 *   superseded, access denied, version): reconnecting would fail again.
 */

export type CloseAction = "reconnect" | "renew" | "stop";

export function closeAction(code: number): CloseAction {
  if (code === 4101) return "renew";
  return code >= 4100 && code < 4200 ? "stop" : "reconnect";
}
