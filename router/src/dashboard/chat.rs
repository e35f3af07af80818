//! Chat: the page carries a web chat token (the same as `POST /api/v1/web/chat-token` issues);
//! `assets/chat.js` posts to the web chat channel and shows the reply events as they come.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::guard::Viewer;
use super::{Ctx, DashState, error_page, render};
use crate::api::web_chat;
use crate::error::ApiError;

#[derive(Template)]
#[template(path = "dashboard/chat.html")]
pub struct ChatPage {
    pub c: Ctx,
    pub token: String,
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn page(State(s): State<Arc<DashState>>, Viewer(user): Viewer, c: Ctx) -> Response {
    let c = c.signed_in(&user);
    if user.suspended() {
        return error_page(c, &ApiError::Forbidden("the account is suspended".into()));
    }
    match web_chat::issue(&s.api.core, user.id).await {
        Ok(token) => render(&ChatPage { c, token }),
        Err(e) => error_page(c, &e),
    }
}
