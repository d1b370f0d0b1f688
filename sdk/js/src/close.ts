/**
 * What a client does when a connection ends (docs/protocol.md §7; conformance/close_codes.json):
 *
 * - "reconnect": 4000-4099 (going away, slow consumer, heartbeat timeout, moved, overloaded,
 *   auth timeout)
 *   and anything outside 4100-4199 (1000, 1001, 1006 a dropped link, …): through the
 *   dispatcher, after the backoff (4003: after RECONNECT's `after_ms`, to its endpoints);
 * - "renew_token": 4101 token expired, when the token comes from a callback: get a new one,
 *   then reconnect (expired again right away: stop);
 * - "stop": the rest of 4100-4199 (bad token, kicked, protocol violation, limit,
 *   superseded, access denied, version), and any close after a KICK: reconnecting would fail
 *   again. The code is reported to the application.
 */

export type Decision = "reconnect" | "renew_token" | "stop";

/** The decision for a close `code` alone (no KICK seen). */
export function closeAction(code: number, tokenCallback = true): Decision {
  if (code < 4100 || code >= 4200) return "reconnect";
  return code === 4101 && tokenCallback ? "renew_token" : "stop";
}

export interface Ending {
  decision: Decision;
  /** the code reported to the application when it stops */
  reportedCode: number | null;
}

/**
 * The decision after a connection ended with `closeCode` (null: dropped without a close
 * frame), having received `kick` (a KICK's body) or not.
 */
export function ending(closeCode: number | null, kick: { code: number } | null,
                       tokenCallback: boolean): Ending {
  if (kick) return { decision: "stop", reportedCode: kick.code || closeCode || 4102 };
  const decision = closeCode === null ? "reconnect" : closeAction(closeCode, tokenCallback);
  return { decision, reportedCode: decision === "stop" ? closeCode : null };
}
