//! The conversations API the router reads (`clawdbot_api::conversations`): sessions, paged
//! messages, the export, behind the same bearer token as the chat endpoint.

mod common;

use clawdbot_api::conversations::{
    ConversationExport, EXPORT_PATH, MESSAGES_PATH, MessagePage, SESSIONS_PATH, SessionList,
};
use clawdbot_api::gateway::{ErrorBody, Role};
use clawdbot_testkit::fake_llm::FakeLlm;
use common::*;
use serde_json::json;
use sqlx::Connection;

async fn get<T: serde::de::DeserializeOwned>(agent: &Running, path_and_query: &str) -> T {
    let resp = agent
        .http
        .get(format!("{}{path_and_query}", agent.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("agent reachable");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "{path_and_query}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path_and_query}: {e}: {text}"))
}

async fn status_of(agent: &Running, path_and_query: &str, token: Option<&str>) -> (u16, String) {
    let mut rb = agent.http.get(format!("{}{path_and_query}", agent.url));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let resp = rb.send().await.expect("agent reachable");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// Moves every message of a session `days` days into the past, as if it had been old.
async fn age_session(vol: &Volume, key: &str, days: i64) {
    let path = clawdbot_lite_agent::store::SessionStore::session_path(&vol.data(), key);
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open the session store");
    let then = (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339();
    sqlx::query("UPDATE messages SET created_at = ?")
        .bind(then)
        .execute(&mut conn)
        .await
        .expect("age the messages");
    conn.close().await.expect("close the session store");
}

#[tokio::test]
async fn sessions_are_listed_with_channel_count_and_last_activity() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    for text in ["one", "two", "three"] {
        assert_eq!(agent.chat("telegram:dm:42", text).await.status, 200);
    }
    assert_eq!(agent.chat("web:dm:visitor-7", "hi").await.status, 200);
    assert_eq!(agent.chat("discord:dm:99", "old news").await.status, 200);
    age_session(&vol, "discord:dm:99", 30).await;

    let all: SessionList = get(&agent, SESSIONS_PATH).await;
    let keys: Vec<&str> = all.sessions.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        ["web:dm:visitor-7", "telegram:dm:42", "discord:dm:99"],
        "newest first"
    );
    let tg = &all.sessions[1];
    assert_eq!(
        (tg.channel.as_str(), tg.kind.as_str(), tg.peer.as_str()),
        ("telegram", "dm", "42")
    );
    assert_eq!(tg.message_count, 6, "three turns, user and assistant each");
    let age = chrono::Utc::now() - tg.last_activity.expect("has messages");
    assert!(age < chrono::Duration::minutes(5), "{age}");

    let telegram: SessionList = get(&agent, &format!("{SESSIONS_PATH}?channel=telegram")).await;
    assert_eq!(telegram.sessions.len(), 1);
    assert_eq!(telegram.sessions[0].key, "telegram:dm:42");
    let recent: SessionList = get(&agent, &format!("{SESSIONS_PATH}?days=7")).await;
    assert_eq!(
        recent.sessions.len(),
        2,
        "the 30-day-old session is filtered out"
    );
    let month: SessionList = get(&agent, &format!("{SESSIONS_PATH}?days=31")).await;
    assert_eq!(month.sessions.len(), 3);
    agent.stop().await;
}

#[tokio::test]
async fn messages_are_paged_newest_first() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    for text in ["one", "two", "three"] {
        agent.chat("telegram:dm:42", text).await;
    }
    let q = |extra: &str| format!("{MESSAGES_PATH}?key=telegram:dm:42&limit=4{extra}");
    let first: MessagePage = get(&agent, &q("")).await;
    assert_eq!(first.key, "telegram:dm:42");
    let texts: Vec<(Role, &str)> = first
        .messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (Role::Assistant, "echo: three"),
            (Role::User, "three"),
            (Role::Assistant, "echo: two"),
            (Role::User, "two"),
        ]
    );
    let cursor = first.next_before.clone().expect("an older page");
    let second: MessagePage = get(&agent, &q(&format!("&before={cursor}"))).await;
    let texts: Vec<&str> = second.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["echo: one", "one"]);
    assert_eq!(second.next_before, None, "last page");
    assert!(second.messages.iter().all(|m| m.created_at.is_some()));

    // Filter by days: everything moved a month back drops out of a week's window.
    age_session(&vol, "telegram:dm:42", 30).await;
    let week: MessagePage = get(&agent, &q("&days=7")).await;
    assert!(week.messages.is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn bad_reads_get_clear_errors_and_need_the_token() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    agent.chat("telegram:dm:42", "hello").await;

    for path in [SESSIONS_PATH, EXPORT_PATH] {
        assert_eq!(status_of(&agent, path, None).await.0, 401, "{path}");
        assert_eq!(
            status_of(&agent, path, Some("wrong")).await.0,
            401,
            "{path}"
        );
    }
    let (status, body) = status_of(
        &agent,
        &format!("{MESSAGES_PATH}?key=telegram:dm:404"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let err: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(err.error.type_, "not_found_error");
    let (status, body) = status_of(
        &agent,
        &format!("{MESSAGES_PATH}?key=telegram:dm:42&before=abc"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("before"), "{body}");
    let (status, body) = status_of(&agent, MESSAGES_PATH, Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("key"), "{body}");
    let (status, _) = status_of(&agent, &format!("{SESSIONS_PATH}?days=-1"), Some(TOKEN)).await;
    assert_eq!(status, 400);
    // Reading creates nothing.
    assert!(
        !clawdbot_lite_agent::store::SessionStore::session_path(&vol.data(), "telegram:dm:404")
            .exists()
    );
    agent.stop().await;
}

#[tokio::test]
async fn the_export_holds_every_session_message_and_memory_note_and_no_token() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    agent.chat("telegram:dm:42", "first").await;
    agent.chat("telegram:dm:42", "second").await;
    agent.chat("whatsapp:dm:15550001", "hola").await;
    std::fs::write(vol.path("MEMORY.md"), "The user likes tea.\n").unwrap();
    std::fs::write(vol.path("memory/2026-11-30.md"), "Talked about trains.\n").unwrap();

    let all: ConversationExport = get(&agent, EXPORT_PATH).await;
    assert_eq!(all.runtime, "lite");
    let keys: Vec<&str> = all
        .sessions
        .iter()
        .map(|s| s.session.key.as_str())
        .collect();
    assert_eq!(keys, ["telegram:dm:42", "whatsapp:dm:15550001"]);
    let tg: Vec<&str> = all.sessions[0]
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(
        tg,
        ["first", "echo: first", "second", "echo: second"],
        "oldest first"
    );
    assert_eq!(all.sessions[0].session.message_count, 4);
    let notes: Vec<(&str, &str)> = all
        .memory
        .iter()
        .map(|n| (n.path.as_str(), n.content.as_str()))
        .collect();
    assert_eq!(
        notes,
        [
            ("MEMORY.md", "The user likes tea.\n"),
            ("memory/2026-11-30.md", "Talked about trains.\n")
        ]
    );
    let raw = serde_json::to_string(&all).unwrap();
    assert!(!raw.contains(TOKEN), "the gateway token is not exported");
    agent.stop().await;
}
