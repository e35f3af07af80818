//! The channels. Each is one module implementing [`Routes`], its webhook routes (parse and
//! verify the platform's wire format, hand [`crate::inbound::Inbound`] messages to the
//! pipeline), and [`Channel`] (`crate::outbound`), its way of sending replies; Telegram,
//! WhatsApp and Discord send through one retry helper ([`retry`]). [`build`] is the one place
//! that lists them.

use std::sync::Arc;

use crate::config::Config;
use crate::outbound::Channel;
use crate::pipeline::Core;

pub mod discord;
pub mod retry;
pub mod telegram;
pub mod telegram_updates;
pub mod web;
pub mod whatsapp;

/// A channel with its inbound half: the HTTP routes by which the platform's messages reach
/// the pipeline. The sending half is [`Channel`], all the pipeline knows of a channel.
pub trait Routes: Channel {
    /// The channel's HTTP routes (webhooks), ready to merge into the app.
    fn routes(self: Arc<Self>, core: Arc<Core>) -> axum::Router;
}

/// Every channel enabled by `config`. Adding a channel: a module and one line here.
pub fn build(config: &Config, http: &reqwest::Client) -> Vec<Arc<dyn Routes>> {
    let mut channels: Vec<Arc<dyn Routes>> = Vec::new();
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
