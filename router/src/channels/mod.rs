//! The channels. Each is one module implementing [`Channel`]: its webhook routes (parse and
//! verify the platform's wire format, hand [`Inbound`] messages to the pipeline) and its way
//! of sending replies. [`build`] is the one place that lists them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::inbound::Inbound;
use crate::pipeline::Core;

pub mod discord;
pub mod telegram;
pub mod telegram_updates;
pub mod web;
pub mod whatsapp;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a reply could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("platform refused the message: HTTP {status}")]
    Refused { status: u16 },
    #[error("platform unreachable: {0}")]
    Unreachable(String),
    #[error("the recipient is gone (closed stream or expired interaction)")]
    Gone,
}

/// What a message to the user is: an interim note (onboarding, "waking up") or the final
/// answer to their message (web chat closes the stream after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Note,
    Final,
}

pub trait Channel: Send + Sync + 'static {
    /// Name used in session keys, connection rows, dedupe keys and metric labels.
    fn name(&self) -> &'static str;
    /// Most characters of one platform message; longer replies are split.
    fn max_message_chars(&self) -> usize;
    /// The channel's HTTP routes (webhooks), ready to merge into the app.
    fn routes(self: Arc<Self>, core: Arc<Core>) -> axum::Router;
    /// Sends one message (already within `max_message_chars`) in reply to `to`.
    fn send<'a>(
        &'a self,
        to: &'a Inbound,
        text: &'a str,
        kind: ReplyKind,
    ) -> BoxFuture<'a, Result<(), SendError>>;
    /// Shows that an answer is coming (typing indicator), best effort.
    fn typing<'a>(&'a self, to: &'a Inbound) -> BoxFuture<'a, ()>;
    /// How often the typing indicator must be repeated while waiting (None: once is enough).
    fn typing_refresh(&self) -> Option<Duration> {
        None
    }
    /// Where a message the user did not ask for goes (a notice such as a failed payment), as
    /// the `reply_to` of [`Channel::send`], for a connected `sender`; `None` where the platform
    /// lets a bot speak only in answer (the dashboard shows such notices anyway).
    fn address(&self, _sender: &str) -> Option<serde_json::Value> {
        None
    }
}

/// Every channel enabled by `config`. Adding a channel: a module and one line here.
pub fn build(config: &Config, http: &reqwest::Client) -> Vec<Arc<dyn Channel>> {
    let mut channels: Vec<Arc<dyn Channel>> = Vec::new();
    if let Some(c) = telegram::Telegram::from_config(config, http) {
        channels.push(Arc::new(c));
    }
    if let Some(c) = whatsapp::WhatsApp::from_config(config, http) {
        channels.push(Arc::new(c));
    }
    if let Some(c) = discord::Discord::from_config(config, http) {
        channels.push(Arc::new(c));
    }
    if let Some(c) = web::Web::from_config(config) {
        channels.push(Arc::new(c));
    }
    channels
}
