//! The lite agent end to end over real sockets, against the local fakes of OpenAI, Anthropic
//! and SearXNG from `clawdbot-testkit`.

mod common;

use std::time::Duration;

use clawdbot_api::gateway::{ChatCompletionChunk, ChatCompletionResponse, ErrorBody, ModelList};
use clawdbot_testkit::fake_llm::{FakeError, FakeLlm, FakeSearxng, Gate, Reply, SearchResult};
use clawdbot_testkit::wait_for;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn history_is_kept_per_session_and_sent_to_the_model() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    std::fs::create_dir_all(vol.path("skills")).unwrap();
    std::fs::write(
        vol.path("skills/weather.md"),
        "When asked about weather, answer in Celsius.",
    )
    .unwrap();
    let model = json!({"provider": "platform", "baseUrl": llm.base_url(), "model": "fake-model",
                       "temperature": 0.3, "maxTokens": 100});
    let agent = start(vol.config(model, json!({}))).await;

    let r1 = agent.chat("telegram:dm:1", "my name is Ada").await;
    assert_eq!(r1.status, 200, "{:?}", r1.body);
    let parsed: ChatCompletionResponse = serde_json::from_value(r1.body.clone()).unwrap();
    assert_eq!(parsed.reply_text(), Some("echo: my name is Ada"));
    assert!(parsed.usage.unwrap().is_reported());
    assert!(r1.headers.get("server-timing").is_some());
    let r2 = agent.chat("telegram:dm:1", "what is my name?").await;
    assert_eq!(r2.text(), "echo: what is my name?");
    let r3 = agent.chat("telegram:dm:2", "hello").await;
    assert_eq!(r3.status, 200);

    let reqs = llm.completions();
    assert_eq!(reqs.len(), 3);
    let second = roles_and_text(&reqs[1].body);
    assert_eq!(second[0].0, "system");
    assert!(
        second[0].1.contains("answer in Celsius"),
        "skills are in the system prompt"
    );
    assert_eq!(
        second[1..].to_vec(),
        vec![
            ("user".to_string(), "my name is Ada".to_string()),
            ("assistant".to_string(), "echo: my name is Ada".to_string()),
            ("user".to_string(), "what is my name?".to_string()),
        ]
    );
    // Another peer has its own session.
    let third = roles_and_text(&reqs[2].body);
    assert_eq!(third.len(), 2, "system + the new message only: {third:?}");
    assert_eq!(reqs[0].body["temperature"], json!(0.3));
    assert_eq!(reqs[0].body["max_tokens"], json!(100));
    assert_eq!(reqs[0].body["model"], json!("fake-model"));
    assert!(
        reqs[0].header("authorization").is_none(),
        "the platform endpoint gets no key"
    );
    agent.stop().await;
}

#[tokio::test]
async fn main_scope_shares_one_session_across_direct_messages() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(
        openai_model(&llm.base_url()),
        json!({"sessionScope": "main"}),
    ))
    .await;
    agent.chat("telegram:dm:1", "from telegram").await;
    agent.chat("whatsapp:dm:+331", "from whatsapp").await;
    agent.chat("discord:group:55", "from a group").await;
    let reqs = llm.completions();
    let shared = roles_and_text(&reqs[1].body);
    assert!(
        shared.iter().any(|(_, t)| t == "from telegram"),
        "{shared:?}"
    );
    let group = roles_and_text(&reqs[2].body);
    assert_eq!(group.len(), 2, "groups keep their own session: {group:?}");
    agent.stop().await;
}

