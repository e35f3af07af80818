// Clawdbot Cloud's conversations API on the OpenClaw gateway: the same three reads the lite
// agent serves (`operator/api/src/conversations.rs` defines the shapes), so the router reads a
// tenant's sessions, messages and export the same way whichever runtime the tenant runs.
//
//   GET /clawdbot/v1/sessions?channel=&days=                -> {sessions: [SessionSummary]}
//   GET /clawdbot/v1/sessions/messages?key=&limit=&before=&days= -> MessagePage (newest first)
//   GET /clawdbot/v1/export                                 -> ConversationExport
//
// The routes sit on the gateway's own port behind gateway auth (the bearer token the router
// already holds) and read through OpenClaw's own gateway methods (`sessions.list`,
// `chat.history`, `agents.files.list`) dispatched in process: no second listener, no reading
// of OpenClaw's SQLite files (whose events may be compressed or archived cold), no WebSocket
// device pairing. Read-only: no method that writes is called.

import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";
import { dispatchGatewayMethod } from "openclaw/plugin-sdk/gateway-method-runtime";

const PREFIX = "/clawdbot/v1/";
const DEFAULT_PAGE = 50;
const MAX_PAGE = 200;
const MAX_DAYS = 3650;
// OpenClaw's own bounds: sessions.list applies at most 200 rows a page; chat.history pages are
// capped too. Export reads in these steps.
const LIST_PAGE = 200;
const HISTORY_PAGE = 200;
const AGENT = "main";
const AGENT_PREFIX = `agent:${AGENT}:`;

class HttpError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

async function call(method, params) {
  const r = await dispatchGatewayMethod(method, params);
  if (!r.ok) {
    const code = r.error?.code ?? "UNAVAILABLE";
    if (code === "INVALID_REQUEST") throw new HttpError(400, "invalid_request_error", r.error?.message ?? "invalid request");
    throw new HttpError(code === "UNAVAILABLE" ? 503 : 500, "internal_error", `${method} failed (${code})`);
  }
  return r.payload ?? {};
}

// `agent:main:telegram:dm:42` -> `telegram:dm:42`: the router's key, as it sent it.
function routerKey(openclawKey) {
  return openclawKey.startsWith(AGENT_PREFIX) ? openclawKey.slice(AGENT_PREFIX.length) : openclawKey;
}

function openclawKey(key) {
  return key.startsWith("agent:") ? key : AGENT_PREFIX + key;
}

// The same rule as `SessionSummary::new`: `<channel>:<kind>:<peer>`, else channel `other`.
function summary(key, messageCount, lastActivity) {
  const parts = key.split(":");
  const ok = parts.length >= 3 && parts[0] && parts[1] && parts.slice(2).join(":");
  return {
    key,
    channel: ok ? parts[0] : "other",
    kind: ok ? parts[1] : "other",
    peer: ok ? parts.slice(2).join(":") : key,
    message_count: messageCount,
    last_activity: lastActivity,
  };
}

function iso(ms) {
  return typeof ms === "number" && Number.isFinite(ms) ? new Date(ms).toISOString() : null;
}

function since(days) {
  if (days === undefined) return undefined;
  return Date.now() - Math.min(days, MAX_DAYS) * 86_400_000;
}

function text(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .filter((p) => p && p.type === "text" && typeof p.text === "string")
      .map((p) => p.text)
      .join("");
  }
  return "";
}

const ROLES = { user: "user", assistant: "assistant", system: "system", toolResult: "tool", tool: "tool" };

function message(m) {
  const role = ROLES[m.role];
  if (!role) return null;
  const meta = m.__openclaw ?? {};
  return {
    id: String(meta.id ?? meta.seq ?? ""),
    role,
    content: text(m.content),
    created_at: iso(m.timestamp ?? meta.recordTimestampMs),
    _ms: m.timestamp ?? meta.recordTimestampMs,
  };
}

function strip(m) {
  const { _ms, ...rest } = m;
  return rest;
}

function uint(params, name, max) {
  const raw = params.get(name);
  if (raw === null || raw === "") return undefined;
  if (!/^\d+$/.test(raw)) throw new HttpError(400, "invalid_request_error", `\`${name}\` must be a non-negative integer`);
  const n = Number(raw);
  return max === undefined ? n : Math.min(n, max);
}

async function allSessionRows() {
  const rows = [];
  let offset = 0;
  for (;;) {
    const page = await call("sessions.list", { sortBy: "activity", limit: LIST_PAGE, offset, agentId: AGENT });
    rows.push(...(page.sessions ?? []));
    if (!page.hasMore || typeof page.nextOffset !== "number") return rows;
    offset = page.nextOffset;
  }
}

async function countMessages(key) {
  const h = await call("chat.history", { sessionKey: key, limit: 1, offset: 0 });
  return typeof h.totalMessages === "number" ? h.totalMessages : (h.messages ?? []).length;
}

