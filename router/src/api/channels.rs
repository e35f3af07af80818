//! `/channels`: one-time connection codes with ready links, and the connected chat accounts.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::extract::{AuthUser, parse_id};
use super::views::ErrorBody;
use crate::error::ApiError;
use crate::store;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(create_code))
        .routes(routes!(list_connections))
        .routes(routes!(delete_connection))
}

/// Where the bots are, to build the links shown with a code.
#[derive(Clone, Debug, Default)]
pub struct ChannelLinks {
    /// The Telegram bot's username (without `@`).
    pub telegram_bot: Option<String>,
    /// The WhatsApp business number, digits only.
    pub whatsapp_number: Option<String>,
    /// The Discord application id.
    pub discord_application_id: Option<String>,
}

/// Links that open a chat with the bot with the code ready to send.
#[derive(Serialize, Deserialize, ToSchema, Debug, PartialEq)]
pub struct Links {
    pub telegram: Option<String>,
    pub whatsapp: Option<String>,
    /// Installs the bot for the user; then send it the code in a direct message.
    pub discord: Option<String>,
}

impl ChannelLinks {
    pub fn links(&self, code: &str) -> Links {
        Links {
            telegram: self.telegram_bot.as_ref().map(|b| format!("https://t.me/{b}?start={code}")),
            whatsapp: self.whatsapp_number.as_ref().map(|n| format!("https://wa.me/{n}?text={code}")),
            discord: self.discord_application_id.as_ref().map(|id| {
                format!("https://discord.com/oauth2/authorize?client_id={id}&scope=applications.commands&integration_type=1")
            }),
        }
    }
}

/// A one-time code.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CodeView {
    /// Send it to the bot (or open a link); valid once, for ten minutes.
    pub code: String,
    pub expires_at: DateTime<Utc>,
    pub links: Links,
}

/// A connected chat account.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    pub id: Uuid,
    /// `telegram`, `whatsapp`, `discord` or `web`.
    pub channel: String,
    /// The account's id on that platform.
    pub sender_id: String,
    pub created_at: DateTime<Utc>,
}

/// A new one-time connection code, within the plan's number of chat accounts.
#[utoipa::path(post, path = "/api/v1/channels/codes", tag = "channels", security(("bearer" = [])),
    responses(
        (status = 201, body = CodeView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The plan's chat accounts are all connected", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn create_code(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<(StatusCode, axum::Json<CodeView>), ApiError> {
    s.accounts.check_channel_limit(&user).await?;
    let (code, expires_at) = store::create_code(&s.core.db, user.id).await?;
    let links = s.links.links(&code);
    Ok((
        StatusCode::CREATED,
        axum::Json(CodeView {
            code,
            expires_at,
            links,
        }),
    ))
}

/// The connected chat accounts.
#[utoipa::path(get, path = "/api/v1/channels/connections", tag = "channels", security(("bearer" = [])),
    responses((status = 200, body = [ConnectionView]), (status = 401, body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn list_connections(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<Vec<ConnectionView>>, ApiError> {
    let list = s.accounts.connections(user.id).await?;
    Ok(axum::Json(
        list.into_iter()
            .map(|c| ConnectionView {
                id: c.id,
                channel: c.channel,
                sender_id: c.sender_id,
                created_at: c.created_at,
            })
            .collect(),
    ))
}

/// Disconnects a chat account: its messages no longer reach the assistant.
#[utoipa::path(delete, path = "/api/v1/channels/connections/{id}", tag = "channels",
    security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Disconnected"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn delete_connection(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (channel, sender) = s
        .accounts
        .delete_connection(user.id, parse_id(&id)?)
        .await?;
    s.core.forget_sender(&channel, &sender);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_code_and_only_configured_channels_get_one() {
        let l = ChannelLinks {
            telegram_bot: Some("ClawdbotBot".into()),
            whatsapp_number: Some("15551234567".into()),
            discord_application_id: None,
        }
        .links("ABCD2345");
        assert_eq!(
            l.telegram.as_deref(),
            Some("https://t.me/ClawdbotBot?start=ABCD2345")
        );
        assert_eq!(
            l.whatsapp.as_deref(),
            Some("https://wa.me/15551234567?text=ABCD2345")
        );
        assert_eq!(l.discord, None);
    }
}
