//! Discord DMs through the Gateway websocket: a local Gateway speaking Discord's wire format,
//! the fake REST API, the real Postgres, Redis and API server (the Lease), and a
//! gateway-protocol agent.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use clawdbot_api::Plan;
use clawdbot_router::channels::discord::gateway::HANDOVER_ANNOTATION;
use clawdbot_router::{Config, Secret};
use clawdbot_testkit::fake_discord_gateway::{
    FakeDiscordGateway, GatewayConnection, dm_message, guild_message, own_message,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::{DISCORD_BOT_TOKEN, Replica, TestAgent, World};

const T: Duration = Duration::from_secs(20);
/// DIRECT_MESSAGES and MESSAGE_CONTENT.
const DM_INTENTS: u64 = (1 << 12) | (1 << 15);
const LEASE: &str = "clawdbot-router-discord-gateway";
const USER: &str = "80351110224678912";
const DM: &str = "1180000000000000007";

async fn start_gateway() -> FakeDiscordGateway {
    FakeDiscordGateway::start(DISCORD_BOT_TOKEN, DM_INTENTS, Duration::from_millis(500)).await
}

/// The world's config with the bot token, this Gateway and a short Lease in the test namespace.
fn gateway_config(w: &World, gateway: &FakeDiscordGateway, identity: &str) -> Config {
    let mut c = w.config();
    c.discord.bot_token = Some(Secret::new(DISCORD_BOT_TOKEN));
    c.discord.gateway_url = gateway.url();
    c.kube.lease_namespace = w.namespace.clone();
    c.kube.lease_identity = Some(identity.to_string());
    // Renewed 2 s before it runs out (a third of it): a renewal slowed by a busy API server
    // does not let the standby take it (with 2 s the margin was 1 s).
    c.discord.gateway_lease_seconds = 6;
    c
}

fn live(connections: &[GatewayConnection]) -> Vec<GatewayConnection> {
    connections
        .iter()
        .filter(|c| c.is_live())
        .cloned()
        .collect()
}

async fn counter(replica: &Replica, outcome: &str) -> bool {
    replica.metrics().await.contains(&format!(
        "router_messages_total{{channel=\"discord\",outcome=\"{outcome}\"}} 1"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_from_people_are_answered_once_through_the_rest_api() {
    let w = World::new().await;
    let gateway = start_gateway().await;
    let r = w
        .start_router(gateway_config(&w, &gateway, "router-a"))
        .await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    w.connect("discord", USER, tenant.user).await;

    // The replica identifies with the bot token and exactly the DM and message-content
    // intents, and keeps the connection alive with heartbeats.
    let conn = gateway
        .wait_for("an identified connection that heartbeats", T, |c| {
            c.iter().find(|c| c.is_live() && c.heartbeats > 0).cloned()
        })
        .await;
    let identify = conn.identify.expect("identify");
    assert_eq!(
        identify["token"]
            .as_str()
            .map(|t| t.trim_start_matches("Bot ")),
        Some(DISCORD_BOT_TOKEN)
    );
    assert_eq!(identify["intents"], json!(DM_INTENTS));

    // A DM from a connected user reaches the agent; the answer goes to the DM channel.
    gateway.dispatch(
        "MESSAGE_CREATE",
        &dm_message("1180000000000000101", DM, USER, "hello over DM"),
    );
    let sent = w.discord.wait_for_channel_messages(DM, 1, T).await;
    assert_eq!(sent, vec!["echo #1: hello over DM"]);
    let calls = agent.calls();
    assert_eq!(calls[0].session_key, format!("discord:dm:{USER}"));
    assert_eq!(calls[0].text, "hello over DM");
    let post = w
        .discord
        .requests()
        .into_iter()
        .find(|r| r.path == format!("/channels/{DM}/messages"))
        .expect("post recorded");
    assert_eq!(
        post.authorization.as_deref(),
        Some(format!("Bot {DISCORD_BOT_TOKEN}").as_str())
    );

    // None of these is answered: the bot's own reply echoed back, the same message again,
    // a guild message, and a DM from another bot.
    gateway.dispatch(
        "MESSAGE_CREATE",
        &own_message("1180000000000000102", DM, &sent[0]),
    );
    gateway.dispatch(
        "MESSAGE_CREATE",
        &dm_message("1180000000000000101", DM, USER, "hello over DM"),
    );
    gateway.dispatch(
        "MESSAGE_CREATE",
        &guild_message(
            "1180000000000000103",
            "900000000000000002",
            USER,
            "hello guild",
        ),
    );
    let mut from_bot = dm_message("1180000000000000104", DM, "1190000000000000001", "beep");
    from_bot["author"]["bot"] = json!(true);
    gateway.dispatch("MESSAGE_CREATE", &from_bot);
    clawdbot_testkit::wait_for("the duplicate counted", T, || async {
        counter(&r, "duplicate").await.then_some(())
    })
    .await;

    // The next DM is the agent's second turn: everything dispatched before it was dropped.
    // The agent takes its time, so the typing indicator goes to the DM channel.
    // Well past the typing delay (800 ms), so the indicator is sent before the reply even when
    // the machine is busy.
    agent.state.delay_ms.store(3000, Ordering::Relaxed);
    gateway.dispatch(
        "MESSAGE_CREATE",
        &dm_message("1180000000000000105", DM, USER, "and again"),
    );
    let sent = w.discord.wait_for_channel_messages(DM, 2, T).await;
    assert_eq!(sent[1], "echo #2: and again");
    assert_eq!(agent.calls().len(), 2);
    assert!(
        w.discord
            .requests()
            .iter()
            .any(|r| r.path == format!("/channels/{DM}/typing")),
        "typing indicator"
    );
    assert!(w.discord.channel_messages("900000000000000002").is_empty());
    assert_eq!(
        w.count("SELECT count(*) FROM inbound_messages WHERE channel = 'discord'")
            .await,
        2
    );

    // An unknown sender gets the onboarding link, without an agent call.
    let stranger_dm = "1180000000000000008";
    gateway.dispatch(
        "MESSAGE_CREATE",
        &dm_message(
            "1180000000000000106",
            stranger_dm,
            "80351110224678913",
            "hi?",
        ),
    );
    let sent = w.discord.wait_for_channel_messages(stranger_dm, 1, T).await;
    assert!(sent[0].contains("https://clawdbot.test/signup"), "{sent:?}");
    assert_eq!(agent.calls().len(), 2);

    // Discord asks for a reconnect: the client resumes its session at the resume URL, and
    // a DM sent meanwhile is replayed and answered.
    agent.state.delay_ms.store(0, Ordering::Relaxed);
    gateway.reconnect();
    gateway.dispatch(
        "MESSAGE_CREATE",
        &dm_message("1180000000000000107", DM, USER, "after the reconnect"),
    );
    let resumed = gateway
        .wait_for("a resumed connection", T, |c| {
            c.iter()
                .find(|c| c.resume.is_some() && c.is_live())
                .cloned()
        })
        .await;
    assert_eq!(resumed.session_id, conn.session_id);
    let sent = w.discord.wait_for_channel_messages(DM, 3, T).await;
    assert_eq!(sent[2], "echo #3: after the reconnect");
    assert_eq!(
        gateway
            .connections()
            .iter()
            .filter(|c| c.identify.is_some())
            .count(),
        1
    );

    // A clean stop keeps the session resumable (close 4000) and leaves it in the Lease for
    // the next holder.
    r.shutdown().await;
    let closed = gateway.connections();
    assert!(closed.iter().all(|c| !c.open), "{closed:#?}");
    assert_eq!(closed.last().and_then(|c| c.close_code), Some(4000));
    let lease = Api::<Lease>::namespaced(w.kube.clone(), &w.namespace)
        .get(LEASE)
        .await
        .expect("lease");
    let handover: serde_json::Value = serde_json::from_str(
        &lease.metadata.annotations.expect("annotations")[HANDOVER_ANNOTATION],
    )
    .expect("handover json");
    assert_eq!(handover["session_id"].as_str(), conn.session_id.as_deref());
    assert_eq!(handover["resume_url"], json!(gateway.url()));
    assert!(handover["sequence"].as_u64() >= Some(8), "{handover}");
}

/// The Lease's holder and renew time, once it has a holder.
async fn lease_state(leases: &Api<Lease>) -> Option<(String, String)> {
    let lease = leases.get_opt(LEASE).await.ok()??;
    let spec = lease.spec?;
    Some((spec.holder_identity?, format!("{:?}", spec.renew_time?)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_holds_the_gateway_and_another_takes_over() {
    let w = World::new().await;
    let gateway = start_gateway().await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    w.connect("discord", USER, tenant.user).await;
    let mut replicas = vec![
        (
            "router-a",
            w.start_router(gateway_config(&w, &gateway, "router-a"))
                .await,
        ),
        (
            "router-b",
            w.start_router(gateway_config(&w, &gateway, "router-b"))
                .await,
        ),
    ];
    let leases: Api<Lease> = Api::namespaced(w.kube.clone(), &w.namespace);

    // One connection; the Lease names its replica. The holder renews twice (the other
    // replica looked at the Lease in between) and still only one replica ever connected.
    gateway
        .wait_for("a live connection", T, |c| {
            (!live(c).is_empty()).then_some(())
        })
        .await;
    let (holder, first_renewal) =
        clawdbot_testkit::wait_for("a lease holder", T, || lease_state(&leases)).await;
    let mut renewals = vec![first_renewal];
    while renewals.len() < 3 {
        let (h, renewed) = clawdbot_testkit::wait_for("a lease renewal", T, || async {
            lease_state(&leases)
                .await
                .filter(|(_, r)| Some(r) != renewals.last())
        })
        .await;
        assert_eq!(h, holder);
        renewals.push(renewed);
    }
    assert_eq!(
        gateway.connections().len(),
        1,
        "{:#?}",
        gateway.connections()
    );
    for (name, replica) in &replicas {
        let connected = if *name == holder { 1 } else { 0 };
        assert!(
            replica
                .metrics()
                .await
                .contains(&format!("router_discord_gateway_connected {connected}")),
            "{name}"
        );
    }

    // Someone else takes the Lease: the holder notices at its next renewal (within 4 s) and
    // disconnects; when that lease runs out, a replica connects again.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"holderIdentity": "intruder", "renewTime": now,
                                           "leaseDurationSeconds": 10}}),
            ),
        )
        .await
        .expect("take the lease");
    gateway
        .wait_for("the holder to disconnect", T, |c| {
            (!c[0].open).then_some(())
        })
        .await;
    assert!(live(&gateway.connections()).is_empty());
    gateway
        .wait_for("a connection after the intruder's lease ran out", T, |c| {
            (c.len() == 2 && c[1].is_live()).then_some(())
        })
        .await;
    let (holder, _) = clawdbot_testkit::wait_for("a replica holding the lease", T, || async {
        lease_state(&leases).await.filter(|(h, _)| h != "intruder")
    })
    .await;
    // The lost holder ended its session (another holder has its own): a fresh identify.
    let connections = gateway.connections();
    assert_eq!(connections[0].close_code, Some(1000));
    assert!(connections[1].identify.is_some() && connections[1].resume.is_none());

    // A clean stop of the holder releases the Lease: the other replica connects.
    let at = replicas
        .iter()
        .position(|(name, _)| *name == holder)
        .expect("holder is a replica");
    let (_, stopped) = replicas.remove(at);
    stopped.shutdown().await;
    // A DM sent while nobody is connected waits in the session at Discord.
    gateway.dispatch(
        "MESSAGE_CREATE",
        &dm_message("1180000000000000201", DM, USER, "anyone there?"),
    );
    let (standby, replica) = replicas.pop().expect("the other replica");
    gateway
        .wait_for("the other replica to connect", T, |c| {
            (c.len() == 3 && c[2].is_live()).then_some(())
        })
        .await;
    let connections = gateway.connections();
    assert_eq!(live(&connections).len(), 1);
    let (holder, _) = clawdbot_testkit::wait_for("the new holder in the lease", T, || async {
        lease_state(&leases).await.filter(|(h, _)| h == standby)
    })
    .await;
    assert_eq!(holder, standby);
    // It resumed the session the stopped holder handed over; Discord replayed the DM.
    assert_eq!(connections[1].close_code, Some(4000));
    let resume = connections[2]
        .resume
        .as_ref()
        .expect("a resume, not an identify");
    assert_eq!(
        resume["session_id"].as_str(),
        connections[1].session_id.as_deref()
    );
    assert!(connections[2].identify.is_none());
    let sent = w.discord.wait_for_channel_messages(DM, 1, T).await;
    assert_eq!(sent, vec!["echo #1: anyone there?"]);

    // And new DMs arrive through it.
    gateway.dispatch(
        "MESSAGE_CREATE",
        &dm_message("1180000000000000202", DM, USER, "still there?"),
    );
    let sent = w.discord.wait_for_channel_messages(DM, 2, T).await;
    assert_eq!(sent[1], "echo #2: still there?");
    replica.shutdown().await;
}
