//! Reading a tenant's conversations through its agent: the session list, one session's
//! messages page by page, and everything at once for the GDPR export.
//!
//! The agent owns the conversations (on the tenant volume); the router reads them with the
//! same bearer token it sends chats with, and both runtimes answer these shapes, so the router
//! never branches on the runtime. The paths sit under `/clawdbot/v1/`, apart from OpenClaw's
//! own `/v1/...`, because they are this platform's extension of the gateway protocol.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::gateway::{Role, SessionKey};

/// `GET`: the sessions, most recently active first ([`SessionsQuery`] -> [`SessionList`]).
pub const SESSIONS_PATH: &str = "/clawdbot/v1/sessions";
/// `GET`: one session's messages, newest first ([`MessagesQuery`] -> [`MessagePage`]).
pub const MESSAGES_PATH: &str = "/clawdbot/v1/sessions/messages";
/// `GET`: every session with every message, and the memory notes ([`ConversationExport`]).
pub const EXPORT_PATH: &str = "/clawdbot/v1/export";

/// Messages in a page when the request names no limit.
pub const DEFAULT_PAGE: u32 = 50;
/// Most messages in a page.
pub const MAX_PAGE: u32 = 200;
/// Largest `days` filter (ten years): keeps the date arithmetic far from overflow.
pub const MAX_DAYS: u32 = 3650;

/// Filters of the session list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsQuery {
    /// Only sessions of this channel (`telegram`, `whatsapp`, `discord`, `web`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Only sessions active in the last `days` days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

/// One conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session key, `<channel>:<kind>:<peer>`: the id to ask for messages with.
    pub key: String,
    pub channel: String,
    /// `dm`, `group`...
    pub kind: String,
    pub peer: String,
    pub message_count: u64,
    /// Time of the newest message; none for a session without messages.
    #[serde(default)]
    pub last_activity: Option<DateTime<Utc>>,
}

impl SessionSummary {
    /// A summary of the session `key`; a key not of the form `<channel>:<kind>:<peer>` (made by
    /// something other than the router) is listed under the channel `other`.
    pub fn new(key: &str, message_count: u64, last_activity: Option<DateTime<Utc>>) -> Self {
        let (channel, kind, peer) = match SessionKey::parse(key) {
            Ok(k) => (k.channel, k.kind, k.peer),
            Err(_) => ("other".into(), "other".into(), key.to_string()),
        };
        SessionSummary {
            key: key.to_string(),
            channel,
            kind,
            peer,
            message_count,
            last_activity,
        }
    }

    /// Whether the summary passes the filters, at time `now`.
    pub fn matches(&self, q: &SessionsQuery, now: DateTime<Utc>) -> bool {
        if q.channel.as_ref().is_some_and(|c| *c != self.channel) {
            return false;
        }
        match since(q.days, now) {
            Some(from) => self.last_activity.is_some_and(|t| t >= from),
            None => true,
        }
    }
}

/// The start of the window of the last `days` days.
pub fn since(days: Option<u32>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    days.map(|d| now - chrono::Duration::days(i64::from(d.min(MAX_DAYS))))
}

/// `GET` [`SESSIONS_PATH`] response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<SessionSummary>,
}

/// Which messages of a session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesQuery {
    /// The session key.
    pub key: String,
    /// Messages per page (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The page after the previous one: its `next_before`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Only messages of the last `days` days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

impl MessagesQuery {
    /// The page size asked for, within bounds.
    pub fn page_size(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationMessage {
    /// Opaque id, unique in the session; the paging cursor.
    pub id: String,
    pub role: Role,
    pub content: String,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

/// `GET` [`MESSAGES_PATH`] response: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePage {
    pub key: String,
    pub messages: Vec<ConversationMessage>,
    /// Pass as `before` for the next (older) page; none on the last page.
    #[serde(default)]
    pub next_before: Option<String>,
}

/// One memory file of the agent (long-term memory, daily notes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryNote {
    /// Path relative to the agent's data directory, for example `memory/2026-12-01.md`.
    pub path: String,
    pub content: String,
}

/// A session with all its messages, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionExport {
    #[serde(flatten)]
    pub session: SessionSummary,
    pub messages: Vec<ConversationMessage>,
}

/// `GET` [`EXPORT_PATH`] response: what the agent keeps about the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationExport {
    /// `lite` or `openclaw`: which runtime answered (for the reader; the shape is the same).
    pub runtime: String,
    pub exported_at: DateTime<Utc>,
    pub sessions: Vec<SessionExport>,
    pub memory: Vec<MemoryNote>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_take_channel_kind_and_peer_from_the_key() {
        let s = SessionSummary::new("telegram:dm:42", 3, None);
        assert_eq!(
            (s.channel.as_str(), s.kind.as_str(), s.peer.as_str()),
            ("telegram", "dm", "42")
        );
        let odd = SessionSummary::new("main", 1, None);
        assert_eq!((odd.channel.as_str(), odd.peer.as_str()), ("other", "main"));
    }

    #[test]
    fn filters_by_channel_and_days() {
        let now = Utc::now();
        let recent = SessionSummary::new("web:dm:a", 2, Some(now - chrono::Duration::hours(1)));
        let old = SessionSummary::new("telegram:dm:b", 2, Some(now - chrono::Duration::days(10)));
        let empty = SessionSummary::new("telegram:dm:c", 0, None);
        let q = |channel: Option<&str>, days| SessionsQuery {
            channel: channel.map(str::to_string),
            days,
        };
        assert!(recent.matches(&q(None, Some(1)), now));
        assert!(!old.matches(&q(None, Some(7)), now));
        assert!(old.matches(&q(Some("telegram"), Some(11)), now));
        assert!(!recent.matches(&q(Some("telegram"), None), now));
        assert!(empty.matches(&q(None, None), now));
        assert!(!empty.matches(&q(None, Some(1)), now));
        // Absurd windows are clamped, not overflowed.
        assert!(old.matches(&q(None, Some(u32::MAX)), now));
    }

    #[test]
    fn page_sizes_are_bounded() {
        let q = |limit| MessagesQuery {
            key: "web:dm:a".into(),
            limit,
            ..Default::default()
        };
        assert_eq!(q(None).page_size(), DEFAULT_PAGE);
        assert_eq!(q(Some(0)).page_size(), 1);
        assert_eq!(q(Some(10_000)).page_size(), MAX_PAGE);
    }

    #[test]
    fn exports_flatten_the_session_summary() {
        let e = SessionExport {
            session: SessionSummary::new("web:dm:a", 1, None),
            messages: vec![ConversationMessage {
                id: "1".into(),
                role: Role::User,
                content: "hi".into(),
                created_at: None,
            }],
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["key"], "web:dm:a");
        assert_eq!(v["messages"][0]["role"], "user");
        let back: SessionExport = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
