//! Discord direct messages over the Gateway websocket.
//!
//! Discord delivers plain DMs to a bot only over the Gateway, and every connection of the bot
//! receives every DM, so exactly one replica holds it: the holder of the Lease
//! `--discord-gateway-lease-name` (kube-lease-manager). The others wait; when the holder
//! stops (it releases the Lease) or dies (the Lease expires after
//! `--discord-gateway-lease-seconds`), one of them connects. Should two be connected for a
//! moment (a holder that has not yet noticed it lost the Lease), both receive the same
//! message; its id is the dedupe key, so it is answered once.
//!
//! A clean stop hands the session over instead of ending it: the holder closes with a
//! resumable code and leaves the session id, sequence and resume URL in an annotation of the
//! Lease; the next holder resumes it, and Discord replays the DMs that arrived in between
//! (after a crash the next holder identifies afresh: DMs sent meanwhile are not replayed).
//!
//! The connection is twilight-gateway's `Shard` (HELLO, IDENTIFY, heartbeats, RESUME and
//! reconnects per Discord's Gateway v10, JSON encoding, no compression); its events are
//! read here as raw JSON and only `READY` and `MESSAGE_CREATE` are looked at. A DM from a
//! person becomes an [`Inbound`] handed to [`Core::accept`], like a webhook's message.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use twilight_gateway::{CloseFrame, ConfigBuilder, Intents, Message, Session, Shard, ShardId};

use super::{NAME, is_snowflake};
use crate::config::{Config, Secret};
use crate::inbound::Inbound;
use crate::lease::{self, Leader, lost};
use crate::pipeline::Core;

/// DMs and their text; no guild intents, so guild messages are not even sent.
pub const INTENTS: Intents = Intents::DIRECT_MESSAGES.union(Intents::MESSAGE_CONTENT);
/// After Discord closed the connection for good (bad token, intents not allowed), try again
/// after this, in case the Developer Portal setting was fixed meanwhile.
const FATAL_RETRY: Duration = Duration::from_secs(60);
/// Attempts at recording one DM (nobody redelivers it if this replica gives up).
const DELIVERY_ATTEMPTS: u32 = 6;
/// Annotation of the Lease carrying a session handed over by a holder that stopped.
pub const HANDOVER_ANNOTATION: &str = "clawdbot.io/discord-gateway-session";
/// A handed-over session older than this is not tried: Discord keeps a disconnected session
/// resumable only for a short while (a failed resume costs a round trip, then an identify).
const HANDOVER_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// The Gateway connection of one replica: candidate for the Lease, connected while it holds it.
pub struct Gateway {
    kube: kube::Client,
    token: Secret,
    url: String,
    leader: Leader,
}

impl Gateway {
    /// Present when the bot token is configured.
    pub fn from_config(config: &Config, kube: kube::Client) -> Option<Self> {
        let token = config.discord.bot_token.clone()?;
        let leader = Leader::new(
            kube.clone(),
            &config.discord.gateway_lease_name,
            &config.kube.lease_namespace,
            lease::identity(config),
            config.discord.gateway_lease_seconds,
        );
        Some(Gateway {
            kube,
            token,
            url: config.discord.gateway_url.trim_end_matches('/').to_string(),
            leader,
        })
    }

    /// Competes for the Lease and holds the connection while leading, until `stop`; then
    /// disconnects and releases the Lease so that another replica connects at once.
    pub async fn run(self, core: Arc<Core>, stop: CancellationToken) {
        self.leader
            .run(&stop, |mut leading| {
                let (this, core, stop) = (&self, &core, &stop);
                async move { this.hold(core, &mut leading, stop).await }
            })
            .await;
    }

