//! The user's conversations through the API (`/sessions`, `/sessions/{id}/messages`, and the
//! export), read from the real lite agent of an account made by sign-up; a sleeping agent is
//! said to be asleep (and woken) instead of making the request hang. A web search the agent
//! made shows in `/usage`.

mod support;

use std::time::Duration;

use clawdbot_api::{UserWorkspace, annotations};
use clawdbot_testkit::fake_chat::telegram_text_update;
use clawdbot_testkit::fake_llm::{FakeLlm, FakeSearxng, Reply, SearchResult};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::World;
use support::api::{ApiClient, JWT_SECRET, MASTER_K1, wait_usable};
use support::lite::LiteAgent;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_export_come_from_the_users_agent() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let llm = FakeLlm::openai().await;
    let searx = FakeSearxng::start().await;
    searx.set_results(
        "ada",
        vec![SearchResult::new(
            "Ada Lovelace",
            "https://example.org/ada",
            "Mathematician.",
        )],
    );
    // The first turn searches the web once before it answers.
    llm.push(Reply::tool_call(
        "web_search",
        json!({"query": "who is ada"}),
    ));
    llm.push(Reply::text("Hello from the lite agent."));
    llm.push(Reply::text("You said your name is Ada."));
    let agent = LiteAgent::start(&llm, Some(&searx)).await;

    let password = "conversations password 1";
    let openai = "sk-proj-EXPORTTESTcccccccccccccccccc7777";
    let mut a = ApiClient::new(&r);
    a.register(
        &format!("conv-{:08x}@example.com", rand::random::<u32>()),
        password,
    )
    .await;
    let user = a.user();
    let ws = clawdbot_accounts::provision::workspace_name(user);

    // No agent yet (the operator has not reported it ready): said so, not a hang.
    let (s, body) = a.get("/sessions").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("starting"),
        "{body}"
    );
    // Bad filters name their field before anything is read.
    let (s, body) = a.get("/sessions?days=0").await;
    assert_eq!(
        (s, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("days"))
    );
    let (s, body) = a.get("/sessions?channel=fax").await;
    assert_eq!(
        (s, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("channel"))
    );

    // The operator's part: the token Secret and a ready status with the agent's URL.
    w.set_token(&ws, &agent.token).await;
    w.mark_ready(&ws, &agent.url).await;
    wait_usable(&r, user).await;
    sqlx::query("UPDATE users SET plan = 'pro' WHERE id = $1")
        .bind(user)
        .execute(&w.db)
        .await
        .expect("pro plan");
    let (s, _) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "openai", "key": openai})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // Two turns over Telegram.
    let chat = 6_200_000 + i64::from(rand::random::<u16>());
    w.connect("telegram", &chat.to_string(), user).await;
    w.telegram_update(&r, &telegram_text_update(1, chat, "Hi, my name is Ada."))
        .await;
    w.telegram.wait_for_messages(chat, 1, T).await;
    w.telegram_update(&r, &telegram_text_update(2, chat, "What is my name?"))
        .await;
    w.telegram.wait_for_messages(chat, 2, T).await;
    assert_eq!(searx.queries(), ["who is ada"]);

    // Usage: both messages (recorded through the group commit, so waited for) and the one
    // search the agent reported with its first reply.
    let client = a.clone();
    let usage = clawdbot_testkit::wait_for("both usage records", T, || {
        let client = client.clone();
        async move {
            let (s, body) = client.get("/usage?days=1").await;
            assert_eq!(s, StatusCode::OK, "{body}");
            (body["total_messages"] == 2).then_some(body)
        }
    })
    .await;
    let today = &usage["per_day"][0];
    assert_eq!(
        (&today["messages"], &today["web_searches"]),
        (&json!(2), &json!(1)),
        "{usage}"
    );
    assert_eq!(usage["total_web_searches"], 1, "{usage}");

    let (s, list) = a.get("/sessions").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{list}");
    assert_eq!(sessions[0]["channel"], "telegram");
    assert_eq!(sessions[0]["message_count"], 4);
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    let (s, none) = a.get("/sessions?channel=discord&days=7").await;
    assert_eq!(s, StatusCode::OK);
    assert!(none["sessions"].as_array().unwrap().is_empty(), "{none}");

    // Paged, newest first.
    let (s, page) = a.get(&format!("/sessions/{id}/messages?limit=3")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "You said your name is Ada.",
            "What is my name?",
            "Hello from the lite agent."
        ]
    );
    assert_eq!(page["messages"][0]["role"], "assistant");
    let before = page["next_before"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (s, rest) = a
        .get(&format!("/sessions/{id}/messages?limit=3&before={before}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rest["messages"].as_array().unwrap().len(), 1);
    assert!(rest["next_before"].is_null());
    let (s, _) = a.get("/sessions/telegram:dm:1/messages").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = a.get(&format!("/sessions/{id}/messages?limit=0")).await;
    assert_eq!(
        (s, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );

    // The export carries the conversations, and no secret.
    let resp = a
        .http
        .get(format!("{}/api/v1/users/me/export", r.base))
        .bearer_auth(a.access.as_deref().unwrap())
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("export body");
    let export: serde_json::Value = serde_json::from_str(&text).expect("json");
    let conv = &export["conversations"];
    assert_eq!(conv["included"], true, "{conv}");
    assert_eq!(conv["runtime"], "lite");
    assert_eq!(conv["sessions"][0]["messages"].as_array().unwrap().len(), 4);
    assert!(text.contains("Hi, my name is Ada."));
    let master = MASTER_K1.split_once(':').unwrap().1;
    for (what, secret) in [
        ("password", password),
        ("provider key", openai),
        ("access token", a.access.as_deref().unwrap()),
        ("refresh token", a.refresh.as_deref().unwrap()),
        ("agent gateway token", agent.token.as_str()),
        ("jwt secret", JWT_SECRET),
        ("master key", master),
    ] {
        assert!(!text.contains(secret), "the {what} is in the export");
    }
    assert!(
        !text.contains("EXPORTTEST"),
        "part of the provider key is in the export"
    );

    // Asleep: said so at once with Retry-After, and the wake is asked for. The last activity
    // is set well before the hibernation, so the wake's note is a new value.
    kube::Api::<clawdbot_api::UserWorkspace>::namespaced(w.kube.clone(), &w.namespace)
        .patch(
            &ws,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                annotations::LAST_ACTIVITY: "2026-01-01T00:00:00Z"}}})),
        )
        .await
        .expect("old activity");
    w.mark_hibernated(&ws).await;
    let dir = r.core.directory.clone();
    clawdbot_testkit::wait_for("the router sees the tenant asleep", T, || {
        let dir = dir.clone();
        async move {
            dir.tenant_of(&user.to_string())
                .filter(|t| t.hibernated && !t.usable())
        }
    })
    .await;
    let before_wake = w.workspace(&ws).await;
    let resp = a
        .http
        .get(format!("{}/api/v1/sessions", r.base))
        .bearer_auth(a.access.as_deref().unwrap())
        .send()
        .await
        .expect("sessions");
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(resp.headers().contains_key(reqwest::header::RETRY_AFTER));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body["error"].as_str().unwrap().contains("asleep"), "{body}");
    let noted = |ws: &clawdbot_api::UserWorkspace| {
        ws.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(annotations::LAST_ACTIVITY).cloned())
    };
    let kube_ws = w.kube.clone();
    let ns = w.namespace.clone();
    let name = ws.clone();
    let old = noted(&before_wake);
    // The router asks for a wake at most every few seconds per tenant (the chat turns above
    // noted activity just now), so the client asks again, as Retry-After tells it to.
    clawdbot_testkit::wait_for("the wake annotation", T, || {
        let api = kube::Api::<clawdbot_api::UserWorkspace>::namespaced(kube_ws.clone(), &ns);
        let name = name.clone();
        let old = old.clone();
        let client = a.clone();
        async move {
            assert_eq!(client.get("/sessions").await.0, StatusCode::CONFLICT);
            let ws = api.get(&name).await.ok()?;
            let note = noted(&ws)?;
            (Some(&note) != old.as_ref()).then_some(note)
        }
    })
    .await;
    let (s, export) = a.get("/users/me/export").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(export["conversations"]["included"], false, "{export}");
    assert!(
        export["conversations"]["reason"]
            .as_str()
            .unwrap()
            .contains("asleep")
    );
    r.shutdown().await;
    agent.stop().await;
}

