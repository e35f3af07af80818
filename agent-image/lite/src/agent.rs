//! One turn of a conversation: the session's history trimmed to the context window (what
//! leaves the window is flushed to memory first), the system prompt with memory and skills,
//! the bounded tool loop, and the turn stored whole.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clawdbot_api::gateway::{SessionKey, Usage};
use clawdbot_api::lite::{LiteAgentConfig, SessionScope};
use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;
use tracing::Instrument;

use crate::Error;
use crate::memory::Memory;
use crate::provider::{Msg, Provider, Request};
use crate::skills::Skills;
use crate::storage::Storage;
use crate::store::{self, SessionStore, estimate_tokens};
use crate::tools::{Tools, WebSearch};

/// Most trimmed messages flushed to memory in one turn (a backlog drains over a few turns).
const FLUSH_BATCH: i64 = 200;
/// Reply budget when the config sets no `maxTokens`.
const DEFAULT_REPLY_TOKENS: i64 = 512;

const STATE_SCHEMA: &str = "
CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(source UNINDEXED, body, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS counters (day TEXT NOT NULL, name TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (day, name));";

pub struct Agent {
    pub config: LiteAgentConfig,
    pub provider: Provider,
    pub sessions: SessionStore,
    pub memory: Memory,
    pub skills: Skills,
    pub storage: Storage,
    pub state: SqlitePool,
    pub web: Option<WebSearch>,
}

/// The result of a turn, an answer or a readable explanation of why there is none.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub reply: String,
    pub usage: Usage,
    pub finish_reason: String,
    /// Error category when `reply` explains a failure.
    pub error: Option<&'static str>,
    /// Time spent waiting for the model (the rest of the turn is the agent's overhead).
    pub model_time: Duration,
}

impl Agent {
    pub async fn open(config: LiteAgentConfig) -> Result<Self, Error> {
        let data = PathBuf::from(&config.data_dir);
        std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
        let storage = Storage::new(&data, config.storage_limit_bytes).await;
        let state = open_state(&data).await?;
        let memory = Memory::open(&data, state.clone(), storage.written.clone()).await?;
        let sessions = SessionStore::new(&data, storage.written.clone())?;
        let web = config.web_search.clone().map(WebSearch::new).transpose()?;
        Ok(Agent {
            provider: Provider::new(&config.model)?,
            skills: Skills::new(&data),
            sessions,
            memory,
            storage,
            state,
            web,
            config,
        })
    }

    /// Folds the state database's WAL (memory index, counters) into the database and
    /// truncates it (the volume's quota counts it); called on a timer, off every turn's path.
    /// A busy database is simply looked at next time.
    pub async fn checkpoint_state(&self) {
        // Looked at every second, folded once past 1 MiB: FTS5 writes many pages per memory
        // flush, and a fixed period let the WAL reach 100 MB during a burst of turns.
        let wal = PathBuf::from(&self.config.data_dir).join("state.sqlite-wal");
        if std::fs::metadata(&wal).map_or(true, |m| m.len() < STATE_WAL_LIMIT) {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.state)
            .await
        {
            tracing::warn!(error = %e, "state WAL checkpoint failed; retried later");
        }
    }

    pub async fn close(&self) {
        self.sessions.close_all().await;
        self.state.close().await;
    }

    /// The session a conversation belongs to: its own (per-peer), or with `main` scope one
    /// session for every direct message (groups keep their own).
    pub fn session_id(&self, key: &SessionKey) -> String {
        match self.config.session_scope {
            SessionScope::Main if key.kind == "dm" || key.kind == "direct" => "main".into(),
            _ => key.to_string(),
        }
    }

