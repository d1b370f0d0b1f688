// The SDK against a real `pushwire dev` cluster (two rooms), as an application uses it:
// what arrives, what the center then says about each message, what the client does when the
// room kicks, drains or loses it. Stops the cluster at the end (by PID).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer as createHttpServer } from "node:http";
import { createServer, connect as tcpConnect } from "node:net";
import { createInterface } from "node:readline";
import { after, afterEach, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { WebSocket as Ws } from "ws";
import { ClientClosed, MemoryStorage, PushClient } from "../dist/index.js";
import { startCluster } from "./support/cluster.mjs";
import { mint } from "./support/token.mjs";
import { Recorder, text, until } from "./support/wait.mjs";

let cluster;
const clients = [];

before(async () => { cluster = await startCluster({ rooms: 2 }); });
after(async () => { await cluster?.stop(); });
afterEach(async () => { await Promise.all(clients.splice(0).map((c) => c.close())); });

/** A client of `uid` (not connected yet) with a recorder of what it emits. */
function client(uid, options = {}) {
  const made = new PushClient({ dispatcher: cluster.dispatcher, app: "demo", uid,
                                token: () => mint(cluster.secret, { uid }), storage: new MemoryStorage(),
                                ...options });
  clients.push(made);
  return [made, new Recorder(made)];
}

async function connected(uid, options) {
  const [made, recorder] = client(uid, options);
  await made.connect();
  return [made, recorder];
}

const acked = (id) => until(async () => (await cluster.state(id)) === "acked", `message ${id} acked`);

test("a unicast push arrives once with its exact 64-bit id and is acked", async () => {
  const [, seen] = await connected("uni");
  const id = await cluster.push("uni", "hello");
  assert.ok(BigInt(id) > 2n ** 53n, id);
  const message = await seen.message((m) => m.id === id);
  assert.deepEqual([message.app, message.kind, text(message)], ["demo", "unicast", "hello"]);
  await acked(id);
  assert.equal(seen.messages.filter((m) => m.id === id).length, 1);
});

test("messages stored while offline are replayed on connect, then acked", async () => {
  const ids = [await cluster.push("offline", "one"), await cluster.push("offline", "two")];
  assert.equal(await cluster.state(ids[0]), "stored");
  const [, seen] = await connected("offline");
  for (const id of ids) await seen.message((m) => m.id === id);
  await Promise.all(ids.map(acked));
});

test("a message the handler fails on is not acked, and comes back", async () => {
  const [made, seen] = client("refuse");
  made.on("message", (m) => { if (text(m) === "again") throw new Error("the app failed"); });
  await made.connect();
  const id = await cluster.push("refuse", "again");
  await seen.message((m) => m.id === id);
  const next = await cluster.push("refuse", "next");     // its ACK leaves after the first's would
  await acked(next);
  assert.equal(await cluster.state(id), "stored");
  await made.close();
  const [, later] = await connected("refuse");           // a new connection gets it again
  await later.message((m) => m.id === id);
  await acked(id);
});

test("a bound topic gets what is published to it", async () => {
  const [made, seen] = await connected("topics");
  assert.deepEqual(await made.bind("", "", ["news"]), ["news"]);
  const [status, reply] = await cluster.api("POST", "/topics/news/publish", { data: "extra" });
  assert.equal(status, 200, JSON.stringify(reply));
  const message = await seen.message((m) => m.kind === "topic");
  assert.deepEqual([message.topic, text(message)], ["news", "extra"]);
  assert.deepEqual(await made.unbind("", ["news"]), ["news"]);
});

test("broadcasts are replayed after the stored cursor only", async () => {
  const storage = new MemoryStorage();
  const broadcast = async (data) => {
    const [status, job] = await cluster.api("POST", "/broadcasts", { data });
    assert.equal(status, 201, JSON.stringify(job));
    return job.id;
  };
  const first = await broadcast("b1");
  const [one, seen] = await connected("cursor", { storage });
  await seen.message((m) => m.id === first);
  assert.equal(await storage.getItem("pushwire.cursor.demo.cursor"), first);
  await one.close();
  const second = await broadcast("b2");
  const [, again] = await connected("cursor", { storage });
  const replayed = await again.message((m) => m.id === second);
  assert.equal(replayed.kind, "broadcast");
  assert.ok(!again.messages.some((m) => m.id === first), "b1 again after the cursor passed it");
});

test("UP reaches the app's webhook and its reply comes back", async () => {
  const received = [];
  const hook = createHttpServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => { body += chunk; });
    request.on("end", () => { received.push(body); response.writeHead(200).end("{}"); });
  });
  await new Promise((resolve) => hook.listen(0, "127.0.0.1", resolve));
  try {
    await cluster.pushwire("app", "set", "demo", "--webhook", `chat=http://127.0.0.1:${hook.address().port}/up`);
    const [made] = await connected("upper");
    const reply = await until(async () => {     // the app change reaches the coordinator
      const r = await made.sendUp("demo", "chat", "hi there");
      return r.outcome === "delivered" ? r : undefined;
    }, "UP delivered");
    assert.equal(reply.status, 200);
    assert.ok(received.some((body) => body.includes("hi there")), received.join("\n"));
    const refused = await made.sendUp("demo", "no-such-type", "x");
    assert.deepEqual([refused.outcome, refused.status], ["rejected", 0]);
  } finally {
    hook.close();
  }
});

