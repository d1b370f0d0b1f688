// pushwire admin console (docs/console.md). Talks to center's admin API (docs/api.md §4) with
// the admin key kept in this tab's sessionStorage, sent as a Bearer header. The page is built
// with textContent only: nothing from the server is ever parsed as HTML.
"use strict";

const KEY = "pushwire.adminKey";
const PAGES = ["topology", "apps", "broadcast", "rooms", "messages", "dead-letters", "errors"];
const EVERY_MS = 2000;
const $ = (id) => document.getElementById(id);
let timer = null;
const jobs = new Map();          // broadcast id -> {app, timer}
const drains = new Map();        // room id -> timer
const profiling = new Set();     // instance ids being profiled

// --- plumbing ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// The admin API's answer to one call; an ApiError (with the server's message) unless 2xx.
async function request(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(KEY) };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    const message = (data.error && data.error.message) || "HTTP " + response.status;
    if (response.status === 401) logout(message);
    throw new ApiError(response.status, message);
  }
  return response;
}

async function api(method, path, body) {
  return (await request(method, path, body)).json().catch(() => ({}));
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") node.textContent = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function table(target, head, rows) {
  const t = $(target);
  t.replaceChildren(el("tr", {}, ...head.map((h) => el("th", { text: h }))));
  for (const row of rows) {
    t.append(el("tr", {}, ...row.map((c) =>
      c instanceof Node ? el("td", {}, c)
        : el("td", typeof c === "number" ? { class: "num", text: c } : { text: c ?? "" }))));
  }
  if (!rows.length) t.append(el("tr", {}, el("td", { colspan: head.length, class: "muted", text: "none" })));
}

function flash(text, bad) {
  const f = $("flash");
  f.textContent = text;
  f.className = bad ? "error" : "ok";
}

const app = () => $("app").value;
const appPath = (rest) => "/v1/admin/apps/" + encodeURIComponent(app()) + rest;
const time = (ms) => (ms ? new Date(ms).toLocaleString() : "-");
const clock = () => new Date().toLocaleTimeString();
function bar(pct) {   // CSSOM, not a style attribute: the CSP allows no inline style
  const fill = el("div");
  fill.style.width = pct + "%";
  return el("div", { class: "bar" }, fill);
}

// A button for what cannot be undone (drain, drop): the first click arms it ("Confirm: ..."),
// a second within 10 s acts. Armed keys outlive the table refreshes that redraw the button.
const armed = new Map();      // key -> the timer that disarms it

function confirmed(key, label, action) {
  const button = el("button", { type: "button" });
  const draw = () => {
    button.textContent = armed.has(key) ? "Confirm: " + label : label;
    button.className = armed.has(key) ? "armed" : "";
  };
  button.addEventListener("click", () => {
    if (armed.has(key)) {
      clearTimeout(armed.get(key));
      armed.delete(key);
      return action();
    }
    armed.set(key, setTimeout(() => { armed.delete(key); draw(); }, 10000));
    draw();
  });
  draw();
  return button;
}

const figure = (label, value) => el("div", { class: "figure" }, el("b", { text: value }), label);

// --- login ------------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key").value = "";
  try {
    await loadApps();
  } catch (err) {
    $("login-error").textContent = err.status === 401 ? "Wrong admin key: " + err.message
      : "Cannot log in: " + err.message;
    return;
  }
  $("login-error").textContent = "";
  for (const id of ["nav", "app-pick", "logout"]) $(id).hidden = false;
  if (!PAGES.includes(location.hash.slice(1))) location.hash = "#topology";
  show();
}

function logout(message) {
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  for (const job of jobs.values()) clearInterval(job.timer);
  for (const t of drains.values()) clearInterval(t);
  jobs.clear();
  drains.clear();
  for (const id of ["nav", "app-pick", "logout", ...PAGES]) $(id).hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = typeof message === "string" ? message : "";
}

async function loadApps() {
  const { apps } = await api("GET", "/v1/admin/apps");
  const keep = app();
  $("app").replaceChildren(...apps.map((a) => el("option", { value: a.id, text: a.id })));
  if (apps.some((a) => a.id === keep)) $("app").value = keep;
}

// --- pages ------------------------------------------------------------------------------------

function show() {
  if (!sessionStorage.getItem(KEY)) return logout();
  const page = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "topology";
  $("login").hidden = true;
  for (const p of PAGES) $(p).hidden = p !== page;
  for (const a of document.querySelectorAll("nav a")) {
    a.className = a.getAttribute("href") === "#" + page ? "on" : "";
  }
  for (const n of document.querySelectorAll(".app-name")) n.textContent = app();
  flash("");
  clearInterval(timer);
  const live = { topology: topology, rooms: rooms, errors: errors, apps: figures }[page];
  const once = { apps: appConfig, "dead-letters": deadLetters }[page];
  if (once) guarded(once)();
  if (live) {
    guarded(live)();
    timer = setInterval(guarded(live), EVERY_MS);
  }
}

