// A real `pushwire dev` cluster for the SDK's tests: started on free ports with its own
// PUSHWIRE_HOME (a temporary folder), stopped by its PID (SIGINT: it stops its children in
// order), plus the business side a test needs (center's HTTP API, the `pushwire` CLI).
//
// The repository's .venv provides `pushwire` (scripts/venv); PUSHWIRE_BIN overrides it.

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { promisify } from "node:util";

export const REPO = fileURLToPath(new URL("../../../../", import.meta.url));
const VENV = join(REPO, ".venv", "bin");
export const PUSHWIRE = process.env.PUSHWIRE_BIN ?? join(VENV, "pushwire");
const run = promisify(execFile);

/** A --port-offset whose ports are free now (the repo's own chooser, tests/integration/test_dev.py). */
async function freeOffset(home) {
  const code = "import sys; from pathlib import Path; " +
    "from tests.integration.test_dev import free_offset; print(free_offset(Path(sys.argv[1])))";
  const { stdout } = await run(join(VENV, "python"), ["-c", code, home], { cwd: REPO, timeout: 60_000 });
  return Number(stdout.trim());
}

/** Start `pushwire dev` (options: rooms, tls); resolves once its banner says it is up. */
export async function startCluster({ rooms = 1, tls = false } = {}) {
  const home = mkdtempSync(join(tmpdir(), "pushwire-js-"));
  const env = { ...process.env, PUSHWIRE_HOME: home };
  for (const key of ["PUSHWIRE_DISPATCHER_URL", "PUSHWIRE_CENTER_URL", "PUSHWIRE_API_KEY"]) delete env[key];
  const args = ["dev", "--port-offset", String(await freeOffset(home)), "--rooms", String(rooms),
                "--ready-timeout", "90"];     // a loaded CI machine starts it slowly
  if (tls) args.push("--tls");
  const dev = spawn(PUSHWIRE, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const log = [];
  dev.stderr.on("data", (chunk) => log.push(String(chunk)));
  const exited = new Promise((resolve) => dev.once("exit", resolve));
  const lines = createInterface({ input: dev.stdout });
  let banner = "";
  for await (const line of lines) {
    banner += line + "\n";
    if (line.includes("Ctrl-C") || line.includes("did not come up")) break;
  }
  dev.stdout.resume();               // keep draining what it prints afterwards
  const cluster = new Cluster(home, env, dev, exited);
  if (!banner.includes("pushwire dev is up")) {
    await cluster.stop();
    throw new Error(`pushwire dev did not start:\n${banner}${log.join("")}`);
  }
  cluster.banner = banner;
  return cluster;
}

export class Cluster {
  constructor(home, env, dev, exited) {
    Object.assign(this, { home, env, dev, exited });
    try {
      const file = JSON.parse(readFileSync(join(home, "dev", "cluster.json"), "utf8"));
      this.dispatcher = file.dispatcher;
      this.center = file.center;
      this.secret = file.apps.demo.secret;
      this.apiKey = file.apps.demo.api_key;
    } catch {
      // not up: stop() cleans up, the caller reports the banner
    }
    this.ca = join(home, "dev", "tls", "ca.pem");
  }

  /** SIGINT to `pushwire dev` (it stops its children in order); SIGKILL after 30 s. */
  async stop() {
    if (this.dev.exitCode === null && this.dev.signalCode === null) {
      this.dev.kill("SIGINT");
      const timer = setTimeout(() => this.dev.kill("SIGKILL"), 30_000);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.home, { recursive: true, force: true });
  }

  /** Run the `pushwire` CLI against this cluster; resolves to its stdout. */
  async pushwire(...args) {
    const { stdout } = await run(PUSHWIRE, args, { env: this.env, timeout: 60_000 });
    return stdout;
  }

  /** A call of center's HTTP API with the demo app's key; resolves to [status, body]. */
  async api(method, path, body) {
    const response = await fetch(`${this.center}/v1/apps/demo${path}`, {
      method, headers: { authorization: `Bearer ${this.apiKey}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return [response.status, await response.json()];
  }

  /** Push `data` to `uid`; resolves to the message id (a string). */
  async push(uid, data) {
    const [status, body] = await this.api("POST", "/push", { uids: [uid], data });
    if (status !== 200) throw new Error(`push: ${status} ${JSON.stringify(body)}`);
    return body.messages[0].id;
  }

  /** The stored state of a message: stored, acked, expired, dead. */
  async state(id) {
    const [status, body] = await this.api("GET", `/messages/${id}`);
    if (status !== 200) throw new Error(`message ${id}: ${status} ${JSON.stringify(body)}`);
    return body.state;
  }
}
