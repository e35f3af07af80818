//! A local Discord Gateway (v10, JSON encoding, no compression) speaking the documented wire
//! format, recording every connection.
//!
//! Per connection: `HELLO` (op 10) with the configured heartbeat interval; heartbeats (op 1)
//! are answered with op 11. `IDENTIFY` (op 2) must carry the bot token (`Bot ` prefix or not)
//! and at least the required intents, else the connection is closed with 4004 or 4014 as
//! Discord does; then `READY` (op 0) with a new `session_id` and a `resume_gateway_url`
//! pointing back at this server. `RESUME` (op 6) of a live session replays the dispatches
//! after the given sequence and answers `RESUMED`; of an unknown one, op 9 (not resumable).
//!
//! [`FakeDiscordGateway::dispatch`] sends an event to every session, as Discord does to every
//! connection of a bot (a disconnected session buffers it for a resume);
//! [`FakeDiscordGateway::reconnect`] asks every connection to reconnect (op 7).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::fake_chat::{Served, serve};

/// The bot's own user id in `READY`.
pub const BOT_USER_ID: &str = "1170000000000000001";

/// One websocket connection the gateway accepted.
#[derive(Clone, Debug, Default)]
pub struct GatewayConnection {
    /// Order of arrival, from 0.
    pub index: usize,
    /// Still connected.
    pub open: bool,
    /// The `d` of its IDENTIFY, if it sent one.
    pub identify: Option<Value>,
    /// The `d` of its RESUME, if it sent one.
    pub resume: Option<Value>,
    /// The session it identified or resumed.
    pub session_id: Option<String>,
    /// Heartbeats received (each answered).
    pub heartbeats: u32,
    /// Close code: the client's, or the one this server closed with.
    pub close_code: Option<u16>,
}

impl GatewayConnection {
    /// Identified or resumed, and still connected.
    pub fn is_live(&self) -> bool {
        self.open && self.session_id.is_some()
    }
}

enum Out {
    Text(String),
    Close(u16, &'static str),
}

struct Session {
    /// Last sequence number sent.
    seq: u64,
    /// Every dispatch of the session, for resumes.
    sent: Vec<(u64, String)>,
    /// The connection now attached, by index.
    attached: Option<(usize, mpsc::UnboundedSender<Out>)>,
}

impl Session {
    /// Assigns the next sequence number to a dispatch and sends it if attached.
    fn dispatch(&mut self, t: &str, d: &Value) {
        self.seq += 1;
        let payload = json!({"op": 0, "s": self.seq, "t": t, "d": d}).to_string();
        self.sent.push((self.seq, payload.clone()));
        if let Some((_, tx)) = &self.attached {
            let _ = tx.send(Out::Text(payload));
        }
    }
}

#[derive(Default)]
struct Inner {
    connections: Vec<GatewayConnection>,
    sessions: HashMap<String, Session>,
    next_session: u64,
}

struct GatewayState {
    token: String,
    required_intents: u64,
    heartbeat_interval_ms: u64,
    url: Mutex<String>,
    inner: Mutex<Inner>,
    changed: Notify,
}

impl GatewayState {
    fn update<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let out = f(&mut self.inner.lock().expect("gateway lock"));
        self.changed.notify_waiters();
        out
    }
}

/// The Discord Gateway.
pub struct FakeDiscordGateway {
    state: Arc<GatewayState>,
    served: Served,
}

impl FakeDiscordGateway {
    /// Starts a gateway that accepts `token` and requires `required_intents` in IDENTIFY,
    /// asking for a heartbeat every `heartbeat_interval`.
    pub async fn start(token: &str, required_intents: u64, heartbeat_interval: Duration) -> Self {
        let state = Arc::new(GatewayState {
            token: token.to_string(),
            required_intents,
            heartbeat_interval_ms: heartbeat_interval.as_millis().try_into().unwrap_or(41_250),
            url: Mutex::new(String::new()),
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        });
        let router = axum::Router::new()
            .route("/", get(upgrade))
            .with_state(state.clone());
        let served = serve(router).await;
        let url = served.base_url.replacen("http://", "ws://", 1);
        *state.url.lock().expect("url lock") = url;
        FakeDiscordGateway { state, served }
    }

