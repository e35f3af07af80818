// The dashboard's journey in headless Chromium: sign up -> the assistant's state -> connect
// Telegram with the code -> a message round trip -> usage -> chat in the browser -> the
// conversations under Sessions -> an API key (masked) -> models, settings -> disconnect
// Telegram -> export -> delete the account -> sign in with Google. Run by
// router/tests/dashboard.rs, which starts the router and answers CONTROL_URL (the operator,
// the Telegram user); the upgrade is paid on the local Stripe's hosted Checkout page
// (STRIPE_URL), which sends the signed webhooks to the router and the browser back.
//
// Google sign-in goes through the test kit's OpenID provider (GOOGLE_URL), which signs in
// at once whoever the control server names.
//
// Env: DASHBOARD_URL, CONTROL_URL, STRIPE_URL, GOOGLE_URL, E2E_LANG (en|ru), E2E_VIEWPORT (desktop|phone),
// E2E_CHAT_ID, SHOTS_DIR. Every page is saved at desktop and phone width into SHOTS_DIR.
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.DASHBOARD_URL;
const control = process.env.CONTROL_URL;
const stripe = process.env.STRIPE_URL;
const google = process.env.GOOGLE_URL;
const lang = process.env.E2E_LANG || "en";
const phone = process.env.E2E_VIEWPORT === "phone";
const chatId = Number(process.env.E2E_CHAT_ID || "7410001");
const shots = process.env.SHOTS_DIR || join(tmpdir(), "clawdbot-dashboard-shots");
mkdirSync(shots, { recursive: true });

const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
const viewport = phone ? PHONE : DESKTOP;
const T = 30_000;

// The words the journey looks for, in the language under test.
const W = {
  en: { starting: "Starting", ready: "Ready", logout: "Log out", home: "Home", keysForbidden: "does not include",
        mismatch: "does not match", deleted: "Your account is deleted", login: "Log in",
        suspended: "Suspended", active: "Active", yourPlan: "Your plan", paid: "new plan is active",
        conversations: "Conversations", googleConflict: "already exists" },
  ru: { starting: "Запускается", ready: "Готов", logout: "Выйти", home: "Главная", keysForbidden: "не включает",
        mismatch: "не совпадает", deleted: "Аккаунт удалён", login: "Вход",
        suspended: "Приостановлен", active: "Активен", yourPlan: "Ваш тариф", paid: "новый тариф действует",
        conversations: "Диалоги", googleConflict: "уже есть" },
}[lang];