function guarded(fn) {
  return () => fn().catch((err) => flash(err.message, true));
}

async function topology() {
  const { instances, at_ms } = await api("GET", "/v1/admin/topology");
  table("topology-table", ["kind", "id", "IDC", "address", "load", "state", "version", "health",
    "profile"],
    instances.map((i) => [i.kind, i.id, i.idc,
      Object.entries(i.addresses).map(([role, a]) => role + " " + a).join(", "),
      i.kind === "room" ? i.load + " / " + (i.capacity || "-") : "",
      i.draining ? "draining" : "serving", i.version || "-",
      el("span", { class: i.health === "ok" ? "ok" : "bad", text: i.health }),
      profileCell(i)]));
  $("topology-at").textContent = "Updated " + time(at_ms) + ".";
}

// Instances with internal gRPC can be profiled (docs/operations.md §9); the dispatcher cannot.
function profileCell(instance) {
  if (!("grpc" in instance.addresses)) return "";
  if (profiling.has(instance.id)) return el("span", { class: "muted", text: "sampling…" });
  return el("button", { type: "button", on: { click: guarded(() => profile(instance.id)) } },
    "Profile");
}

async function profile(id) {
  const seconds = Number($("profile-seconds").value);
  const body = { seconds, format: $("profile-format").value };
  profiling.add(id);
  flash("Sampling " + id + " for " + seconds + " s…");
  guarded(topology)();
  try {
    const response = await request("POST",
      "/v1/admin/instances/" + encodeURIComponent(id) + "/profile", body);
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || id + ".profile";
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    flash("Profile of " + id + " saved as " + name + ": " +
      response.headers.get("X-Profile-Ticks") + " samples in " +
      response.headers.get("X-Profile-Seconds") + " s.");
  } finally {
    profiling.delete(id);
  }
}

let lastTotals = null;    // {app, at_ms, stored}: pushes per second between two refreshes

async function figures() {
  const s = await api("GET", appPath("/stats"));
  const m = s.messages;
  let rate = "-";
  if (lastTotals && lastTotals.app === s.app && s.at_ms > lastTotals.at_ms) {
    rate = Math.max(0, Math.round((m.stored - lastTotals.stored) * 1000 / (s.at_ms - lastTotals.at_ms)));
  }
  lastTotals = { app: s.app, at_ms: s.at_ms, stored: m.stored };
  $("app-figures").replaceChildren(
    figure("connections", s.connections), figure("online users", s.users),
    figure("sessions", s.sessions), figure("pushes/s", rate),
    figure("ACK rate", m.stored ? Math.round(m.acked * 100 / m.stored) + "%" : "-"),
    figure("messages pending", m.pending), figure("messages dead-lettered", m.dead), figure("dead letters (webhooks)", s.dead_letters),
    ...Object.entries(s.rooms).map(([room, n]) => figure("on " + room, n ?? "no answer")));
}

const CREDENTIALS = ["secrets", "api_keys", "webhook_secrets", "retiring_secrets", "retiring_api_keys"];
let shownConfig = {};

async function appConfig() {
  const view = await api("GET", appPath(""));
  shownConfig = Object.fromEntries(Object.entries(view).filter(([k]) => !CREDENTIALS.includes(k)));
  $("app-config").value = JSON.stringify(shownConfig, null, 2);
  $("app-saved").textContent = "";
}

async function saveApp() {
  let edited;
  try {
    edited = JSON.parse($("app-config").value);
  } catch (err) {
    throw new Error("The configuration is not valid JSON: " + err.message);
  }
  const changes = Object.fromEntries(Object.entries(edited).filter(
    ([k, v]) => JSON.stringify(v) !== JSON.stringify(shownConfig[k])));
  if (!Object.keys(changes).length) { $("app-saved").textContent = "Nothing changed."; return; }
  await api("PATCH", appPath(""), changes);
  await appConfig();
  $("app-saved").textContent = "Saved " + Object.keys(changes).join(", ") + " at " + clock() + ".";
}

async function rotate(kind, field, label) {
  const done = await api("POST", appPath("/" + kind + "/rotate"),
    { overlap_s: Number($("overlap").value) });
  $("rotated").replaceChildren(el("div", { class: "secret" },
    el("p", { text: "New " + label + " (shown once, copy it now):" }), el("code", { text: done[field] }),
    el("p", { text: "The previous ones stop working at " + time(done.old_until * 1000) + "." })));
}

