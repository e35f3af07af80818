//! The gateway protocol both tenant runtimes speak (OpenClaw's, which the lite agent copies):
//! OpenAI-compatible `POST /v1/chat/completions`, a bearer token only the router holds, and an
//! `x-openclaw-session-key` header naming the conversation. The agent keeps the history, so the
//! router sends only the new user message.

use serde::{Deserialize, Serialize};

/// Header naming the conversation, `<channel>:<kind>:<peer>` (for example `telegram:dm:4242`).
pub const SESSION_KEY_HEADER: &str = "x-openclaw-session-key";
/// Path of the chat endpoint.
pub const CHAT_COMPLETIONS_PATH: &str = "/v1/chat/completions";
/// Path of the model list.
pub const MODELS_PATH: &str = "/v1/models";
/// Model name the router asks for: the agent answers with its configured model. OpenClaw
/// routes `openclaw` (or `openclaw:<agent>`) to its default agent.
pub const DEFAULT_AGENT_MODEL: &str = "openclaw";

/// A session key: which channel, which kind of conversation, which peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub channel: String,
    pub kind: String,
    pub peer: String,
}

impl SessionKey {
    pub fn new(
        channel: impl Into<String>,
        kind: impl Into<String>,
        peer: impl Into<String>,
    ) -> Self {
        SessionKey {
            channel: channel.into(),
            kind: kind.into(),
            peer: peer.into(),
        }
    }

    /// Parses `<channel>:<kind>:<peer>`; the peer may itself contain colons.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut parts = value.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(c), Some(k), Some(p)) if !c.is_empty() && !k.is_empty() && !p.is_empty() => {
                if value.len() > 512 || value.chars().any(|ch| ch.is_control()) {
                    return Err("session key is too long or has control characters".into());
                }
                Ok(SessionKey::new(c, k, p))
            }
            _ => Err(format!(
                "session key {value:?} is not of the form <channel>:<kind>:<peer>"
            )),
        }
    }
}

impl std::fmt::Display for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.channel, self.kind, self.peer)
    }
}

/// Role of a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A chat message as the router sends and the agent answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    /// Text content. Null is allowed on the wire (assistant messages that only call tools).
    #[serde(default)]
    pub content: Option<String>,
}

impl ChatMessage {
    pub fn user(text: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: Some(text.into()),
        }
    }
    pub fn assistant(text: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::Assistant,
            content: Some(text.into()),
        }
    }
}

/// `POST /v1/chat/completions` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Opaque end-user id, as in OpenAI's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ChatCompletionRequest {
    /// The request the router sends for one incoming message.
    pub fn user_message(text: impl Into<String>) -> Self {
        ChatCompletionRequest {
            model: DEFAULT_AGENT_MODEL.to_string(),
            messages: vec![ChatMessage::user(text)],
            stream: false,
            temperature: None,
            max_tokens: None,
            user: None,
        }
    }
}

/// Token counts of one completion, and the web searches the turn made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// Web searches made for this reply (Clawdbot's extension: the lite agent reports them;
    /// OpenClaw and model servers send no such field, which reads as 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub web_searches: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// OpenClaw with some model servers reports all zeros: treat that as "not reported".
    pub fn is_reported(&self) -> bool {
        self.total_tokens > 0 || self.prompt_tokens > 0 || self.completion_tokens > 0
    }
}

/// One choice of a non-streamed completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ChatMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// `POST /v1/chat/completions` response (non-streamed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    #[serde(default = "object_completion")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

fn object_completion() -> String {
    "chat.completion".into()
}

impl ChatCompletionResponse {
    /// Text of the first choice, if any.
    pub fn reply_text(&self) -> Option<&str> {
        self.choices.first()?.message.content.as_deref()
    }
}

/// The delta of a streamed chunk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a streamed chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// One `data:` event of a streamed completion (`stream: true`); the stream ends with
/// `data: [DONE]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    #[serde(default = "object_chunk")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

fn object_chunk() -> String {
    "chat.completion.chunk".into()
}

