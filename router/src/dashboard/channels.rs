//! Channels: the connected chat accounts (disconnect), and a one-time code with its links and
//! QR codes; the page notices (htmx polling) when the code has been used.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::guard::Viewer;
use super::{Ctx, DashState, done, error_page, render};
use crate::api::extract::parse_id;
use crate::error::ApiError;
use crate::store;

pub struct ConnectionRow {
    pub id: String,
    pub channel: String,
    pub sender: String,
    pub since: String,
}

/// A link to open with the code, and its QR code.
pub struct CodeLink {
    /// `channels.telegram`, ... (text keys of the name, hint and button).
    pub name: &'static str,
    pub hint: &'static str,
    pub open: &'static str,
    pub url: String,
    pub qr: Option<String>,
}

pub struct NewCode {
    pub code: String,
    pub expires: String,
    pub links: Vec<CodeLink>,
}

#[derive(Template)]
#[template(path = "dashboard/channels.html")]
pub struct ChannelsPage {
    pub c: Ctx,
    pub connections: Vec<ConnectionRow>,
    pub code: Option<NewCode>,
}

#[derive(Template)]
#[template(path = "dashboard/watch.html")]
pub struct WatchFragment {
    pub c: Ctx,
    /// The channel connected since the code was shown.
    pub connected: String,
}

async fn connections(s: &DashState, user: uuid::Uuid) -> Result<Vec<ConnectionRow>, ApiError> {
    Ok(s.api
        .accounts
        .connections(user)
        .await?
        .into_iter()
        .map(|c| ConnectionRow {
            id: c.id.to_string(),
            channel: c.channel,
            sender: c.sender_id,
            since: c.created_at.format("%Y-%m-%d").to_string(),
        })
        .collect())
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn page(State(s): State<Arc<DashState>>, Viewer(user): Viewer, c: Ctx) -> Response {
    let c = c.signed_in(&user);
    match connections(&s, user.id).await {
        Ok(connections) => render(&ChannelsPage {
            c,
            connections,
            code: None,
        }),
        Err(e) => error_page(c, &e),
    }
}

/// A new code, within the plan's number of chat accounts (as `POST /channels/codes`).
#[tracing::instrument(skip_all, fields(user))]
pub async fn new_code(State(s): State<Arc<DashState>>, Viewer(user): Viewer, c: Ctx) -> Response {
    let c = c.signed_in(&user);
    let made = async {
        s.api.accounts.check_channel_limit(&user).await?;
        let (code, expires_at) = store::create_code(&s.api.core.db, user.id).await?;
        Ok::<_, ApiError>((code, expires_at))
    }
    .await;
    let list = connections(&s, user.id).await;
    match (made, list) {
        (Ok((code, expires_at)), Ok(connections)) => {
            let l = s.api.links.links(&code);
            let links = [
                (l.telegram, "channels.telegram"),
                (l.whatsapp, "channels.whatsapp"),
                (l.discord, "channels.discord"),
            ]
            .into_iter()
            .filter_map(|(url, name)| {
                let url = url?;
                let (hint, open) = match name {
                    "channels.telegram" => ("channels.telegram.hint", "channels.open_tg"),
                    "channels.whatsapp" => ("channels.whatsapp.hint", "channels.open_wa"),
                    _ => ("channels.discord.hint", "channels.open_dc"),
                };
                Some(CodeLink {
                    name,
                    hint,
                    open,
                    qr: super::svg::qr(&url),
                    url,
                })
            })
            .collect();
            render(&ChannelsPage {
                c,
                connections,
                code: Some(NewCode {
                    code,
                    expires: expires_at.format("%H:%M UTC").to_string(),
                    links,
                }),
            })
        }
        (Err(e), Ok(connections)) => {
            let c = c.failed(&e);
            render(&ChannelsPage {
                c,
                connections,
                code: None,
            })
        }
        (_, Err(e)) => error_page(c, &e),
    }
}

#[derive(Deserialize)]
pub struct Watch {
    #[serde(default)]
    had: usize,
}

/// Polled while a code is shown: says so once a new chat account is connected.
pub async fn watch(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Query(q): Query<Watch>,
) -> Response {
    match s.api.accounts.connections(user.id).await {
        Ok(list) => {
            let connected = (list.len() > q.had)
                .then(|| {
                    list.iter()
                        .max_by_key(|c| c.created_at)
                        .map(|c| c.channel.clone())
                })
                .flatten();
            // Nothing new: 204 keeps the waiting line as it is (htmx swaps nothing).
            match connected {
                Some(connected) => render(&WatchFragment { c, connected }),
                None => StatusCode::NO_CONTENT.into_response(),
            }
        }
        Err(e) => error_page(c, &ApiError::from(e)),
    }
}

/// Disconnects a chat account (as `DELETE /channels/connections/{id}`).
#[tracing::instrument(skip_all, fields(user))]
pub async fn disconnect(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let (channel, sender) = s
            .api
            .accounts
            .delete_connection(user.id, parse_id(&id)?)
            .await?;
        s.api.core.forget_sender(&channel, &sender);
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => done("/dashboard/channels", "disconnected"),
        Err(e) => error_page(c.signed_in(&user), &e),
    }
}
