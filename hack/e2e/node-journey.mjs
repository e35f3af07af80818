// The dashboard on the real node: the operator runs the assistant as a lite agent pod, and the
// page shows it starting, then ready, without a reload; the browser chat is answered by the
// pod. Run by router/tests/dashboard.rs
// (`on_the_node_the_assistant_starts_and_answers_in_the_browser`), which starts the operator,
// the router and the model the pod calls; CONTROL_URL gives the account the Pro plan (the
// upgrade itself is the main journey's).
//
// A new account's default is the platform's shared model, whose server (a ModelEndpoint) does
// not run on this node; the journey gives the assistant the person's own OpenAI key instead,
// as a Pro user would, and the operator's "OpenAI" is the test's local model.
//
// Env: DASHBOARD_URL, CONTROL_URL, SHOTS_DIR.
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.DASHBOARD_URL;
const control = process.env.CONTROL_URL;
const shots = process.env.SHOTS_DIR || join(tmpdir(), "clawdbot-dashboard-shots", "node");
mkdirSync(shots, { recursive: true });
const T = 30_000;
// A pod start on a busy two-core machine: image already on the node, a volume, a probe.
const POD_START = 150_000;

let step = "start";
const started = Date.now();
const log = (m) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${m}`);
const check = (c, what) => { if (!c) throw new Error(`${step}: ${what}`); };

const profile = mkdtempSync(join(tmpdir(), "clawdbot-e2e-profile-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  locale: "en-US",
  viewport: { width: 1280, height: 860 },
});
const page = context.pages()[0] || (await context.newPage());
const problems = [];
page.on("console", (m) => {
  if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) problems.push(m.text());
});
page.on("pageerror", (e) => problems.push(String(e)));
const origin = new URL(base).origin;
page.on("request", (r) => {
  if (!r.url().startsWith(origin) && !r.url().startsWith("data:")) problems.push(`outside request: ${r.url()}`);
});

const email = `node-${Date.now().toString(36)}@example.com`;
try {
  step = "sign up: the assistant is starting";
  await page.goto(`${base}/dashboard/signup`);
  await page.fill("#email", email);
  await page.fill("#password", "correct horse battery staple");
  await page.click('form[action="/dashboard/signup"] button[type=submit]');
  await page.waitForURL(`${base}/dashboard`, { timeout: T });
  await page.locator('.state-name[data-state="starting"]').waitFor({ timeout: T });
  await page.screenshot({ path: join(shots, "home-starting.png"), fullPage: true });
  log("signed up; starting");

  step = "Pro: the person's own OpenAI key and model";
  const r = await fetch(`${control}/pro`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ email }),
  });
  check(r.ok, `control /pro: ${r.status}`);
  await page.click('a[href="/dashboard/keys"]');
  await page.selectOption("#provider", "openai");
  await page.fill("#key", "sk-node-0123456789abcdefWXYZ");
  await page.click('form[action="/dashboard/keys"] button[type=submit]');
  await page.locator("#keys .masked").waitFor({ timeout: T });
  await page.click('a[href="/dashboard/models"]');
  await page.selectOption("#model", "openai:gpt-4o-mini");
  await page.click('form[action="/dashboard/models"] button[type=submit]');
  await page.locator(".notice[role=status]").waitFor({ timeout: T });
  log("own key and model saved");

  step = "Home: the pod runs; the page says ready without a reload";
  await page.click('a[href="/dashboard"]');
  await page.evaluate(() => { window.__noReload = true; });
  const waitStart = Date.now();
  await page.locator('.state-name[data-state="ready"]').waitFor({ timeout: POD_START });
  check(await page.evaluate(() => window.__noReload === true), "the page was reloaded");
  log(`ready shown after ${((Date.now() - waitStart) / 1000).toFixed(1)} s`);
  await page.screenshot({ path: join(shots, "home-ready.png"), fullPage: true });

  step = "chat in the browser: the pod answers";
  await page.click('a[href="/dashboard/chat"]');
  // As a person would: type once the page can send (chat.js enables the button; a key pressed
  // before the script has run only adds a line to the text box).
  await page.locator('#chat-form button[type="submit"]:enabled').waitFor({ timeout: T });
  await page.fill("#msg", "hello pod");
  await page.press("#msg", "Enter");
  // The model echoes the last user text of its prompt.
  await page.locator("#log li.bot").filter({ hasText: "echo: hello pod" }).first().waitFor({ timeout: 90_000 });
  await page.screenshot({ path: join(shots, "chat.png"), fullPage: true });
  log("the pod answered");

  step = "sessions: the conversation the pod keeps";
  await page.click('a[href="/dashboard/sessions"]');
  await page.locator('#sessions li[data-channel="web"]').waitFor({ timeout: T });
  await page.click('#sessions li[data-channel="web"] a');
  await page.locator("#messages li.you").filter({ hasText: "hello pod" }).first().waitFor({ timeout: T });
  await page.locator("#messages li.bot").first().waitFor({ timeout: T });
  await page.screenshot({ path: join(shots, "session.png"), fullPage: true });
  log("the conversation is under Sessions");

  step = "no console error, no CSP violation, no outside request";
  check(problems.length === 0, `problems: ${problems.join(" | ")}`);
  log("node journey passed");
} catch (e) {
  try {
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true });
    // The text of the page's main part: what a person would have seen (the markup's first
    // kilobytes are all header and navigation).
    const main = await page.locator("main").first().innerText({ timeout: 2000 }).catch(() => null);
    console.log(`page at failure: ${page.url()}\n${(main ?? await page.content()).slice(0, 3000)}`);
  } catch { /* the page is gone */ }
  console.error(`FAILED at "${step}": ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
