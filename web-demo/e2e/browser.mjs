#!/usr/bin/env node
// The browser test of the fedgate console against a running `fedgate-dev demo`.
//
//   node web-demo/e2e/browser.mjs --state /tmp/webdemo/state.json --artifacts /tmp/webdemo/shots
//
// `--state` is the file `fedgate-dev demo --state-file` writes (url, tokens, passwords, collectives
// with their node counts, federations with their members, directed node identities).
// Chromium comes from $CHROMIUM or /usr/bin/chromium; playwright-core from web-demo/node_modules.
// Every step saves a screenshot to the artifacts directory. Any console error or warning, or
// uncaught error, in the page fails the test. Exit status 0 when every step passed.

import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "package.json"));

const STEP_TIMEOUT_MS = 30_000;

function usage(message) {
  if (message) console.error(`browser test: ${message}`);
  console.error("usage: node web-demo/e2e/browser.mjs --state <state.json> --artifacts <dir> [--headed]");
  process.exit(2);
}

function parseArgs(argv) {
  const args = { state: null, artifacts: null, headed: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) usage(`${a} needs a value`);
      return v;
    };
    if (a === "--state") args.state = value();
    else if (a === "--artifacts") args.artifacts = value();
    else if (a === "--headed") args.headed = true;
    else if (a === "-h" || a === "--help") usage();
    else usage(`unknown argument ${a}`);
  }
  if (!args.state) usage("--state is required");
  if (!args.artifacts) usage("--artifacts is required");
  return args;
}

const args = parseArgs(process.argv.slice(2));

let state;
try {
  state = JSON.parse(readFileSync(args.state, "utf8"));
} catch (err) {
  console.error(`browser test: cannot read the state file ${args.state}: ${err.message}`);
  process.exit(1);
}
for (const key of ["url", "passwords", "collectives", "federations", "directed"]) {
  if (!(key in state)) {
    console.error(`browser test: the state file has no ${key}`);
    process.exit(1);
  }
}
for (const user of ["alice", "bob"]) {
  if (!state.passwords[user]) {
    console.error(`browser test: the state file has no password for ${user}`);
    process.exit(1);
  }
}
mkdirSync(args.artifacts, { recursive: true });

let chromium;
try {
  ({ chromium } = require("playwright-core"));
} catch (err) {
  console.error(`browser test: playwright-core is not installed (cd web-demo && npm ci): ${err.message}`);
  process.exit(1);
}

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium
  .launch({ executablePath, headless: !args.headed, args: ["--no-sandbox"] })
  .catch((err) => {
    console.error(`browser test: cannot start Chromium at ${executablePath}: ${err.message}`);
    process.exit(1);
  });
// The demo's edge serves TLS with the dev PKI's edge CA, which this throwaway browser profile
// does not hold: accept its certificate for the page and the sockets.
const context = await browser.newContext({
  viewport: { width: 1366, height: 768 },
  ignoreHTTPSErrors: true,
});
const page = await context.newPage();
page.setDefaultTimeout(STEP_TIMEOUT_MS);

/** Console errors and warnings, and uncaught errors, not yet reported. */
const problems = [];
page.on("console", (msg) => {
  const type = msg.type();
  if (type === "error" || type === "warning") {
    const where = msg.location();
    const at = where?.url ? ` (${where.url}:${where.lineNumber})` : "";
    problems.push(`console ${type}: ${msg.text()}${at}`);
  }
});
page.on("pageerror", (err) => problems.push(`uncaught error: ${err.message}`));
page.on("crash", () => problems.push("the page crashed"));

const tid = (id) => `[data-testid="${id}"]`;
let stepNo = 0;
let passed = 0;

async function finish(code) {
  await browser.close().catch(() => {});
  process.exit(code);
}

