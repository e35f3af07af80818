//! What the API's handlers take from a request: the signed-in user (or admin), JSON bodies
//! whose errors name the field, and the client address for login limits.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use clawdbot_accounts::{Role, User};

use super::ApiState;
use crate::error::ApiError;

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The signed-in user: a valid access token whose account still exists. The account is
/// read per request (one primary-key lookup) so a deletion, suspension or role change applies
/// at once instead of when the token expires.
pub struct AuthUser(pub User);

impl FromRequestParts<Arc<ApiState>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let claims = state.accounts.verify_access(token)?;
        let user = state.accounts.user(claims.sub).await?;
        tracing::Span::current().record("user", tracing::field::display(user.id));
        Ok(AuthUser(user))
    }
}

/// A signed-in admin.
pub struct AdminUser(pub User);

impl FromRequestParts<Arc<ApiState>> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        let AuthUser(user) = AuthUser::from_request_parts(parts, state).await?;
        if user.role != Role::Admin || user.suspended() {
            return Err(ApiError::Forbidden("this needs the admin role".into()));
        }
        Ok(AdminUser(user))
    }
}

/// A JSON body; a field of the wrong type or missing is a 422 that names it, a body over the
/// limit a 413.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// The client's address: the peer, or with `--trust-forwarded-for` (behind an ingress) the
/// address the proxy appended last to `X-Forwarded-For`.
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<Arc<ApiState>> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        Ok(ClientAddr(client_addr(parts, state.trust_forwarded_for)))
    }
}

/// The client's address of a request (see [`ClientAddr`]); the dashboard's login uses it too.
pub fn client_addr(parts: &Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(ip) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// An id from a path: one that is not even a UUID is as unknown as any other (404).
pub fn parse_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound("not found".into()))
}
