//! Sessions: the user's conversations per channel, filtered by channel and by the last 7 or
//! 30 days, and one conversation's messages a page at a time. Read through the same functions
//! as `GET /api/v1/sessions` and `/api/v1/sessions/{id}/messages`
//! ([`crate::api::sessions::read_sessions`], [`crate::api::sessions::read_messages`]), so the
//! page sees what the API would answer, from the tenant's agent.
//!
//! Home's "recent activity" is [`recent`]: the last few conversations, loaded by htmx after the
//! page (so that an agent slow to answer never holds Home up).
//!
//! The agent answers the list whole (a person has tens of conversations, not thousands); the
//! page shows it [`PER_PAGE`] at a time. Messages are paged by the agent's cursor
//! (`next_before`), newest first, as the API does.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::guard::Viewer;
use super::{Ctx, DashState, error_page, render, render_with};
use crate::api::sessions::{
    MessagesParams, SessionsParams, Unavailable, read_messages, read_sessions,
};

/// Conversations per page of the list.
pub const PER_PAGE: usize = 20;
/// Messages per page of a conversation.
const MESSAGES_PER_PAGE: &str = "30";
const CHANNELS: [&str; 4] = ["telegram", "whatsapp", "discord", "web"];

/// The list's filters as the page's form sends them (empty means "any").
#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub days: String,
    #[serde(default)]
    pub page: String,
}

impl Filters {
    /// Only the values the form offers; anything else is "any" (the API would refuse it).
    fn checked(self) -> (Option<&'static str>, Option<&'static str>, usize) {
        let channel = CHANNELS.iter().copied().find(|c| *c == self.channel);
        let days = ["7", "30"].into_iter().find(|d| *d == self.days);
        let page = self
            .page
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .unwrap_or(1);
        (channel, days, page)
    }
}

pub struct Row {
    /// The session's id, percent-encoded for its link.
    pub href: String,
    pub channel: String,
    pub kind: String,
    /// Who the conversation is with, as the id names them (`<channel>:<kind>:<peer>`).
    pub peer: String,
    pub messages: u64,
    pub last: String,
}

#[derive(Template)]
#[template(path = "dashboard/sessions.html")]
pub struct SessionsPage {
    pub c: Ctx,
    pub channel: &'static str,
    pub days: &'static str,
    pub channels: [&'static str; 4],
    /// Why the conversations cannot be read now (`sessions.unavailable.*`).
    pub unavailable: Option<&'static str>,
    pub rows: Vec<Row>,
    pub total: usize,
    pub page: usize,
    pub pages: usize,
    /// The query of the previous and the next page, when there is one.
    pub prev: Option<String>,
    pub next: Option<String>,
}

fn unavailable_key(u: Unavailable) -> &'static str {
    match u {
        Unavailable::NoWorkspace => "sessions.unavailable.none",
        Unavailable::Suspended => "sessions.unavailable.suspended",
        Unavailable::Asleep => "sessions.unavailable.asleep",
        Unavailable::NotReady => "sessions.unavailable.starting",
    }
}

