//! The outbound half of a channel: how a reply reaches the user. The pipeline depends on this
//! and nothing else of the channels; the channels (`crate::channels`) implement it and add
//! their inbound half (routes that hand messages to the pipeline), so neither imports the other.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::inbound::Inbound;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The web chat's channel name. The pipeline needs it because the web edge counts that
/// channel's messages against the limits itself (it answers 429 with quota headers).
pub const WEB: &str = "web";

/// Why a reply could not be delivered. The texts carry no URL: a Telegram URL holds the bot
/// token.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("platform refused the message: HTTP {status}")]
    Refused { status: u16 },
    #[error("platform unreachable: {0}")]
    Unreachable(String),
    #[error("the recipient is gone (closed stream or expired interaction)")]
    Gone,
    /// The platform kept asking to slow down past the retry budget (or asked for a longer
    /// wait than the budget has left).
    #[error("platform throttled the message (HTTP {status}) past the retry budget")]
    Throttled { status: u16 },
}

/// What a message to the user is: an interim note (onboarding, "waking up") or the final
/// answer to their message (web chat closes the stream after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Note,
    Final,
}

/// A way to send to the users of one platform.
pub trait Channel: Send + Sync + 'static {
    /// Name used in session keys, connection rows, dedupe keys and metric labels.
    fn name(&self) -> &'static str;
    /// Most characters of one platform message; longer replies are split.
    fn max_message_chars(&self) -> usize;
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
