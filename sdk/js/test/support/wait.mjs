// Bounded waits on conditions and events: no sleeps as synchronisation.

/** Resolve once `condition()` (sync or async) is truthy; reject after `timeoutMs`. */
export async function until(condition, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Collects what a client emits, so a test can wait for the next one of a kind. */
export class Recorder {
  constructor(client) {
    this.messages = [];
    this.states = [];
    this.errors = [];
    client.on("message", (m) => { this.messages.push(m); });
    client.on("state", (s) => { this.states.push(s); });
    client.on("error", (e) => { this.errors.push(e); });
  }

  /** The first message matching `match` (waiting for it). */
  message(match, what = "a message", timeoutMs) {
    return until(() => this.messages.find(match), what, timeoutMs);
  }

  /** The `n`th (from 1) state change matching `match` (waiting for it). */
  state(match, what = "a state", timeoutMs, n = 1) {
    return until(() => this.states.filter(match)[n - 1], what, timeoutMs);
  }
}

export const text = (message) => new TextDecoder().decode(message.data);