    pub async fn turn(&self, key: &SessionKey, text: &str) -> Outcome {
        let mut model_time = Duration::ZERO;
        match self.try_turn(key, text, &mut model_time).await {
            Ok(o) => o,
            Err(e) => {
                // The detail (provider text, paths) is for the operator; the user reads a
                // sentence that holds neither.
                tracing::error!(error = %e, category = e.category(), "turn failed");
                Outcome {
                    reply: e.user_message(),
                    usage: Usage::default(),
                    finish_reason: "stop".into(),
                    error: Some(e.category()),
                    model_time,
                }
            }
        }
    }

    async fn try_turn(
        &self,
        key: &SessionKey,
        text: &str,
        model_time: &mut Duration,
    ) -> Result<Outcome, Error> {
        self.storage.check(text.len() as u64 + 128)?;
        let id = self.session_id(key);
        let mut session = self.sessions.lock(&id).await?;

        let tools = Tools {
            memory: &self.memory,
            web: self.web.as_ref(),
            state: &self.state,
            storage: &self.storage,
            searches: AtomicU64::new(0),
        };
        let specs = tools.specs();
        let system = self.system_prompt();
        let ctx = i64::from(self.config.model.context_window);
        let reply_budget = self
            .config
            .model
            .max_tokens
            .map(i64::from)
            .unwrap_or(DEFAULT_REPLY_TOKENS)
            .min(ctx / 4);
        let tools_tokens: i64 = specs
            .iter()
            .map(|s| estimate_tokens(&s.parameters.to_string()) + estimate_tokens(s.description))
            .sum();
        let mut budget =
            ctx - reply_budget - estimate_tokens(&system) - tools_tokens - estimate_tokens(text);

        // Newest first, as many as fit.
        let history = session.history().await?;
        let mut first = history.len();
        for m in history.iter().rev() {
            if m.tokens > budget {
                break;
            }
            budget -= m.tokens;
            first -= 1;
        }
        // The window starts with a user message (Anthropic requires it, and a reply without
        // its question confuses any model).
        while history.get(first).is_some_and(|m| m.role != "user") {
            first += 1;
        }
        let mut messages: Vec<Msg> = history
            .iter()
            .skip(first)
            .map(|m| match m.role.as_str() {
                "user" => Msg::User(m.content.clone()),
                _ => Msg::Assistant {
                    text: Some(m.content.clone()),
                    calls: Vec::new(),
                },
            })
            .collect();
        // Memory flush: whatever is older than the window and not yet in memory goes to
        // today's note before it leaves the prompt.
        let window_start = history.get(first).map(|m| m.id).unwrap_or(i64::MAX);
        if window_start.saturating_sub(1) > session.flushed_upto() {
            let trimmed = session.unflushed_before(window_start, FLUSH_BATCH).await?;
            if let Some(last) = trimmed.last().map(|m| m.id) {
                self.memory.flush_transcript(&session.key, &trimmed).await?;
                session.mark_flushed(last).await?;
            }
        }
        messages.push(Msg::User(text.to_string()));

        let mut usage = Usage::default();
        let mut rounds = 0;
        let (reply, finish_reason) = loop {
            let no_more_tools = rounds >= self.config.max_tool_rounds;
            let req = Request {
                system: &system,
                messages: &messages,
                tools: &specs,
                no_more_tools,
            };
            let started = Instant::now();
            let result = self.provider.complete(&req).await;
            *model_time += started.elapsed();
            let c = result?;
            usage.prompt_tokens += c.usage.prompt_tokens;
            usage.completion_tokens += c.usage.completion_tokens;
            usage.total_tokens += c.usage.total_tokens;
            if c.calls.is_empty() || no_more_tools {
                let text = c.text.filter(|t| !t.trim().is_empty());
                let reply = match (text, no_more_tools && !c.calls.is_empty()) {
                    (Some(t), _) => t,
                    (None, true) => format!(
                        "I could not finish: I reached the limit of {} tool rounds for one reply.",
                        self.config.max_tool_rounds
                    ),
                    (None, false) => "(the model returned an empty reply)".to_string(),
                };
                break (reply, c.finish_reason);
            }
            rounds += 1;
            let calls = c.calls;
            let mut results = Vec::with_capacity(calls.len());
            for call in &calls {
                let span = tracing::info_span!("tool", name = %call.name);
                let content = tools.run(call).instrument(span).await;
                results.push(Msg::ToolResult {
                    call_id: call.id.clone(),
                    content,
                });
            }
            messages.push(Msg::Assistant {
                text: c.text,
                calls,
            });
            messages.extend(results);
        };

        session
            .append(&[("user", text), ("assistant", &reply)])
            .await?;
        if session.checkpoint_due() {
            // The session stays locked until it is done: its next turn waits, no other does.
            tokio::spawn(async move { session.checkpoint().await });
        }
        if !usage.is_reported() {
            // Some model servers report zeros; an estimate is better than nothing for quotas.
            let prompt: i64 =
                messages.iter().map(msg_tokens).sum::<i64>() + estimate_tokens(&system);
            usage.prompt_tokens = prompt.max(0) as u64;
            usage.completion_tokens = estimate_tokens(&reply) as u64;
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        }
        usage.web_searches = tools.searches.load(Ordering::Relaxed);
        Ok(Outcome {
            reply,
            usage,
            finish_reason,
            error: None,
            model_time: *model_time,
        })
    }