async function sessionSummaries() {
  const out = [];
  for (const row of await allSessionRows()) {
    const last = row.lastActivityAt ?? row.lastInteractionAt ?? row.updatedAt;
    out.push({ row, s: summary(routerKey(row.key), await countMessages(row.key), iso(last)), lastMs: last });
  }
  return out;
}

async function listSessions(params) {
  const channel = params.get("channel") || undefined;
  const from = since(uint(params, "days"));
  const sessions = (await sessionSummaries())
    .filter(({ s, lastMs }) => (channel === undefined || s.channel === channel) && (from === undefined || (lastMs ?? 0) >= from))
    .sort((a, b) => (b.lastMs ?? 0) - (a.lastMs ?? 0) || a.s.key.localeCompare(b.s.key))
    .map(({ s }) => s);
  return { sessions };
}

async function pageOfMessages(params) {
  const key = params.get("key");
  if (!key) throw new HttpError(400, "invalid_request_error", "missing `key` (the session key)");
  const size = Math.max(1, uint(params, "limit", MAX_PAGE) ?? DEFAULT_PAGE);
  const before = params.get("before");
  if (before !== null && !/^\d+$/.test(before)) throw new HttpError(400, "invalid_request_error", "`before` is not a cursor of this session");
  const from = since(uint(params, "days"));
  const known = (await allSessionRows()).some((r) => r.key === openclawKey(key));
  if (!known) throw new HttpError(404, "not_found_error", "no such session");
  // chat.history counts `offset` back from the newest message and returns its window oldest
  // first; our pages are newest first with the offset of the next window as the cursor.
  const h = await call("chat.history", { sessionKey: openclawKey(key), limit: size, offset: before === null ? 0 : Number(before) });
  let messages = (h.messages ?? []).map(message).filter(Boolean).reverse();
  let more = Boolean(h.hasMore) && typeof h.nextOffset === "number";
  if (from !== undefined) {
    const kept = messages.filter((m) => (m._ms ?? 0) >= from);
    if (kept.length < messages.length) more = false;
    messages = kept;
  }
  return { key, messages: messages.map(strip), next_before: more ? String(h.nextOffset) : null };
}

async function wholeHistory(key) {
  const all = [];
  let offset = 0;
  for (;;) {
    const h = await call("chat.history", { sessionKey: key, limit: HISTORY_PAGE, offset });
    all.unshift(...(h.messages ?? []).map(message).filter(Boolean).map(strip));
    if (!h.hasMore || typeof h.nextOffset !== "number" || h.nextOffset <= offset) return all;
    offset = h.nextOffset;
  }
}

async function memoryNotes() {
  const files = await call("agents.files.list", { agentId: AGENT });
  const workspace = files.workspace;
  if (typeof workspace !== "string") return [];
  const paths = ["MEMORY.md"];
  try {
    const daily = (await readdir(join(workspace, "memory"))).filter((n) => n.endsWith(".md")).sort();
    paths.push(...daily.map((n) => `memory/${n}`));
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  const notes = [];
  for (const path of paths) {
    try {
      notes.push({ path, content: await readFile(join(workspace, path), "utf8") });
    } catch (e) {
      if (e.code !== "ENOENT") throw e;
    }
  }
  return notes;
}

async function exportAll() {
  const sessions = [];
  for (const { row, s } of await sessionSummaries()) {
    sessions.push({ ...s, messages: await wholeHistory(row.key) });
  }
  sessions.sort((a, b) => a.key.localeCompare(b.key));
  return { runtime: "openclaw", exported_at: new Date().toISOString(), sessions, memory: await memoryNotes() };
}

function send(res, status, body) {
  res.statusCode = status;
  res.setHeader("Cache-Control", "no-store");
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.end(JSON.stringify(body));
}

async function handle(req, res) {
  if ((req.method ?? "GET").toUpperCase() !== "GET") {
    res.setHeader("Allow", "GET");
    send(res, 405, { error: { type: "invalid_request_error", message: "only GET" } });
    return true;
  }
  const url = new URL(req.url ?? "/", "http://gateway");
  const route = {
    [`${PREFIX}sessions`]: () => listSessions(url.searchParams),
    [`${PREFIX}sessions/messages`]: () => pageOfMessages(url.searchParams),
    [`${PREFIX}export`]: () => exportAll(),
  }[url.pathname];
  try {
    if (!route) throw new HttpError(404, "not_found_error", "no such conversations endpoint");
    send(res, 200, await route());
  } catch (e) {
    if (e instanceof HttpError) {
      send(res, e.status, { error: { type: e.type, message: e.message } });
    } else {
      // Details stay in the gateway's log; the caller gets no internals.
      console.error("clawdbot-conversations: read failed", e);
      send(res, 500, { error: { type: "internal_error", message: "the conversations could not be read" } });
    }
  }
  return true;
}

export default definePluginEntry({
  id: "clawdbot-conversations",
  name: "Clawdbot conversations",
  description: "Read-only sessions, messages and export in Clawdbot Cloud's conversations API",
  register(api) {
    api.registerHttpRoute({ path: PREFIX, auth: "gateway", match: "prefix", handler: handle });
  },
});