// --- broadcast --------------------------------------------------------------------------------

async function startBroadcast(event) {
  event.preventDefault();
  const job = await api("POST", appPath("/broadcasts"), {
    data: $("bc-data").value, rate_per_s: Number($("bc-rate").value),
    ttl_s: Number($("bc-ttl").value) });
  follow(app(), job);
}

function follow(appId, job) {
  if (jobs.has(job.id)) return;
  const box = el("div", { class: "job", id: "job-" + job.id });
  $("jobs").prepend(box);
  const entry = { app: appId, timer: null };
  jobs.set(job.id, entry);
  const path = "/v1/admin/apps/" + encodeURIComponent(appId) + "/broadcasts/" + job.id;
  const poll = async () => {
    const now = await api("GET", path);
    drawJob(box, now, path);
    if (now.state !== "running") clearInterval(entry.timer);
  };
  drawJob(box, job, path);
  entry.timer = setInterval(() => poll().catch((err) => flash(err.message, true)), 500);
}

function drawJob(box, job, path) {
  const total = job.shares.reduce((n, s) => n + s.connections, 0);
  const pct = job.state === "done" ? 100 : total ? Math.min(99, Math.floor(job.delivered * 100 / total)) : 0;
  box.className = "job " + job.state;
  const cancel = el("button", { type: "button", text: "Cancel", on: { click: () =>
    api("DELETE", path).then((j) => drawJob(box, j, path)).catch((err) => flash(err.message, true)) } });
  box.replaceChildren(
    el("div", {}, el("b", { text: "Broadcast " + job.id }), " of " + job.app + ": ",
      el("span", { class: "state", text: job.state }), " ", el("span", { class: "pct", text: pct + "%" })),
    bar(pct),
    el("div", { class: "progress", text: "delivered " + job.delivered + " of " + total +
      " connections · rooms done " + job.rooms_done + " / " + job.rooms + " · " +
      job.measured_per_s + "/s (target " + job.rate_per_s + "/s) · " + job.elapsed_s + " s" }),
    job.state === "running" ? cancel : "");
}

// --- rooms ------------------------------------------------------------------------------------

async function rooms() {
  const { rooms } = await api("GET", "/v1/admin/rooms");
  table("rooms-table", ["room", "IDC", "connections", "capacity", "state", ""],
    rooms.map((r) => [r.id, r.idc, r.load, r.capacity || "-", r.draining ? "draining" : "serving",
      r.draining || drains.has(r.id) ? ""
        : confirmed("drain " + r.id, "Drain " + r.id, guarded(() => drain(r.id)))]));
  for (const room of drains.keys()) {
    if (!rooms.some((r) => r.id === room)) finishDrain(room, room + " drained and stopped.");
  }
}

async function drain(room) {
  if (drains.has(room)) return;
  const body = { rate_per_s: Number($("drain-rate").value), keep_running: $("drain-keep").checked };
  const box = el("div", { class: "drain", id: "drain-" + room });
  $("drains").prepend(box);
  let first = null;     // sessions in the room when the drain began: who left since moved
  const poll = async () => {
    let reply;
    try {
      reply = await api("POST", "/v1/admin/rooms/" + encodeURIComponent(room) + "/drain", body);
    } catch (err) {
      if (err.status === 404 || err.status === 503) return;   // stopping: rooms() says when gone
      throw err;
    }
    first ??= reply.remaining + reply.moved;
    const moved = Math.max(reply.moved, first - reply.remaining), left = reply.remaining;
    const pct = reply.done ? 100 : first ? Math.floor(moved * 100 / first) : 0;
    box.replaceChildren(el("div", {}, el("b", { text: (reply.done ? "Drained " : "Draining ") + room }),
      " ", el("span", { class: "pct", text: pct + "%" })),
      bar(pct),
      el("div", { class: "progress", text: moved + " clients moved, " + left + " left" +
        (reply.detail ? " (" + reply.detail + ")" : "") }));
    if (reply.done) {
      box.className = "drain done";
      if (body.keep_running) clearInterval(drains.get(room));
    }
  };
  drains.set(room, setInterval(() => poll().catch((err) => flash(err.message, true)), 500));
  await poll();
  await rooms();
}

function finishDrain(room, text) {
  clearInterval(drains.get(room));
  drains.delete(room);
  const box = $("drain-" + room);
  if (box) {
    box.className = "drain done";
    box.append(el("div", { class: "ok stopped", text }));
  }
}

// --- messages and users -----------------------------------------------------------------------