    fn system_prompt(&self) -> String {
        let mut p = format!(
            "You are Clawdbot, the user's personal assistant. Answer helpfully and concisely. \
             Today is {} (UTC).",
            chrono::Utc::now().format("%A, %Y-%m-%d")
        );
        p.push_str(
            " Use memory_write to remember what the user asks you to remember, and memory_search to recall earlier conversations.",
        );
        if self.web.is_some() {
            p.push_str(" Use web_search for current events and facts you do not know.");
        }
        let long_term = self.memory.long_term();
        if !long_term.trim().is_empty() {
            p.push_str("\n\n# What you know about the user (MEMORY.md)\n");
            p.push_str(long_term.trim());
        }
        let skills = self.skills.prompt();
        if !skills.is_empty() {
            p.push_str("\n\n# Skills");
            p.push_str(&skills);
        }
        p
    }
}

fn msg_tokens(m: &Msg) -> i64 {
    match m {
        Msg::User(t) => estimate_tokens(t),
        Msg::Assistant { text, calls } => {
            estimate_tokens(text.as_deref().unwrap_or_default())
                + calls
                    .iter()
                    .map(|c| estimate_tokens(&c.arguments.to_string()))
                    .sum::<i64>()
        }
        Msg::ToolResult { content, .. } => estimate_tokens(content),
    }
}

/// Size of the state database's WAL that makes the housekeeping task checkpoint it.
const STATE_WAL_LIMIT: u64 = 1024 * 1024;

/// Opens `state.sqlite` (the memory index and the counters). A damaged file is moved aside
/// and rebuilt: the index comes back from the markdown files, only today's counters are lost.
async fn open_state(data: &Path) -> Result<SqlitePool, Error> {
    let path = data.join("state.sqlite");
    match try_open_state(&path).await {
        Ok(pool) => Ok(pool),
        Err(e) if store::is_corruption(&e) => {
            let moved = store::quarantine(&path);
            tracing::error!(path = %path.display(), moved_to = %moved.display(), error = %e,
                "state database is corrupt; moved aside and rebuilt from the memory files");
            try_open_state(&path)
                .await
                .map_err(|e| Error::db("opening state.sqlite", e))
        }
        Err(e) => Err(Error::db("opening state.sqlite", e)),
    }
}

async fn try_open_state(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .min_connections(1)
        // As for sessions: no checkpoint (and its fsync) inside a turn; `checkpoint_state`
        // runs them in the background.
        .connect_with(store::connect_options(path).pragma("wal_autocheckpoint", "0"))
        .await?;
    if let Err(e) = sqlx::query(STATE_SCHEMA).execute(&pool).await {
        pool.close().await;
        return Err(e);
    }
    Ok(pool)
}
