//! The one error type of the router's HTTP surface, and the crate's error categories.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything a handler can fail with. Internal details are logged, never echoed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong signature, secret header or admin token. The body says nothing more.
    #[error("unauthorized")]
    Unauthorized,
    /// The request is not what the endpoint accepts (malformed JSON, missing field).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Something referenced does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A constraint was violated (for example a duplicate e-mail).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The channel is not configured on this router.
    #[error("channel not enabled")]
    ChannelDisabled,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("internal: {0}")]
    Internal(String),
    /// This replica is processing as many messages as it may; the platform retries later.
    #[error("overloaded")]
    Overloaded,
    /// Another delivery of this message is being recorded; the platform retries later and
    /// then finds it recorded (or, if that delivery's replica died, records it itself).
    #[error("another delivery of this message is being recorded")]
    InProgress,
}

impl ApiError {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::ChannelDisabled => "channel_disabled",
            ApiError::Database(_) => "database",
            ApiError::Redis(_) => "redis",
            ApiError::Internal(_) => "internal",
            ApiError::Overloaded => "overloaded",
            ApiError::InProgress => "in_progress",
        }
    }
}

/// 503 with `Retry-After: 1`: the platform delivers the webhook again a moment later.
fn retry_shortly(error: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        Json(json!({ "error": error })),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::Unauthorized => return StatusCode::UNAUTHORIZED.into_response(),
            ApiError::Overloaded => return retry_shortly("busy, retry shortly"),
            ApiError::InProgress => {
                return retry_shortly("this message is being recorded, retry shortly");
            }
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            ApiError::ChannelDisabled => (
                StatusCode::NOT_FOUND,
                "this channel is not enabled".to_string(),
            ),
            ApiError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                (StatusCode::CONFLICT, "already exists".to_string())
            }
            ApiError::Database(sqlx::Error::Database(db))
                if db.is_foreign_key_violation() || db.is_check_violation() =>
            {
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "refers to something that does not exist or is not allowed".to_string(),
                )
            }
            ApiError::Database(_) | ApiError::Redis(_) | ApiError::Internal(_) => {
                tracing::error!(error = %self, category = self.category(), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                )
            }
        };
        (status, Json(json!({"error": message}))).into_response()
    }
}