/// `GET /v1/models` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    #[serde(default = "object_list")]
    pub object: String,
    pub data: Vec<ModelInfo>,
}

fn object_list() -> String {
    "list".into()
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    #[serde(default = "object_model")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub owned_by: String,
}

fn object_model() -> String {
    "model".into()
}

/// OpenAI-style error body: `{"error": {"message", "type", "code"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ErrorBody {
    pub fn new(type_: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                message: message.into(),
                type_: type_.into(),
                code: None,
            },
        }
    }
}

/// Estimated token count of `text`, for usage records when a runtime reports none (OpenClaw
/// with llama.cpp-style servers answers `usage` with zeros). Recorded as an estimate, never as
/// a measurement.
///
/// The heuristic is the widely used "about 4 characters per token" of BPE tokenizers on English
/// text and code (OpenAI's and Anthropic's documentation both quote it), applied to ASCII; every
/// non-ASCII character counts as a whole token, because CJK characters are usually one or more
/// tokens each and accented Latin letters often split words. That keeps the estimate from
/// undercounting non-English chats, at the price of overcounting accented Latin text a little.
/// Checked against SmolLM2's tokenizer (a GPT-2 style BPE) in the OpenClaw end-to-end test.
pub fn estimate_tokens(text: &str) -> u64 {
    let (ascii, other) = text.chars().fold((0u64, 0u64), |(a, o), c| {
        if c.is_ascii() { (a + 1, o) } else { (a, o + 1) }
    });
    ascii.div_ceil(4) + other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_parse_and_print() {
        let k = SessionKey::parse("telegram:dm:4242").unwrap();
        assert_eq!(k, SessionKey::new("telegram", "dm", "4242"));
        assert_eq!(k.to_string(), "telegram:dm:4242");
        // A peer may contain colons (Discord snowflake pairs, WhatsApp ids do not, others may).
        assert_eq!(SessionKey::parse("web:dm:a:b").unwrap().peer, "a:b");
        assert!(SessionKey::parse("telegram:dm").is_err());
        assert!(SessionKey::parse("::x").is_err());
        assert!(SessionKey::parse("a:b:c\n").is_err());
    }

    #[test]
    fn openai_responses_deserialize_with_missing_optional_fields() {
        let r: ChatCompletionResponse = serde_json::from_str(
            r#"{"id":"x","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],
                "usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}"#,
        )
        .unwrap();
        assert_eq!(r.reply_text(), Some("hi"));
        assert_eq!(r.object, "chat.completion");
        assert!(!r.usage.unwrap().is_reported());
    }

    #[test]
    fn web_searches_in_usage_are_optional_both_ways() {
        // OpenClaw's usage (no such field) reads as no searches, and is written back unchanged.
        let openclaw = r#"{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}"#;
        let u: Usage = serde_json::from_str(openclaw).unwrap();
        assert_eq!(u.web_searches, 0);
        assert_eq!(
            serde_json::to_value(u).unwrap(),
            serde_json::from_str::<serde_json::Value>(openclaw).unwrap()
        );
        let lite: Usage = serde_json::from_str(
            r#"{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"web_searches":2}"#,
        )
        .unwrap();
        assert_eq!(lite.web_searches, 2);
        assert_eq!(serde_json::to_value(lite).unwrap()["web_searches"], 2);
    }

    #[test]
    fn router_request_is_minimal_openai_json() {
        let v = serde_json::to_value(ChatCompletionRequest::user_message("hello")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"openclaw","messages":[{"role":"user","content":"hello"}]})
        );
    }

    #[test]
    fn token_estimates_follow_the_four_characters_rule() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("hi"), 1);
        assert_eq!(estimate_tokens("What is the capital of France?"), 8);
        // A long English text lands near one token per four characters.
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(100);
        assert_eq!(estimate_tokens(&text), 1125);
        // Non-ASCII characters count one each: CJK is not undercounted.
        assert_eq!(estimate_tokens("你好世界"), 4);
        assert_eq!(estimate_tokens("café"), 2);
    }
}
