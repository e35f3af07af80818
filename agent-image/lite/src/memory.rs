//! Memory on the tenant volume: `MEMORY.md` (long-term facts, always in the prompt) and daily
//! notes `memory/YYYY-MM-DD.md`, searchable through a SQLite FTS5 index in `state.sqlite`.
//!
//! The markdown files are the truth; the index is rebuilt from them at start-up, so a lost or
//! damaged index costs nothing. Entries are paragraphs (separated by a blank line).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::SqlitePool;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::Error;
use crate::store::StoredMessage;

/// Largest part of MEMORY.md put in the prompt (its end: the newest facts).
const LONG_TERM_PROMPT_BYTES: usize = 6_000;

pub struct Memory {
    dir: PathBuf,
    pool: SqlitePool,
    write_lock: Mutex<()>,
    written: Arc<AtomicU64>,
}

/// One search hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// File the entry is in, relative to the data directory.
    pub source: String,
    pub text: String,
}

impl Memory {
    /// Opens the memory of `data_dir` and rebuilds the search index from the files.
    pub async fn open(
        data_dir: &Path,
        pool: SqlitePool,
        written: Arc<AtomicU64>,
    ) -> Result<Self, Error> {
        let notes = data_dir.join("memory");
        tokio::fs::create_dir_all(&notes)
            .await
            .map_err(|e| Error::io(&notes, e))?;
        let m = Memory {
            dir: data_dir.to_path_buf(),
            pool,
            write_lock: Mutex::new(()),
            written,
        };
        m.reindex().await?;
        Ok(m)
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.dir.join("MEMORY.md")];
        if let Ok(rd) = std::fs::read_dir(self.dir.join("memory")) {
            let mut notes: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .collect();
            notes.sort();
            files.extend(notes);
        }
        files
    }

    async fn reindex(&self) -> Result<(), Error> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| Error::db("memory index", e))?;
        sqlx::query("DELETE FROM memory_fts")
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("memory index", e))?;
        for path in self.files() {
            let Some(text) = read_text(&path) else {
                continue;
            };
            let source = self.relative(&path);
            let paras: Vec<String> = paragraphs(&text).map(str::to_string).collect();
            for para in paras {
                sqlx::query("INSERT INTO memory_fts (source, body) VALUES (?, ?)")
                    .bind(&source)
                    .bind(para)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| Error::db("memory index", e))?;
            }
        }
        tx.commit().await.map_err(|e| Error::db("memory index", e))
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// The end of MEMORY.md, for the system prompt.
    pub fn long_term(&self) -> String {
        let Some(text) = read_text(&self.dir.join("MEMORY.md")) else {
            return String::new();
        };
        if text.len() <= LONG_TERM_PROMPT_BYTES {
            return text;
        }
        let mut start = text.len() - LONG_TERM_PROMPT_BYTES;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }

    /// Appends an entry to MEMORY.md (`long_term`) or today's daily note, and indexes it.
    /// Returns the file, relative to the data directory.
    pub async fn write(&self, entry: &str, long_term: bool) -> Result<String, Error> {
        let path = if long_term {
            self.dir.join("MEMORY.md")
        } else {
            self.dir
                .join("memory")
                .join(format!("{}.md", chrono::Utc::now().format("%Y-%m-%d")))
        };
        let entry = entry.trim();
        let _guard = self.write_lock.lock().await;
        append(&path, &format!("{entry}\n\n")).await?;
        self.written
            .fetch_add(entry.len() as u64 + 2, Ordering::Relaxed);
        let source = self.relative(&path);
        sqlx::query("INSERT INTO memory_fts (source, body) VALUES (?, ?)")
            .bind(&source)
            .bind(entry)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db("memory index", e))?;
        Ok(source)
    }

    /// Writes messages about to leave the prompt into today's daily note, so that what is
    /// trimmed from the history stays findable through memory search.
    pub async fn flush_transcript(
        &self,
        session: &str,
        messages: &[StoredMessage],
    ) -> Result<(), Error> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut entry = format!("Conversation {session} (earlier messages):");
        for m in messages {
            entry.push_str(&format!(
                "\n- {}: {}",
                m.role,
                m.content.replace("\n\n", "\n")
            ));
        }
        self.write(&entry, false).await.map(|_| ())
    }

    /// Full-text search over every memory entry, best first.
    pub async fn search(&self, query: &str, limit: i64) -> Result<Vec<Hit>, Error> {
        let Some(q) = fts_query(query) else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT source, body FROM memory_fts WHERE memory_fts MATCH ? ORDER BY bm25(memory_fts) LIMIT ?",
        )
        .bind(q)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::db("memory search", e))?;
        Ok(rows
            .into_iter()
            .map(|(source, text)| Hit { source, text })
            .collect())
    }
}

/// Reads a text file; a missing file is empty, a damaged one (not UTF-8, unreadable) is
/// reported and read as far as it can be.
fn read_text(path: &Path) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(path = %path.display(), "memory file is not valid UTF-8; reading it lossily");
                Some(String::from_utf8_lossy(e.as_bytes()).into_owned())
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read memory file");
            None
        }
    }
}

async fn append(path: &Path, text: &str) -> Result<(), Error> {
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes())
        .await
        .map_err(|e| Error::io(path, e))?;
    f.flush().await.map_err(|e| Error::io(path, e))
}

fn paragraphs(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n\n").map(str::trim).filter(|p| !p.is_empty())
}

/// Turns free text into an FTS5 query that cannot be a syntax error: each word quoted, any
/// word may match (bm25 ranks entries with more of them first).
pub fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(16)
        .map(|w| format!("\"{}\"", w.to_lowercase()))
        .collect();
    if words.is_empty() {
        None
    } else {
        Some(words.join(" OR "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_queries_are_quoted_words() {
        assert_eq!(
            fts_query("Where's my \"cat\"?").as_deref(),
            Some("\"where\" OR \"s\" OR \"my\" OR \"cat\"")
        );
        assert_eq!(fts_query("*** ()"), None);
    }

    #[test]
    fn paragraphs_split_on_blank_lines() {
        let p: Vec<_> = paragraphs("a\nb\n\n\nc\n\n").collect();
        assert_eq!(p, vec!["a\nb", "c"]);
    }
}