async function lookUpMessage(event) {
  event.preventDefault();
  const id = $("message-id").value.trim();
  const m = await api("GET", appPath("/messages/" + encodeURIComponent(id)));
  const user = await api("GET", appPath("/users/" + encodeURIComponent(m.uid)));
  const room = Object.fromEntries(user.sessions.map((s) => [s.session_id, s.room]));
  $("message-out").replaceChildren(el("table", {},
    ...[["message", m.id], ["user", m.uid], ["state", m.state], ["deliveries", m.deliveries],
      ["created", time(m.created_ms)], ["expires", time(m.expires_ms)], ["acked", time(m.acked_ms)],
      ["delivered to", m.delivered_to.map((s) => s + (room[s] ? " (now on " + room[s] + ")" : "")).join(", ") || "-"]]
      .map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: v })))));
}

async function lookUpUser(event) {
  event.preventDefault();
  const u = await api("GET", appPath("/users/" + encodeURIComponent($("user-id").value.trim())));
  $("user-out").replaceChildren(
    el("p", { text: u.uid + " is " + (u.online ? "online" : "offline") + ", " + u.pending + " pending message(s)." }),
    el("table", { id: "user-sessions" }));
  table("user-sessions", ["session", "device", "room", "since"],
    u.sessions.map((s) => [s.session_id, s.device, s.room, time(s.since_ms)]));
}

// --- dead letters -----------------------------------------------------------------------------

async function deadLetters() {
  const { count, records } = await api("GET", appPath("/dead-letters?limit=100"));
  $("dl-count").textContent = count + " dead letter(s); the newest " + records.length + " below.";
  const act = (r, replay) => async () => {
    const path = appPath("/dead-letters/" + r.id + (replay ? "/replay" : ""));
    const done = await api(replay ? "POST" : "DELETE", path);
    flash(replay ? (done.delivered ? "Replayed " + r.id + ": delivered (" + done.status + ")."
      : "Replay of " + r.id + " failed: " + (done.detail || done.status) + "; kept.")
      : "Dropped " + r.id + ".", replay && !done.delivered);
    await deadLetters();
  };
  table("dl-table", ["at", "event", "reason", "status", "attempts", "url", "body", ""],
    records.map((r) => [time(r.at_ms), r.event, r.reason, r.status, r.attempts, r.url,
      el("details", {}, el("summary", { text: String(r.body).slice(0, 40) }), el("pre", { text: r.body })),
      el("span", {}, el("button", { type: "button", text: "Replay", on: { click: guarded(act(r, true)) } }), " ",
        confirmed("drop " + r.id, "Drop", guarded(act(r, false))))]));
}

// --- errors -----------------------------------------------------------------------------------

async function errors() {
  const e = await api("GET", "/v1/admin/errors");
  const sorted = (o) => Object.entries(o).sort((a, b) => b[1] - a[1]);
  table("refused-table", ["reason", "clients"], sorted(e.refused));
  table("closed-table", ["close code", "sessions"], sorted(e.closed));
  table("counts-table", ["status", "message", "answers"], e.counts.map((c) => [c.status, c.message, c.count]));
  table("recent-table", ["at", "request", "status", "code", "message"],
    e.recent.slice(0, 20).map((r) => [time(r.at_ms), r.method + " " + r.path, r.status, r.code, r.message]));
  $("errors-at").textContent = "Updated " + clock() + ".";
}

// --- wiring -----------------------------------------------------------------------------------

function submit(id, fn) {
  $(id).addEventListener("submit", (event) => fn(event).catch((err) => flash(err.message, true)));
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout("Logged out."));
  window.addEventListener("hashchange", show);
  $("app").addEventListener("change", show);
  submit("broadcast-form", startBroadcast);
  submit("message-form", lookUpMessage);
  submit("user-form", lookUpUser);
  $("bc-follow").addEventListener("click", guarded(async () => {
    const id = $("bc-follow-id").value.trim();
    follow(app(), await api("GET", appPath("/broadcasts/" + encodeURIComponent(id))));
  }));
  $("app-save").addEventListener("click", guarded(saveApp));
  $("rotate-secret").addEventListener("click", guarded(() => rotate("secrets", "secret", "token secret")));
  $("rotate-key").addEventListener("click", guarded(() => rotate("api-keys", "api_key", "API key")));
  $("dl-refresh").addEventListener("click", guarded(deadLetters));
  if (sessionStorage.getItem(KEY)) {
    loadApps().then(() => {
      for (const id of ["nav", "app-pick", "logout"]) $(id).hidden = false;
      show();
    }).catch(() => {});
  }
});