async function step(name, shot, fn) {
  stepNo += 1;
  const no = String(stepNo).padStart(2, "0");
  const started = Date.now();
  let detail;
  try {
    detail = await withTimeout(fn(), STEP_TIMEOUT_MS * 2, name);
    if (problems.length) throw new Error(problems.join("\n  "));
    await page.screenshot({ path: path.join(args.artifacts, `${no}-${shot}.png`) });
  } catch (err) {
    const file = path.join(args.artifacts, `${no}-${shot}-failed.png`);
    await page.screenshot({ path: file }).catch(() => {});
    console.log(`FAIL ${stepNo} ${name}: ${err.message.split("\n").join("\n  ")}`);
    console.log(`     screenshot: ${file}`);
    console.log(`browser test: ${passed} step(s) passed, step ${stepNo} failed`);
    await finish(1);
  }
  passed += 1;
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`ok   ${stepNo} ${name}${detail ? ` — ${detail}` : ""} (${secs} s)`);
}

function withTimeout(promise, ms, name) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${name}: no result in ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function login(user, { enter }) {
  await page.locator(tid("login-user")).waitFor();
  await page.fill(tid("login-user"), user);
  await page.fill(tid("login-password"), state.passwords[user]);
  if (enter) await page.press(tid("login-password"), "Enter");
  else await page.click(tid("login-submit"));
  await page.locator(tid("realm-select")).waitFor({ state: "visible" }).catch(async (err) => {
    const message = await page.locator(tid("login-message")).textContent().catch(() => "");
    throw new Error(`login as ${user} did not open the console${message ? `: ${message}` : ""} (${err.message})`);
  });
  const caller = (await page.textContent(tid("caller")))?.trim();
  if (caller !== `up=${user}`) throw new Error(`the header shows caller ${caller}, expected up=${user}`);
}

async function logout() {
  await page.click(tid("logout"));
  await page.locator(tid("login-user")).waitFor({ state: "visible" });
  const stored = await page.evaluate(() => sessionStorage.getItem("fedgate.token"));
  if (stored) throw new Error("the token is still in sessionStorage after logging out");
}

async function selectRealm(kind, name) {
  await page.selectOption(tid("realm-select"), `${kind}:${name}`);
}

async function tab(name) {
  await page.click(tid(`tab-${name}`));
  await page.locator(`#panel-${name}`).waitFor({ state: "visible" });
}

/** Fills the RPC form, runs it, and waits for its end; returns the summary's state. */
async function rpc({ agent, action, inputs = {}, targets = [], identity = "" }) {
  await tab("rpc");
  await page.locator(`${tid("agent-select")} option[value="${agent}"]`).waitFor({ state: "attached" });
  await page.selectOption(tid("agent-select"), agent);
  await page.waitForFunction(
    ([agent, action]) => {
      const a = document.querySelector('[data-testid="agent-select"]');
      const s = document.querySelector('[data-testid="action-select"]');
      return a?.value === agent && s && !s.disabled && [...s.options].some((o) => o.value === action);
    },
    [agent, action],
  );
  await page.selectOption(tid("action-select"), action);
  for (const [name, value] of Object.entries(inputs)) await page.fill(tid(`input-${name}`), String(value));
  await page.fill(tid("filter-identity"), identity);
  await page.fill(tid("targets"), targets.join("\n"));
  await page.click(tid("rpc-submit"));
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-testid="rpc-summary"]')?.dataset.state;
    return s === "done" || s === "error" || s === "cancelled";
  }, null, { timeout: STEP_TIMEOUT_MS });
  return page.getAttribute(tid("rpc-summary"), "data-state");
}

async function errorText() {
  const panel = page.locator(tid("error-panel"));
  if (!(await panel.isVisible())) return "";
  return (await panel.innerText()).replace(/\s+/g, " ").trim();
}

