#!/usr/bin/env node
// Times a broadcast `rpcutil ping` to every node of the federation through the console in
// Chromium, against a running `fedgate-dev demo`, as alice:
//
//   node web-demo/e2e/measure.mjs --state <state.json> [--runs 3] [--screenshot FILE]
//
// For each run it prints one JSON line: the replies the table shows, the milliseconds from the
// click on Run to the summary saying done, and the page's JS heap. Exit status 1 when a run
// did not get a reply from every node.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "package.json"));
const { chromium } = require("playwright-core");

const argv = process.argv.slice(2);
const option = (name, fallback) => {
  const at = argv.indexOf(name);
  return at >= 0 && argv[at + 1] !== undefined ? argv[at + 1] : fallback;
};
const state = JSON.parse(readFileSync(option("--state"), "utf8"));
const runs = Number(option("--runs", "3"));
const screenshot = option("--screenshot", null);
const expected = Object.entries(state.federations.prod)
  .map(([, member]) => state.collectives[member] ?? 0)
  .reduce((a, b) => a + b, 0);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--enable-precise-memory-info"],
});
const page = await (await browser.newContext({ viewport: { width: 1366, height: 768 } })).newPage();
page.setDefaultTimeout(120_000);
const tid = (id) => `[data-testid="${id}"]`;

await page.goto(state.url);
await page.fill(tid("login-user"), "alice");
await page.fill(tid("login-password"), state.passwords.alice);
await page.press(tid("login-password"), "Enter");
await page.locator(tid("realm-select")).waitFor({ state: "visible" });
await page.selectOption(tid("realm-select"), "federation:prod");
await page.locator(`${tid("agent-select")} option[value="rpcutil"]`).waitFor({ state: "attached" });
await page.selectOption(tid("agent-select"), "rpcutil");
await page.selectOption(tid("action-select"), "ping");

let failed = false;
for (let run = 1; run <= runs; run++) {
  const started = Date.now();
  await page.click(tid("rpc-submit"));
  await page.waitForFunction(
    () => {
      const s = document.querySelector('[data-testid="rpc-summary"]')?.dataset.state;
      return s === "done" || s === "error" || s === "cancelled";
    },
    null,
    { timeout: 120_000, polling: 50 },
  );
  const elapsed = Date.now() - started;
  const summary = (await page.innerText(tid("rpc-summary"))).replace(/\s+/g, " ");
  const responses = Number(summary.match(/(\d+) responses/)?.[1] ?? 0);
  const heap = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? null);
  console.log(JSON.stringify({ run, expected, responses, click_to_done_ms: elapsed, js_heap_bytes: heap }));
  if (responses !== expected) failed = true;
}
if (screenshot) await page.screenshot({ path: screenshot });
await browser.close();
process.exit(failed ? 1 : 0);
