/**
 * Which messages the client already has: a bounded LRU of (app, message id) with how far each
 * got (sdk/python/pushwire_sdk/seen.py). Delivery is at least once (docs/protocol.md §6): a
 * copy of a message still queued is dropped; a copy of one the application already took means
 * the room never saw the ACK, so it is acknowledged again, not handed out again.
 */

export type Stage = "queued" | "handed" | "acked";

export class Seen {
  readonly capacity: number;
  private stages = new Map<string, Stage>();     // insertion order: oldest first

  constructor(capacity = 10_000) {
    if (!(capacity >= 1)) throw new RangeError("capacity must be >= 1");
    this.capacity = capacity;
  }

  get size(): number {
    return this.stages.size;
  }

  /** Record a received message; true when it is new, false for a copy (which refreshes it). */
  add(app: string, id: string): boolean {
    const key = keyOf(app, id);
    const stage = this.stages.get(key);
    this.stages.delete(key);
    this.stages.set(key, stage ?? "queued");
    if (stage !== undefined) return false;
    if (this.stages.size > this.capacity) this.stages.delete(this.stages.keys().next().value!);
    return true;
  }

  /** The stage of a remembered message; undefined once forgotten (or never seen). */
  stage(app: string, id: string): Stage | undefined {
    return this.stages.get(keyOf(app, id));
  }

  /** Forget a message: its next copy counts as new (the application failed to handle it). */
  forget(app: string, id: string): void {
    this.stages.delete(keyOf(app, id));
  }

  /** Move a remembered message to `stage`; a forgotten one stays forgotten. */
  advance(app: string, id: string, stage: Stage): void {
    const key = keyOf(app, id);
    if (this.stages.has(key)) this.stages.set(key, stage);
  }
}

function keyOf(app: string, id: string): string {
  return `${id} ${app}`;          // ids are digits: the space cannot be part of one
}