    /// Holds the Gateway connection until the Lease is lost or `stop`.
    async fn hold(
        &self,
        core: &Arc<Core>,
        leading: &mut watch::Receiver<bool>,
        stop: &CancellationToken,
    ) {
        tracing::info!(identity = %self.leader.identity, "holding the discord gateway lease; connecting");
        core.metrics.discord_gateway_connected.set(1);
        let deliveries = TaskTracker::new();
        let mut handover = self.take_handover().await;
        loop {
            let mut config = ConfigBuilder::new(self.token.expose().to_string(), INTENTS)
                .proxy_url(self.url.clone());
            let mut events = Events::default();
            if let Some(h) = handover.take() {
                tracing::info!(
                    sequence = h.sequence,
                    "resuming the discord session of the previous holder"
                );
                config = config
                    .session(Session::new(h.sequence, h.session_id))
                    .resume_url(h.resume_url);
                events.bot_user = h.bot_user;
            }
            let mut shard = Shard::with_config(ShardId::ONE, config.build());
            let end = loop {
                tokio::select! {
                    _ = stop.cancelled() => break End::Stop,
                    _ = lost(leading) => break End::Lost,
                    item = shard.next() => match item {
                        Some(Ok(Message::Text(json))) => {
                            if let Some(msg) = events.handle(&json) {
                                deliveries.spawn(deliver(core.clone(), msg));
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            // The shard reconnects (resuming when it can) on the next poll.
                            tracing::info!(code = ?frame.map(|f| f.code), "discord gateway connection closed");
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "discord gateway error"),
                        None => break End::Fatal,
                    }
                }
            };
            match end {
                End::Stop => {
                    // Resumable: Discord keeps the session and buffers what arrives for it.
                    close(&mut shard, CloseFrame::RESUME).await;
                    if let Some(h) = Handover::of(&shard, events.bot_user) {
                        self.put_handover(&h).await;
                    }
                    break;
                }
                End::Lost => {
                    // Another replica holds the Lease and has its own session.
                    close(&mut shard, CloseFrame::NORMAL).await;
                    break;
                }
                End::Fatal => {}
            }
            tracing::error!(
                retry_in = ?FATAL_RETRY,
                "discord closed the gateway for good: check DISCORD_BOT_TOKEN and that the \
                 Message Content intent is enabled for the bot"
            );
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = lost(leading) => break,
                _ = tokio::time::sleep(FATAL_RETRY) => {}
            }
        }
        core.metrics.discord_gateway_connected.set(0);
        tracing::info!(identity = %self.leader.identity, "disconnected from the discord gateway");
        deliveries.close();
        if tokio::time::timeout(Duration::from_secs(5), deliveries.wait())
            .await
            .is_err()
        {
            tracing::warn!("discord DMs still being recorded when the gateway stopped");
        }
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.kube.clone(), &self.leader.namespace)
    }

    fn patch_params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(lease::field_manager(&self.leader.identity)),
            ..Default::default()
        }
    }

    /// The session the previous holder left in the Lease, if fresh; removed from the Lease
    /// either way (it is good for one resume).
    async fn take_handover(&self) -> Option<Handover> {
        let leases = self.leases();
        let raw = match leases.get_opt(&self.leader.name).await {
            Ok(lease) => lease?.metadata.annotations?.remove(HANDOVER_ANNOTATION)?,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the discord gateway lease");
                return None;
            }
        };
        let clear = json!({"metadata": {"annotations": {HANDOVER_ANNOTATION: null}}});
        if let Err(e) = leases
            .patch(
                &self.leader.name,
                &self.patch_params(),
                &Patch::Merge(&clear),
            )
            .await
        {
            tracing::warn!(error = %e, "could not clear the handed-over discord session");
        }
        match serde_json::from_str::<Handover>(&raw) {
            Ok(h) if h.is_fresh(Utc::now()) => Some(h),
            Ok(_) => {
                tracing::info!("the handed-over discord session is too old to resume");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable handed-over discord session");
                None
            }
        }
    }

    /// Leaves a session in the Lease for the next holder.
    async fn put_handover(&self, handover: &Handover) {
        let Ok(value) = serde_json::to_string(handover) else {
            return;
        };
        let patch = json!({"metadata": {"annotations": {HANDOVER_ANNOTATION: value}}});
        match self
            .leases()
            .patch(
                &self.leader.name,
                &self.patch_params(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => tracing::info!(
                sequence = handover.sequence,
                "discord session handed over in the lease"
            ),
            Err(e) => tracing::warn!(error = %e, "could not hand the discord session over"),
        }
    }
}

