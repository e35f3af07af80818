//! End to end with a real model: SmolLM2-135M behind llama-cpp-python's OpenAI-compatible
//! server (`clawdbot_testkit::model_server`). A 135M model's text is not reliable, so the test
//! asserts on a well-formed, non-empty answer, kept history and reported usage, not on words.

mod common;

use clawdbot_api::gateway::ChatCompletionResponse;
use clawdbot_testkit::model_server;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_answers_through_the_lite_agent() {
    let server = model_server::start_with(model_server::Options {
        n_ctx: 2048,
        ..Default::default()
    })
    .await;
    let vol = Volume::new();
    let model = json!({
        "provider": "platform",
        "baseUrl": server.base_url(),
        "model": server.model_name(),
        "contextWindow": 2048,
        "maxTokens": 48,
        "temperature": 0.0,
        "timeoutSeconds": 300,
    });
    let agent = start(vol.config(model, json!({}))).await;

    let first = agent
        .chat(
            "web:dm:e2e",
            "What is the capital of France? Answer in one word.",
        )
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(
        first.error_header(),
        None,
        "model call failed: {}\n{}",
        first.text(),
        server.log()
    );
    let parsed: ChatCompletionResponse = serde_json::from_value(first.body.clone()).unwrap();
    let text = parsed.reply_text().unwrap_or_default();
    assert!(!text.trim().is_empty(), "empty answer");
    assert_eq!(
        parsed.choices[0].message.role,
        clawdbot_api::gateway::Role::Assistant
    );
    assert!(parsed.usage.unwrap().total_tokens > 0);
    println!("SmolLM2 answered: {text:?}");

    // A second turn in the same session goes out with the first one as history.
    let second = agent.chat("web:dm:e2e", "And of Italy?").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.error_header(), None, "{}", second.text());
    assert!(!second.text().trim().is_empty());
    agent.stop().await;
}
