/**
 * Where the client keeps its broadcast cursors between runs (docs/protocol.md §6: the id of
 * the last broadcast seen per app, sent in AUTH and BIND so the room replays only newer ones).
 * A small key-value hook: `localStorage` fits it as it is (the default in browsers);
 * React Native passes an AsyncStorage adapter, Node a file or nothing (memory only).
 */

export interface CursorStorage {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
}

/** Cursors in memory only: lost when the process ends. */
export class MemoryStorage implements CursorStorage {
  private items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
}

/** `localStorage` where the platform has one (browsers), else memory. */
export function defaultStorage(): CursorStorage {
  try {
    // a page's; Node's own experimental one (no window) is not taken without being asked
    const page = globalThis as { window?: unknown; localStorage?: CursorStorage };
    if (page.window !== undefined && page.localStorage) return page.localStorage;
  } catch {
    // a page with storage disabled throws on access
  }
  return new MemoryStorage();
}

/** The storage key of an app's cursor for one user. */
export function cursorKey(app: string, uid: string): string {
  return `pushwire.cursor.${app}.${uid}`;
}

/** The larger of two uint64 ids given as decimal strings. */
export function maxId(a: string, b: string): string {
  return BigInt(a || 0) >= BigInt(b || 0) ? a : b;
}
