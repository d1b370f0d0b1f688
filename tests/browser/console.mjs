// Drives center's admin console (docs/console.md) in a real headless Chromium, as an operator
// would, and prints one JSON line: the text the page showed at each step (the test asserts on
// it) and the console/page errors. Screenshots go to `shots` (docs/console-*.png).
//
//     CHROMIUM=/usr/bin/chromium node console.mjs '{"url": "http://127.0.0.1:PORT/admin",
//       "key": "...", "wrongKey": "...", "shots": "/dir", "messageId": "...", "uid": "...",
//       "room": "room-1", "clients": 300}'
//
// Each wait is bounded (playwright's timeout); a step that does not show what it should fails
// the script (exit 1) with the step's name.
import { chromium } from "playwright-core";

const args = JSON.parse(process.argv[2]);
const seen = {};
const problems = [];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox"] });
let step = "start";
let page;
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(90000);
  // Script errors count; a failed request (the wrong key's 401) is what the page shows itself.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  const text = (selector) => page.locator(selector).first().innerText();
  const shot = (name) => page.screenshot({ path: `${args.shots}/console-${name}.png`, fullPage: true });

  step = "login with a wrong key";
  await page.goto(args.url);
  await page.fill("#key", args.wrongKey);
  await page.click("#login-form button");
  await page.waitForFunction(() => document.querySelector("#login-error").textContent !== "");
  seen.wrongKey = await text("#login-error");

  step = "login";
  await page.fill("#key", args.key);
  await page.click("#login-form button");
  await page.waitForSelector("#topology-table td >> text=room-1");
  await page.waitForFunction(() => [...document.querySelectorAll("#topology-table tr")]
    .filter((tr) => tr.textContent.includes("ok")).length >= 7);
  seen.url = page.url();
  seen.topology = await text("#topology-table");
  await shot("topology");

  step = "apps";
  await page.click("nav a[href='#apps']");
  await page.waitForFunction((n) => document.querySelector("#app-figures .figure b")?.textContent === String(n),
    args.clients);
  await page.waitForFunction(() => [...document.querySelectorAll("#app-figures .figure")]
    .some((f) => f.textContent.endsWith("pushes/s") && /^[0-9]/.test(f.textContent)));
  seen.figures = await text("#app-figures");
  seen.config = await page.inputValue("#app-config");
  await page.click("#rotate-key");
  await page.waitForSelector("#rotated .secret code");
  seen.rotated = await text("#rotated");
  await shot("apps");

  step = "broadcast to everyone";
  await page.click("nav a[href='#broadcast']");
  await page.fill("#bc-data", "hello from the console");
  await page.fill("#bc-rate", "150");
  await page.click("#broadcast-form button");
  await page.waitForSelector(".job .pct");
  seen.broadcastStarted = await text(".job");
  await page.waitForSelector(".job.done .pct >> text=100%");
  seen.broadcastDone = await text(".job.done");
  await shot("broadcast");

  step = "cancel a second broadcast";
  await page.fill("#bc-data", "this one gets cancelled");
  await page.fill("#bc-rate", "5");
  await page.click("#broadcast-form button");
  await page.waitForFunction(() => document.querySelectorAll(".job").length === 2);
  await page.waitForSelector(".job.running >> text=/delivered [1-9]/");
  seen.secondRunning = await text(".job.running");
  await page.click(".job.running button");
  await page.waitForSelector(".job.cancelled");
  seen.cancelled = await text(".job.cancelled");
  await shot("broadcast-cancelled");

  step = "message and user";
  await page.click("nav a[href='#messages']");
  await page.fill("#message-id", args.messageId);
  await page.click("#message-form button");
  await page.waitForSelector("#message-out table");
  seen.message = await text("#message-out");
  await page.fill("#user-id", args.uid);
  await page.click("#user-form button");
  await page.waitForSelector("#user-sessions");
  seen.user = await text("#user-out");
  await shot("messages");

  step = "dead letters";
  await page.click("nav a[href='#dead-letters']");
  await page.waitForSelector("#dl-table td >> text=Replay");
  seen.deadLetters = await text("#dl-table");
  await shot("dead-letters");
  await page.click("#dl-table tr:nth-child(2) button >> text=Replay");
  await page.waitForSelector("#flash >> text=/Replayed/");
  seen.replayed = await text("#flash");
  await page.click("#dl-table tr:nth-child(2) button >> text=Drop");
  await page.click("#dl-table tr:nth-child(2) button >> text=Confirm: Drop");
  await page.waitForSelector("#flash >> text=/Dropped/");
  seen.dropped = await text("#flash");
  await page.waitForSelector("#dl-count >> text=/^0 dead letter/");
  seen.deadLettersAfter = await text("#dl-count");

  step = "errors";
  await page.click("nav a[href='#errors']");
  await page.waitForSelector("#closed-table td >> text=4100");
  await page.waitForSelector("#recent-table td >> text=missing or wrong admin key");
  seen.refused = await text("#refused-table");
  seen.closed = await text("#closed-table");
  seen.recent = await text("#recent-table");
  await shot("errors");

  step = "drain a room";
  await page.click("nav a[href='#rooms']");
  if (args.keepRunning) await page.check("#drain-keep");
  await page.click(`#rooms-table button >> text=Drain ${args.room}`);
  seen.armed = await text(`#rooms-table button.armed`);
  await page.click(`#rooms-table button >> text=Confirm: Drain ${args.room}`);
  await page.waitForSelector(`#drain-${args.room} .progress`);
  seen.drainStarted = await text(`#drain-${args.room}`);
  await page.waitForSelector(`#drain-${args.room} .progress >> text=/[1-9][0-9]* clients moved/`);
  await shot("rooms-draining");
  await page.waitForSelector(`#drain-${args.room}.done .pct >> text=100%`);
  await page.waitForSelector(`#rooms-table td >> text=draining`);
  await page.waitForFunction(([room, clients]) => {   // the loads the rooms publish, caught up
    const load = Object.fromEntries([...document.querySelectorAll("#rooms-table tr")].slice(1)
      .map((tr) => [tr.cells[0].textContent, tr.cells[2].textContent]));
    return load[room] === "0" && Object.values(load).includes(String(clients));
  }, [args.room, args.clients]);
  seen.drained = await text(`#drain-${args.room}`);
  seen.roomsAfter = await text("#rooms-table");
  await shot("rooms");

  step = "log out";
  await page.click("#logout");
  await page.waitForSelector("#login:not([hidden])");
  seen.loggedOut = await text("#login-error");
  seen.keyKept = await page.evaluate(() => sessionStorage.length);
  step = "done";
} catch (err) {
  problems.push(`${step}: ${err.message.split("\n")[0]}`);
  if (page) {                      // what the operator saw when it went wrong
    problems.push(await page.locator("main").innerText().catch(() => "-"));
    await page.screenshot({ path: `${args.shots}/failed.png`, fullPage: true }).catch(() => {});
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify({ step, seen, problems }) + "\n");
process.exit(step === "done" ? 0 : 1);
