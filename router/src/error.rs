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
    /// Input that breaks a rule (422), naming the field when one is at fault.
    #[error("invalid: {message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// Authenticated, but the role, plan or a suspension forbids it.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Too many attempts; retry after this many seconds.
    #[error("too many attempts")]
    TooManyAttempts(u64),
    /// A request the framework refused before a handler ran (body too large, wrong type).
    #[error("rejected: {1}")]
    Rejected(StatusCode, String),
    /// The payment provider refused (502) or could not be reached (503); the detail is
    /// logged, and nothing was changed.
    #[error("payment provider: {detail}")]
    PaymentProvider { reachable: bool, detail: String },
}

impl From<clawdbot_billing::Error> for ApiError {
    fn from(e: clawdbot_billing::Error) -> Self {
        use clawdbot_billing::Error as E;
        match e {
            E::Signature(why) => ApiError::BadRequest(format!("bad Stripe-Signature: {why}")),
            E::Malformed(m) => ApiError::BadRequest(format!("not a Stripe event: {m}")),
            E::Invalid { field, message } => ApiError::Invalid {
                field: Some(field.to_string()),
                message,
            },
            E::NotFound(m) => ApiError::NotFound(m),
            E::Stripe { .. } => ApiError::PaymentProvider {
                reachable: true,
                detail: e.to_string(),
            },
            E::Unavailable(_) => ApiError::PaymentProvider {
                reachable: false,
                detail: e.to_string(),
            },
            E::Database(e) => ApiError::Database(e),
            E::Accounts(e) => e.into(),
        }
    }
}

impl From<clawdbot_accounts::Error> for ApiError {
    fn from(e: clawdbot_accounts::Error) -> Self {
        use clawdbot_accounts::Error as E;
        match e {
            E::Invalid { field, message } => ApiError::Invalid {
                field: Some(field.to_string()),
                message,
            },
            E::Conflict(m) => ApiError::Conflict(m),
            E::NotFound => ApiError::NotFound("not found".into()),
            E::BadCredentials => {
                ApiError::Rejected(StatusCode::UNAUTHORIZED, "wrong e-mail or password".into())
            }
            E::BadToken => ApiError::Unauthorized,
            E::TooManyAttempts { retry_after_secs } => ApiError::TooManyAttempts(retry_after_secs),
            E::Forbidden(m) => ApiError::Forbidden(m),
            E::Database(e) => ApiError::Database(e),
            E::Redis(e) => ApiError::Redis(e),
            other @ (E::Kube(_) | E::Crypto(_) | E::Config(_) | E::Internal(_)) => {
                ApiError::Internal(format!("accounts ({}): {other}", other.category()))
            }
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as J;
        match &r {
            J::JsonDataError(e) => {
                let (field, message) = describe_json_error(&e.body_text());
                ApiError::Invalid { field, message }
            }
            // Over the body limit stays 413; anything else about the body (not JSON, no
            // JSON content type) is input the endpoint does not accept: 422, as documented.
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::Rejected(r.status(), "the body is over the size limit".into())
            }
            _ => ApiError::Invalid {
                field: None,
                message: format!(
                    "the body must be a JSON object ({})",
                    r.status().canonical_reason().unwrap_or("invalid")
                ),
            },
        }
    }
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
            ApiError::Invalid { .. } => "invalid",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooManyAttempts(_) => "too_many_attempts",
            ApiError::Rejected(..) => "rejected",
            ApiError::PaymentProvider { .. } => "payment_provider",
        }
    }
}

/// The field and the reason of a JSON body that does not fit, without the value that was
/// sent: serde quotes it (`unknown variant `sk-...``), and it may be a key put in the wrong
/// field.
pub fn describe_json_error(text: &str) -> (Option<String>, String) {
    let detail = text.split_once("target type: ").map_or(text, |(_, d)| d);
    let (path, reason) = match detail.split_once(": ") {
        Some((p, r)) if !p.contains(' ') && p != "." => (Some(p.to_string()), r),
        _ => (None, detail),
    };
    let field = path.or_else(|| {
        reason
            .split_once("missing field `")
            .and_then(|(_, r)| r.split_once('`'))
            .map(|(f, _)| f.to_string())
    });
    let expected = reason
        .rsplit_once(", expected ")
        .map(|(_, e)| e.split(" at line").next().unwrap_or(e));
    let message = if reason.starts_with("missing field") {
        "is required".to_string()
    } else if let Some(e) = expected {
        format!("has a value that does not fit; expected {e}")
    } else {
        "has a value that does not fit".to_string()
    };
    match field {
        Some(f) => {
            let message = format!("{f} {message}");
            (Some(f), message)
        }
        None => (None, format!("the body {message}")),
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
            ApiError::Unauthorized => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                    Json(json!({ "error": "unauthorized" })),
                )
                    .into_response();
            }
            ApiError::Overloaded => return retry_shortly("busy, retry shortly"),
            ApiError::InProgress => {
                return retry_shortly("this message is being recorded, retry shortly");
            }
            ApiError::Invalid { field, message } => {
                let mut body = json!({ "error": message });
                if let Some(f) = field {
                    body["field"] = json!(f);
                }
                return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
            }
            ApiError::TooManyAttempts(secs) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, secs.to_string())],
                    Json(json!({ "error": "too many attempts; try again later" })),
                )
                    .into_response();
            }
            ApiError::PaymentProvider { reachable, detail } => {
                tracing::warn!(detail = %detail, "payment provider call failed");
                if *reachable {
                    (
                        StatusCode::BAD_GATEWAY,
                        "the payment provider refused the request; nothing was changed".to_string(),
                    )
                } else {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(axum::http::header::RETRY_AFTER, "30")],
                        Json(json!({"error": "the payment provider cannot be reached; nothing was changed, try again shortly"})),
                    )
                        .into_response();
                }
            }
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ApiError::Rejected(status, m) => (*status, m.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_field_and_never_echo_the_value() {
        let (f, m) = describe_json_error(
            "Failed to deserialize the JSON body into the target type: provider: unknown variant `sk-proj-secret123`, expected `openai` or `anthropic` at line 1 column 40",
        );
        assert_eq!(f.as_deref(), Some("provider"));
        assert!(
            !m.contains("sk-proj") && m.contains("`openai` or `anthropic`"),
            "{m}"
        );
        let (f, m) = describe_json_error(
            "Failed to deserialize the JSON body into the target type: missing field `password` at line 1 column 20",
        );
        assert_eq!(
            (f.as_deref(), m.as_str()),
            (Some("password"), "password is required")
        );
        let (f, m) = describe_json_error(
            "Failed to deserialize the JSON body into the target type: key: invalid type: integer `12345`, expected a string at line 1 column 9",
        );
        assert_eq!(f.as_deref(), Some("key"));
        assert!(
            !m.contains("12345") && m.ends_with("expected a string"),
            "{m}"
        );
    }
}
