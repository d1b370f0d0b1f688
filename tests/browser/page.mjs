// Open one page in a real headless Chromium and print, as one JSON line, what the page
// reports in `window.pushwireResult` (tests/integration/test_edge.py serves the page).
//
//     CHROMIUM=/path/to/chromium node page.mjs http://127.0.0.1:PORT/
import { chromium } from "playwright-core";

const [url] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ["--no-sandbox"],   // tests run as root in containers
});
try {
  const page = await browser.newPage();
  const logged = [];
  page.on("console", (message) => logged.push(message.text()));
  await page.goto(url);
  const result = await page.waitForFunction(() => window.pushwireResult, null,
                                            { timeout: 30000 });
  console.log(JSON.stringify({ result: await result.jsonValue(), console: logged }));
} finally {
  await browser.close();
}