/// How a connection ended.
enum End {
    /// This replica is stopping: hand the session over.
    Stop,
    /// The Lease went to another replica.
    Lost,
    /// Discord closed the gateway for good.
    Fatal,
}

/// A Gateway session left in the Lease by a holder that stopped cleanly. The session id is
/// useless without the bot token, which is never written anywhere.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    pub session_id: String,
    pub sequence: u64,
    pub resume_url: String,
    pub bot_user: Option<String>,
    pub at: DateTime<Utc>,
}

impl Handover {
    /// The shard's session, if it has one to resume.
    fn of(shard: &Shard, bot_user: Option<String>) -> Option<Self> {
        let (session, resume_url) = (shard.session()?, shard.resume_url()?);
        Some(Handover {
            session_id: session.id().to_string(),
            sequence: session.sequence(),
            resume_url: resume_url.to_string(),
            bot_user,
            at: Utc::now(),
        })
    }

    pub fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        (now - self.at)
            .to_std()
            .is_ok_and(|age| age < HANDOVER_MAX_AGE)
    }
}

/// Closes the connection with `frame` (1000 ends the session, 4000 keeps it resumable),
/// waiting briefly for the close to be acknowledged; the shard is dropped after it so it does
/// not reconnect.
async fn close(shard: &mut Shard, frame: CloseFrame<'static>) {
    shard.close(frame);
    let acknowledged = async {
        while let Some(item) = shard.next().await {
            if matches!(item, Ok(Message::Close(_))) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), acknowledged).await;
}

/// Records a DM through the pipeline, retrying while this replica is overloaded or a store
/// is briefly unavailable: unlike a webhook, nobody redelivers it.
async fn deliver(core: Arc<Core>, msg: Inbound) {
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=DELIVERY_ATTEMPTS {
        match core.accept(msg.clone()).await {
            Ok(_) => return,
            Err(e) if attempt < DELIVERY_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, category = e.category(), "could not record a discord DM; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, category = e.category(), message = %msg.external_id, "dropping a discord DM that could not be recorded");
            }
        }
    }
}

/// What the connection has learned so far: the bot's own user id, from `READY`.
#[derive(Default)]
struct Events {
    bot_user: Option<String>,
}

impl Events {
    /// Reads one Gateway payload; returns the DM to deliver, if it is one.
    fn handle(&mut self, json: &str) -> Option<Inbound> {
        match Dispatch::parse(json) {
            Ok(Dispatch::Ready { user_id }) => {
                tracing::info!(bot_user = %user_id, "connected to the discord gateway");
                self.bot_user = Some(user_id);
                None
            }
            Ok(Dispatch::MessageCreate(message)) => {
                match message.to_inbound(self.bot_user.as_deref()) {
                    Ok(inbound) => Some(inbound),
                    Err(skip) => {
                        tracing::debug!(reason = ?skip, message = %message.id, "ignoring a discord message");
                        None
                    }
                }
            }
            Ok(Dispatch::Other) => None,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable discord gateway payload");
                None
            }
        }
    }
}

/// The Gateway payloads this module reads.
#[derive(Debug)]
pub enum Dispatch {
    Ready { user_id: String },
    MessageCreate(GatewayMessage),
    Other,
}

#[derive(Deserialize)]
struct Envelope {
    op: u8,
    #[serde(default)]
    t: Option<String>,
    #[serde(default)]
    d: Value,
}

impl Dispatch {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        let envelope: Envelope = serde_json::from_str(json)?;
        if envelope.op != 0 {
            return Ok(Dispatch::Other);
        }
        match envelope.t.as_deref() {
            Some("READY") => {
                #[derive(Deserialize)]
                struct Ready {
                    user: User,
                }
                let ready: Ready = serde_json::from_value(envelope.d)?;
                Ok(Dispatch::Ready {
                    user_id: ready.user.id,
                })
            }
            Some("MESSAGE_CREATE") => {
                Ok(Dispatch::MessageCreate(serde_json::from_value(envelope.d)?))
            }
            _ => Ok(Dispatch::Other),
        }
    }
}