async function expectDone(expected) {
  const summaryState = await page.getAttribute(tid("rpc-summary"), "data-state");
  if (summaryState !== "done") {
    throw new Error(`the request ended in state ${summaryState}: ${await errorText()}`);
  }
  const rows = await page.locator(`${tid("replies-table")} ${tid("reply-row")}`).count();
  const summary = (await page.innerText(tid("rpc-summary"))).replace(/\s+/g, " ");
  if (rows !== expected) throw new Error(`${rows} reply rows, expected ${expected} (summary: ${summary})`);
  for (const want of [`${expected} response${expected === 1 ? "" : "s"}`, `ok ${expected}`]) {
    if (!summary.includes(want)) throw new Error(`the summary does not say "${want}": ${summary}`);
  }
  return summary.replace(/\s*request ids:.*$/, "");
}

async function senders() {
  return page.$$eval(`${tid("replies-table")} ${tid("reply-row")}`, (rows) =>
    rows.map((r) => r.getAttribute("data-sender")),
  );
}

async function auditRows() {
  return page.$$eval(`${tid("audit-table")} ${tid("audit-row")}`, (rows) =>
    rows.map((r) => ({
      line: Number(r.getAttribute("data-line")),
      caller: r.getAttribute("data-caller"),
      agent: r.getAttribute("data-agent"),
      action: r.getAttribute("data-action"),
      decision: r.getAttribute("data-decision"),
    })),
  );
}

const count = (name) => {
  const n = state.collectives[name];
  if (typeof n !== "number") throw new Error(`the state file has no node count for collective ${name}`);
  return n;
};

// 1. Log in as alice.
await step("log in as alice", "login", async () => {
  const response = await page.goto(state.url, { waitUntil: "load" });
  if (!response || !response.ok()) throw new Error(`GET ${state.url}: ${response?.status()}`);
  await page.locator(tid("login-user")).waitFor();
  await page.screenshot({ path: path.join(args.artifacts, "01-login-form.png") });
  await login("alice", { enter: true });
  const realms = await page.$$eval(`${tid("realm-select")} option`, (os) => os.map((o) => o.value));
  for (const c of Object.keys(state.collectives)) {
    if (!realms.includes(`collective:${c}`)) throw new Error(`the realm switcher lacks collective ${c}: ${realms}`);
  }
  for (const f of Object.keys(state.federations)) {
    if (!realms.includes(`federation:${f}`)) throw new Error(`the realm switcher lacks federation ${f}: ${realms}`);
  }
  return `realms ${realms.map((r) => r.split(":")[1]).join(", ")}`;
});

// 2. rpcutil ping on london: one row per node.
await step("rpcutil ping on london", "london-ping", async () => {
  await selectRealm("collective", "london");
  await rpc({ agent: "rpcutil", action: "ping" });
  return await expectDone(count("london"));
});

// 2b. The same on the Choria protocol v2 collective, which fedgate signs into as a delegator.
for (const v2 of state.v2 ?? []) {
  await step(`rpcutil ping on ${v2} (Choria protocol v2)`, `${v2}-ping`, async () => {
    await selectRealm("collective", v2);
    await rpc({ agent: "rpcutil", action: "ping" });
    return await expectDone(count(v2));
  });
}

// 3. The same on the federation prod: one row per node of every member.
const [federation, members] = Object.entries(state.federations)[0] ?? [];
await step(`rpcutil ping on federation ${federation}`, "federation-ping", async () => {
  if (!federation) throw new Error("the state file names no federation");
  const expected = members.reduce((sum, m) => sum + count(m), 0);
  await selectRealm("federation", federation);
  await rpc({ agent: "rpcutil", action: "ping" });
  await expectDone(expected);
  return `${expected} rows from ${members.join(" + ")}`;
});

// 4. A directed rpcutil inventory on london: exactly the targets answer.
await step("directed rpcutil inventory on london", "directed-inventory", async () => {
  const targets = state.directed;
  await selectRealm("collective", "london");
  await rpc({ agent: "rpcutil", action: "inventory", targets });
  await expectDone(targets.length);
  const got = (await senders()).sort();
  const want = [...targets].sort();
  if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`senders ${got}, expected ${want}`);
  return got.join(", ");
});

