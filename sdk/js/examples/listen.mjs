#!/usr/bin/env node
// Connect as one user and print each push as one JSON line (like `pushwire listen`):
//
//   node examples/listen.mjs --dispatcher URL --app APP --uid UID --token TOKEN [--ca FILE]
//                            [--device ID] [--net wifi|cell]
//
// {"id": "385601934519717891", "app": "demo", "kind": "unicast", "data": "hello"} per push
// (`id` a string: ids exceed 2**53; bytes that are not UTF-8 go to `data_b64`, `data` null;
// `topic` for topic pushes). Each unicast push is acknowledged once printed. The client
// reconnects by itself; state changes go to stderr. Ctrl-C closes it; exit code 1 when the
// room refused for good (bad token, kicked, …), 2 for bad usage.
//
// --ca FILE: trust the CAs in FILE for https:// and wss:// (e.g. $PUSHWIRE_HOME/dev/tls/ca.pem
// of `pushwire dev --tls`). Node reads extra CAs only at start (NODE_EXTRA_CA_CERTS), so the
// script starts itself again with it set.
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { ClientClosed, PushClient } from "../dist/index.js";

const usage = "usage: listen.mjs --dispatcher URL --app APP --uid UID --token TOKEN [--ca FILE] " +
  "[--device ID] [--net NET]";
let args;
try {
  ({ values: args } = parseArgs({ options: {
    dispatcher: { type: "string" }, app: { type: "string" }, uid: { type: "string" },
    token: { type: "string" }, ca: { type: "string" }, device: { type: "string", default: "node" },
    net: { type: "string", default: "wifi" } } }));
} catch (error) {
  console.error(`${error.message}\n${usage}`);
  process.exit(2);
}
if (!args.dispatcher || !args.app || !args.uid || !args.token) {
  console.error(usage);
  process.exit(2);
}

if (args.ca && process.env.NODE_EXTRA_CA_CERTS !== args.ca) {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)],
                      { stdio: "inherit", env: { ...process.env, NODE_EXTRA_CA_CERTS: args.ca } });
  process.on("SIGINT", () => child.kill("SIGINT"));
  process.on("SIGTERM", () => child.kill("SIGTERM"));
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 130 : 1)));
} else {
  await listen();
}

async function listen() {
  const client = new PushClient({ dispatcher: args.dispatcher, app: args.app, uid: args.uid,
                                  token: args.token, device: args.device, net: args.net,
                                  WebSocket: globalThis.WebSocket ?? await wsPackage(),
                                  connectTimeoutMs: 0 });
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  client.on("message", (message) => {
    const line = { id: message.id, app: message.app, kind: message.kind };
    try {
      line.data = utf8.decode(message.data);
    } catch {
      line.data = null;
      line.data_b64 = Buffer.from(message.data).toString("base64");
    }
    if (message.topic) line.topic = message.topic;
    process.stdout.write(JSON.stringify(line) + "\n");
  });
  client.on("state", (change) => {
    const session = change.session ? ` session ${change.session.sessionId} on ${change.endpoint}` +
      (change.session.resumed ? " (resumed)" : "") : "";
    const retry = change.state === "reconnecting" ? ` in ${Math.round(change.delayMs)} ms (closed ${change.code})` : "";
    console.error(`${change.state}${session}${retry}`);
  });
  client.on("error", (error) => console.error(`room error ${error.code}: ${error.message}`));
  const stop = async () => {
    await client.close();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  try {
    await client.connect();
  } catch (error) {
    console.error(error instanceof ClientClosed
      ? `the room closed the connection with ${error.closeCode}${error.reason ? ` (${error.reason})` : ""}; not reconnecting`
      : error.message);
    process.exit(1);
  }
  client.on("state", (change) => {
    if (change.state === "closed" && change.error) {
      console.error(`stopped: ${change.error.message}`);
      process.exit(1);
    }
  });
}

/** Node 20 has no WebSocket without --experimental-websocket: use the `ws` package if present. */
async function wsPackage() {
  try {
    return (await import("ws")).WebSocket;
  } catch {
    console.error("no WebSocket in this Node: use Node >= 22, run with --experimental-websocket, or npm install ws");
    process.exit(2);
  }
}