    /// The gateway URL (`ws://127.0.0.1:<port>`), to which clients append `/?v=10&encoding=json`.
    pub fn url(&self) -> String {
        self.served.base_url.replacen("http://", "ws://", 1)
    }

    /// Every connection so far, in order of arrival.
    pub fn connections(&self) -> Vec<GatewayConnection> {
        self.state
            .inner
            .lock()
            .expect("gateway lock")
            .connections
            .clone()
    }

    /// Sends a dispatch (op 0) to every session.
    pub fn dispatch(&self, t: &str, d: &Value) {
        self.state.update(|inner| {
            for session in inner.sessions.values_mut() {
                session.dispatch(t, d);
            }
        });
    }

    /// Asks every open connection to reconnect (op 7), as Discord does before moving a session.
    pub fn reconnect(&self) {
        let inner = self.state.inner.lock().expect("gateway lock");
        for session in inner.sessions.values() {
            if let Some((_, tx)) = &session.attached {
                let _ = tx.send(Out::Text(json!({"op": 7, "d": null}).to_string()));
            }
        }
    }

    /// Waits until `pick` finds something in the connections (woken on every change).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&[GatewayConnection]) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            if let Some(v) = pick(&self.state.inner.lock().expect("gateway lock").connections) {
                return v;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; connections: {:#?}",
                    self.connections()
                );
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct GatewayQuery {
    v: Option<String>,
    encoding: Option<String>,
}

async fn upgrade(
    State(state): State<Arc<GatewayState>>,
    Query(q): Query<GatewayQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if q.v.as_deref() != Some("10") || q.encoding.as_deref() != Some("json") {
        return (StatusCode::BAD_REQUEST, "v=10 and encoding=json required").into_response();
    }
    ws.on_upgrade(move |socket| connection(state, socket))
}

async fn connection(state: Arc<GatewayState>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let index = state.update(|inner| {
        let index = inner.connections.len();
        inner.connections.push(GatewayConnection {
            index,
            open: true,
            ..Default::default()
        });
        index
    });
    let hello = json!({"op": 10, "d": {"heartbeat_interval": state.heartbeat_interval_ms}});
    let _ = tx.send(Out::Text(hello.to_string()));
    let mut close_code = None;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code, reason)) => {
                    close_code = Some(code);
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => handle(&state, index, &tx, text.as_str()),
                Some(Ok(Message::Close(frame))) => {
                    close_code = frame.map(|f| f.code);
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    state.update(|inner| {
        let conn = &mut inner.connections[index];
        conn.open = false;
        conn.close_code = close_code;
        let session_id = conn.session_id.clone();
        if let Some(session_id) = session_id {
            // A close with 1000 or 1001 ends the session; anything else leaves it resumable.
            if matches!(close_code, Some(1000 | 1001)) {
                inner.sessions.remove(&session_id);
            } else if let Some(session) = inner.sessions.get_mut(&session_id)
                && session.attached.as_ref().is_some_and(|(i, _)| *i == index)
            {
                session.attached = None;
            }
        }
    });
    // Completes the closing handshake (answers the client's close frame), after the
    // connection is recorded as closed.
    let _ = sink.close().await;
}

fn token_ok(state: &GatewayState, presented: Option<&str>) -> bool {
    presented.is_some_and(|t| t.strip_prefix("Bot ").unwrap_or(t) == state.token)
}

fn handle(state: &GatewayState, index: usize, tx: &mpsc::UnboundedSender<Out>, text: &str) {
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        let _ = tx.send(Out::Close(4002, "Error while decoding payload."));
        return;
    };
    let d = payload["d"].clone();
    match payload["op"].as_u64() {
        Some(1) => {
            state.update(|inner| inner.connections[index].heartbeats += 1);
            let _ = tx.send(Out::Text(json!({"op": 11}).to_string()));
        }
        Some(2) => {
            let already = state.update(|inner| {
                let conn = &mut inner.connections[index];
                let already = conn.session_id.is_some();
                conn.identify = Some(d.clone());
                already
            });
            if already {
                let _ = tx.send(Out::Close(4005, "Already authenticated."));
                return;
            }
            if !token_ok(state, d["token"].as_str()) {
                let _ = tx.send(Out::Close(4004, "Authentication failed."));
                return;
            }
            let intents = d["intents"].as_u64().unwrap_or(0);
            if intents & state.required_intents != state.required_intents {
                let _ = tx.send(Out::Close(4014, "Disallowed intent(s)."));
                return;
            }
            let url = state.url.lock().expect("url lock").clone();
            state.update(|inner| {
                inner.next_session += 1;
                let session_id = format!("fake-session-{:04}", inner.next_session);
                inner.connections[index].session_id = Some(session_id.clone());
                let mut session = Session {
                    seq: 0,
                    sent: Vec::new(),
                    attached: Some((index, tx.clone())),
                };
                session.dispatch(
                    "READY",
                    &json!({
                        "v": 10,
                        "user": {"id": BOT_USER_ID, "username": "clawdbot", "discriminator": "0",
                                 "global_name": null, "avatar": null, "bot": true, "flags": 0},
                        "guilds": [],
                        "session_id": session_id,
                        "session_type": "normal",
                        "resume_gateway_url": url,
                        "shard": [0, 1],
                        "application": {"id": BOT_USER_ID, "flags": 0}
                    }),
                );
                inner.sessions.insert(session_id, session);
            });
        }
        Some(6) => {
            state.update(|inner| inner.connections[index].resume = Some(d.clone()));
            if !token_ok(state, d["token"].as_str()) {
                let _ = tx.send(Out::Close(4004, "Authentication failed."));
                return;
            }
            let session_id = d["session_id"].as_str().unwrap_or_default().to_string();
            let after = d["seq"].as_u64().unwrap_or(0);
            let resumed = state.update(|inner| {
                let session = inner.sessions.get_mut(&session_id)?;
                if let Some((_, old)) = session.attached.take() {
                    let _ = old.send(Out::Close(4009, "Session taken over."));
                }
                for (seq, payload) in &session.sent {
                    if *seq > after {
                        let _ = tx.send(Out::Text(payload.clone()));
                    }
                }
                session.attached = Some((index, tx.clone()));
                session.dispatch("RESUMED", &Value::Null);
                inner.connections[index].session_id = Some(session_id.clone());
                Some(())
            });
            if resumed.is_none() {
                let _ = tx.send(Out::Text(json!({"op": 9, "d": false}).to_string()));
            }
        }
        _ => {}
    }
}