test("an unknown app is refused for good by the dispatcher", async () => {
  const [made] = client("nobody", { app: "no-such-app" });
  await assert.rejects(made.connect(), (error) => error.name === "NotFound" && error.code === 1006);
  assert.equal(made.state, "closed");
});

test("a kick stops the client: closed with ClientClosed 4102, no reconnect", async () => {
  const [, seen] = await connected("kicked");
  await cluster.pushwire("kick", "--app", "demo", "--uid", "kicked", "--reason", "bye");
  const closed = await seen.state((s) => s.state === "closed", "closed");
  assert.ok(closed.error instanceof ClientClosed);
  assert.deepEqual([closed.error.closeCode, closed.error.reason], [4102, "bye"]);
  assert.equal(seen.states.filter((s) => s.state === "reconnecting").length, 0);
});

test("a bad token is refused for good with the room's reason", async () => {
  const [made] = client("forged", { token: mint("not-the-secret", { uid: "forged" }) });
  await assert.rejects(made.connect(), (error) => error instanceof ClientClosed && error.closeCode === 4100
                       && error.reason === "bad token signature");
});

test("an expired token is renewed once through the callback; expired again, it stops", async () => {
  const past = Math.floor(Date.now() / 1000) - 600;
  const expired = () => mint(cluster.secret, { uid: "expiry", iat: past, ttlS: 60 });
  const tokens = [expired(), mint(cluster.secret, { uid: "expiry" })];
  const [renewed, seen] = client("expiry", { token: () => tokens.shift() });
  await renewed.connect();
  assert.equal(tokens.length, 0);
  assert.equal(seen.states.filter((s) => s.state === "reconnecting").length, 1);
  const [stale] = client("expiry", { token: expired });
  await assert.rejects(stale.connect(), (error) => error.closeCode === 4101);
});

test("after a dropped socket the session resumes: same session, pushes meanwhile arrive", async () => {
  const proxy = await Proxy.start(cluster.banner);
  class ViaProxy extends WebSocket {          // the platform WebSocket, through a cuttable link
    constructor(url, protocols) { super(proxy.via(url), protocols); }
  }
  try {
    const [made, seen] = await connected("flaky", { WebSocket: ViaProxy });
    const session = made.session.sessionId;
    proxy.cut();
    const id = await cluster.push("flaky", "while away");
    const back = await seen.state((s) => s.state === "open", "open again", 30_000, 2);
    assert.deepEqual([back.session.resumed, back.session.sessionId], [true, session]);
    assert.ok(seen.states.some((s) => s.state === "reconnecting" && s.code === 1006));
    await seen.message((m) => m.id === id);
    await acked(id);
  } finally {
    proxy.close();
  }
});

test("the negotiated heartbeat notices a link that went silent; the session resumes", async () => {
  await cluster.pushwire("app", "set", "demo", "--set", "heartbeat_min_s=1");
  const proxy = await Proxy.start(cluster.banner);
  class ViaProxy extends WebSocket {
    constructor(url, protocols) { super(proxy.via(url), protocols); }
  }
  try {
    const made = await until(async () => {      // the app change reaches the rooms
      const [candidate] = await connected("silent", { WebSocket: ViaProxy, heartbeatS: 2 });
      if (candidate.session.heartbeatS === 2) return candidate;
      await candidate.close();
    }, "a 2 s heartbeat negotiated");
    const seen = new Recorder(made);
    const session = made.session.sessionId;
    proxy.freeze();                 // no FIN, no close frame: nothing comes back any more
    const back = await seen.state((s) => s.state === "open", "open again", 30_000);
    assert.deepEqual([back.session.resumed, back.session.sessionId], [true, session]);
    assert.ok(seen.states.some((s) => s.state === "reconnecting" && s.code === 1006));
    const id = await cluster.push("silent", "after the silence");
    await seen.message((m) => m.id === id);
    await acked(id);
  } finally {
    proxy.close();
  }
});

