// npm test: the unit tests and the tests against a real `pushwire dev` cluster, under Node's
// test runner, one file at a time. Node 20 has its WebSocket behind a flag: it is turned on,
// so the tests drive the platform WebSocket that Node 22 and browsers have.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const files = ["test/unit", "test"].flatMap((dir) => readdirSync(`${root}${dir}`)
  .filter((name) => name.endsWith(".test.mjs")).map((name) => `${dir}/${name}`));
const only = process.argv.slice(2);
const flags = typeof globalThis.WebSocket === "function" ? [] : ["--experimental-websocket"];
const env = { ...process.env, NODE_OPTIONS: [process.env.NODE_OPTIONS ?? "", ...flags].join(" ").trim() };
const done = spawnSync(process.execPath, ["--test", "--test-concurrency=1", ...(only.length ? only : files)],
                       { cwd: root, env, stdio: "inherit" });
process.exit(done.status ?? 1);
