//! The call to a tenant's agent: OpenClaw's gateway protocol (OpenAI-compatible chat
//! completions, bearer token, `x-openclaw-session-key`), and the reads of its conversations
//! (`clawdbot_api::conversations`: sessions, paged messages, export) with the same token.
//! Identical for both runtimes.

use std::time::Duration;

use clawdbot_api::conversations::{
    ConversationExport, EXPORT_PATH, MESSAGES_PATH, MessagePage, MessagesQuery, SESSIONS_PATH,
    SessionList, SessionsQuery,
};
use clawdbot_api::gateway::{
    CHAT_COMPLETIONS_PATH, ChatCompletionRequest, ChatCompletionResponse, DEFAULT_AGENT_MODEL,
    SESSION_KEY_HEADER, SessionKey, Usage,
};

/// Why an agent call failed (bounded, for metrics and logs).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("agent unreachable: {0}")]
    Unreachable(String),
    /// No connection could be made: the request never reached the agent (its pod is going
    /// away or not there yet), so it can be sent again without answering twice.
    #[error("no connection to the agent: {0}")]
    NotConnected(String),
    #[error("agent answered HTTP {0}")]
    Status(u16),
    #[error("agent answered something that is not a chat completion: {0}")]
    Malformed(String),
    #[error("agent answered with no text")]
    Empty,
}

impl AgentError {
    pub fn category(&self) -> &'static str {
        match self {
            AgentError::Timeout(_) => "agent_timeout",
            AgentError::Unreachable(_) | AgentError::NotConnected(_) => "agent_unreachable",
            AgentError::Status(_) => "agent_error",
            AgentError::Malformed(_) | AgentError::Empty => "agent_malformed",
        }
    }
}

/// An answer of the agent.
#[derive(Clone, Debug)]
pub struct AgentReply {
    pub text: String,
    pub usage: Option<Usage>,
    /// The answer's `model`: the lite agent names its provider's model; OpenClaw echoes the
    /// requested `openclaw`.
    pub model: String,
}

impl AgentReply {
    /// The model that served the turn: the one the answer names, or `workspace_model` when it
    /// names only the agent (OpenClaw) or nothing.
    pub fn served_by<'a>(&'a self, workspace_model: &'a str) -> &'a str {
        let named = self.model.trim();
        if named.is_empty() || named == DEFAULT_AGENT_MODEL {
            workspace_model
        } else {
            named
        }
    }
}

/// The chat completions endpoint of the agent at `base_url`; None when it is not a URL.
pub fn chat_url(base_url: &str) -> Option<reqwest::Url> {
    let url = format!(
        "{}{}",
        base_url.trim_end_matches('/'),
        CHAT_COMPLETIONS_PATH
    );
    reqwest::Url::parse(&url).ok()
}

/// One HTTP client for all agents (connection pool per agent host).
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
}

impl Default for AgentClient {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        AgentClient { http }
    }

    /// One turn: `url` is the agent's [`chat_url`], parsed once per tenant rather than per
    /// message.
    pub async fn chat(
        &self,
        url: &reqwest::Url,
        token: &str,
        session: &SessionKey,
        text: &str,
        timeout: Duration,
    ) -> Result<AgentReply, AgentError> {
        let request = self
            .http
            .post(url.clone())
            .bearer_auth(token)
            .header(SESSION_KEY_HEADER, session.to_string())
            .json(&ChatCompletionRequest::user_message(text))
            .timeout(timeout);
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                AgentError::Timeout(timeout)
            } else if e.is_connect() {
                AgentError::NotConnected(e.without_url().to_string())
            } else {
                AgentError::Unreachable(e.without_url().to_string())
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(AgentError::Status(status.as_u16()));
        }
        let body: ChatCompletionResponse = response.json().await.map_err(|e| {
            if e.is_timeout() {
                AgentError::Timeout(timeout)
            } else {
                AgentError::Malformed(e.without_url().to_string())
            }
        })?;
        let text = body
            .reply_text()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AgentError::Empty)?
            .to_string();
        Ok(AgentReply {
            text,
            usage: body.usage,
            model: body.model,
        })
    }

    /// The tenant's sessions, most recently active first.
    pub async fn sessions(
        &self,
        base_url: &str,
        token: &str,
        query: &SessionsQuery,
        timeout: Duration,
    ) -> Result<SessionList, AgentError> {
        self.read(base_url, SESSIONS_PATH, token, query, timeout)
            .await
    }

    /// One page of a session's messages, newest first; an unknown session is
    /// `AgentError::Status(404)`.
    pub async fn messages(
        &self,
        base_url: &str,
        token: &str,
        query: &MessagesQuery,
        timeout: Duration,
    ) -> Result<MessagePage, AgentError> {
        self.read(base_url, MESSAGES_PATH, token, query, timeout)
            .await
    }

    /// Every session with its messages and the memory notes, for the user's data export.
    pub async fn export(
        &self,
        base_url: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<ConversationExport, AgentError> {
        let no_query: &[(&str, &str)] = &[];
        self.read(base_url, EXPORT_PATH, token, no_query, timeout)
            .await
    }

    async fn read<Q: serde::Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        base_url: &str,
        path: &str,
        token: &str,
        query: &Q,
        timeout: Duration,
    ) -> Result<T, AgentError> {
        let url = format!("{}{path}", base_url.trim_end_matches('/'));
        let classify = |e: reqwest::Error, malformed: bool| {
            if e.is_timeout() {
                AgentError::Timeout(timeout)
            } else if malformed {
                AgentError::Malformed(e.without_url().to_string())
            } else {
                AgentError::Unreachable(e.without_url().to_string())
            }
        };
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .query(query)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| classify(e, false))?;
        let status = response.status();
        if !status.is_success() {
            return Err(AgentError::Status(status.as_u16()));
        }
        response.json().await.map_err(|e| classify(e, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_told_apart_from_a_failure_after_sending() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let err = AgentClient::new()
            .chat(
                &chat_url(&format!("http://{addr}")).expect("url"),
                "token",
                &SessionKey::new("web", "dm", "u1"),
                "hi",
                Duration::from_secs(5),
            )
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, AgentError::NotConnected(_)), "{err:?}");
    }
}
