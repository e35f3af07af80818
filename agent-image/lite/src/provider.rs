//! Model providers: any OpenAI-compatible server (the platform's vLLM or Ollama, OpenAI itself)
//! and Anthropic's Messages API. One provider-neutral conversation goes in, one completion
//! (text and/or tool calls) comes out. Timeouts, bounded retries with backoff on 429 and 5xx,
//! and errors that say what went wrong without carrying the key.

use std::time::Duration;

use clawdbot_api::gateway::Usage;
use clawdbot_api::lite::LiteModelConfig;
use clawdbot_api::workspace::ModelProvider;
use serde_json::{Value, json};

use crate::Error;
use crate::error::ProviderFailure;
use crate::secret::Secret;

/// Anthropic API version header value.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Attempts of one model call (the first plus retries) on 429, 5xx and connection failures.
const MAX_ATTEMPTS: u32 = 3;
/// First backoff; doubled each retry, with jitter.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// Longest `retry-after` we honour; past that the user is better told to come back later.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(8);
/// Anthropic requires `max_tokens`; used when the config names none.
const DEFAULT_ANTHROPIC_MAX_TOKENS: u32 = 1024;

/// A message of the conversation sent to the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    User(String),
    Assistant {
        text: Option<String>,
        calls: Vec<ToolCall>,
    },
    ToolResult {
        call_id: String,
        content: String,
    },
}

/// A tool call the model asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Arguments as the model sent them (an object when they parsed).
    pub arguments: Value,
}

/// A tool the model may call.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// What the model answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    pub text: Option<String>,
    pub calls: Vec<ToolCall>,
    pub usage: Usage,
    pub finish_reason: String,
}

/// One call: system prompt, conversation, tools.
pub struct Request<'a> {
    pub system: &'a str,
    pub messages: &'a [Msg],
    pub tools: &'a [ToolSpec],
    /// Forbid further tool calls (the tool loop is at its bound).
    pub no_more_tools: bool,
}

pub struct Provider {
    kind: ModelProvider,
    http: reqwest::Client,
    config: LiteModelConfig,
}

