// npm run crowd [-- N [ROUNDS]]: N SDK clients (default 1,000) in this one process against one
// room of a `pushwire dev` cluster it starts; prints memory per client (heap + buffers, RSS)
// and CPU of this process per received push (ROUNDS pushes to every client, each ACKed).
// A measurement, not a test: docs/clients.md reports its figures.
import { MemoryStorage, PushClient } from "../dist/index.js";
import { startCluster } from "../test/support/cluster.mjs";
import { mint } from "../test/support/token.mjs";
import { until } from "../test/support/wait.mjs";

const [n = 1000, rounds = 5] = process.argv.slice(2).map(Number);
const WebSocket = globalThis.WebSocket ?? (await import("ws")).WebSocket;
if (typeof gc !== "function") throw new Error("run with node --expose-gc");
const memory = () => {
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed + m.external + m.arrayBuffers, rss: m.rss };
};

const cluster = await startCluster();
const clients = [];
try {
  const before = memory();
  let received = 0;
  for (let start = 0; start < n; start += 100) {          // 100 handshakes at a time
    const batch = Array.from({ length: Math.min(100, n - start) }, (_, i) => {
      const uid = `crowd-${start + i}`;
      const client = new PushClient({ dispatcher: cluster.dispatcher, app: "demo", uid, WebSocket,
                                      token: mint(cluster.secret, { uid }), storage: new MemoryStorage() });
      client.on("message", () => { received += 1; });
      clients.push(client);
      return client.connect();
    });
    await Promise.all(batch);
  }
  const connected = memory();
  const uids = clients.map((c) => c.uid);
  const cpu = process.cpuUsage();
  for (let round = 0; round < rounds; round += 1) {
    for (let start = 0; start < n; start += 1000) {
      const [status, body] = await cluster.api("POST", "/push", { uids: uids.slice(start, start + 1000), data: `round ${round}` });
      if (status !== 200) throw new Error(`push: ${status} ${JSON.stringify(body)}`);
    }
    await until(() => received >= n * (round + 1), `round ${round} received`, 120_000);
  }
  await new Promise((resolve) => setTimeout(resolve, 50));       // the last ACKs leave
  const used = process.cpuUsage(cpu);
  console.log(JSON.stringify({
    clients: n, pushes: received, node: process.version,
    heap_per_client_kb: +((connected.heap - before.heap) / n / 1024).toFixed(1),
    rss_per_client_kb: +((connected.rss - before.rss) / n / 1024).toFixed(1),
    cpu_us_per_push: +((used.user + used.system) / received).toFixed(1),
  }));
} finally {
  await Promise.all(clients.map((c) => c.close()));
  await cluster.stop();
}