/// `s` as one path segment or query value: everything but RFC 3986's unreserved characters
/// percent-encoded (a session id holds `:` and whatever the channel's peer ids hold).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// The query string of page `page` with these filters.
fn query(channel: &str, days: &str, page: usize) -> String {
    format!("?channel={channel}&days={days}&page={page}")
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn page(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Query(f): Query<Filters>,
) -> Response {
    let c = c.signed_in(&user);
    let (channel, days, page) = f.checked();
    let params = SessionsParams {
        channel: channel.map(String::from),
        days: days.map(String::from),
    };
    let (list, unavailable) = match read_sessions(&s.api, user.id, params).await {
        Ok(Ok(view)) => (view.sessions, None),
        Ok(Err(u)) => (Vec::new(), Some(unavailable_key(u))),
        Err(e) => return error_page(c, &e),
    };
    let total = list.len();
    let pages = total.div_ceil(PER_PAGE).max(1);
    let page = page.min(pages);
    let (ch, d) = (channel.unwrap_or(""), days.unwrap_or(""));
    let rows = list
        .into_iter()
        .skip((page - 1) * PER_PAGE)
        .take(PER_PAGE)
        .map(row)
        .collect();
    let status = c.status;
    render_with(
        status,
        &SessionsPage {
            c,
            channel: ch,
            days: d,
            channels: CHANNELS,
            unavailable,
            rows,
            total,
            page,
            pages,
            prev: (page > 1).then(|| query(ch, d, page - 1)),
            next: (page < pages).then(|| query(ch, d, page + 1)),
        },
    )
}

/// Conversations on Home.
const RECENT: usize = 5;

#[derive(Template)]
#[template(path = "dashboard/recent.html")]
pub struct RecentFragment {
    pub c: Ctx,
    pub unavailable: Option<&'static str>,
    pub rows: Vec<Row>,
}

fn row(x: crate::api::sessions::SessionView) -> Row {
    Row {
        href: encode(&x.id),
        peer: x.id.splitn(3, ':').nth(2).unwrap_or(&x.id).to_string(),
        channel: x.channel,
        kind: x.kind,
        messages: x.message_count,
        last: when(x.last_activity),
    }
}

/// Home's recent activity: the most recently active conversations.
#[tracing::instrument(skip_all, fields(user))]
pub async fn recent(State(s): State<Arc<DashState>>, Viewer(user): Viewer, c: Ctx) -> Response {
    let c = c.signed_in(&user);
    let (rows, unavailable) = match read_sessions(&s.api, user.id, SessionsParams::default()).await
    {
        Ok(Ok(view)) => (
            view.sessions.into_iter().take(RECENT).map(row).collect(),
            None,
        ),
        Ok(Err(u)) => (Vec::new(), Some(unavailable_key(u))),
        Err(e) => {
            tracing::warn!(error = %e, "recent conversations");
            (Vec::new(), Some("sessions.unavailable.error"))
        }
    };
    render(&RecentFragment {
        c,
        unavailable,
        rows,
    })
}

#[derive(Deserialize, Default)]
pub struct Cursor {
    #[serde(default)]
    pub before: String,
}

pub struct Line {
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    pub content: String,
    pub at: String,
}

#[derive(Template)]
#[template(path = "dashboard/session.html")]
pub struct SessionPage {
    pub c: Ctx,
    pub id: String,
    /// The id, encoded for links.
    pub href: String,
    pub unavailable: Option<&'static str>,
    /// Oldest first, as a conversation is read.
    pub lines: Vec<Line>,
    /// The link to the older messages, when there are some.
    pub older: Option<String>,
    /// This is a page of older messages: offer the newest again.
    pub paged: bool,
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn conversation(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Path(id): Path<String>,
    Query(cur): Query<Cursor>,
) -> Response {
    let c = c.signed_in(&user);
    let paged = !cur.before.is_empty();
    let params = MessagesParams {
        limit: Some(MESSAGES_PER_PAGE.into()),
        before: paged.then_some(cur.before),
        days: None,
    };
    let (page, unavailable) = match read_messages(&s.api, user.id, id.clone(), params).await {
        Ok(Ok(view)) => (Some(view), None),
        Ok(Err(u)) => (None, Some(unavailable_key(u))),
        Err(e) => return error_page(c, &e),
    };
    let (mut lines, older) = match page {
        Some(p) => (
            p.messages
                .into_iter()
                .map(|m| Line {
                    role: m.role,
                    content: m.content,
                    at: when(m.created_at),
                })
                .collect::<Vec<_>>(),
            p.next_before
                .map(|b| format!("/dashboard/sessions/{}?before={}", encode(&id), encode(&b))),
        ),
        None => (Vec::new(), None),
    };
    lines.reverse();
    let status = c.status;
    render_with(
        status,
        &SessionPage {
            c,
            href: encode(&id),
            id,
            unavailable,
            lines,
            older,
            paged,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_keep_only_what_the_form_offers() {
        let f = |channel: &str, days: &str, page: &str| Filters {
            channel: channel.into(),
            days: days.into(),
            page: page.into(),
        };
        assert_eq!(f("web", "7", "2").checked(), (Some("web"), Some("7"), 2));
        assert_eq!(f("fax", "9", "0").checked(), (None, None, 1));
        assert_eq!(f("", "", "x").checked(), (None, None, 1));
    }

    #[test]
    fn a_session_id_is_encoded_for_its_link() {
        assert_eq!(encode("telegram:dm:42"), "telegram%3Adm%3A42");
        assert_eq!(encode("web:dm:a/b c+"), "web%3Adm%3Aa%2Fb%20c%2B");
    }
}
