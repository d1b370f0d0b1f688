/**
 * Asking the dispatcher where to connect: `GET /v1/route` (docs/api.md §1.1), as
 * sdk/python/pushwire_sdk/route.py. The reply names room endpoints (the uid's sticky room
 * first), how long it may be cached, the app's heartbeat bounds and the backoff policy.
 * Endpoints that failed are reported in `failed=host:port,…` with the `attempt` count so the
 * dispatcher leaves them out (and, after repeated failures, offers other IDCs).
 */

import { type Backoff, backoffOf, DEFAULT_BACKOFF } from "./backoff.js";
import { ProtocolError, type PushwireError, Unavailable, fromCode } from "./errors.js";

/** How long a reply may be cached when it does not say. */
export const ROUTE_TTL_S = 600;

export interface Route {
  endpoints: string[];
  ttlS: number;
  heartbeat: { defaultS: number; minS: number; maxS: number };
  backoff: Backoff;
}

/** The `fetch` the client needs: the platform's (browsers, Node ≥ 18, React Native). */
export type Fetch = (url: string, init?: { signal?: AbortSignal }) => Promise<{
  status: number;
  text(): Promise<string>;
}>;

export interface RouteQuery {
  app: string;
  uid: string;
  net: string;
  failed?: Iterable<string>;
  attempt?: number;
  isp?: string;
  idc?: string;
}

/** `ws://host:port/` -> `host:port`, the form reported in `failed=`. */
export function hostport(endpoint: string): string {
  const match = /^[a-z]+:\/\/([^/?#]+)/i.exec(endpoint);
  return match ? match[1]! : endpoint;
}

/**
 * The endpoints to try, in order (conformance/close_codes.json `reconnect`): RECONNECT's
 * (`moved`), the route's first (the sticky room), the last one that worked (a resume needs
 * the same room), the route's others; each once; without those whose host:port failed since
 * the last session, unless that leaves none.
 */
export function candidates(moved: readonly string[], offered: readonly string[], lastGood: string,
                           failed: ReadonlySet<string>): string[] {
  const everything = [...new Set([...moved, ...offered.slice(0, 1), lastGood, ...offered.slice(1)])]
    .filter((e) => e);
  const fresh = everything.filter((e) => !failed.has(hostport(e)));
  return fresh.length ? fresh : everything;
}

/** The URL of a route request. */
export function routeUrl(dispatcherUrl: string, query: RouteQuery): string {
  const params = new URLSearchParams({ app: query.app, uid: query.uid, net: query.net });
  const failed = [...new Set([...(query.failed ?? [])].map(hostport))].join(",");
  const optional: Record<string, string> = {
    failed, attempt: query.attempt ? String(query.attempt) : "", isp: query.isp ?? "",
    idc: query.idc ?? "",
  };
  for (const [key, value] of Object.entries(optional)) if (value) params.set(key, value);
  return `${dispatcherUrl.replace(/\/+$/, "")}/v1/route?${params}`;
}

/**
 * One route request. Rejects with Unavailable when the dispatcher cannot be reached or
 * answers 5xx/429 (retry later), and with the error its reply names for other 4xx (unknown
 * app, bad request: retrying will not help).
 */
export async function fetchRoute(fetch: Fetch, dispatcherUrl: string, query: RouteQuery,
                                 timeoutMs: number): Promise<Route> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let status: number;
  let body: Record<string, unknown>;
  try {
    const response = await fetch(routeUrl(dispatcherUrl, query), { signal: abort.signal });
    status = response.status;
    body = parseObject(await response.text());
  } catch (error) {
    const why = abort.signal.aborted ? `no reply within ${timeoutMs} ms` : String(error);
    throw new Unavailable(`dispatcher ${dispatcherUrl} unreachable: ${why}`);
  } finally {
    clearTimeout(timer);
  }
  if (status >= 400) throw errorOf(status, body);
  return routeOf(body);
}

/** Parse a route reply; ProtocolError when it names no usable endpoint. */
export function routeOf(raw: Record<string, unknown>): Route {
  const endpoints = raw.endpoints;
  if (!Array.isArray(endpoints) || !endpoints.length
      || !endpoints.every((e) => typeof e === "string" && e)) {
    throw new ProtocolError("route reply without endpoints");
  }
  const heartbeat = (raw.heartbeat ?? {}) as Record<string, unknown>;
  const int = (value: unknown, fallback: number): number => {
    if (value === undefined) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value)) throw new ProtocolError("malformed route reply");
    return Math.trunc(value);
  };
  return {
    endpoints: endpoints as string[],
    ttlS: int(raw.ttl_s, ROUTE_TTL_S),
    heartbeat: { defaultS: int(heartbeat.default_s, 0), minS: int(heartbeat.min_s, 0),
                 maxS: int(heartbeat.max_s, 0) },
    backoff: raw.backoff ? backoffOf(raw.backoff as Record<string, unknown>) : DEFAULT_BACKOFF,
  };
}

/** The error a JSON error reply `{"error": {"code", "message"}}` stands for. */
export function errorOf(status: number, body: Record<string, unknown>): PushwireError {
  const error = body.error as { code?: unknown; message?: unknown } | undefined;
  const message = typeof error?.message === "string" && error.message ? error.message : `HTTP ${status}`;
  if (status >= 500 || status === 429) return new Unavailable(message);
  return fromCode(typeof error?.code === "number" ? error.code : 0, message);
}

function parseObject(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value) ? value as Record<string, unknown> : {};
  } catch {
    return {};
  }
}
