//! Sessions on the tenant volume: one SQLite file per session under `sessions/`.
//!
//! One file per session (rather than one database for all) is what lets a damaged file cost
//! one conversation and not the tenant's whole history: the damaged file is moved aside and
//! every other session keeps working. Open sessions are cached (a few, each with a small page
//! cache) so that a message to an active conversation does not reopen its file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::Error;

/// Sessions kept open at once. Each costs a SQLite worker thread and up to
/// [`PAGE_CACHE_KIB`] of page cache; 16 keeps the agent well under its 50 MB budget.
const OPEN_SESSIONS: usize = 16;
/// Most history messages a turn can use; more never fit the context window of a model we
/// serve (8,192 tokens is at least about 500 short chat messages).
pub const HISTORY_ROWS: usize = 500;
const PAGE_CACHE_KIB: i64 = 256;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    created_at TEXT NOT NULL
);";

/// A stored message of a session's history.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub id: i64,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub tokens: i64,
}

/// Rough token count of a text: about four bytes a token for English, plus the per-message
/// framing. Only used to decide what fits the context window, so erring high is fine.
pub fn estimate_tokens(text: &str) -> i64 {
    (text.len() / 4) as i64 + 4
}

/// The session of an open conversation. Obtained through [`SessionStore::lock`], which also
/// serialises concurrent messages to the same conversation.
pub struct Session {
    pub key: String,
    path: PathBuf,
    conn: Option<SqliteConnection>,
    /// The newest [`HISTORY_ROWS`] messages, oldest first, kept while the session is open so
    /// that a turn reads no history from disk (the main per-message cost otherwise).
    history: Option<std::collections::VecDeque<StoredMessage>>,
    flushed_upto: i64,
    written: Arc<AtomicU64>,
    /// Turns appended since the WAL was last checkpointed.
    since_checkpoint: u32,
}

/// Turns between checkpoints of a session's WAL (a few pages each: the WAL stays near 1 MB).
const CHECKPOINT_EVERY: u32 = 256;

pub type SessionGuard = OwnedMutexGuard<Session>;

pub struct SessionStore {
    dir: PathBuf,
    open: std::sync::Mutex<Lru>,
    /// Bytes written through the store, for the storage quota between rescans.
    written: Arc<AtomicU64>,
}

struct Lru {
    tick: u64,
    entries: HashMap<String, (Arc<Mutex<Session>>, u64)>,
}

impl SessionStore {
    pub fn new(data_dir: &Path, written: Arc<AtomicU64>) -> Result<Self, Error> {
        let dir = data_dir.join("sessions");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(SessionStore {
            dir,
            open: std::sync::Mutex::new(Lru {
                tick: 0,
                entries: HashMap::new(),
            }),
            written,
        })
    }

    /// File of a session: a hash of its id, so any session key makes a safe file name.
    pub fn session_path(data_dir: &Path, session_id: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(session_id.as_bytes());
        data_dir
            .join("sessions")
            .join(format!("{}.sqlite", hex::encode(&digest[..16])))
    }

    /// Locks the session `id` (creating it on first use) for one turn.
    pub async fn lock(&self, id: &str) -> Result<SessionGuard, Error> {
        let slot = {
            let mut lru = self.open.lock().unwrap_or_else(|p| p.into_inner());
            lru.tick += 1;
            let tick = lru.tick;
            if let Some((slot, used)) = lru.entries.get_mut(id) {
                *used = tick;
                slot.clone()
            } else {
                let path = Self::session_path(self.dir.parent().unwrap_or(&self.dir), id);
                let slot = Arc::new(Mutex::new(Session {
                    key: id.to_string(),
                    path,
                    conn: None,
                    history: None,
                    flushed_upto: 0,
                    written: self.written.clone(),
                    since_checkpoint: 0,
                }));
                lru.entries.insert(id.to_string(), (slot.clone(), tick));
                lru.evict(OPEN_SESSIONS);
                slot
            }
        };
        let mut guard = slot.lock_owned().await;
        if guard.conn.is_none() {
            guard.open().await?;
        }
        Ok(guard)
    }

    /// Closes every cached session (at shutdown), so the WAL is checkpointed.
    pub async fn close_all(&self) {
        let slots: Vec<_> = {
            let mut lru = self.open.lock().unwrap_or_else(|p| p.into_inner());
            lru.entries.drain().map(|(_, (s, _))| s).collect()
        };
        for slot in slots {
            let mut s = slot.lock().await;
            if let Some(conn) = s.conn.take() {
                let _ = conn.close().await;
            }
        }
    }
}

impl Lru {
    /// Drops the least recently used sessions that no turn is using.
    fn evict(&mut self, capacity: usize) {
        while self.entries.len() > capacity {
            let victim = self
                .entries
                .iter()
                .filter(|(_, (slot, _))| Arc::strong_count(slot) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    self.entries.remove(&k);
                }
                None => break,
            }
        }
    }
}