// 4b. The summary shows what the request selected, and a realm change clears the filters
// (saying so) and the old result.
await step("filters in the summary, cleared on a realm change", "filters-realm-change", async () => {
  const [first] = state.directed;
  await selectRealm("collective", "london");
  await rpc({ agent: "rpcutil", action: "ping", identity: first });
  await expectDone(1);
  const selected = (await page.innerText(tid("rpc-filters"))).replace(/\s+/g, " ");
  if (!selected.includes(`identity ${first}`)) throw new Error(`the summary's selection says: ${selected}`);
  await selectRealm("collective", "tokyo");
  const identity = await page.inputValue(tid("filter-identity"));
  if (identity !== "") throw new Error(`the identity filter kept ${identity} after the realm change`);
  const notice = page.locator(tid("filters-cleared"));
  if (!(await notice.isVisible())) throw new Error("no notice that the filters were cleared");
  const said = await notice.innerText();
  if (!said.includes("london")) throw new Error(`the notice does not name the old realm: ${said}`);
  const stale = await page.locator(`${tid("replies-table")} ${tid("reply-row")}`).count();
  const summaryState = await page.getAttribute(tid("rpc-summary"), "data-state");
  if (stale !== 0 || summaryState !== "idle") {
    throw new Error(`the old result stayed: ${stale} rows, summary ${summaryState}`);
  }
  await rpc({ agent: "rpcutil", action: "ping" });
  await expectDone(count("tokyo"));
  const all = (await page.innerText(tid("rpc-filters"))).replace(/\s+/g, " ");
  if (!all.includes("every node of tokyo")) throw new Error(`the summary's selection says: ${all}`);
  return `${selected.trim()}; then ${all.trim()}`;
});

// 4c. A DDL validation failure is told in words, not as the regular expression.
await step("validation messages in words", "validation-words", async () => {
  await tab("rpc");
  await page.selectOption(tid("agent-select"), "service");
  await page.locator(tid("input-service")).waitFor();
  await page.fill(tid("input-service"), "nginx; rm -rf /");
  const message = await page.$eval(tid("input-service"), (el) => el.validationMessage);
  if (!message || /[\\^$[\]]/.test(message)) throw new Error(`the validation message is "${message}"`);
  if (!/service/i.test(message)) throw new Error(`the message does not name the input: "${message}"`);
  await page.fill(tid("input-service"), "nginx");
  return message;
});

// 4d. Phone width: nothing is cut off, and a request still runs and shows its replies.
await step("phone-width layout", "phone-width", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    await selectRealm("collective", "london");
    await rpc({ agent: "rpcutil", action: "ping", targets: state.directed });
    await expectDone(state.directed.length);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) throw new Error(`the page is ${overflow} px wider than the window`);
    for (const id of ["realm-select", "caller", "logout", "rpc-submit", "rpc-summary"]) {
      const box = await page.locator(tid(id)).boundingBox();
      if (!box || box.x < 0 || box.x + box.width > 390) {
        throw new Error(`${id} is cut off at 390 px: ${JSON.stringify(box)}`);
      }
    }
    await page.locator(`${tid("replies-table")} ${tid("reply-row")}`).first().scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(args.artifacts, "phone-replies.png"), fullPage: true });
  } finally {
    await page.setViewportSize({ width: 1366, height: 768 });
  }
  return "390 px: no horizontal overflow";
});