let step = "start";
const started = Date.now();
function log(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}
function check(cond, what) {
  if (!cond) throw new Error(`${step}: ${what}`);
}
async function call(method, path, body) {
  const r = await fetch(control + path, {
    method,
    headers: { "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) throw new Error(`${step}: control ${path}: ${r.status}`);
  return r.json();
}
async function until(what, f, timeout = T) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${step}: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const profile = mkdtempSync(join(tmpdir(), "clawdbot-e2e-profile-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  locale: lang === "ru" ? "ru-RU" : "en-US",
  viewport,
  acceptDownloads: true,
});
const page = context.pages()[0] || (await context.newPage());
const problems = [];
page.on("console", (m) => {
  // A form shown again with its error answers 4xx, which Chromium logs; anything else
  // (a CSP violation, a script error) is a problem.
  if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) problems.push(m.text());
});
page.on("pageerror", (e) => problems.push(String(e)));
// Nothing may be fetched from anywhere but the router, the local Stripe's pages while the
// browser is on them (Checkout), and the sign-in provider's authorization page.
const origin = new URL(base).origin;
const stripeOrigin = new URL(stripe).origin;
const googleOrigin = new URL(google).origin;
page.on("request", (r) => {
  const u = r.url();
  if (!u.startsWith(origin) && !u.startsWith(stripeOrigin) && !u.startsWith(googleOrigin) &&
      !u.startsWith("data:")) {
    problems.push(`outside request: ${u}`);
  }
});

// Every page is saved at both widths; at phone width nothing may need sideways scrolling.
const ttfb = [];
async function shot(name) {
  // Time from request to the first byte of this page's document, as the browser measured it.
  const t = await page.evaluate(() => {
    const n = performance.getEntriesByType("navigation")[0];
    return n ? n.responseStart - n.requestStart : null;
  });
  if (t !== null) ttfb.push([name, t]);
  for (const [label, size] of [["desktop", DESKTOP], ["phone", PHONE]]) {
    await page.setViewportSize(size);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `${name} at ${label} width scrolls sideways by ${overflow}px`);
    await page.screenshot({ path: join(shots, `${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize(viewport);
}

async function expectText(selector, text) {
  await page.locator(selector).filter({ hasText: text }).first().waitFor({ timeout: T });
}

const email = `e2e-${lang}-${Date.now().toString(36)}@example.com`;
const password = "correct horse battery staple";
try {
  step = "signed out, home sends to the login page";
  await page.goto(`${base}/dashboard`);
  check(page.url().endsWith("/dashboard/login"), `landed on ${page.url()}`);
  check((await page.getAttribute("html", "lang")) === lang, "the page language follows the browser");
  await page.locator("h1").filter({ hasText: W.login }).waitFor({ timeout: T });
  await shot("login");

  step = "sign up: the password rules are shown before submitting";
  await page.click('a[href="/dashboard/signup"]');
  await page.locator("#pw-rules").waitFor({ state: "visible", timeout: T });
  check(
    (await page.getAttribute("#password", "aria-describedby")) === "pw-rules",
    "the rules describe the password field",
  );
  check((await page.getAttribute("#google", "href")) === "/api/v1/auth/oauth/google/start?return=dashboard",
        "Google sign-in offered on the sign-up page");
  await shot("signup");
  await page.getByLabel(lang === "ru" ? "Электронная почта" : "E-mail").fill(email);
  await page.fill("#password", "1234567890");
  await page.click('form[action="/dashboard/signup"] button[type=submit]');
  await page.locator(".error[role=alert]").waitFor({ timeout: T });
  await shot("signup-error");
  await page.fill("#password", password);
  await page.click('form[action="/dashboard/signup"] button[type=submit]');
  await page.waitForURL(`${base}/dashboard`, { timeout: T });
  log("signed up");

  step = "the assistant is starting, then ready without a reload";
  await expectText(".state-name", W.starting);
  await shot("home-starting");
  await page.evaluate(() => { window.__noReload = true; });
  await call("POST", "/ready", { email });
  await page.locator('.state-name[data-state="ready"]').waitFor({ timeout: T });
  await expectText(".state-name", W.ready);
  check(await page.evaluate(() => window.__noReload === true), "the page was reloaded");
  log("ready shown by polling");

  step = "connect Telegram with a code";
  await page.click('a[href="/dashboard/channels"]');
  await shot("channels");
  await page.click("#get-code");
  const code = (await page.textContent("#code")).trim();
  check(/^[A-Z0-9]{6,12}$/.test(code), `code ${code}`);
  const tg = await page.getAttribute('a[href^="https://t.me/"]', "href");
  check(tg === `https://t.me/ClawdbotTestBot?start=${code}`, `telegram link ${tg}`);
  check((await page.locator(".qr svg").count()) >= 2, "QR codes for Telegram and WhatsApp");
  const wa = await page.getAttribute('a[href^="https://wa.me/"]', "href");
  check(wa.endsWith(`?text=${code}`), `whatsapp link ${wa}`);
  await shot("channels-code");
  await call("POST", "/telegram", { chat_id: chatId, text: `/start ${code}` });
  await expectText("#watch.notice", "telegram");
  await shot("channels-connected");
  log("telegram connected, noticed by the page");

  step = "a message round trip through Telegram";
  await call("POST", "/telegram", { chat_id: chatId, text: "hello from telegram" });
  const sent = await until("the bot's answer in Telegram", async () => {
    const s = (await call("GET", `/telegram/${chatId}`)).sent;
    return s.find((t) => t.includes("hello from telegram"));
  });
  log(`telegram answer: ${sent}`);

  step = "the message is counted on Home";
  await until("today's messages counted", async () => {
    await page.goto(`${base}/dashboard`);
    return Number((await page.textContent("#today-messages")).trim()) >= 1;
  });
  check((await page.locator(".chart rect.bar").count()) === 7, "seven bars");
  await expectText("#home-channels li", "telegram");
  // Recent activity, loaded after the page from the assistant's conversations.
  await page.locator('#recent li[data-channel="telegram"]').waitFor({ timeout: T });
  await shot("home-ready");

  step = "chat in the browser";
  // The page's script is held back until the page has been seen without it: Send is disabled
  // then (a click would post to a page that takes no posts; Enter would only add a line).
  let release;
  const held = new Promise((ok) => { release = ok; });
  await page.route("**/dashboard/assets/chat.js", async (r) => { await held; await r.continue(); });
  await page.click('a[href="/dashboard/chat"]');
  const send = '#chat-form button[type="submit"]';
  await page.locator(send).waitFor({ timeout: T });
  check(await page.isDisabled(send), "Send is enabled before the page's script has run");
  release();
  // As a person would: type once the page can send.
  await page.locator(`${send}:enabled`).waitFor({ timeout: T });
  await page.unroute("**/dashboard/assets/chat.js");
  await page.fill("#msg", "hi from the browser");
  await page.press("#msg", "Enter");
  await expectText("#log li.bot", "hi from the browser");
  await shot("chat");
  log("browser chat answered");

  step = "sessions: the conversations the agent kept, filtered by keyboard, one opened";
  await page.click('a[href="/dashboard/sessions"]');
  await expectText("h1", W.conversations);
  check((await page.getAttribute('a[href="/dashboard/sessions"]', "aria-current")) === "page", "the link says where we are");
  const tgRow = '#sessions li[data-channel="telegram"]';
  await page.locator(tgRow).waitFor({ timeout: T });
  await page.locator('#sessions li[data-channel="web"]').waitFor({ timeout: T });
  check(Number(await page.textContent(`${tgRow} .count`)) >= 2, "the Telegram conversation holds the message and the answer");
  await shot("sessions");
  check((await page.locator('label[for="channel"]').count()) === 1 && (await page.locator('label[for="days"]').count()) === 1,
        "the filters have labels");
  await page.selectOption("#channel", "telegram");
  await page.selectOption("#days", "7");
  await page.focus("#filter");
  await page.keyboard.press("Enter");
  await page.waitForURL((u) => u.searchParams.get("channel") === "telegram" && u.searchParams.get("days") === "7", { timeout: T });
  await page.locator(tgRow).waitFor({ timeout: T });
  check((await page.locator('#sessions li[data-channel="web"]').count()) === 0, "the filter leaves the web chat out");
  check((await page.inputValue("#channel")) === "telegram" && (await page.inputValue("#days")) === "7", "the filter is kept");
  await page.click(`${tgRow} a`);
  await expectText("#messages li.you", "hello from telegram");
  await expectText("#messages li.bot", "echo: hello from telegram");
  await shot("session");
  log("sessions listed, filtered and opened");

  step = "API keys: the plan notice, then a key shown masked";
  await page.click('a[href="/dashboard/keys"]');
  await expectText("#keys-forbidden", W.keysForbidden);
  await shot("keys-free");

  step = "billing: upgrade to pro through Stripe Checkout";
  await page.click('a[href="/dashboard/billing"]');
  await page.locator("#plan-free #current-plan").waitFor({ timeout: T });
  await shot("billing-free");
  await page.click("#upgrade-pro");
  await page.waitForURL((u) => u.origin === stripeOrigin && u.pathname.startsWith("/pay/"), { timeout: T });
  await page.locator("#pay").waitFor({ timeout: T });
  check((await page.textContent("#email")) === email, "Checkout knows the customer's e-mail");
  await shot("stripe-checkout");
  await page.click("#pay");
  await page.waitForURL((u) => u.origin === origin && u.pathname === "/dashboard/billing", { timeout: T });
  check(new URL(page.url()).searchParams.get("checkout") === "success", `back at ${page.url()}`);
  await expectText(".notice[role=status]", W.paid);
  await expectText("#plan-pro #current-plan", W.yourPlan);
  check((await page.locator("#plan-free #current-plan").count()) === 0, "free is no longer the plan");
  await page.locator("#subscription #manage").waitFor({ timeout: T });
  await shot("billing-pro");
  log("upgraded to pro through Checkout");

  await page.click('a[href="/dashboard/keys"]');
  const key = "sk-e2e-0123456789abcdefWXYZ";
  await page.selectOption("#provider", "openai");
  await page.fill("#key", key);
  await page.click('form[action="/dashboard/keys"] button[type=submit]');
  await page.locator("#keys .masked").waitFor({ timeout: T });
  const masked = await page.textContent("#keys .masked");
  check(masked.endsWith("WXYZ") && !masked.includes("0123456789"), `masked ${masked}`);
  check(!(await page.content()).includes(key), "the full key is not in the page");
  await page.locator(".notice[role=status]").waitFor({ timeout: T });
  await shot("keys");

  step = "models: a setting saved to the assistant";
  await page.click('a[href="/dashboard/models"]');
  await page.locator("#model").waitFor({ timeout: T });
  await page.fill("#temperature", "0.7");
  await page.click('form[action="/dashboard/models"] button[type=submit]');
  await page.locator(".notice[role=status]").waitFor({ timeout: T });
  check((await page.inputValue("#temperature")) === "0.7", "the temperature is kept");
  await shot("models");

  step = "settings: the profile";
  await page.click('a[href="/dashboard/settings"]');
  await page.fill("#display_name", "E2E Person");
  await page.click('form[action="/dashboard/settings/profile"] button[type=submit]');
  await page.locator(".notice[role=status]").waitFor({ timeout: T });
  check((await page.inputValue("#display_name")) === "E2E Person", "the name is kept");
  await shot("settings");

  step = "settings: the language";
  const other0 = lang === "ru" ? "en" : "ru";
  await page.selectOption("#language", other0);
  await page.click("#save-language");
  await page.waitForLoadState();
  check((await page.getAttribute("html", "lang")) === other0, "the language chosen in Settings");
  await page.selectOption("#language", lang);
  await page.click("#save-language");
  await page.waitForLoadState();
  check((await page.getAttribute("html", "lang")) === lang, "and back");

  step = "language and theme switches";
  await page.click("#lang-switch");
  await page.waitForLoadState();
  const other = lang === "ru" ? "en" : "ru";
  check((await page.getAttribute("html", "lang")) === other, "switched language");
  await page.click("#lang-switch");
  await page.waitForLoadState();
  check((await page.getAttribute("html", "lang")) === lang, "switched back");
  await page.selectOption("#theme", "dark");
  await page.click('form.theme button[type=submit]');
  await page.waitForLoadState();
  check((await page.getAttribute("html", "data-theme")) === "dark", "dark theme");
  await shot("settings-dark");
  await page.click('a[href="/dashboard"]');
  await shot("home-dark");
  await page.click('a[href="/dashboard/settings"]');
  await page.selectOption("#theme", "auto");
  await page.click('form.theme button[type=submit]');
  await page.waitForLoadState();

  step = "an admin suspends and resumes the account";
  const adminEmail = `admin-${Date.now().toString(36)}@example.com`;
  async function logInAs(who) {
    await page.click('form[action="/dashboard/logout"] button[type=submit]');
    await page.waitForURL(`${base}/dashboard/login`, { timeout: T });
    await page.fill("#email", who);
    await page.fill("#password", password);
    await page.click('form[action="/dashboard/login"] button[type=submit]');
    await page.waitForURL(`${base}/dashboard`, { timeout: T });
  }
  check((await page.locator('a[href="/dashboard/admin"]').count()) === 0, "no admin link for a user");
  await call("POST", "/admin", { email: adminEmail, password });
  await logInAs(adminEmail);
  await page.click('a[href="/dashboard/admin"]');
  const row = () => page.locator("tr", { hasText: email });
  await row().locator("button").click();
  await row().locator("td").filter({ hasText: W.suspended }).waitFor({ timeout: T });
  await page.locator(".notice[role=status]").waitFor({ timeout: T });
  await shot("admin");
  await row().locator("button").click();
  await row().locator("td").filter({ hasText: W.active }).waitFor({ timeout: T });
  await logInAs(email);
  await expectText(".state-name", W.ready);
  await page.click('a[href="/dashboard/settings"]');
  log("admin suspended and resumed the account");

  step = "channels: disconnect Telegram; the bot no longer passes its messages on";
  await page.click('a[href="/dashboard/channels"]');
  await page.locator("#connections li", { hasText: "telegram" }).locator("button.danger").click();
  await page.locator(".notice[role=status]").waitFor({ timeout: T });
  check((await page.locator("#connections li", { hasText: "telegram" }).count()) === 0, "Telegram is no longer listed");
  await call("POST", "/telegram", { chat_id: chatId, text: "after disconnecting" });
  await until("the bot's answer to a stranger", async () =>
    (await call("GET", `/telegram/${chatId}`)).sent.find((t) => t.includes("create your account")));
  check(!(await call("GET", `/telegram/${chatId}`)).sent.some((t) => t.includes("after disconnecting")),
        "the message did not reach the assistant");
  await shot("channels-disconnected");
  await page.click('a[href="/dashboard/settings"]');
  log("telegram disconnected");

  step = "export";
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
  const exported = readFileSync(await download.path(), "utf8");
  const doc = JSON.parse(exported);
  check(JSON.stringify(doc).includes(email), "the export names the account");
  check(!exported.includes(key), "the export has no key in clear");

  step = "delete the account with a typed confirmation";
  await page.fill("#confirm", "not my address");
  await page.click('form[action="/dashboard/settings/delete"] button[type=submit]');
  await expectText(".error[role=alert]", W.mismatch);
  check((await call("GET", `/exists?email=${encodeURIComponent(email)}`)).exists, "still there");
  await page.fill("#confirm", email);
  await page.click('form[action="/dashboard/settings/delete"] button[type=submit]');
  await expectText("h1", W.deleted);
  await shot("deleted");
  check(!(await call("GET", `/exists?email=${encodeURIComponent(email)}`)).exists, "deleted");
  await page.goto(`${base}/dashboard`);
  check(page.url().endsWith("/dashboard/login"), "signed out after deletion");

  step = "Google: an e-mail with a password account is told to use the password";
  await call("POST", "/google", { email: adminEmail });
  await page.goto(`${base}/dashboard/login`);
  await page.click("#google");
  await page.waitForURL((u) => u.pathname === "/dashboard/login" && u.searchParams.get("google") === "conflict", { timeout: T });
  await expectText(".error[role=alert]", W.googleConflict);

  step = "Google: signing in with Google lands signed in on the dashboard";
  const googleEmail = `google-${lang}-${Date.now().toString(36)}@example.com`;
  await call("POST", "/google", { email: googleEmail });
  await page.click("#google");
  await page.waitForURL(`${base}/dashboard`, { timeout: T });
  await expectText(".state-name", W.starting);
  check((await page.getAttribute('form[action="/dashboard/logout"] button', "title")) === googleEmail,
        "signed in as the Google user");
  check((await call("GET", `/exists?email=${encodeURIComponent(googleEmail)}`)).exists, "the account was made");
  await shot("home-google");
  log("signed in with Google");

  step = "no console error, no CSP violation, no outside request";
  check(problems.length === 0, `problems: ${problems.join(" | ")}`);
  const ms = ttfb.map(([, t]) => t).sort((a, b) => a - b);
  log(`page time to first byte over ${ms.length} pages: median ${ms[ms.length >> 1].toFixed(1)} ms, ` +
      `max ${ms[ms.length - 1].toFixed(1)} ms (${ttfb.map(([n, t]) => `${n} ${t.toFixed(0)}`).join(", ")})`);
  log(`journey ${lang} ${phone ? "phone" : "desktop"} passed; screenshots in ${shots}`);
} catch (e) {
  try {
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true });
    // The text of the page's main part: what a person would have seen (the markup's first
    // kilobytes are all header and navigation).
    const main = await page.locator("main").first().innerText({ timeout: 2000 }).catch(() => null);
    console.log(`page at failure: ${page.url()}\n${(main ?? await page.content()).slice(0, 3000)}`);
  } catch { /* the page is gone */ }
  console.error(`FAILED at "${step}": ${e.stack || e}`);
  if (problems.length) console.error(`console: ${problems.join(" | ")}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