pub fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        // The root filesystem is read-only: keep temporary tables and sorts in memory.
        .pragma("temp_store", "MEMORY")
        .pragma("cache_size", format!("-{PAGE_CACHE_KIB}"))
        .pragma("journal_size_limit", "1048576")
}

/// Whether a SQLite error means the file itself is damaged (not busy, not full).
pub fn is_corruption(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let primary = db
                .code()
                .and_then(|c| i64::from_str(&c).ok())
                .map(|c| c & 0xff);
            matches!(primary, Some(11) | Some(26))
                || db.message().contains("not a database")
                || db.message().contains("malformed")
        }
        _ => false,
    }
}

/// Moves a damaged database (and its WAL and shared-memory files) aside so that a fresh one
/// can take its place; returns where it went.
pub fn quarantine(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let moved = path.with_extension(format!("sqlite.corrupt-{stamp}"));
    if let Err(e) = std::fs::rename(path, &moved) {
        tracing::error!(path = %path.display(), error = %e, "could not move a corrupt database aside");
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    moved
}

impl Session {
    async fn open(&mut self) -> Result<(), Error> {
        let result = open_session_db(&self.path, &self.key).await;
        match result {
            Ok((conn, flushed)) => {
                self.conn = Some(conn);
                self.flushed_upto = flushed;
                Ok(())
            }
            Err(e) => Err(self.fail("opening session", e)),
        }
    }

    /// Turns a database error into ours; a damaged file is moved aside (and reported), so the
    /// next message to this session starts afresh.
    fn fail(&mut self, what: &str, e: sqlx::Error) -> Error {
        if is_corruption(&e) {
            self.conn = None;
            self.history = None;
            let moved_to = quarantine(&self.path);
            let err = Error::CorruptSession {
                path: self.path.clone(),
                moved_to,
                detail: e.to_string(),
            };
            tracing::error!(error = %err, "session file is corrupt");
            err
        } else {
            Error::db(what, e)
        }
    }

    fn conn(&mut self) -> Result<&mut SqliteConnection, Error> {
        self.conn
            .as_mut()
            .ok_or_else(|| Error::Config("session is not open".into()))
    }

    /// The newest messages (up to [`HISTORY_ROWS`]), oldest first.
    pub async fn history(&mut self) -> Result<&std::collections::VecDeque<StoredMessage>, Error> {
        if self.history.is_none() {
            let rows = sqlx::query(
                "SELECT id, role, content, tokens FROM messages ORDER BY id DESC LIMIT ?",
            )
            .bind(HISTORY_ROWS as i64)
            .fetch_all(self.conn()?)
            .await;
            match rows {
                Ok(rows) => {
                    self.history = Some(rows.iter().rev().map(row_to_message).collect());
                }
                Err(e) => return Err(self.fail("reading history", e)),
            }
        }
        self.history
            .as_ref()
            .ok_or_else(|| Error::Config("history not loaded".into()))
    }

    /// Messages with `after < id < before` not yet flushed to memory, oldest first.
    pub async fn unflushed_before(
        &mut self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, Error> {
        let after = self.flushed_upto;
        let rows = sqlx::query(
            "SELECT id, role, content, tokens FROM messages WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(before)
        .bind(limit)
        .fetch_all(self.conn()?)
        .await;
        match rows {
            Ok(rows) => Ok(rows.iter().map(row_to_message).collect()),
            Err(e) => Err(self.fail("reading history", e)),
        }
    }

    /// Records that every message up to `id` is in memory.
    pub async fn mark_flushed(&mut self, id: i64) -> Result<(), Error> {
        let r = sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES ('flushed_upto', ?)")
            .bind(id.to_string())
            .execute(self.conn()?)
            .await;
        match r {
            Ok(_) => {
                self.flushed_upto = id;
                Ok(())
            }
            Err(e) => Err(self.fail("recording memory flush", e)),
        }
    }

    pub fn flushed_upto(&self) -> i64 {
        self.flushed_upto
    }

    /// Whether the WAL should be folded into the database (see [`Session::checkpoint`]).
    pub fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= CHECKPOINT_EVERY
    }

    /// Folds the WAL into the database. SQLite would do this itself inside some commit, and
    /// its fsync of the volume is what made the slowest turns slow (16 ms at p99 on this
    /// machine's disk against 3 ms on tmpfs); session databases turn that off and the agent
    /// calls this after the reply has gone out.
    pub async fn checkpoint(&mut self) {
        self.since_checkpoint = 0;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(conn)
            .await
        {
            tracing::warn!(session = %self.key, error = %e, "WAL checkpoint failed; retried later");
        }
    }

    /// Appends messages (`(role, content)`) in one transaction: a turn is stored whole or not.
    pub async fn append(&mut self, messages: &[(&str, &str)]) -> Result<(), Error> {
        let now = chrono::Utc::now().to_rfc3339();
        let result = async {
            let conn = self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
            let mut tx = conn.begin().await?;
            let mut ids = Vec::with_capacity(messages.len());
            for (role, content) in messages {
                let r = sqlx::query(
                    "INSERT INTO messages (role, content, tokens, created_at) VALUES (?, ?, ?, ?)",
                )
                .bind(role)
                .bind(content)
                .bind(estimate_tokens(content))
                .bind(&now)
                .execute(&mut *tx)
                .await?;
                ids.push(r.last_insert_rowid());
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(ids)
        }
        .await;
        match result {
            Ok(ids) => {
                self.since_checkpoint += 1;
                if let Some(h) = self.history.as_mut() {
                    for (id, (role, content)) in ids.into_iter().zip(messages) {
                        h.push_back(StoredMessage {
                            id,
                            role: role.to_string(),
                            content: content.to_string(),
                            tokens: estimate_tokens(content),
                        });
                    }
                    while h.len() > HISTORY_ROWS {
                        h.pop_front();
                    }
                }
                // Row and index overhead on top of the text, for the quota between rescans.
                let bytes: usize = messages.iter().map(|(_, c)| c.len() + 64).sum();
                self.written.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(self.fail("storing the turn", e)),
        }
    }

    pub async fn count(&mut self) -> Result<i64, Error> {
        let r = sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(self.conn()?)
            .await;
        r.map_err(|e| self.fail("counting messages", e))
    }
}

async fn open_session_db(path: &Path, key: &str) -> Result<(SqliteConnection, i64), sqlx::Error> {
    // Checkpoints are the agent's to schedule, off the reply's path (`Session::checkpoint`).
    let options = connect_options(path).pragma("wal_autocheckpoint", "0");
    let mut conn = SqliteConnection::connect_with(&options).await?;
    sqlx::query(SCHEMA).execute(&mut conn).await?;
    sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('session_key', ?)")
        .bind(key)
        .execute(&mut conn)
        .await?;
    let flushed: Option<String> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'flushed_upto'")
            .fetch_optional(&mut conn)
            .await?;
    Ok((conn, flushed.and_then(|v| v.parse().ok()).unwrap_or(0)))
}

fn row_to_message(row: &sqlx::sqlite::SqliteRow) -> StoredMessage {
    StoredMessage {
        id: row.get(0),
        role: row.get(1),
        content: row.get(2),
        tokens: row.get(3),
    }
}

/// Fills a session with `n` alternating user/assistant messages, marked as already flushed to
/// memory (as an old conversation would be). For benchmarks and tests of large stores.
pub async fn seed_session(
    data_dir: &Path,
    session_id: &str,
    n: usize,
    text: &str,
) -> Result<(), Error> {
    let written = Arc::new(AtomicU64::new(0));
    let store = SessionStore::new(data_dir, written)?;
    let mut s = store.lock(session_id).await?;
    let mut i = 0;
    while i < n {
        let batch: Vec<(&str, &str)> = (i..n.min(i + 10_000))
            .map(|j| (if j % 2 == 0 { "user" } else { "assistant" }, text))
            .collect();
        s.append(&batch).await?;
        i += batch.len();
    }
    let last = s.history().await?.back().map(|m| m.id).unwrap_or(0);
    s.mark_flushed(last).await?;
    drop(s);
    store.close_all().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_bytes(path: &Path) -> u64 {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(PathBuf::from(wal))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_wal_grows_until_the_agent_checkpoints_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SessionStore::new(dir.path(), Arc::default()).expect("store");
        let mut s = store.lock("telegram:dm:1").await.expect("session");
        let path = s.path.clone();
        // 256 turns of 20 kB: past the 1,000 pages (4 MB) where SQLite would checkpoint itself.
        let reply = "x".repeat(20_000);
        while !s.checkpoint_due() {
            s.append(&[("user", "hi"), ("assistant", &reply)])
                .await
                .expect("append");
        }
        // No checkpoint inside a turn: everything since the start is still in the WAL.
        let before = wal_bytes(&path);
        assert!(before > 5_000_000, "WAL {before} bytes");
        s.checkpoint().await;
        assert_eq!(wal_bytes(&path), 0);
        assert!(!s.checkpoint_due());
        // Nothing was lost on the way.
        drop(s);
        store.close_all().await;
        let mut s = store.lock("telegram:dm:1").await.expect("reopen");
        assert_eq!(
            s.history().await.expect("history").len(),
            HISTORY_ROWS.min(2 * CHECKPOINT_EVERY as usize)
        );
    }
}