impl Provider {
    pub fn new(config: &LiteModelConfig) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(config.timeout_seconds.max(1)))
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Provider {
            kind: config.provider,
            http,
            config: config.clone(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.kind.as_str()
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The key, read from the mounted Secret on every call so that a rotated key is used
    /// without a restart (the kubelet updates the file in place).
    fn key(&self) -> Result<Option<Secret>, Error> {
        match (&self.config.api_key_file, self.kind) {
            (Some(path), _) => Secret::read_file(path)
                .map(Some)
                .map_err(|e| Error::MissingKey {
                    provider: self.name(),
                    detail: e.to_string(),
                }),
            (None, ModelProvider::Platform) => Ok(None),
            (None, _) => Err(Error::MissingKey {
                provider: self.name(),
                detail: "the config names no apiKeyFile".into(),
            }),
        }
    }

    /// One completion, with bounded retries.
    pub async fn complete(&self, req: &Request<'_>) -> Result<Completion, Error> {
        let key = self.key()?;
        let (url, body) = match self.kind {
            ModelProvider::Anthropic => (
                format!("{}/messages", self.base()),
                self.anthropic_body(req),
            ),
            _ => (
                format!("{}/chat/completions", self.base()),
                self.openai_body(req),
            ),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(&url, &body, key.as_ref()).await {
                Ok(c) => return Ok(c),
                Err(Attempt::Retry {
                    failure,
                    detail,
                    after,
                }) if attempt < MAX_ATTEMPTS => {
                    let wait = after.unwrap_or_else(|| backoff(attempt));
                    tracing::warn!(provider = self.name(), attempt, ?failure, %detail, ?wait, "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(
                    Attempt::Retry {
                        failure, detail, ..
                    }
                    | Attempt::Fail { failure, detail },
                ) => {
                    return Err(Error::Provider {
                        provider: self.name(),
                        kind: failure,
                        detail,
                    });
                }
            }
        }
    }

    fn base(&self) -> &str {
        self.config.base_url.trim_end_matches('/')
    }

    async fn attempt(
        &self,
        url: &str,
        body: &Value,
        key: Option<&Secret>,
    ) -> Result<Completion, Attempt> {
        let mut rb = self.http.post(url).json(body);
        match (self.kind, key) {
            (ModelProvider::Anthropic, Some(k)) => {
                rb = rb
                    .header("x-api-key", k.expose())
                    .header("anthropic-version", ANTHROPIC_VERSION);
            }
            (ModelProvider::Anthropic, None) => {
                rb = rb.header("anthropic-version", ANTHROPIC_VERSION);
            }
            (_, Some(k)) => rb = rb.bearer_auth(k.expose()),
            (_, None) => {}
        }
        let redact = |s: String| key.map(|k| k.redact(&s)).unwrap_or(s);
        // A timeout is final (the turn's time is spent); any other transport error is retried.
        let transport = |e: reqwest::Error| {
            let detail = redact(e.to_string());
            if e.is_timeout() {
                Attempt::Fail {
                    failure: ProviderFailure::Timeout,
                    detail,
                }
            } else {
                Attempt::Retry {
                    failure: ProviderFailure::Unavailable,
                    detail,
                    after: None,
                }
            }
        };
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers());
        let text = resp.text().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            let (failure, retry) = classify(status, &text);
            let detail = redact(format!("HTTP {status}: {}", truncate(&text, 500)));
            return Err(if retry {
                Attempt::Retry {
                    failure,
                    detail,
                    after,
                }
            } else {
                Attempt::Fail { failure, detail }
            });
        }
        let parsed = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| match self.kind {
                ModelProvider::Anthropic => parse_anthropic(&v),
                _ => parse_openai(&v),
            });
        parsed.ok_or_else(|| Attempt::Fail {
            failure: ProviderFailure::BadRequest,
            detail: redact(format!("unparseable completion: {}", truncate(&text, 300))),
        })
    }

    fn openai_body(&self, req: &Request<'_>) -> Value {
        let mut messages = vec![json!({"role": "system", "content": req.system})];
        for m in req.messages {
            messages.push(match m {
                Msg::User(t) => json!({"role": "user", "content": t}),
                Msg::Assistant { text, calls } if calls.is_empty() => {
                    json!({"role": "assistant", "content": text})
                }
                Msg::Assistant { text, calls } => json!({
                    "role": "assistant",
                    "content": text,
                    "tool_calls": calls.iter().map(|c| json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments.to_string()},
                    })).collect::<Vec<_>>(),
                }),
                Msg::ToolResult { call_id, content } => {
                    json!({"role": "tool", "tool_call_id": call_id, "content": content})
                }
            });
        }
        let mut body = json!({"model": self.config.model, "messages": messages, "stream": false});
        if let Some(t) = self.config.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(m) = self.config.max_tokens {
            body["max_tokens"] = json!(m);
        }
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
            if req.no_more_tools {
                body["tool_choice"] = json!("none");
            }
        }
        body
    }

    fn anthropic_body(&self, req: &Request<'_>) -> Value {
        let mut messages: Vec<Value> = Vec::new();
        for m in req.messages {
            match m {
                Msg::User(t) => messages.push(json!({"role": "user", "content": t})),
                Msg::Assistant { text, calls } => {
                    let mut blocks = Vec::new();
                    if let Some(t) = text.as_deref().filter(|t| !t.is_empty()) {
                        blocks.push(json!({"type": "text", "text": t}));
                    }
                    for c in calls {
                        blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}));
                    }
                    messages.push(json!({"role": "assistant", "content": blocks}));
                }
                Msg::ToolResult { call_id, content } => {
                    let block =
                        json!({"type": "tool_result", "tool_use_id": call_id, "content": content});
                    // Results of one assistant turn go back together in one user message.
                    match messages.last_mut() {
                        Some(last) if last["role"] == "user" && last["content"].is_array() => {
                            if let Some(a) = last["content"].as_array_mut() {
                                a.push(block);
                            }
                        }
                        _ => messages.push(json!({"role": "user", "content": [block]})),
                    }
                }
            }
        }
        let mut body = json!({
            "model": self.config.model,
            "max_tokens": self.config.max_tokens.unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS),
            "system": req.system,
            "messages": messages,
        });
        if let Some(t) = self.config.temperature {
            body["temperature"] = json!(t);
        }
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
                .collect();
            if req.no_more_tools {
                body["tool_choice"] = json!({"type": "none"});
            }
        }
        body
    }
}

enum Attempt {
    Retry {
        failure: ProviderFailure,
        detail: String,
        after: Option<Duration>,
    },
    Fail {
        failure: ProviderFailure,
        detail: String,
    },
}

fn backoff(attempt: u32) -> Duration {
    let base = BASE_BACKOFF * 2u32.pow(attempt.saturating_sub(1));
    let jitter = rand::random_range(0.75..1.25);
    base.mul_f64(jitter)
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let ms = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0));
    let s = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    ms.or(s).map(|d| d.min(MAX_RETRY_AFTER))
}

