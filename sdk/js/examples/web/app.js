// The example page's logic: one PushClient, its state and its pushes on the page.
// `?once=unicast,broadcast` (used by the repository's browser test) stops once a push of each
// kind named arrived (the unicast one acknowledged) and reports them in `window.result`, with
// the broadcast cursor the SDK kept in localStorage.
import { ClientClosed, PushClient } from "./pushwire.min.js";

const form = document.querySelector("#settings");
const params = new URLSearchParams(location.search);
for (const name of ["dispatcher", "app", "uid", "token"]) {
  if (params.has(name)) form.elements[name].value = params.get(name);
}
let client;
let endpoint = "";        // where the open session is
const wanted = new Set((params.get("once") || "unicast").split(","));   // ?once: kinds to wait for
const got = {};

form.addEventListener("submit", (event) => {
  event.preventDefault();
  start(Object.fromEntries(new FormData(form)));
});
document.querySelector("#disconnect").addEventListener("click", () => client?.close());
if (params.has("connect")) start(Object.fromEntries(new FormData(form)));

async function start({ dispatcher, app, uid, token }) {
  await client?.close();
  client = new PushClient({ dispatcher, app, uid, token, device: "web" });
  client.on("state", show);
  client.on("message", (message) => received(client, message));
  client.on("error", (error) => console.warn(`room error ${error.code}: ${error.message}`));
  document.querySelector("#disconnect").disabled = false;
  try {
    await client.connect();
  } catch (error) {
    const why = error instanceof ClientClosed ? `refused (${error.closeCode} ${error.reason})` : error.message;
    document.querySelector("#detail").textContent = why;
    if (params.has("once")) window.result = { error: why };
  }
}

function show(change) {
  if (change.state === "open") endpoint = change.endpoint;
  document.querySelector("#state").textContent = change.state;
  const detail = change.state === "open" ? `session ${change.session.sessionId} on ${change.endpoint}`
    : change.state === "reconnecting" ? `in ${Math.round(change.delayMs)} ms`
    : change.error ? change.error.message : "";
  document.querySelector("#detail").textContent = detail;
}

async function received(current, message) {
  const item = document.createElement("li");
  const data = new TextDecoder().decode(message.data);
  item.textContent = `${message.kind} ${message.id}${message.topic ? ` [${message.topic}]` : ""}: ${data}`;
  document.querySelector("#pushes").append(item);
  if (!params.has("once") || !wanted.has(message.kind) || message.kind in got) return;
  got[message.kind] = { id: message.id, data };
  if (message.kind === "unicast") current.ack(message);
  if (Object.keys(got).length < wanted.size) return;
  await current.close();                  // sends the ACK first
  const cursor = localStorage.getItem(`pushwire.cursor.${current.app}.${current.uid}`);
  window.result = { ...got, endpoint, cursor, state: current.state };
}