/// The `d` of a `MESSAGE_CREATE` for a direct message from a person.
pub fn dm_message(id: &str, channel_id: &str, author_id: &str, content: &str) -> Value {
    json!({
        "id": id, "channel_id": channel_id, "type": 0, "content": content,
        "timestamp": "2026-11-25T10:00:00.000000+00:00", "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "pinned": false, "flags": 0,
        "author": {"id": author_id, "username": "tester", "discriminator": "0",
                   "global_name": "Tester", "avatar": null, "public_flags": 0}
    })
}

/// The `d` of a `MESSAGE_CREATE` in a guild channel.
pub fn guild_message(id: &str, channel_id: &str, author_id: &str, content: &str) -> Value {
    let mut d = dm_message(id, channel_id, author_id, content);
    d["guild_id"] = json!("900000000000000001");
    d["member"] = json!({"roles": [], "joined_at": "2026-01-01T00:00:00+00:00"});
    d
}

/// The `d` of the `MESSAGE_CREATE` Discord sends for the bot's own message in a DM.
pub fn own_message(id: &str, channel_id: &str, content: &str) -> Value {
    let mut d = dm_message(id, channel_id, BOT_USER_ID, content);
    d["author"]["bot"] = json!(true);
    d["author"]["username"] = json!("clawdbot");
    d
}