/// A read right after sign-up, before this replica's watch has brought the new workspace, is
/// told the assistant is starting, not that it does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_before_the_replica_has_seen_the_workspace_is_told_it_is_starting() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let mut a = ApiClient::new(&r);
    a.register(
        &format!("unseen-{:08x}@example.com", rand::random::<u32>()),
        "unseen workspace password",
    )
    .await;
    let user = a.user();
    let name = clawdbot_accounts::provision::workspace_name(user);
    let known = |want: bool| {
        let dir = r.core.directory.clone();
        clawdbot_testkit::wait_for("the replica to see the change", T, move || {
            let seen = dir.tenant_of_user(user).is_some();
            std::future::ready((seen == want).then_some(()))
        })
    };

    // The window between sign-up and the watch, made wide: the workspace is taken away until
    // the replica has forgotten it, and put back while a read waits.
    let workspaces = Api::<UserWorkspace>::namespaced(w.kube.clone(), &w.namespace);
    known(true).await;
    let mut ws = workspaces.get(&name).await.expect("workspace");
    workspaces
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete workspace");
    known(false).await;
    ws.metadata.resource_version = None;
    ws.metadata.uid = None;
    ws.metadata.creation_timestamp = None;
    ws.metadata.managed_fields = None;
    ws.metadata.generation = None;
    ws.status = None;
    let ((s, body), _) = tokio::join!(a.get("/sessions"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        workspaces
            .create(&PostParams::default(), &ws)
            .await
            .expect("create workspace again")
    });
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("starting"),
        "{body}"
    );
    r.shutdown().await;
}
