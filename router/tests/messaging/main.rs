//! The router's messaging suites, one test binary for six (most of a test binary's build time
//! here is its link, about 10 s each): the platforms' sending half, their webhooks, the
//! pipeline, Discord's gateway, Telegram's long polling, the real lite agent. Each suite is a
//! module (`cargo test -p clawdbot-router --test messaging pipeline::`); every test has a
//! database, Redis prefix and namespace of its own, so tests of different suites run side by
//! side as those of one suite do. The log-capturing suites (`api_logs`, `billing_logs`) stay
//! binaries of their own: each installs a process-wide subscriber.

#[path = "../support/mod.rs"]
mod support;

mod channel_sends;
mod channels;
mod discord_gateway;
mod lite_agent;
mod pipeline;
mod telegram_updates;