// 5. bob may not restart services: the error panel names the policy rule.
await step("bob's service restart is denied", "bob-denied", async () => {
  await logout();
  await login("bob", { enter: false });
  await selectRealm("collective", "london");
  const ended = await rpc({ agent: "service", action: "restart", inputs: { service: "nginx" } });
  if (ended !== "error") throw new Error(`the request ended in state ${ended}, expected a denial`);
  await page.locator(tid("error-panel")).waitFor({ state: "visible" });
  const role = await page.getAttribute(tid("error-panel"), "role");
  if (role !== "alert") throw new Error(`the error panel's role is ${role}, expected alert`);
  const code = (await page.textContent(tid("error-code")))?.trim();
  if (code !== "denied") throw new Error(`error code ${code}, expected denied: ${await errorText()}`);
  const rule = (await page.textContent(tid("error-rule")).catch(() => ""))?.trim();
  if (!rule) throw new Error(`the error panel shows no rule: ${await errorText()}`);
  return `rule ${rule}`;
});

// 6. alice reads the audit trail.
await step("audit trail as alice", "audit-filtered", async () => {
  await logout();
  await login("alice", { enter: true });
  const auditTab = page.locator(tid("tab-audit"));
  if (!(await auditTab.isVisible())) throw new Error("alice has no audit tab (/api/realms audit is not true)");
  await tab("audit");
  const found = await page
    .waitForFunction(() => {
      const rows = [...document.querySelectorAll('[data-testid="audit-table"] [data-testid="audit-row"]')];
      const has = (caller, agent, action, decision) =>
        rows.some(
          (r) =>
            r.dataset.caller === caller &&
            r.dataset.agent === agent &&
            r.dataset.action === action &&
            r.dataset.decision === decision,
        );
      return (
        has("up=alice", "rpcutil", "ping", "allow") && has("up=bob", "service", "restart", "deny") && rows.length
      );
    })
    .catch(async () => {
      const rows = await auditRows();
      throw new Error(
        `no allowed rpcutil ping by up=alice and denied service restart by up=bob among ${rows.length} rows: ` +
          JSON.stringify(rows.slice(0, 8)),
      );
    });
  const rows = await found.jsonValue();
  await page
    .waitForFunction(() => /intact/.test(document.querySelector('[data-testid="chain-status"]')?.textContent ?? ""))
    .catch(async () => {
      throw new Error(`chain status: ${await page.textContent(tid("chain-status"))}`);
    });
  const chain = (await page.textContent(tid("chain-status")))?.trim();
  await page.screenshot({ path: path.join(args.artifacts, "06-audit.png") });

  await page.fill(tid("audit-filter-caller"), "up=bob");
  await page.press(tid("audit-filter-caller"), "Enter");
  await page
    .waitForFunction(() => {
      const rows = [...document.querySelectorAll('[data-testid="audit-table"] [data-testid="audit-row"]')];
      return rows.length > 0 && rows.every((r) => r.dataset.caller === "up=bob");
    })
    .catch(async () => {
      const rows = await auditRows();
      throw new Error(`after filtering by caller up=bob: ${JSON.stringify(rows.slice(0, 8))}`);
    });
  const bobs = (await auditRows()).length;
  return `${rows} records, ${chain}; ${bobs} records for up=bob`;
});

// 7. The instances view lists the federation's fedgate instances.
await step("instances view", "instances", async () => {
  const instancesTab = page.locator(tid("tab-instances"));
  if (!(await instancesTab.isVisible())) throw new Error("no instances tab (/api/realms instances is not true)");
  await tab("instances");
  await page
    .waitForFunction(
      () => document.querySelectorAll('[data-testid="instances-table"] [data-testid="instance-row"]').length >= 2,
    )
    .catch(async () => {
      const text = await page.innerText(tid("instances-table")).catch(() => "");
      throw new Error(`fewer than 2 instances listed: ${text.replace(/\s+/g, " ")}`);
    });
  const names = await page.$$eval(`${tid("instances-table")} [data-testid="instance-row"]`, (rows) =>
    rows.map((r) => r.getAttribute("data-instance")),
  );
  return names.join(", ");
});

console.log(`browser test: all ${passed} steps passed; screenshots in ${args.artifacts}`);
await finish(0);
