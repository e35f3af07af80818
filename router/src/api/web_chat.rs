//! `/web/chat-token`: a token for the web chat channel (`POST /api/v1/web/messages`), issued
//! to the signed-in user. The dashboard's chat page gets its token from the same function.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::extract::AuthUser;
use super::views::ErrorBody;
use crate::channels::web::{self, Web};
use crate::error::ApiError;
use crate::pipeline::Core;
use crate::store;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(chat_token))
}

/// A web chat token.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChatTokenView {
    /// `Authorization: Bearer <token>` of `POST /api/v1/web/messages`.
    pub token: String,
}

/// Connects the web chat to `user`'s assistant (once) and signs a token for it.
pub async fn issue(core: &Core, user: Uuid) -> Result<String, ApiError> {
    let secret = core
        .config
        .web
        .token_secret
        .as_ref()
        .ok_or(ApiError::ChannelDisabled)?;
    store::connect_channel(&core.db, web::NAME, &user.to_string(), user).await?;
    Ok(Web::mint(secret, user))
}

/// A token to chat with the assistant from a browser.
#[utoipa::path(post, path = "/api/v1/web/chat-token", tag = "channels", security(("bearer" = [])),
    responses(
        (status = 200, body = ChatTokenView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Account suspended", body = ErrorBody),
        (status = 404, description = "Web chat is not enabled", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn chat_token(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<ChatTokenView>, ApiError> {
    if user.suspended() {
        return Err(ApiError::Forbidden("the account is suspended".into()));
    }
    Ok(axum::Json(ChatTokenView {
        token: issue(&s.core, user.id).await?,
    }))
}