test("a WebSocket class passed in (the ws package) works the same", async () => {
  const [, seen] = await connected("injected", { WebSocket: Ws });
  const id = await cluster.push("injected", "via ws");
  await seen.message((m) => m.id === id);
  await acked(id);
});

test("close() leaves no timer and no socket of the client behind", async () => {
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
  const before = timers();
  const [made, seen] = await connected("closing", { WebSocket: Ws });
  const id = await cluster.push("closing", "last");
  await seen.message((m) => m.id === id);
  await made.close();                       // sends the gathered ACK first
  assert.equal(made.state, "closed");
  assert.equal(timers(), before);
  await acked(id);
});

test("examples/listen.mjs prints a push sent with `pushwire push` as one JSON line", async () => {
  const example = fileURLToPath(new URL("../examples/listen.mjs", import.meta.url));
  const listen = spawn(process.execPath, [example, "--dispatcher", cluster.dispatcher, "--app", "demo",
                                          "--uid", "cli", "--token", mint(cluster.secret, { uid: "cli" })],
                       { stdio: ["ignore", "pipe", "pipe"] });
  const lines = createInterface({ input: listen.stdout })[Symbol.asyncIterator]();
  const stderr = createInterface({ input: listen.stderr })[Symbol.asyncIterator]();
  try {
    for (let line = await stderr.next(); !String(line.value).includes("open"); line = await stderr.next()) {
      assert.ok(!line.done, "listen.mjs ended before a session opened");
    }
    const pushed = JSON.parse(await cluster.pushwire("push", "--app", "demo", "--uid", "cli", "--data", "hey"));
    const id = pushed.messages[0].id;
    let printed;
    do {          // the broadcasts of earlier tests come first (replayed on connect)
      const line = await lines.next();
      assert.ok(!line.done, "listen.mjs ended before printing the push");
      printed = JSON.parse(line.value);
      assert.equal(typeof printed.id, "string");
    } while (printed.id !== id);
    assert.deepEqual(printed, { id, app: "demo", kind: "unicast", data: "hey" });
    await acked(id);
  } finally {
    listen.kill("SIGINT");
  }
});

// Last: the drained room keeps running (draining) and takes no new client afterwards.
test("a draining room's RECONNECT moves the client to the other room, topics bound again", async () => {
  const [made, seen] = await connected("mover");
  await made.bind("", "", ["moves"]);
  const from = made.session.room;
  await cluster.pushwire("drain", from, "--keep-running", "--timeout", "60");
  const moved = await seen.state((s) => s.state === "open", "open again", 30_000, 2);
  assert.notEqual(moved.session.room, from);
  assert.equal(moved.session.resumed, false);            // a new session in another room
  assert.ok(seen.states.some((s) => s.state === "reconnecting" && s.code === 4003));
  await until(async () => {        // the SDK's BIND of the new session may still be on its way
    await cluster.api("POST", "/topics/moves/publish", { data: "bound again" });
    return seen.messages.some((m) => m.topic === "moves");
  }, "a topic message after the move");
  const id = await cluster.push("mover", "after the move");
  await seen.message((m) => m.id === id);
  await acked(id);
});

/** A TCP relay in front of the rooms whose connections a test can cut without a close frame. */
class Proxy {
  static async start(banner) {
    const rooms = [...banner.matchAll(/ws:\/\/127\.0\.0\.1:(\d+)\//g)].map((m) => Number(m[1]));
    const proxy = new Proxy();
    for (const port of rooms) proxy.ports.set(port, await proxy.listen(port));
    return proxy;
  }

  constructor() {
    this.ports = new Map();          // room port -> relay port
    this.servers = [];
    this.sockets = new Set();
  }

  listen(target) {
    const server = createServer((inbound) => {
      const outbound = tcpConnect(target, "127.0.0.1");
      for (const [a, b] of [[inbound, outbound], [outbound, inbound]]) {
        this.sockets.add(a);
        a.pipe(b);
        a.on("error", () => b.destroy());
        a.on("close", () => { this.sockets.delete(a); b.destroy(); });
      }
    });
    this.servers.push(server);
    return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
  }

  via(url) {
    const port = Number(new URL(url).port);
    return url.replace(`:${port}/`, `:${this.ports.get(port)}/`);
  }

  /** Stop relaying on every connection, leaving them open: a link gone silent. */
  freeze() {
    for (const socket of this.sockets) {
      socket.unpipe();
      socket.pause();
    }
  }

  /** Drop every relayed connection at once: no close frame, no FIN from the client. */
  cut() {
    for (const socket of this.sockets) socket.resetAndDestroy();
  }

  close() {
    this.cut();
    for (const server of this.servers) server.close();
  }
}