#[tokio::test]
async fn streaming_replies_are_openai_sse_ending_with_done() {
    let llm = FakeLlm::openai().await;
    llm.push(Reply::text("Hello there, streaming friend").with_usage(11, 5));
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    let resp = agent
        .chat_request(
            "web:dm:s",
            json!({"model": "openclaw", "stream": true,
                                         "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = resp.text().await.unwrap();
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<ChatCompletionChunk> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c.choices[0].delta.content.clone())
        .collect();
    assert_eq!(text, "Hello there, streaming friend");
    let last = chunks.last().unwrap();
    assert_eq!(last.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(last.usage.unwrap().total_tokens, 16);
    assert!(
        chunks
            .iter()
            .all(|c| c.id == chunks[0].id && c.object == "chat.completion.chunk")
    );
    agent.stop().await;
}

#[tokio::test]
async fn requests_without_the_right_token_are_refused() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    let body = json!({"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]});
    let url = format!("{}/v1/chat/completions", agent.url);
    let none = agent
        .http
        .post(&url)
        .header("x-openclaw-session-key", "a:b:c")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let wrong = agent
        .http
        .post(&url)
        .bearer_auth("gw-token-0123456788")
        .header("x-openclaw-session-key", "a:b:c")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let err: ErrorBody = wrong.json().await.unwrap();
    assert_eq!(err.error.type_, "authentication_error");
    let models = agent
        .http
        .get(format!("{}/v1/models", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401);
    assert_eq!(
        llm.completions().len(),
        0,
        "refused requests never reach the model"
    );
    // Health needs no token.
    assert_eq!(
        agent
            .http
            .get(format!("{}/healthz", agent.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        agent
            .http
            .get(format!("{}/readyz", agent.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let list: ModelList = agent
        .http
        .get(format!("{}/v1/models", agent.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = list.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, vec!["openclaw", "fake-model"]);
    agent.stop().await;
}

#[tokio::test]
async fn a_rotated_token_is_picked_up_without_a_restart() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    assert_eq!(agent.chat("a:dm:b", "old token").await.status, 200);
    std::fs::write(vol.root.path().join("token"), "gw-token-rotated\n").unwrap();
    let body = json!({"model": "openclaw", "messages": [{"role": "user", "content": "new token"}]});
    let url = format!("{}/v1/chat/completions", agent.url);
    let new = agent
        .http
        .post(&url)
        .bearer_auth("gw-token-rotated")
        .header("x-openclaw-session-key", "a:dm:b")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);
    assert_eq!(agent.chat("a:dm:b", "old token again").await.status, 401);
    agent.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_4xx_with_openai_error_bodies() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    let url = format!("{}/v1/chat/completions", agent.url);
    let raw = agent
        .http
        .post(&url)
        .bearer_auth(TOKEN)
        .header("x-openclaw-session-key", "a:dm:c")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let err: ErrorBody = raw.json().await.unwrap();
    assert_eq!(err.error.type_, "invalid_request_error");

    let ok_body = json!({"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]});
    let no_key = Running::send(agent.http.post(&url).bearer_auth(TOKEN).json(&ok_body)).await;
    assert_eq!(no_key.status, 400);
    assert!(
        no_key.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-openclaw-session-key")
    );
    let bad_key = Running::send(agent.chat_request("only-two:parts", ok_body.clone())).await;
    assert_eq!(bad_key.status, 400);
    let no_user = Running::send(agent.chat_request(
        "a:dm:c",
        json!({"model": "openclaw",
        "messages": [{"role": "system", "content": "x"}]}),
    ))
    .await;
    assert_eq!(no_user.status, 400);
    let wrong_type =
        Running::send(agent.chat_request("a:dm:c", json!({"model": "openclaw", "messages": "hi"})))
            .await;
    assert_eq!(wrong_type.status, 400);
    let huge = Running::send(agent.chat_request(
        "a:dm:c",
        json!({"model": "openclaw",
        "messages": [{"role": "user", "content": "x".repeat(70_000)}]}),
    ))
    .await;
    assert_eq!(huge.status, 413);
    assert_eq!(llm.completions().len(), 0);
    // A new, unknown session key simply starts a session.
    assert_eq!(agent.chat("brand:new:peer", "hi").await.status, 200);
    agent.stop().await;
}

#[tokio::test]
async fn openai_tool_loop_writes_and_searches_memory() {
    let llm = FakeLlm::openai().await;
    llm.push(Reply::tool_call(
        "memory_write",
        json!({"text": "User's cat is called Miso", "long_term": true}),
    ));
    llm.push(Reply::text("Noted!"));
    llm.push(Reply::tool_call(
        "memory_search",
        json!({"query": "cat name"}),
    ));
    llm.push(Reply::text("Your cat is Miso."));
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;

    assert_eq!(
        agent
            .chat("telegram:dm:7", "remember my cat is Miso")
            .await
            .text(),
        "Noted!"
    );
    assert!(read(&vol.path("MEMORY.md")).contains("User's cat is called Miso"));
    let r = agent.chat("telegram:dm:7", "what's my cat's name?").await;
    assert_eq!(r.text(), "Your cat is Miso.");

    let reqs = llm.completions();
    assert_eq!(reqs.len(), 4);
    // The tool result answers the call, with the call's id (the fake refuses otherwise).
    let msgs = reqs[1].body["messages"].as_array().unwrap();
    let call_id = msgs[msgs.len() - 2]["tool_calls"][0]["id"]
        .as_str()
        .unwrap();
    assert_eq!(msgs.last().unwrap()["role"], "tool");
    assert_eq!(msgs.last().unwrap()["tool_call_id"], call_id);
    assert!(
        msgs.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("MEMORY.md")
    );
    // The tools are offered in OpenAI's format.
    let tools: Vec<&str> = reqs[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        vec!["memory_search", "memory_write"],
        "no web search when it is off"
    );
    // The search found the entry, and MEMORY.md is in the system prompt of later turns.
    let last = reqs[3].body["messages"].as_array().unwrap();
    assert!(
        last.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("Miso")
    );
    assert!(
        last[0]["content"]
            .as_str()
            .unwrap()
            .contains("User's cat is called Miso")
    );
    agent.stop().await;
}

#[tokio::test]
async fn anthropic_tool_loop_uses_tool_use_and_tool_result_blocks() {
    let llm = FakeLlm::anthropic().await;
    llm.require_api_key("sk-ant-test-key");
    llm.push(
        Reply::tool_calls(vec![
            (
                "memory_write".into(),
                json!({"text": "Meeting with Bo on Friday"}),
            ),
            ("memory_search".into(), json!({"query": "Bo Friday"})),
        ])
        .with_text("Let me note that."),
    );
    llm.push(Reply::text("Saved: meeting with Bo on Friday.").with_usage(40, 9));
    let vol = Volume::new();
    let model = json!({"provider": "anthropic", "baseUrl": llm.base_url(), "model": "claude-test",
                       "apiKeyFile": vol.key_file("sk-ant-test-key")});
    let agent = start(vol.config(model, json!({}))).await;

    let r = agent
        .chat("telegram:dm:9", "remember my meeting with Bo on Friday")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "Saved: meeting with Bo on Friday.",
        "{:?}",
        r.body
    );
    let reqs = llm.completions();
    assert_eq!(reqs.len(), 2);
    let first = &reqs[0];
    assert_eq!(first.header("x-api-key"), Some("sk-ant-test-key"));
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert!(first.body["system"].as_str().unwrap().contains("Clawdbot"));
    assert_eq!(first.body["max_tokens"], json!(1024));
    assert!(first.body["tools"][0]["input_schema"].is_object());
    let msgs = reqs[1].body["messages"].as_array().unwrap();
    let assistant = &msgs[msgs.len() - 2];
    assert_eq!(assistant["content"][0]["type"], "text");
    assert_eq!(assistant["content"][1]["type"], "tool_use");
    let results = msgs.last().unwrap()["content"].as_array().unwrap();
    assert_eq!(results.len(), 2, "both results in one user message");
    assert_eq!(results[0]["tool_use_id"], assistant["content"][1]["id"]);
    assert!(
        results[1]["content"]
            .as_str()
            .unwrap()
            .contains("Meeting with Bo"),
        "search found the write"
    );
    assert!(read(&daily_note(&vol)).contains("Meeting with Bo on Friday"));
    // Usage is the sum of both model calls.
    let usage = &r.body["usage"];
    assert_eq!(
        usage["prompt_tokens"].as_u64().unwrap(),
        reqs[0].body.to_string().len() as u64 / 4 + 1 + 40
    );
    agent.stop().await;
}

#[tokio::test]
async fn web_search_goes_to_searxng_and_is_counted_per_day() {
    let llm = FakeLlm::openai().await;
    let searx = FakeSearxng::start().await;
    searx.set_results(
        "rust",
        vec![SearchResult::new(
            "Rust 2.0 released",
            "https://blog.example/rust",
            "Big news.",
        )],
    );
    llm.push(Reply::tool_call(
        "web_search",
        json!({"query": "rust release"}),
    ));
    llm.push(Reply::tool_call(
        "web_search",
        json!({"query": "rust again"}),
    ));
    llm.push(Reply::text("Rust 2.0 is out."));
    let vol = Volume::new();
    let cfg = vol.config(
        openai_model(&llm.base_url()),
        json!({"webSearch": {"baseUrl": searx.base_url(), "maxPerDay": 1}}),
    );
    let agent = start(cfg).await;
    let r = agent.chat("telegram:dm:3", "any rust news?").await;
    assert_eq!(r.text(), "Rust 2.0 is out.");
    assert_eq!(
        searx.queries(),
        vec!["rust release"],
        "the second search was over the limit"
    );
    // The reply reports the one search made (the refused one is not a search).
    assert_eq!(r.body["usage"]["web_searches"], 1, "{}", r.body);
    let reqs = llm.completions();
    let tools: Vec<&str> = reqs[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"web_search"));
    let second = reqs[1].body["messages"].as_array().unwrap();
    let result = second.last().unwrap()["content"].as_str().unwrap();
    assert!(
        result.contains("Rust 2.0 released") && result.contains("https://blog.example/rust"),
        "{result}"
    );
    let third = reqs[2].body["messages"].as_array().unwrap();
    assert!(
        third.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("daily web search limit")
    );
    // The count survives a restart (it is per day, not per process).
    agent.stop().await;
    llm.push(Reply::tool_call(
        "web_search",
        json!({"query": "rust third"}),
    ));
    llm.push(Reply::text("no more searches today"));
    let agent = start(vol.config(
        openai_model(&llm.base_url()),
        json!({"webSearch": {"baseUrl": searx.base_url(), "maxPerDay": 1}}),
    ))
    .await;
    let r = agent.chat("telegram:dm:3", "search again").await;
    assert_eq!(searx.queries().len(), 1);
    assert!(
        r.body["usage"].get("web_searches").is_none(),
        "no search, no field: {}",
        r.body
    );
    agent.stop().await;
}

#[tokio::test]
async fn the_tool_loop_is_bounded() {
    let llm = FakeLlm::openai().await;
    for _ in 0..10 {
        llm.push(Reply::tool_call("memory_search", json!({"query": "loop"})));
    }
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({"maxToolRounds": 2}))).await;
    let r = agent.chat("web:dm:loop", "go").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("limit of 2 tool rounds"), "{}", r.text());
    let reqs = llm.completions();
    assert_eq!(reqs.len(), 3, "two tool rounds, then one final call");
    assert_eq!(reqs[2].body["tool_choice"], json!("none"));
    assert!(reqs[1].body.get("tool_choice").is_none());
    agent.stop().await;
}

#[tokio::test]
async fn provider_errors_become_readable_replies_without_the_key() {
    let llm = FakeLlm::openai().await;
    llm.require_api_key("sk-right");
    let vol = Volume::new();
    let model = json!({"provider": "openai", "baseUrl": llm.base_url(), "model": "fake-model",
                       "apiKeyFile": vol.key_file("sk-wrong-secret-key")});
    let agent = start(vol.config(model, json!({}))).await;
    let r = agent.chat("telegram:dm:1", "hi").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.error_header(), Some("invalid_api_key"));
    assert!(
        r.text().contains("OpenAI refused the API key"),
        "{}",
        r.text()
    );
    assert!(
        !r.body.to_string().contains("sk-wrong"),
        "the key never reaches a reply"
    );
    assert_eq!(llm.completions().len(), 1, "a bad key is not retried");
    assert_eq!(
        llm.completions()[0].header("authorization"),
        Some("Bearer sk-wrong-secret-key")
    );
    agent.stop().await;

    // A rotated key file is picked up without a restart; quota and model errors.
    std::fs::write(vol.root.path().join("api-key"), "sk-right").unwrap();
    let model = json!({"provider": "openai", "baseUrl": llm.base_url(), "model": "fake-model",
                       "apiKeyFile": vol.root.path().join("api-key")});
    let agent = start(vol.config(model, json!({}))).await;
    llm.push(Reply::error(FakeError::InsufficientQuota));
    let q = agent.chat("telegram:dm:1", "hi").await;
    assert_eq!(q.error_header(), Some("insufficient_quota"));
    assert!(q.text().contains("no quota or credit left"));
    assert_eq!(llm.completions().len(), 2, "quota is not retried");

    llm.push(Reply::error(FakeError::RateLimited {
        retry_after_secs: 0,
    }));
    llm.push(Reply::error(FakeError::ServerError));
    llm.push(Reply::text("third time lucky"));
    let ok = agent.chat("telegram:dm:1", "hi again").await;
    assert_eq!(ok.text(), "third time lucky");
    assert_eq!(ok.error_header(), None);
    assert_eq!(llm.completions().len(), 5, "429 and 500 were retried");

    llm.serve_models(&["other-model"]);
    let nf = agent.chat("telegram:dm:1", "hi").await;
    assert_eq!(nf.error_header(), Some("model_not_found"));
    assert!(nf.text().contains("does not serve the configured model"));

    // Failed turns are not stored: the next request's history has only the good turn.
    llm.serve_models(&[]);
    agent.chat("telegram:dm:1", "last").await;
    let last = roles_and_text(&llm.completions().last().unwrap().body);
    let users: Vec<_> = last
        .iter()
        .filter(|(r, _)| r == "user")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(users, vec!["hi again", "last"]);

    // Every turn of this agent is counted by its outcome, without sessions or content.
    let metrics = agent
        .http
        .get(format!("{}/metrics", agent.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"lite_agent_turns_total{outcome="insufficient_quota"} 1"#,
        r#"lite_agent_turns_total{outcome="model_not_found"} 1"#,
        r#"lite_agent_turns_total{outcome="ok"} 2"#,
        "lite_agent_turn_overhead_seconds_count 4",
        "lite_agent_turns_in_flight 0",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    assert!(!metrics.contains("telegram"), "{metrics}");
    agent.stop().await;
}

#[tokio::test]
async fn anthropic_overload_is_retried_then_reported() {
    let llm = FakeLlm::anthropic().await;
    for _ in 0..3 {
        llm.push(Reply::error(FakeError::Overloaded));
    }
    let vol = Volume::new();
    let model = json!({"provider": "anthropic", "baseUrl": llm.base_url(), "model": "claude-test",
                       "apiKeyFile": vol.key_file("sk-ant")});
    let agent = start(vol.config(model, json!({}))).await;
    let r = agent.chat("telegram:dm:1", "hi").await;
    assert_eq!(r.error_header(), Some("provider_unavailable"));
    assert!(
        r.text().contains("Anthropic is unavailable"),
        "{}",
        r.text()
    );
    assert_eq!(llm.completions().len(), 3, "bounded: three attempts");
    agent.stop().await;
}

#[tokio::test]
async fn a_missing_key_file_is_a_readable_reply() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let model = json!({"provider": "openai", "baseUrl": llm.base_url(), "model": "m",
                       "apiKeyFile": vol.root.path().join("no-such-file")});
    let agent = start(vol.config(model, json!({}))).await;
    let r = agent.chat("telegram:dm:1", "hi").await;
    assert_eq!(r.error_header(), Some("missing_api_key"));
    assert!(r.text().contains("No API key is configured for OpenAI"));
    assert_eq!(llm.completions().len(), 0);
    agent.stop().await;
}

#[tokio::test]
async fn restart_keeps_history_and_memory() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    agent.chat("telegram:dm:1", "first message").await;
    llm.push(Reply::tool_call(
        "memory_write",
        json!({"text": "Prefers tea over coffee", "long_term": true}),
    ));
    llm.push(Reply::tool_call(
        "memory_write",
        json!({"text": "Booked dentist for Tuesday"}),
    ));
    llm.push(Reply::text("ok"));
    agent
        .chat("telegram:dm:1", "I prefer tea; dentist Tuesday")
        .await;
    agent.stop().await;

    llm.push(Reply::tool_call(
        "memory_search",
        json!({"query": "dentist"}),
    ));
    llm.push(Reply::text("Tuesday"));
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    assert_eq!(
        agent
            .chat("telegram:dm:1", "when is the dentist?")
            .await
            .text(),
        "Tuesday"
    );
    let reqs = llm.completions();
    let after = &reqs[reqs.len() - 2].body;
    let msgs = roles_and_text(after);
    assert!(
        msgs[0].1.contains("Prefers tea over coffee"),
        "MEMORY.md survives: {}",
        msgs[0].1
    );
    let users: Vec<_> = msgs
        .iter()
        .filter(|(r, _)| r == "user")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(
        users,
        vec![
            "first message",
            "I prefer tea; dentist Tuesday",
            "when is the dentist?"
        ]
    );
    // The search index is rebuilt from the daily note.
    let found = roles_and_text(&reqs[reqs.len() - 1].body);
    assert!(
        found
            .last()
            .unwrap()
            .1
            .contains("Booked dentist for Tuesday"),
        "{found:?}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn trimmed_history_is_flushed_to_memory_first() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    // A tiny window: the system prompt and tools take most of it, a few messages fit.
    let model = json!({"provider": "platform", "baseUrl": llm.base_url(), "model": "m",
                       "contextWindow": 1100, "maxTokens": 50});
    let agent = start(vol.config(model, json!({}))).await;
    let filler = "lorem ipsum dolor sit amet ".repeat(30);
    agent
        .chat(
            "telegram:dm:1",
            &format!("the secret word is zebra. {filler}"),
        )
        .await;
    for i in 0..6 {
        agent
            .chat("telegram:dm:1", &format!("message {i} {filler}"))
            .await;
    }
    let last = roles_and_text(&llm.completions().last().unwrap().body);
    assert!(
        !last.iter().any(|(_, t)| t.contains("zebra")),
        "the oldest turn left the prompt"
    );
    assert!(last.len() >= 3, "recent turns are still there: {last:?}");
    let total: usize = last.iter().map(|(_, t)| t.len()).sum();
    assert!(total / 4 < 1100, "the prompt fits the window");
    let note = read(&daily_note(&vol));
    assert!(
        note.contains("the secret word is zebra"),
        "flushed to today's note before trimming"
    );
    assert_eq!(
        note.matches("- user: the secret word is zebra").count(),
        1,
        "flushed once: {note}"
    );
    // And memory search finds it.
    llm.push(Reply::tool_call(
        "memory_search",
        json!({"query": "secret word"}),
    ));
    llm.push(Reply::text("zebra"));
    agent
        .chat("telegram:dm:1", "what was the secret word?")
        .await;
    let found = roles_and_text(&llm.completions().last().unwrap().body);
    assert!(found.last().unwrap().1.contains("zebra"));
    agent.stop().await;
}

#[tokio::test]
async fn a_corrupt_session_file_costs_only_that_session() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    agent.chat("telegram:dm:a", "A's first").await;
    agent.chat("telegram:dm:b", "B's first").await;
    agent.stop().await;

    let a_file =
        clawdbot_lite_agent::store::SessionStore::session_path(&vol.data(), "telegram:dm:a");
    assert!(a_file.exists());
    std::fs::write(
        &a_file,
        b"this is not a sqlite database, it is garbage garbage garbage",
    )
    .unwrap();
    let _ = std::fs::remove_file(a_file.with_extension("sqlite-wal"));

    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    let b = agent.chat("telegram:dm:b", "B's second").await;
    assert_eq!(b.text(), "echo: B's second");
    let a = agent.chat("telegram:dm:a", "A's second").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.error_header(), Some("corrupt_session"));
    assert!(a.text().contains("could not be read"), "{}", a.text());
    let moved: Vec<_> = std::fs::read_dir(vol.path("sessions"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "the damaged file is kept aside for inspection"
    );
    // B kept its history; A starts afresh.
    let b_hist = roles_and_text(&llm.completions().last().unwrap().body);
    assert!(b_hist.iter().any(|(_, t)| t == "B's first"));
    let again = agent.chat("telegram:dm:a", "A's third").await;
    assert_eq!(again.text(), "echo: A's third");
    assert_eq!(
        roles_and_text(&llm.completions().last().unwrap().body).len(),
        2
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_corrupt_memory_index_is_rebuilt_from_the_files() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    std::fs::create_dir_all(vol.path("memory")).unwrap();
    std::fs::write(
        vol.path("memory/2026-01-01.md"),
        "Old note about penguins\n\n",
    )
    .unwrap();
    std::fs::write(vol.path("state.sqlite"), vec![0x42u8; 8192]).unwrap();
    llm.push(Reply::tool_call(
        "memory_search",
        json!({"query": "penguins"}),
    ));
    llm.push(Reply::text("penguins"));
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    agent.chat("telegram:dm:1", "what about penguins?").await;
    let found = roles_and_text(&llm.completions().last().unwrap().body);
    assert!(
        found.last().unwrap().1.contains("Old note about penguins"),
        "{found:?}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn the_storage_limit_is_enforced_with_a_clear_message() {
    let llm = FakeLlm::openai().await;
    let vol = Volume::new();
    std::fs::write(vol.path("MEMORY.md"), "x".repeat(5_000)).unwrap();
    let agent = start(vol.config(
        openai_model(&llm.base_url()),
        json!({"storageLimitBytes": 4_000}),
    ))
    .await;
    let r = agent.chat("telegram:dm:1", "hello").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.error_header(), Some("storage_quota_exceeded"));
    assert!(r.text().contains("storage is full"), "{}", r.text());
    assert!(r.text().contains("4.0 KB"), "{}", r.text());
    assert_eq!(llm.completions().len(), 0);
    agent.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_replies_under_way() {
    let llm = FakeLlm::openai().await;
    let gate = Gate::new();
    llm.push(Reply::text("finished after shutdown").held(&gate));
    let vol = Volume::new();
    let mut agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    let pending = tokio::spawn(Running::send(agent.chat_request(
        "telegram:dm:1",
        json!({"model": "openclaw", "messages": [{"role": "user", "content": "slow one"}]}),
    )));
    wait_for("the model to receive the request", WAIT, || async {
        (llm.completions().len() == 1).then_some(())
    })
    .await;
    agent.trigger_stop();
    gate.open();
    let reply = pending.await.unwrap();
    assert_eq!(reply.text(), "finished after shutdown");
    agent.join().await.unwrap();
    // The turn was stored before the agent stopped.
    let agent = start(vol.config(openai_model(&llm.base_url()), json!({}))).await;
    agent.chat("telegram:dm:1", "after restart").await;
    let hist = roles_and_text(&llm.completions().last().unwrap().body);
    assert!(
        hist.iter().any(|(_, t)| t == "finished after shutdown"),
        "{hist:?}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn launch_fails_clearly_without_a_token() {
    let vol = Volume::new();
    let mut cfg = vol.config(openai_model("http://127.0.0.1:9/v1"), json!({}));
    cfg.token_file = vol.root.path().join("missing-token").display().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = clawdbot_lite_agent::launch(cfg, listener, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing-token"), "{err}");
}

#[tokio::test]
async fn fake_openai_streams_tool_calls_in_the_wire_format() {
    // The testkit's fake is used by other suites in streaming mode: check its stream.
    let llm = FakeLlm::openai().await;
    llm.push(Reply::tool_call("web_search", json!({"query": "x"})));
    let body = reqwest::Client::new()
        .post(format!("{}/chat/completions", llm.base_url()))
        .json(
            &json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let args: String = data
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"query": "x"})
    );
    assert!(
        data.iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
    assert!(
        data.last().unwrap()["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(body.trim_end().ends_with("data: [DONE]"));
}
