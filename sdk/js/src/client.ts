/**
 * One persistent connection to a pushwire room, kept alive for you: the behaviours of
 * sdk/python/pushwire_sdk/client.py for browsers, Node ≥ 20 and React Native.
 *
 *     const client = new PushClient({ dispatcher, app: "demo", uid: "alice", token: getToken });
 *     client.on("message", (m) => show(m));        // acknowledged once the handler returned
 *     client.on("state", (s) => render(s.state));
 *     await client.connect();
 *
 * What it does (docs/protocol.md, docs/clients.md):
 * - asks the dispatcher for a route (route.ts; cached per network type for the reply's TTL),
 *   tries the RECONNECT endpoints, the sticky room, the last room that worked and the
 *   route's others in that order, reporting the ones that failed (`failed=`) and the number
 *   of failed rounds (`attempt`);
 * - on a dropped connection or a 4000-4099 close reconnects after the route's backoff with
 *   jitter, offering the last resume token (§8), and binds again what it had bound when the
 *   session was not resumed;
 * - sends HEARTBEAT at the negotiated interval and drops a link that stops answering (§5);
 * - on 4100-4199 or a KICK stops (`closed` state, ClientClosed), except 4101 (token expired)
 *   when the token comes from a callback: it asks for a new one once and reconnects;
 * - drops copies of messages it has (seen.ts) and acknowledges again copies of messages
 *   it acknowledged already (that ACK was lost); ACKs gathered for 5 ms leave as one packet
 *   per app, at most 256 ids each (§6);
 * - keeps the broadcast cursor per app in a storage hook (localStorage in browsers).
 * `close()` sends the gathered ACKs, closes the socket and clears every timer it set.
 */

import { ending } from "./close.js";
import { type Backoff, DEFAULT_BACKOFF, delayMs } from "./backoff.js";
import { ClientClosed, ProtocolError, PushwireError, Unavailable, fromCode } from "./errors.js";
import * as protocol from "./protocol.js";
import type { AuthReply, Event, Message, UpReply } from "./protocol.js";
import { candidates, type Fetch, fetchRoute, hostport, type Route } from "./route.js";
import { Seen } from "./seen.js";
import { type CursorStorage, cursorKey, defaultStorage, maxId } from "./storage.js";
import { encodeUtf8 } from "./utf8.js";
import { Op } from "./wire.js";

export const HEARTBEAT_REPLY_MS = 10_000;  // no answer to a HEARTBEAT within this: dead link
export const ACK_LINGER_MS = 5;            // ACKs gathered this long leave as one packet per app
export const ACK_MAX = 256;                // ids per ACK packet
export const CLOSE_TIMEOUT_MS = 3_000;     // close(): the room's close frame, then the socket is left
const FAILED_KEPT = 32;                    // endpoints remembered as failed

/** The part of the WebSocket API the client uses (browsers, Node ≥ 22, React Native, `ws`). */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  /** `ws` (Node) has it: drops the TCP connection at once, without a closing handshake */
  terminate?(): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketClass = new (url: string, protocols: string | string[]) => WebSocketLike;

export type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** What the `state` event carries. */
export interface StateChange {
  state: State;
  /** open: the session (and whether it resumed one) and where */
  session?: AuthReply;
  endpoint?: string;
  /** reconnecting: how long it waits and the number of failed rounds before */
  delayMs?: number;
  attempt?: number;
  /** reconnecting: the close code of the connection that ended (1006: dropped) */
  code?: number;
  /** closed: why, when the client did not stop because `close()` was called */
  error?: PushwireError;
}

