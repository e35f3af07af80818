//! The router in front of the real lite agent (which calls an OpenAI-compatible model, here
//! the testkit's fake provider): a Telegram conversation of two turns.

use crate::support;

use std::time::Duration;

use clawdbot_api::Plan;
use clawdbot_api::conversations::{MessagesQuery, SessionsQuery};
use clawdbot_api::lite::LiteAgentConfig;
use clawdbot_router::agent::{AgentClient, AgentError};
use clawdbot_testkit::fake_chat::telegram_text_update;
use clawdbot_testkit::fake_llm::{FakeLlm, Reply};
use support::World;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_lite_agent_answers_through_the_router() {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let llm = FakeLlm::openai().await;
    llm.push(Reply::text("Hello from the lite agent."));
    llm.push(Reply::text("You said your name is Ada.").with_usage(120, 9));

    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("lite-{:016x}", rand::random::<u64>());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).expect("token file");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let agent_url = format!("http://{}", listener.local_addr().expect("addr"));
    let config: LiteAgentConfig = serde_json::from_value(serde_json::json!({
        "listen": listener.local_addr().expect("addr").to_string(),
        "dataDir": dir.path().join("data").to_string_lossy(),
        "tokenFile": token_file.to_string_lossy(),
        "model": {"provider": "platform", "baseUrl": llm.base_url(), "model": "fake-model", "timeoutSeconds": 20},
        "storageLimitBytes": 64 * 1024 * 1024
    }))
    .expect("lite config");
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(clawdbot_lite_agent::launch(config, listener, async {
        let _ = stopped.await;
    }));

    let user = clawdbot_router::admin::create_user(&w.db, None, Plan::Free)
        .await
        .expect("user");
    let tenant = w.tenant(user, Plan::Free).await;
    w.set_token(&tenant.name, &token).await;
    w.mark_ready(&tenant.name, &agent_url).await;
    let chat = 6_100_001;
    w.connect("telegram", &chat.to_string(), user).await;

    w.telegram_update(&r, &telegram_text_update(1, chat, "Hi, my name is Ada."))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert_eq!(sent[0].text, "Hello from the lite agent.");
    w.telegram_update(&r, &telegram_text_update(2, chat, "What is my name?"))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 2, T).await;
    assert_eq!(sent[1].text, "You said your name is Ada.");

    // The agent kept the session: the second model call carries the first turn.
    let calls = llm.completions();
    let second = calls.last().expect("model calls").body.to_string();
    assert!(
        second.contains("my name is Ada") && second.contains("Hello from the lite agent"),
        "{second}"
    );
    // The second turn's usage was reported by the agent (through from the model).
    let reported: i64 = clawdbot_testkit::wait_for("reported usage", T, || async {
        sqlx::query_scalar("SELECT total_tokens FROM usage_records WHERE NOT estimated")
            .fetch_optional(&w.db)
            .await
            .expect("query")
    })
    .await;
    assert!(reported >= 129, "{reported}");
    // Recorded under the model the lite agent named, not the workspace's or "openclaw".
    let models: Vec<Option<String>> =
        sqlx::query_scalar("SELECT DISTINCT model FROM usage_records")
            .fetch_all(&w.db)
            .await
            .expect("models");
    assert_eq!(models, [Some("fake-model".to_string())]);

    // The conversations, read from the agent with the token the router holds, in the shapes
    // both runtimes answer.
    let client = AgentClient::new();
    let list = client
        .sessions(&agent_url, &token, &SessionsQuery::default(), T)
        .await
        .expect("sessions");
    assert_eq!(list.sessions.len(), 1, "{list:?}");
    let session = &list.sessions[0];
    assert_eq!(
        (session.channel.as_str(), session.message_count),
        ("telegram", 4)
    );
    let only_discord = SessionsQuery {
        channel: Some("discord".into()),
        days: None,
    };
    let none = client.sessions(&agent_url, &token, &only_discord, T).await;
    assert!(none.expect("sessions").sessions.is_empty());
    let query = MessagesQuery {
        key: session.key.clone(),
        limit: Some(3),
        ..Default::default()
    };
    let page = client
        .messages(&agent_url, &token, &query, T)
        .await
        .expect("messages");
    let texts: Vec<&str> = page.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        texts,
        [
            "You said your name is Ada.",
            "What is my name?",
            "Hello from the lite agent."
        ]
    );
    let rest = MessagesQuery {
        before: page.next_before.clone(),
        ..query.clone()
    };
    let last = client
        .messages(&agent_url, &token, &rest, T)
        .await
        .expect("page 2");
    assert_eq!(last.messages.len(), 1);
    assert_eq!(last.next_before, None);
    let unknown = MessagesQuery {
        key: "telegram:dm:0".into(),
        ..Default::default()
    };
    let missing = client.messages(&agent_url, &token, &unknown, T).await;
    assert!(
        matches!(missing, Err(AgentError::Status(404))),
        "{missing:?}"
    );
    let export = client.export(&agent_url, &token, T).await.expect("export");
    assert_eq!(export.runtime, "lite");
    assert_eq!(export.sessions.len(), 1);
    assert_eq!(export.sessions[0].messages.len(), 4);
    let refused = client.export(&agent_url, "not-the-token", T).await;
    assert!(
        matches!(refused, Err(AgentError::Status(401))),
        "{refused:?}"
    );
    r.shutdown().await;
    let _ = stop.send(());
    agent.await.expect("agent task").expect("agent ran cleanly");
}
