// Opens one page in headless chromium and prints what the page put in `window.result`.
//   node open_page.mjs '{"url": "https://127.0.0.1:PORT/", "spki": "<base64 sha256>"}'
// `spki` makes chromium trust the server key with that hash (the test's dev certificate),
// as a browser trusts a certificate from a CA it knows; nothing else is relaxed.
import { chromium } from "playwright-core";

const { url, spki, executable, timeoutMs = 20000 } =
  JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: executable,
  args: [`--ignore-certificate-errors-spki-list=${spki}`, "--no-sandbox"],
});
try {
  const page = await browser.newPage();
  const console_ = [];
  page.on("console", (m) => console_.push(m.text()));
  await page.goto(url);
  await page.waitForFunction(() => window.result !== undefined, null, { timeout: timeoutMs });
  const result = await page.evaluate(() => window.result);
  process.stdout.write(JSON.stringify({ ...result, console: console_ }) + "\n");
} finally {
  await browser.close();
}