export interface ClientOptions {
  /** the dispatcher's base URL, http(s):// */
  dispatcher: string;
  app: string;
  uid: string;
  /** a JWT the app's backend signed, or a function that fetches one (asked again after 4101) */
  token: string | (() => string | Promise<string>);
  device?: string;
  /** wifi, cell, …: keys the route cache */
  net?: string;
  /** proposed heartbeat interval; 0 lets the room choose the app's default */
  heartbeatS?: number;
  isp?: string;
  idc?: string;
  /** where broadcast cursors persist; default localStorage in browsers, else memory */
  storage?: CursorStorage;
  /** default globalThis.WebSocket (on Node 20 pass e.g. the `ws` package's class) */
  WebSocket?: WebSocketClass;
  /** default globalThis.fetch */
  fetch?: Fetch;
  /** false: the application calls `ack()` itself */
  autoAck?: boolean;
  dedupeSize?: number;
  /** bounds each route request, handshake and AUTH */
  openTimeoutMs?: number;
  /** default timeout of UP, BIND, UNBIND */
  requestTimeoutMs?: number;
  /** how long `connect()` waits for the first session (0: until refused for good) */
  connectTimeoutMs?: number;
  /** the random source of the backoff jitter */
  rand?: () => number;
}

interface Events {
  message: (message: Message) => unknown;
  state: (change: StateChange) => void;
  /** a non-fatal ERROR without a request waiting for it (e.g. an ACK of unknown ids) */
  error: (error: PushwireError) => void;
}

interface Link {
  ws: WebSocketLike;
  endpoint: string;
  authed: boolean;
  kicked?: { code: number; reason: string };
  error?: string;
  lastRx: number;
  heartbeat?: Timer;
  deadline?: Timer;
  ended: (close: { code: number; reason: string }) => void;
}

interface Pending {
  replyOp: number;
  resolve: (body: Uint8Array) => void;
  reject: (error: Error) => void;
}

type Timer = ReturnType<typeof setTimeout>;

export class PushClient {
  readonly app: string;
  readonly uid: string;
  net: string;
  /** the open session; undefined while away */
  session: AuthReply | undefined;
  resumeToken = "";
  state: State = "idle";

  private readonly options: Required<Omit<ClientOptions, "storage" | "WebSocket" | "fetch">>;
  private readonly storage: CursorStorage;
  private readonly WebSocket: WebSocketClass;
  private readonly fetch: Fetch;
  private readonly listeners: { [K in keyof Events]: Set<Events[K]> } =
    { message: new Set(), state: new Set(), error: new Set() };
  private readonly seen: Seen;
  private readonly timers = new Set<Timer>();
  private readonly cursors = new Map<string, string>();
  private readonly binds = new Map<string, { token: string; topics: string[] }>();
  private readonly pending = new Map<number, Pending>();
  private readonly routes = new Map<string, { route: Route; expires: number }>();
  private readonly failed = new Set<string>();     // host:port, oldest first
  private readonly stale = new Set<WebSocketLike>();   // abandoned, closed once replaced
  private acks = new Map<string, string[]>();      // gathered for the next ACK packets
  private ackTimer: Timer | undefined;
  private lastClose = 0;                          // the close code of the last session
  private token = "";
  private link: Link | undefined;                 // the connection being opened or served
  private live: Link | undefined;                 // the link with an open session
  private waiters = new Set<() => void>();        // woken when a session opens or it stops
  private wakeSleep: (() => void) | undefined;
  private stopped = false;
  private failure: PushwireError | undefined;
  private seq = 0;
  private attempt = 0;
  private backoff: Backoff = DEFAULT_BACKOFF;
  private good = "";
  private moved: { endpoints: string[]; afterMs: number } | undefined;
  private renewed = false;
  private running: Promise<void> | undefined;
  private closing: Promise<void> | undefined;     // the closing handshake of close()

