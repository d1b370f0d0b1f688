// The client's decisions (src/client.ts) with an in-memory dispatcher and room standing in for
// the network, as httpx tests through a mock transport: ACK batching, dedupe, failed= and
// attempt reporting, the route cache per network, RECONNECT. test/cluster.test.mjs drives
// the same client through a real cluster.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { MemoryStorage, PushClient } from "../../dist/index.js";
import { fields, text, Writer } from "../../dist/pb.js";
import * as protocol from "../../dist/protocol.js";
import { decode, encode, encodeBatch, Op } from "../../dist/wire.js";
import { until } from "../support/wait.mjs";

/** One connection to the in-memory room: answers AUTH, records what the client sends. */
class MemorySocket {
  static opened = [];
  static refuse = new Set();        // endpoints that close before AUTH_REPLY
  static resumes = false;           // AUTH_REPLY says the session was resumed

  constructor(url, protocols) {
    Object.assign(this, { url, protocols, protocol: "pushwire.v1", binaryType: "blob", packets: [] });
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    MemorySocket.opened.push(this);
    setImmediate(() => (MemorySocket.refuse.has(url) ? this.closedBy(1006) : this.onopen?.({})));
  }

  send(data) {
    const [packet] = decode(data);
    this.packets.push(packet);
    if (packet.op === Op.AUTH && tokenOf(packet) === "expired") {
      setImmediate(() => this.closedBy(4101, "token expired"));
    } else if (packet.op === Op.AUTH) {
      const reply = new Writer().string(1, `s-${MemorySocket.opened.length}`).uint(2, 240).string(3, "resume")
        .bool(5, MemorySocket.resumes).finish();
      this.deliver(encode(Op.AUTH_REPLY, packet.seq, reply));
    } else if (packet.op === Op.BIND) {
      const topics = [...fields(packet.body)].filter((f) => f.field === 3);
      const reply = new Writer();
      for (const topic of topics) reply.string(2, text(topic.bytes));
      this.deliver(encode(Op.BIND_REPLY, packet.seq, reply.finish()));
    }
  }

  close(code = 1000, reason = "") {
    setImmediate(() => this.closedBy(code, reason));
  }

  closedBy(code, reason = "") {
    this.onclose?.({ code, reason });
  }

  deliver(bytes) {
    this.onmessage?.({ data: bytes.slice().buffer });
  }

  acks() {
    return this.packets.filter((p) => p.op === Op.ACK).map((p) => protocol.ackOf(p.body));
  }
}

const tokenOf = (auth) => text([...fields(auth.body)].find((f) => f.field === 4)?.bytes ?? new Uint8Array(0));
const push = (id, app = "demo") => encode(Op.PUSH, 0, new Writer().uint(1, BigInt(id)).string(2, app).finish());

/** A client on the in-memory network; `routes` records the route requests. */
function client(options = {}) {
  const routes = [];
  const made = new PushClient({
    dispatcher: "http://dispatcher", app: "demo", uid: "u1", token: "t", storage: new MemoryStorage(),
    WebSocket: MemorySocket, rand: () => 0.5,
    fetch: async (url) => {
      routes.push(new URL(url));
      const reply = { endpoints: ["ws://r1/", "ws://r2/"], ttl_s: 600, backoff: { base_ms: 1, max_ms: 5 } };
      return { status: 200, text: async () => JSON.stringify(reply) };
    },
    ...options,
  });
  clients.push(made);
  const handed = [];
  made.on("message", (m) => { handed.push(m); });
  return { made, routes, handed };
}

const clients = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  MemorySocket.opened = [];
  MemorySocket.refuse.clear();
  MemorySocket.resumes = false;
});

test("ACKs gathered in one moment leave as one packet per app, at most 256 ids each", async () => {
  const { made, handed } = client();
  await made.connect();
  const [socket] = MemorySocket.opened;
  const ids = Array.from({ length: 300 }, (_, i) => String(385601934519717891n + BigInt(i)));
  socket.deliver(encodeBatch([...ids.map((id) => push(id)), push("7", "other")]));
  await until(() => socket.acks().length, "ACKs sent");
  assert.equal(handed.length, 301);
  assert.deepEqual(socket.acks(), [{ app: "demo", ids: ids.slice(0, 256) }, { app: "demo", ids: ids.slice(256) },
                                   { app: "other", ids: ["7"] }]);
});

