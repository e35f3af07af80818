//! The tools the model may call: memory search, memory write and (when the plan has it) web
//! search through SearXNG, counted per day against the plan's limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clawdbot_api::lite::WebSearchConfig;
use serde_json::{Value, json};
use sqlx::SqlitePool;

use crate::memory::Memory;
use crate::provider::{ToolCall, ToolSpec};
use crate::storage::Storage;

pub const MEMORY_SEARCH: &str = "memory_search";
pub const MEMORY_WRITE: &str = "memory_write";
pub const WEB_SEARCH: &str = "web_search";

/// Longest text a tool hands back to the model.
const MAX_TOOL_OUTPUT: usize = 4_000;
const WEB_RESULTS: usize = 5;

pub struct WebSearch {
    config: WebSearchConfig,
    http: reqwest::Client,
}

impl WebSearch {
    pub fn new(config: WebSearchConfig) -> Result<Self, crate::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| crate::Error::Config(format!("HTTP client: {e}")))?;
        Ok(WebSearch { config, http })
    }
}

pub struct Tools<'a> {
    pub memory: &'a Memory,
    pub web: Option<&'a WebSearch>,
    pub state: &'a SqlitePool,
    pub storage: &'a Storage,
    /// Web searches this turn made (each one counted against the day's limit), reported with
    /// the reply's usage so that the router records them.
    pub searches: AtomicU64,
}

impl Tools<'_> {
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = vec![
            ToolSpec {
                name: MEMORY_SEARCH,
                description: "Search your long-term memory and daily notes (including earlier parts of conversations) for a topic.",
                parameters: json!({"type": "object", "properties": {
                    "query": {"type": "string", "description": "words to search for"}},
                    "required": ["query"]}),
            },
            ToolSpec {
                name: MEMORY_WRITE,
                description: "Save a note to memory. Use long_term=true for durable facts about the user (kept in MEMORY.md and shown to you in every conversation).",
                parameters: json!({"type": "object", "properties": {
                    "text": {"type": "string", "description": "what to remember"},
                    "long_term": {"type": "boolean", "description": "durable fact (true) or today's note (false)"}},
                    "required": ["text"]}),
            },
        ];
        if self.web.is_some() {
            specs.push(ToolSpec {
                name: WEB_SEARCH,
                description: "Search the web. Returns titles, links and snippets.",
                parameters: json!({"type": "object", "properties": {
                    "query": {"type": "string", "description": "the search query"}},
                    "required": ["query"]}),
            });
        }
        specs
    }

    /// Runs one call. Failures are reported to the model as the tool's output (it can then
    /// tell the user), never as an error of the turn.
    pub async fn run(&self, call: &ToolCall) -> String {
        let out = match call.name.as_str() {
            MEMORY_SEARCH => match str_arg(&call.arguments, "query") {
                Some(q) => self.memory_search(q).await,
                None => "error: memory_search needs a \"query\" string".into(),
            },
            MEMORY_WRITE => match str_arg(&call.arguments, "text") {
                Some(t) if !t.trim().is_empty() => {
                    let long = call.arguments["long_term"].as_bool().unwrap_or(false);
                    self.memory_write(t, long).await
                }
                _ => "error: memory_write needs a non-empty \"text\" string".into(),
            },
            WEB_SEARCH => match (self.web, str_arg(&call.arguments, "query")) {
                (Some(web), Some(q)) => self.web_search(web, q).await,
                (None, _) => "error: web search is not enabled for this assistant".into(),
                (_, None) => "error: web_search needs a \"query\" string".into(),
            },
            other => format!("error: there is no tool named {other:?}"),
        };
        truncate_owned(out, MAX_TOOL_OUTPUT)
    }

    async fn memory_search(&self, query: &str) -> String {
        match self.memory.search(query, 5).await {
            Ok(hits) if hits.is_empty() => format!("no memory entries match {query:?}"),
            Ok(hits) => hits
                .iter()
                .map(|h| format!("[{}]\n{}", h.source, h.text))
                .collect::<Vec<_>>()
                .join("\n\n"),
            Err(e) => {
                tracing::error!(error = %e, "memory search failed");
                "error: memory search failed".into()
            }
        }
    }

    async fn memory_write(&self, text: &str, long_term: bool) -> String {
        if let Err(e) = self.storage.check(text.len() as u64) {
            return format!("error: not saved: {}", e.user_message());
        }
        match self.memory.write(text, long_term).await {
            Ok(file) => format!("saved to {file}"),
            Err(e) => {
                tracing::error!(error = %e, "memory write failed");
                "error: memory write failed".into()
            }
        }
    }

    async fn web_search(&self, web: &WebSearch, query: &str) -> String {
        let limit = web.config.max_per_day;
        match count_search(self.state, limit).await {
            Ok(true) => {
                self.searches.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {
                return format!(
                    "error: the daily web search limit of this plan ({limit} searches) is used up; it resets at midnight UTC"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "web search counter failed");
                return "error: web search is unavailable".into();
            }
        }
        let url = format!("{}/search", web.config.base_url.trim_end_matches('/'));
        let resp = web
            .http
            .get(&url)
            .query(&[("q", query), ("format", "json")])
            .send()
            .await;
        let resp = match resp {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::error!(status = %r.status(), "SearXNG refused a search");
                return format!(
                    "error: the search engine answered HTTP {}",
                    r.status().as_u16()
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "SearXNG unreachable");
                return "error: the search engine is unreachable".into();
            }
        };
        let body: Value = match resp.json().await {
            Ok(v) => v,
            Err(_) => return "error: the search engine answered something unreadable".into(),
        };
        let results = body["results"].as_array().cloned().unwrap_or_default();
        if results.is_empty() {
            return format!("no web results for {query:?}");
        }
        results
            .iter()
            .take(WEB_RESULTS)
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "{}. {} <{}>\n{}",
                    i + 1,
                    r["title"].as_str().unwrap_or_default(),
                    r["url"].as_str().unwrap_or_default(),
                    r["content"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Counts one web search for today (UTC); false when the day's limit is reached. One
/// statement, so concurrent turns cannot both take the last search.
pub async fn count_search(state: &SqlitePool, limit: u32) -> Result<bool, sqlx::Error> {
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let row: Option<i64> = sqlx::query_scalar(
        "INSERT INTO counters (day, name, count) SELECT ?1, 'web_search', 1 WHERE ?2 > 0
         ON CONFLICT (day, name) DO UPDATE SET count = count + 1 WHERE count < ?2
         RETURNING count",
    )
    .bind(&day)
    .bind(i64::from(limit))
    .fetch_optional(state)
    .await?;
    Ok(row.is_some())
}

/// Searches counted today.
pub async fn searches_today(state: &SqlitePool) -> Result<i64, sqlx::Error> {
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let n: Option<i64> =
        sqlx::query_scalar("SELECT count FROM counters WHERE day = ? AND name = 'web_search'")
            .bind(day)
            .fetch_optional(state)
            .await?;
    Ok(n.unwrap_or(0))
}

fn str_arg<'v>(args: &'v Value, name: &str) -> Option<&'v str> {
    args.get(name)?.as_str()
}

fn truncate_owned(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" …(truncated)");
    }
    s
}
