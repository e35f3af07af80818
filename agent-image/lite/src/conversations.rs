//! The conversations as the router reads them (`clawdbot_api::conversations`): the session
//! list, one session's messages page by page (newest first), and the export of everything.
//!
//! Read straight from the session files with a connection of their own: SQLite's WAL lets a
//! reader see every committed turn while the session store keeps writing, and the store's
//! open-session cache (16 entries, sized for turns) is not churned by a listing. A listing
//! opens every session file once: fine for the hundreds of sessions a tenant has, and it is
//! an occasional dashboard or export read, never on a message's path.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clawdbot_api::conversations::{
    ConversationExport, ConversationMessage, MemoryNote, MessagePage, MessagesQuery, SessionExport,
    SessionList, SessionSummary, SessionsQuery, since,
};
use clawdbot_api::gateway::Role;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

use crate::Error;
use crate::store::SessionStore;

/// The runtime name in exports.
pub const RUNTIME: &str = "lite";

async fn open(path: &Path) -> Result<SqliteConnection, Error> {
    // Never create: a session that is not there is not there.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(5))
        .pragma("temp_store", "MEMORY");
    SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| Error::db("opening a session to read", e))
}

/// The session files (`sessions/*.sqlite`; files moved aside as corrupt are skipped).
fn session_files(data_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let dir = data_dir.join("sessions");
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sqlite"))
        .collect();
    files.sort();
    Ok(files)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

async fn summary(conn: &mut SqliteConnection) -> Result<Option<SessionSummary>, sqlx::Error> {
    let key: Option<String> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'session_key'")
            .fetch_optional(&mut *conn)
            .await?;
    let Some(key) = key else {
        return Ok(None);
    };
    let row = sqlx::query("SELECT count(*), max(created_at) FROM messages")
        .fetch_one(&mut *conn)
        .await?;
    let count: i64 = row.get(0);
    let last: Option<String> = row.get(1);
    Ok(Some(SessionSummary::new(
        &key,
        count.max(0) as u64,
        last.as_deref().and_then(parse_time),
    )))
}

/// Every session that passes the filters, most recently active first. A file that cannot be
/// read is logged and left out: one damaged session must not hide the others.
pub async fn list(data_dir: &Path, q: &SessionsQuery) -> Result<SessionList, Error> {
    let now = Utc::now();
    let mut sessions = Vec::new();
    for path in session_files(data_dir)? {
        match read_summary(&path).await {
            Ok(Some(s)) if s.matches(q, now) => sessions.push(s),
            Ok(_) => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "session not listed"),
        }
    }
    sessions.sort_by(|a, b| {
        b.last_activity
            .cmp(&a.last_activity)
            .then(a.key.cmp(&b.key))
    });
    Ok(SessionList { sessions })
}

async fn read_summary(path: &Path) -> Result<Option<SessionSummary>, Error> {
    let mut conn = open(path).await?;
    let s = summary(&mut conn)
        .await
        .map_err(|e| Error::db("reading a session", e));
    let _ = conn.close().await;
    s
}

fn role(text: &str) -> Role {
    match text {
        "assistant" => Role::Assistant,
        "system" => Role::System,
        "tool" => Role::Tool,
        _ => Role::User,
    }
}

fn to_message(row: &sqlx::sqlite::SqliteRow) -> ConversationMessage {
    let id: i64 = row.get(0);
    let role_text: String = row.get(1);
    let created: String = row.get(3);
    ConversationMessage {
        id: id.to_string(),
        role: role(&role_text),
        content: row.get(2),
        created_at: parse_time(&created),
    }
}

/// One page of a session's messages, newest first.
pub async fn messages(data_dir: &Path, q: &MessagesQuery) -> Result<MessagePage, Error> {
    let before = match q.before.as_deref() {
        None => i64::MAX,
        Some(c) => c
            .parse::<i64>()
            .map_err(|_| Error::BadRequest("`before` is not a cursor of this session".into()))?,
    };
    let path = SessionStore::session_path(data_dir, &q.key);
    if !path.exists() {
        return Err(Error::NotFound("no such session".into()));
    }
    let mut conn = open(&path).await?;
    let page = page(&mut conn, q, before).await;
    let _ = conn.close().await;
    page.map_err(|e| Error::db("reading messages", e))
}

async fn page(
    conn: &mut SqliteConnection,
    q: &MessagesQuery,
    before: i64,
) -> Result<MessagePage, sqlx::Error> {
    let size = q.page_size();
    // Timestamps are stored as `to_rfc3339()` of UTC times, which sort as text.
    let from = since(q.days, Utc::now())
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let rows = sqlx::query(
        "SELECT id, role, content, created_at FROM messages
         WHERE id < ? AND created_at >= ? ORDER BY id DESC LIMIT ?",
    )
    .bind(before)
    .bind(from)
    .bind(i64::from(size) + 1)
    .fetch_all(&mut *conn)
    .await?;
    let mut messages: Vec<ConversationMessage> = rows.iter().map(to_message).collect();
    let next_before = if messages.len() > size as usize {
        messages.truncate(size as usize);
        messages.last().map(|m| m.id.clone())
    } else {
        None
    };
    Ok(MessagePage {
        key: q.key.clone(),
        messages,
        next_before,
    })
}

/// Everything the agent keeps about its user: every session with every message (oldest
/// first) and the memory files.
pub async fn export(data_dir: &Path) -> Result<ConversationExport, Error> {
    let mut sessions = Vec::new();
    for path in session_files(data_dir)? {
        let mut conn = open(&path).await?;
        let one = async {
            let Some(session) = summary(&mut conn).await? else {
                return Ok(None);
            };
            let rows =
                sqlx::query("SELECT id, role, content, created_at FROM messages ORDER BY id")
                    .fetch_all(&mut conn)
                    .await?;
            Ok::<_, sqlx::Error>(Some(SessionExport {
                session,
                messages: rows.iter().map(to_message).collect(),
            }))
        }
        .await;
        let _ = conn.close().await;
        // Unlike the listing, an export that silently lacks a session would be wrong.
        if let Some(s) = one.map_err(|e| Error::db("exporting a session", e))? {
            sessions.push(s);
        }
    }
    sessions.sort_by(|a, b| a.session.key.cmp(&b.session.key));
    Ok(ConversationExport {
        runtime: RUNTIME.into(),
        exported_at: Utc::now(),
        sessions,
        memory: memory_notes(data_dir)?,
    })
}

/// `MEMORY.md` and the daily notes `memory/*.md`.
fn memory_notes(data_dir: &Path) -> Result<Vec<MemoryNote>, Error> {
    let mut paths = vec![PathBuf::from("MEMORY.md")];
    if let Ok(rd) = std::fs::read_dir(data_dir.join("memory")) {
        let mut daily: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| PathBuf::from("memory").join(e.file_name()))
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        daily.sort();
        paths.extend(daily);
    }
    let mut notes = Vec::new();
    for rel in paths {
        let full = data_dir.join(&rel);
        match std::fs::read_to_string(&full) {
            Ok(content) => notes.push(MemoryNote {
                path: rel.display().to_string(),
                content,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(full, e)),
        }
    }
    Ok(notes)
}