test("a copy is handed out once; a copy of an acknowledged one is acknowledged again", async () => {
  const { made, handed } = client();
  await made.connect();
  const [socket] = MemorySocket.opened;
  socket.deliver(push("42"));
  socket.deliver(push("42"));
  await until(() => socket.acks().length === 1, "the ACK");
  socket.deliver(push("42"));                         // that ACK was lost: the room sends it again
  await until(() => socket.acks().length === 2, "the ACK again");
  assert.deepEqual(handed.map((m) => m.id), ["42"]);
  assert.deepEqual(socket.acks()[1], { app: "demo", ids: ["42"] });
});

test("endpoints that fail are reported with failed= and the attempt, then skipped", async () => {
  MemorySocket.refuse.add("ws://r1/");
  MemorySocket.refuse.add("ws://r2/");
  const { made, routes } = client();
  const connecting = made.connect();
  await until(() => routes.length >= 2, "a second route request");
  assert.equal(routes[0].searchParams.get("failed"), null);
  assert.equal(routes[1].searchParams.get("failed"), "r1,r2");
  assert.equal(routes[1].searchParams.get("attempt"), "1");
  MemorySocket.refuse.delete("ws://r2/");
  await connecting;
  assert.equal(MemorySocket.opened.at(-1).url, "ws://r2/");
});

test("the route is cached per network type", async () => {
  const { made, routes } = client();
  await made.connect();
  made.networkChanged("cell");
  await until(() => made.session && MemorySocket.opened.length === 2, "connected on cell");
  made.networkChanged("wifi");
  await until(() => made.session && MemorySocket.opened.length === 3, "connected on wifi again");
  assert.deepEqual(routes.map((r) => r.searchParams.get("net")), ["wifi", "cell"]);
  const auth = MemorySocket.opened[1].packets.find((p) => p.op === Op.AUTH);
  const resume = [...fields(auth.body)].find((f) => f.field === 6);
  assert.equal(text(resume.bytes), "resume");           // the new link offers the session's resume token
});

test("RECONNECT sends the client to its endpoints first, after its delay", async () => {
  const { made } = client();
  await made.connect();
  const [socket] = MemorySocket.opened;
  const move = new Writer().string(1, "ws://r9/").uint(2, 1).string(3, "drain").finish();
  socket.deliver(encode(Op.RECONNECT, 0, move));
  socket.closedBy(4003, "moved");
  await until(() => MemorySocket.opened.length === 2 && made.session, "moved");
  assert.equal(MemorySocket.opened[1].url, "ws://r9/");
});

for (const resumes of [false, true]) {
  test(`after a reconnect ${resumes ? "that resumed, nothing is bound again" : "that did not resume, topics are bound again"}`, async () => {
    MemorySocket.resumes = resumes;
    const { made } = client();
    await made.connect();
    assert.deepEqual(await made.bind("", "", ["a", "b"]), ["a", "b"]);
    made.networkChanged("wifi");
    await until(() => MemorySocket.opened.length === 2 && made.session, "connected again");
    const binds = MemorySocket.opened[1].packets.filter((p) => p.op === Op.BIND);
    const topics = binds.flatMap((p) => [...fields(p.body)].filter((f) => f.field === 3).map((f) => text(f.bytes)));
    assert.deepEqual(topics, resumes ? [] : ["a", "b"]);
  });
}

test("4101: the token function is asked again; when it fails, again on the next round", async () => {
  const answers = [() => "expired", () => { throw new Error("backend down"); }, () => "fresh"];
  const { made } = client({ token: () => answers.shift()() });
  await made.connect();
  assert.equal(answers.length, 0);
  assert.equal(tokenOf(MemorySocket.opened.at(-1).packets.find((p) => p.op === Op.AUTH)), "fresh");
});

test("4101 twice in a row with fresh tokens: the client stops", async () => {
  const { made } = client({ token: () => "expired" });
  await assert.rejects(made.connect(), (error) => error.closeCode === 4101 && error.reason === "token expired");
  assert.equal(made.state, "closed");
});