/// What an error status and body mean, and whether trying again may help.
pub fn classify(status: u16, body: &str) -> (ProviderFailure, bool) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let err = &v["error"];
    let typ = err["type"].as_str().unwrap_or_default();
    let code = err["code"].as_str().unwrap_or_default();
    let message = err["message"]
        .as_str()
        .or(err.as_str())
        .unwrap_or_default()
        .to_lowercase();
    let quota = code == "insufficient_quota"
        || typ == "insufficient_quota"
        || typ == "billing_error"
        || message.contains("credit balance");
    let not_found = code == "model_not_found" || typ == "not_found_error";
    match status {
        _ if quota => (ProviderFailure::QuotaExhausted, false),
        401 | 403 => (ProviderFailure::InvalidKey, false),
        402 => (ProviderFailure::QuotaExhausted, false),
        404 => (ProviderFailure::ModelNotFound, false),
        _ if not_found => (ProviderFailure::ModelNotFound, false),
        429 => (ProviderFailure::RateLimited, true),
        408 | 409 => (ProviderFailure::Unavailable, true),
        500..=599 => (ProviderFailure::Unavailable, true),
        _ => (ProviderFailure::BadRequest, false),
    }
}

fn parse_usage(prompt: &Value, completion: &Value) -> Usage {
    let p = prompt.as_u64().unwrap_or(0);
    let c = completion.as_u64().unwrap_or(0);
    Usage {
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: p + c,
        web_searches: 0,
    }
}

fn parse_openai(v: &Value) -> Option<Completion> {
    let choice = v["choices"].get(0)?;
    let msg = &choice["message"];
    let calls = msg["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .filter_map(|c| {
                    let f = &c["function"];
                    let raw = f["arguments"].as_str().unwrap_or("{}");
                    Some(ToolCall {
                        id: c["id"].as_str().unwrap_or_default().to_string(),
                        name: f["name"].as_str()?.to_string(),
                        arguments: serde_json::from_str(raw)
                            .unwrap_or_else(|_| Value::String(raw.to_string())),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Completion {
        text: msg["content"].as_str().map(str::to_string),
        calls,
        usage: parse_usage(
            &v["usage"]["prompt_tokens"],
            &v["usage"]["completion_tokens"],
        ),
        finish_reason: choice["finish_reason"]
            .as_str()
            .unwrap_or("stop")
            .to_string(),
    })
}

fn parse_anthropic(v: &Value) -> Option<Completion> {
    let blocks = v["content"].as_array()?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(ToolCall {
                id: b["id"].as_str().unwrap_or_default().to_string(),
                name: b["name"].as_str()?.to_string(),
                arguments: b["input"].clone(),
            }),
            _ => {}
        }
    }
    let finish = match v["stop_reason"].as_str() {
        Some("tool_use") => "tool_calls",
        Some("max_tokens") => "length",
        _ => "stop",
    };
    Some(Completion {
        text: if text.is_empty() { None } else { Some(text) },
        calls,
        usage: parse_usage(&v["usage"]["input_tokens"], &v["usage"]["output_tokens"]),
        finish_reason: finish.to_string(),
    })
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_per_provider_conventions() {
        let q = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(classify(429, q), (ProviderFailure::QuotaExhausted, false));
        assert_eq!(
            classify(429, r#"{"error":{"type":"rate_limit_error"}}"#),
            (ProviderFailure::RateLimited, true)
        );
        assert_eq!(classify(401, "{}"), (ProviderFailure::InvalidKey, false));
        let nf = r#"{"error":{"message":"The model `x` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#;
        assert_eq!(classify(404, nf), (ProviderFailure::ModelNotFound, false));
        assert_eq!(
            classify(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error"}}"#
            ),
            (ProviderFailure::Unavailable, true)
        );
        let credit = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low"}}"#;
        assert_eq!(
            classify(400, credit),
            (ProviderFailure::QuotaExhausted, false)
        );
        assert_eq!(
            classify(400, "not json"),
            (ProviderFailure::BadRequest, false)
        );
    }

    #[test]
    fn openai_tool_calls_parse_with_bad_arguments_kept_raw() {
        let v = json!({"choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"c1","type":"function","function":{"name":"memory_search","arguments":"{\"query\":\"cats\"}"}},
                          {"id":"c2","type":"function","function":{"name":"web_search","arguments":"{oops"}}]}}]});
        let c = parse_openai(&v).unwrap();
        assert_eq!(c.calls[0].arguments, json!({"query":"cats"}));
        assert_eq!(c.calls[1].arguments, json!("{oops"));
        assert_eq!(c.text, None);
    }
}