/// The fields of a Discord message object that a DM needs.
#[derive(Clone, Debug, Deserialize)]
pub struct GatewayMessage {
    pub id: String,
    pub channel_id: String,
    /// Present for messages in a guild.
    #[serde(default)]
    pub guild_id: Option<String>,
    pub author: User,
    /// Empty without the MESSAGE_CONTENT intent, or for an attachment alone.
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    /// Message type: 0 is a plain message, 19 a reply; the rest are system notices.
    #[serde(default, rename = "type")]
    pub kind: u8,
}

#[derive(Clone, Debug, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub bot: bool,
    #[serde(default)]
    pub system: bool,
}

/// Why a `MESSAGE_CREATE` is not handed to the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// In a guild channel: only DMs come this way (guilds use `/ask`).
    Guild,
    /// From a bot, a system user, or this bot itself (its own replies come back as events).
    Bot,
    /// A system notice (pin, call, ...), not something the user wrote.
    NotText,
    /// No text (an attachment or sticker alone).
    Empty,
    /// Ids that are not snowflakes.
    Malformed,
}

impl GatewayMessage {
    /// The DM as the pipeline takes it, or why it is ignored. Sender and session peer are the
    /// author's user id, as on the interactions path; replies go to the DM channel.
    pub fn to_inbound(&self, bot_user: Option<&str>) -> Result<Inbound, Skip> {
        if self.guild_id.is_some() {
            return Err(Skip::Guild);
        }
        if self.author.bot || self.author.system || bot_user == Some(self.author.id.as_str()) {
            return Err(Skip::Bot);
        }
        if !matches!(self.kind, 0 | 19) {
            return Err(Skip::NotText);
        }
        if self.content.trim().is_empty() {
            return Err(Skip::Empty);
        }
        if ![&self.id, &self.channel_id, &self.author.id]
            .iter()
            .all(|id| is_snowflake(id))
        {
            return Err(Skip::Malformed);
        }
        Ok(Inbound {
            channel: NAME.to_string(),
            external_id: self.id.clone(),
            sender_id: self.author.id.clone(),
            conversation: "dm".to_string(),
            peer: self.author.id.clone(),
            text: self.content.clone(),
            reply_to: json!({"channel_id": self.channel_id}),
            sent_at: self.timestamp.unwrap_or_else(Utc::now),
            lang: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "1170000000000000001";

    /// A MESSAGE_CREATE as Discord sends it for a DM (fields trimmed to the usual ones).
    fn dm_payload(author: Value, content: &str) -> String {
        json!({
            "op": 0, "s": 3, "t": "MESSAGE_CREATE",
            "d": {
                "id": "1180000000000000042", "channel_id": "1180000000000000007", "type": 0,
                "content": content, "timestamp": "2026-11-25T10:00:00.123000+00:00",
                "edited_timestamp": null, "tts": false, "mention_everyone": false,
                "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
                "pinned": false, "flags": 0, "nonce": "1180000000000000040",
                "author": author
            }
        })
        .to_string()
    }

    fn person() -> Value {
        json!({"id": "80351110224678912", "username": "alice", "discriminator": "0",
               "global_name": "Alice", "avatar": null, "public_flags": 0})
    }

    fn message(json: &str) -> GatewayMessage {
        match Dispatch::parse(json).expect("parses") {
            Dispatch::MessageCreate(m) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn a_dm_becomes_an_inbound_keyed_like_the_interactions_path() {
        let inbound = message(&dm_payload(person(), "hello there"))
            .to_inbound(Some(BOT))
            .expect("a DM");
        assert_eq!(
            inbound,
            Inbound {
                channel: "discord".into(),
                external_id: "1180000000000000042".into(),
                sender_id: "80351110224678912".into(),
                conversation: "dm".into(),
                peer: "80351110224678912".into(),
                text: "hello there".into(),
                reply_to: json!({"channel_id": "1180000000000000007"}),
                sent_at: "2026-11-25T10:00:00.123Z".parse().expect("time"),
                lang: None,
            }
        );
        assert_eq!(
            inbound.session_key().to_string(),
            "discord:dm:80351110224678912"
        );
    }

    #[test]
    fn guild_bot_system_and_empty_messages_are_skipped() {
        let mut guild = message(&dm_payload(person(), "hi"));
        guild.guild_id = Some("900000000000000001".into());
        assert_eq!(guild.to_inbound(Some(BOT)), Err(Skip::Guild));

        let mut other_bot = person();
        other_bot["bot"] = json!(true);
        assert_eq!(
            message(&dm_payload(other_bot, "beep")).to_inbound(Some(BOT)),
            Err(Skip::Bot)
        );
        // Our own reply, echoed back to us, even if the flag were missing.
        let own = json!({"id": BOT, "username": "clawdbot"});
        assert_eq!(
            message(&dm_payload(own, "echo")).to_inbound(Some(BOT)),
            Err(Skip::Bot)
        );
        let mut system = person();
        system["system"] = json!(true);
        assert_eq!(
            message(&dm_payload(system, "notice")).to_inbound(Some(BOT)),
            Err(Skip::Bot)
        );

        let mut pinned = message(&dm_payload(person(), "pinned a message"));
        pinned.kind = 6;
        assert_eq!(pinned.to_inbound(Some(BOT)), Err(Skip::NotText));
        let mut reply = message(&dm_payload(person(), "a reply"));
        reply.kind = 19;
        assert!(reply.to_inbound(Some(BOT)).is_ok());

        assert_eq!(
            message(&dm_payload(person(), "  ")).to_inbound(Some(BOT)),
            Err(Skip::Empty)
        );
        let mut odd = message(&dm_payload(person(), "hi"));
        odd.channel_id = "../guilds".into();
        assert_eq!(odd.to_inbound(Some(BOT)), Err(Skip::Malformed));
    }

    #[test]
    fn ready_and_other_payloads() {
        let ready = json!({"op": 0, "s": 1, "t": "READY", "d": {
            "v": 10, "user": {"id": BOT, "username": "clawdbot", "bot": true},
            "guilds": [], "session_id": "abc", "resume_gateway_url": "wss://x",
            "application": {"id": BOT, "flags": 0}}});
        assert!(matches!(
            Dispatch::parse(&ready.to_string()),
            Ok(Dispatch::Ready { user_id }) if user_id == BOT
        ));
        for other in [
            json!({"op": 11}),
            json!({"op": 10, "d": {"heartbeat_interval": 41250}}),
            json!({"op": 0, "s": 2, "t": "TYPING_START", "d": {}}),
        ] {
            assert!(matches!(
                Dispatch::parse(&other.to_string()),
                Ok(Dispatch::Other)
            ));
        }
        assert!(Dispatch::parse(r#"{"op":0,"t":"MESSAGE_CREATE","d":{}}"#).is_err());
    }

    #[test]
    fn the_bot_user_from_ready_filters_its_own_messages() {
        let mut events = Events::default();
        let own = json!({"id": BOT, "username": "clawdbot"});
        assert!(events.handle(&dm_payload(own.clone(), "echo")).is_some());
        let ready = json!({"op": 0, "s": 1, "t": "READY", "d": {"user": {"id": BOT}}});
        assert!(events.handle(&ready.to_string()).is_none());
        assert!(events.handle(&dm_payload(own, "echo")).is_none());
        assert!(events.handle(&dm_payload(person(), "hi")).is_some());
        assert!(events.handle("not json").is_none());
    }

    #[test]
    fn a_handover_is_tried_only_while_fresh() {
        let at: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().expect("time");
        let h = Handover {
            session_id: "abc".into(),
            sequence: 42,
            resume_url: "wss://gateway-us-east1-b.discord.gg".into(),
            bot_user: Some(BOT.into()),
            at,
        };
        let back: Handover =
            serde_json::from_str(&serde_json::to_string(&h).expect("json")).expect("parses");
        assert_eq!(back, h);
        assert!(h.is_fresh(at + chrono::Duration::seconds(30)));
        assert!(!h.is_fresh(at + chrono::Duration::minutes(6)));
    }

    #[test]
    fn each_replica_writes_the_lease_as_its_own_field_manager() {
        assert_eq!(
            lease::field_manager("router-7d9f"),
            "clawdbot-router-router-7d9f"
        );
    }

    #[test]
    fn intents_are_direct_messages_and_message_content() {
        assert_eq!(INTENTS.bits(), (1 << 12) | (1 << 15));
    }
}