  constructor(options: ClientOptions) {
    const WebSocketClass = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketClass }).WebSocket;
    if (!WebSocketClass) throw new TypeError("no WebSocket: pass one (e.g. the `ws` package's) as options.WebSocket");
    this.WebSocket = WebSocketClass;
    this.fetch = options.fetch ?? ((url, init) => globalThis.fetch(url, init));
    this.storage = options.storage ?? defaultStorage();
    this.options = {
      device: "js", net: "wifi", heartbeatS: 0, isp: "", idc: "", autoAck: true,
      dedupeSize: 10_000, openTimeoutMs: 10_000, requestTimeoutMs: 10_000,
      connectTimeoutMs: 30_000, rand: Math.random, ...stripUndefined(options),
    } as PushClient["options"];
    this.app = options.app;
    this.uid = options.uid;
    this.net = this.options.net;
    this.seen = new Seen(this.options.dedupeSize);
  }

  on<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  // -- lifecycle ------------------------------------------------------------------------------

  /**
   * Start connecting and wait for the first session (`connectTimeoutMs`). Rejects with
   * ClientClosed / NotFound / BadRequest when the room or the dispatcher refuses for good,
   * Unavailable when no session opened in time; the client is closed then.
   */
  async connect(): Promise<void> {
    if (this.state !== "idle") throw new Error("PushClient.connect() called twice");
    this.setState({ state: "connecting" });
    try {
      this.token = await this.freshToken();
      await this.loadCursor(this.app);
      this.running = this.run();
      await this.linkUp(this.options.connectTimeoutMs, "no session");
    } catch (error) {
      await this.close();
      throw error;
    }
  }

  /** Send the gathered ACKs, close the connection, clear every timer. Idempotent. */
  async close(): Promise<void> {
    if (this.stopped && !this.running) return;
    this.flushAcks();
    this.stop(undefined);
    const running = this.running;
    this.running = undefined;
    await running;
    await this.closing;
  }

  get connected(): boolean {
    return this.live !== undefined;
  }

  /**
   * The device switched networks (e.g. "wifi" -> "cell"): use that network's cached route
   * from now on and leave the current link, which the switch usually killed without a FIN.
   * The next connection resumes the session (docs/protocol.md §8).
   */
  networkChanged(net: string): void {
    this.net = net;
    if (this.link) this.abandon(this.link);
  }

  // -- the application's side ---------------------------------------------------------------

  /**
   * Acknowledge a unicast message (other kinds and repeated calls do nothing). The ACK leaves
   * within ACK_LINGER_MS with the others gathered meanwhile, or at `close()`; without a
   * connection nothing is sent: the room redelivers and the copy is acknowledged then.
   */
  ack(message: Message): void {
    if (message.kind !== "unicast" || this.seen.stage(message.app, message.id) === "acked") return;
    this.seen.advance(message.app, message.id, "acked");
    this.gatherAck(message.app, message.id);
  }

  /** Send upstream data to the app's webhook for `type` (docs/protocol.md §6). */
  async sendUp(app: string, type: string, body: Uint8Array | string,
               timeoutMs?: number): Promise<UpReply> {
    const bytes = typeof body === "string" ? encodeUtf8(body) : body;
    const reply = await this.request(Op.UP_REPLY, (seq) => protocol.up(seq, app, type, bytes), timeoutMs);
    return protocol.upReplyOf(reply);
  }

  /**
   * Bind an app (with a token for it; "" for the connection's app) and topics; resolves to
   * the topics the room confirmed. Bindings are restored after a reconnect.
   */
  async bind(app: string, token: string, topics: string[] = [], timeoutMs?: number): Promise<string[]> {
    await this.loadCursor(app || this.app);
    const cursor = this.cursors.get(app || this.app) ?? "0";
    const reply = await this.request(Op.BIND_REPLY, (seq) => protocol.bind(seq, app, token, topics, cursor),
                                     timeoutMs);
    const known = this.binds.get(app)?.topics ?? [];
    this.binds.set(app, { token, topics: [...new Set([...known, ...topics])] });
    return protocol.bindReplyOf(reply);
  }

  /** Unbind topics of an app; none named: all of them and the app itself. */
  async unbind(app: string, topics: string[] = [], timeoutMs?: number): Promise<string[]> {
    const reply = await this.request(Op.UNBIND_REPLY, (seq) => protocol.unbind(seq, app, topics), timeoutMs);
    const binding = this.binds.get(app);
    this.binds.delete(app);
    if (binding && topics.length) {
      this.binds.set(app, { token: binding.token, topics: binding.topics.filter((t) => !topics.includes(t)) });
    }
    return protocol.bindReplyOf(reply);
  }

  // -- the connection loop --------------------------------------------------------------------

  private async run(): Promise<void> {
    try {
      while (!this.stopped) {
        if (await this.round()) this.attempt = 0;       // a session was open: start afresh
        if (this.stopped) break;
        const delay = this.moved ? this.moved.afterMs : delayMs(this.backoff, this.attempt, this.options.rand);
        this.setState({ state: "reconnecting", delayMs: delay, attempt: this.attempt, code: this.lastClose });
        this.attempt += 1;
        await this.sleep(delay);
      }
    } catch (error) {
      this.stop(error instanceof PushwireError ? error
        : new PushwireError(`client failed: ${String(error)}`));
    }
  }

  /** Try the candidate endpoints in order; true when a session was open (and has ended). */
  private async round(): Promise<boolean> {
    for (const endpoint of await this.candidates()) {
      if (this.stopped) return false;
      const outcome = await this.serve(endpoint);
      if (outcome === "unreachable") {
        this.markFailed(endpoint);
        continue;
      }
      if (outcome === "renew") {
        try {
          this.token = await this.freshToken();
        } catch {
          this.renewed = false;        // the app's token source failed: ask again next round
        }
        return false;
      }
      return true;
    }
    this.routes.delete(this.net);        // ask the dispatcher again, now with failed=
    return false;
  }

  /** The endpoints to try this round (route.ts `candidates`); a RECONNECT's are used once. */
  private async candidates(): Promise<string[]> {
    const current = await this.currentRoute();
    const moved = this.moved?.endpoints ?? [];
    this.moved = undefined;
    const found = candidates(moved, current?.endpoints ?? [], this.good, this.failed);
    if (found.every((e) => this.failed.has(hostport(e)))) this.failed.clear();
    return found;
  }

  /** The cached route or a new one; undefined when the dispatcher is unreachable now. */
  private async currentRoute(): Promise<Route | undefined> {
    const cached = this.routes.get(this.net);
    if (cached && Date.now() < cached.expires) return cached.route;
    try {
      const route = await fetchRoute(this.fetch, this.options.dispatcher, {
        app: this.app, uid: this.uid, net: this.net, failed: this.failed, attempt: this.attempt,
        isp: this.options.isp, idc: this.options.idc }, this.options.openTimeoutMs);
      this.backoff = route.backoff;
      this.routes.set(this.net, { route, expires: Date.now() + route.ttlS * 1000 });
      return route;
    } catch (error) {
      if (!(error instanceof Unavailable || error instanceof ProtocolError)) throw error;   // final
      this.failed.clear();       // maybe every room was excluded: ask plainly next time
      return undefined;
    }
  }

  private markFailed(endpoint: string): void {
    this.failed.delete(hostport(endpoint));
    this.failed.add(hostport(endpoint));
    while (this.failed.size > FAILED_KEPT) this.failed.delete(this.failed.values().next().value!);
  }

  // -- one connection -------------------------------------------------------------------------

  /**
   * Open, authenticate and serve one connection until it closes. "unreachable": no session
   * opened (try the next endpoint); "ended": an open session ended; "renew": 4101 with a
   * token callback. Throws ClientClosed when the room says not to reconnect.
   */
  private async serve(endpoint: string): Promise<"unreachable" | "ended" | "renew"> {
    const close = await new Promise<{ code: number; reason: string; link: Link }>((resolve) => {
      const link = this.open(endpoint, (c) => resolve({ ...c, link }));
    });
    const { link, code, reason } = close;
    this.dropped(link);
    const end = ending(code, link.kicked ?? null,
                       typeof this.options.token === "function" && !this.renewed);
    if (end.decision === "renew_token") {
      this.renewed = true;
      return "renew";
    }
    if (end.decision === "stop") {
      throw new ClientClosed(end.reportedCode ?? code, link.kicked?.reason || reason || link.error || "");
    }
    this.lastClose = code;
    return this.stopped || link.authed ? "ended" : "unreachable";
  }

  private open(endpoint: string, ended: Link["ended"]): Link {
    let ws: WebSocketLike;
    try {
      ws = new this.WebSocket(endpoint, protocol.SUBPROTOCOL);
    } catch {
      void Promise.resolve().then(() => ended({ code: 1006, reason: "cannot open" }));
      return { ws: inert, endpoint, authed: false, lastRx: 0, ended };
    }
    const link: Link = { ws, endpoint, authed: false, lastRx: 0, ended: once(ended) };
    this.link = link;
    ws.binaryType = "arraybuffer";
    link.deadline = this.later(this.options.openTimeoutMs, () => this.abandon(link));
    ws.onopen = () => this.opened(link);
    ws.onmessage = (event) => this.received(link, event.data);
    ws.onclose = (event) => link.ended({ code: event.code, reason: event.reason });
    ws.onerror = () => undefined;            // onclose follows with the code
    return link;
  }

  private opened(link: Link): void {
    if (link.ws.protocol !== protocol.SUBPROTOCOL) {
      this.abandon(link);
      return;
    }
    link.ws.send(protocol.auth(this.nextSeq(), {
      app: this.app, uid: this.uid, device: this.options.device, token: this.token,
      heartbeatS: this.options.heartbeatS, resume: this.resumeToken,
      broadcastCursor: this.cursors.get(this.app) ?? "0", net: this.net }));
  }

  private received(link: Link, data: unknown): void {
    link.lastRx = Date.now();
    let events: Event[];
    try {
      if (!(data instanceof ArrayBuffer)) throw new ProtocolError("text message on the binary subprotocol");
      events = protocol.events(new Uint8Array(data));
    } catch (error) {
      link.error = (error as Error).message;
      link.ws.close(1000, "protocol error");
      this.abandon(link);
      return;
    }
    for (const event of events) this.handle(link, event);
  }

  private handle(link: Link, event: Event): void {
    if (event.type === "pushed") this.receive(event.message);
    else if ((event.type === "replied" || event.type === "failed") && this.pending.has(event.seq)) {
      this.resolve(event);
    } else if (event.type === "authed") this.authed(link, event.reply);
    else if (event.type === "kicked") link.kicked = { code: event.code, reason: event.reason };
    else if (event.type === "moved") {
      this.moved = { endpoints: event.endpoints, afterMs: event.afterMs };   // the room closes: 4003
    } else if (event.type === "failed") {
      link.error = event.message;
      if (!event.fatal) this.emit("error", fromCode(event.code, event.message));
    }
  }

  /** AUTH_REPLY: the session is open. Start heartbeating, restore bindings. */
  private authed(link: Link, reply: AuthReply): void {
    this.clear(link.deadline);
    link.authed = true;
    this.session = reply;
    this.resumeToken = reply.resumeToken || this.resumeToken;
    this.good = link.endpoint;
    this.failed.clear();
    this.renewed = false;
    this.live = link;
    for (const ws of this.stale) ws.close(1000, "replaced");
    this.stale.clear();
    if (!reply.resumed) {
      for (const [app, binding] of this.binds) {
        link.ws.send(protocol.bind(this.nextSeq(), app, binding.token, binding.topics,
                                   this.cursors.get(app || this.app) ?? "0"));
      }
    }
    this.heartbeat(link, Math.max(reply.heartbeatS, 1) * 1000);
    this.setState({ state: "open", session: reply, endpoint: link.endpoint });
    for (const wake of this.waiters) wake();
  }

  /**
   * Send HEARTBEAT every interval; leave the link when nothing at all came back within
   * HEARTBEAT_REPLY_MS of one (§5: a pulled cable sends no FIN, only a deadline notices).
   */
  private heartbeat(link: Link, intervalMs: number): void {
    const waitMs = Math.min(HEARTBEAT_REPLY_MS, intervalMs / 2);
    link.heartbeat = this.later(intervalMs - waitMs, () => {
      const sentAt = Date.now();
      link.ws.send(protocol.heartbeat(this.nextSeq()));
      link.heartbeat = this.later(waitMs, () => {
        if (link.lastRx < sentAt) this.abandon(link);
        else this.heartbeat(link, intervalMs);
      });
    });
  }

  /**
   * Stop using a link now, as if it had dropped (code 1006). `ws` drops its TCP connection; a
   * platform WebSocket cannot, so it is left to the room (which kicks it when the session is
   * resumed elsewhere) and closed once another session opens, or at `close()`.
   */
  private abandon(link: Link): void {
    link.ws.onopen = link.ws.onmessage = link.ws.onclose = null;
    if (link.ws.terminate) link.ws.terminate();
    else this.stale.add(link.ws);
    link.ended({ code: 1006, reason: "dropped by the client" });
  }

  /** The link ended: stop its timers, fail its requests. */
  private dropped(link: Link): void {
    this.clear(link.deadline);
    this.clear(link.heartbeat);
    link.ws.onopen = link.ws.onmessage = null;
    if (this.link === link) this.link = undefined;
    if (this.live === link) {
      this.live = undefined;
      this.session = undefined;
    }
    for (const [seq, request] of this.pending) {
      this.pending.delete(seq);
      request.reject(new Unavailable("connection lost"));
    }
  }

  // -- messages and ACKs ----------------------------------------------------------------------

  /** Hand a new message to the application; acknowledge again a copy of an acknowledged one. */
  private receive(message: Message): void {
    const { app, id } = message;
    if (id !== "0" && !this.seen.add(app, id)) {
      if (message.kind === "unicast" && this.seen.stage(app, id) === "acked") this.gatherAck(app, id);
      return;
    }
    this.seen.advance(app, id, "handed");
    if (message.kind === "broadcast") this.saveCursor(app, id);
    let handled: unknown[];
    const failed = (): void => this.seen.forget(app, id);   // not acknowledged: the next copy is handed out
    try {
      handled = [...this.listeners.message].map((listener) => listener(message));
    } catch {
      failed();
      return;
    }
    Promise.all(handled).then(() => {
      if (this.options.autoAck) this.ack(message);
    }, failed);
  }

  private gatherAck(app: string, id: string): void {
    const ids = this.acks.get(app);
    if (ids) ids.push(id);
    else this.acks.set(app, [id]);
    this.ackTimer ??= this.later(ACK_LINGER_MS, () => this.flushAcks());
  }

  /** Send the gathered ACKs now; dropped without a session (the room redelivers them). */
  private flushAcks(): void {
    const acks = this.acks;
    this.acks = new Map();
    this.clear(this.ackTimer);
    this.ackTimer = undefined;
    const ws = this.live?.ws;
    if (!ws) return;
    for (const [app, ids] of acks) {
      for (let start = 0; start < ids.length; start += ACK_MAX) {
        ws.send(protocol.ack(app, ids.slice(start, start + ACK_MAX)));
      }
    }
  }

  private async loadCursor(app: string): Promise<void> {
    if (this.cursors.has(app)) return;
    const stored = await this.storage.getItem(cursorKey(app, this.uid));
    this.cursors.set(app, stored && /^\d+$/.test(stored) ? stored : "0");
  }

  private saveCursor(app: string, id: string): void {
    const cursor = maxId(this.cursors.get(app) ?? "0", id);
    this.cursors.set(app, cursor);
    Promise.resolve(this.storage.setItem(cursorKey(app, this.uid), cursor)).catch(() => undefined);
  }

  /** The broadcast cursor kept for an app (the id of the last broadcast seen). */
  cursor(app: string = this.app): string {
    return this.cursors.get(app) ?? "0";
  }

  // -- requests -------------------------------------------------------------------------------

  /** Send a request built for a fresh seq and wait for the reply with that seq. */
  private async request(replyOp: number, build: (seq: number) => Uint8Array,
                        timeoutMs = this.options.requestTimeoutMs): Promise<Uint8Array> {
    const started = Date.now();
    const ws = await this.linkUp(timeoutMs, "no session");
    const seq = this.nextSeq();
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = this.later(Math.max(timeoutMs - (Date.now() - started), 0), () => {
        this.pending.delete(seq);
        reject(new Unavailable(`no reply within ${timeoutMs} ms`));
      });
      const settle = <T>(f: (v: T) => void) => (v: T) => {
        this.clear(timer);
        this.pending.delete(seq);
        f(v);
      };
      this.pending.set(seq, { replyOp, resolve: settle(resolve), reject: settle(reject) });
      ws.send(build(seq));
    });
  }

  private resolve(event: Extract<Event, { type: "replied" | "failed" }>): void {
    const request = this.pending.get(event.seq)!;
    if (event.type === "failed") request.reject(fromCode(event.code, event.message));
    else if (event.op !== request.replyOp) request.reject(new ProtocolError(`op ${event.op} answered the request`));
    else request.resolve(event.body);
  }

  /** The open session's socket, waiting up to `timeoutMs` (0: no bound) for one. */
  private linkUp(timeoutMs: number, what: string): Promise<WebSocketLike> {
    return new Promise((resolve, reject) => {
      let timer: Timer | undefined;
      const check = (): void => {
        const live = this.live;
        const done = live ? () => resolve(live.ws)
          : this.failure ? () => reject(this.failure)
          : this.stopped ? () => reject(new Unavailable("the client is closed")) : undefined;
        if (!done) return;
        this.waiters.delete(check);
        this.clear(timer);
        done();
      };
      this.waiters.add(check);
      if (timeoutMs > 0) {
        timer = this.later(timeoutMs, () => {
          this.waiters.delete(check);
          reject(new Unavailable(`${what} within ${timeoutMs} ms`));
        });
      }
      check();
    });
  }

  // -- plumbing -------------------------------------------------------------------------------

  private async freshToken(): Promise<string> {
    const { token } = this.options;
    return typeof token === "function" ? await token() : token;
  }

  /** Stop for good: close the link, clear timers, wake everyone waiting. */
  private stop(error: PushwireError | undefined): void {
    if (this.stopped) return;
    this.stopped = true;
    this.failure = error;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.wakeSleep?.();
    const link = this.link;
    if (link) {
      this.closing = this.closeSocket(link.ws);
      link.ended({ code: 1000, reason: "client closed" });
    }
    for (const ws of this.stale) ws.close(1000, "client closed");
    this.stale.clear();
    for (const wake of [...this.waiters]) wake();
    this.setState(error ? { state: "closed", error } : { state: "closed" });
  }

  /** Close a socket with 1000 and wait for the room's close frame, CLOSE_TIMEOUT_MS at most. */
  private closeSocket(ws: WebSocketLike): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        ws.terminate?.();
        resolve();
      }, CLOSE_TIMEOUT_MS);
      ws.onclose = () => {
        clearTimeout(timer);
        resolve();
      };
      ws.close(1000, "client closed");
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.later(ms, () => resolve());
      this.wakeSleep = () => {
        this.clear(timer);
        resolve();
      };
    });
  }

  private later(ms: number, run: () => void): Timer {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      run();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  private clear(timer: Timer | undefined): void {
    if (timer === undefined) return;
    clearTimeout(timer);
    this.timers.delete(timer);
  }

  private nextSeq(): number {
    this.seq = (this.seq % 0xffffffff) + 1;     // u32, never 0 (0: not a request)
    return this.seq;
  }

  private setState(change: StateChange): void {
    this.state = change.state;
    this.emit("state", change);
  }

  private emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    for (const listener of this.listeners[event]) {
      try {
        (listener as (...a: unknown[]) => void)(...args);
      } catch {
        // a listener's failure is the application's; the connection goes on
      }
    }
  }
}

const inert: WebSocketLike = {
  binaryType: "arraybuffer", protocol: "", send: () => undefined, close: () => undefined,
  onopen: null, onmessage: null, onclose: null, onerror: null,
};

function once<T>(f: (value: T) => void): (value: T) => void {
  let called = false;
  return (value) => {
    if (!called) {
      called = true;
      f(value);
    }
  };
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
