// Shared helpers of the browser scenarios: Debian's Chromium through playwright-core, the
// page opened with its token, steps coordinated with the Rust test over stdin/stdout, checks.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const readline = require("readline");

const config = JSON.parse(process.argv[3] || "{}");
const { chromium } = require(path.join(config.modules, "playwright-core"));

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

// A fresh browser with a new, empty profile directory.
async function browser(opts) {
  const dir = fs.mkdtempSync(path.join(config.tmp || os.tmpdir(), "chromium-profile-"));
  const ctx = await chromium.launchPersistentContext(dir, Object.assign({
    executablePath: config.chromium, headless: true, args: ARGS,
    viewport: { width: 1200, height: 900 },
  }, opts || {}));
  const page = ctx.pages()[0] || await ctx.newPage();
  page.setDefaultTimeout(20000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
  return { ctx, page, errors, async close() { await ctx.close(); fs.rmSync(dir, { recursive: true, force: true }); } };
}

// Opens the page and uses the token (as a person would: paste, press the button).
async function open(page, url, tok) {
  await page.goto(url || config.url);
  await page.fill("#token", tok || config.token);
  await page.click("#save-token");
  await page.waitForSelector("#workflows li button");
}

// Lines from the Rust test, one per step it was asked for.
const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
const queued = [];
lines.on("line", (l) => { const w = waiting.shift(); if (w) w(l); else queued.push(l); });

// Tells the Rust test a step is reached and waits for its answer (a line of JSON).
function step(name, data) {
  process.stdout.write(JSON.stringify({ step: name, data: data || null }) + "\n");
  return new Promise((resolve) => {
    const got = (l) => resolve(JSON.parse(l));
    if (queued.length) got(queued.shift()); else waiting.push(got);
  });
}

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

async function text(page, sel) { return (await page.textContent(sel)) || ""; }

async function screenshot(page, name, locator) {
  if (!config.screenshots) return;
  const file = path.join(config.screenshots, name);
  if (locator) await page.locator(locator).screenshot({ path: file });
  else await page.screenshot({ path: file, fullPage: false });
}

async function api(method, p, body) {
  const r = await fetch(new URL(p, config.url), { method, headers: { Authorization: "Bearer " + config.token, "Content-Type": "application/json" }, body: body ? JSON.stringify(body) : undefined });
  return { status: r.status, body: await r.json().catch(() => null) };
}

// The page's own steps: choose a workflow (its run form shows), wait for an execution's status.
async function selectWorkflow(page, name) {
  await page.click(`#workflows li button:has-text("${name}")`);
  await page.waitForSelector("#run:not(.hidden)");
}

async function waitStatus(page, status) {
  await page.waitForFunction((s) => {
    const t = document.querySelector("#ex-status .icon");
    return t && t.title === s;
  }, status, { timeout: 30000 });
}

// How many executions of `workflow` the store has.
async function count(workflow) {
  const r = await api("GET", "/api/executions?workflow=" + workflow);
  return r.body.total;
}

// Runs `main(name)` and reports: the last line on stdout is {"ok": true} or the process fails.
function run(scenarios) {
  const name = process.argv[2];
  const f = scenarios[name];
  if (!f) { console.error("no scenario " + name); process.exit(2); }
  f().then((result) => {
    process.stdout.write(JSON.stringify({ ok: true, result: result || null }) + "\n");
    process.exit(0);
  }, (e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  });
}

module.exports = { config, browser, open, step, check, text, screenshot, api, run, selectWorkflow, waitStatus, count };
