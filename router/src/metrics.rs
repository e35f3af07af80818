//! One prometheus-client registry; bounded labels only (method, route template, status,
//! channel, outcome), never a user, tenant or chat.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub channel: String,
    pub outcome: String,
}

/// A step of a message's way through the router (a fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
}

/// The router's metrics.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    /// Messages by channel and outcome (replied, duplicate, onboarding, rate_limited, ...).
    pub messages: Family<MessageLabels, Counter>,
    /// Seconds from the first message to a hibernated tenant until its agent was ready.
    pub wake_seconds: Histogram,
    /// Seconds the agent took to answer.
    pub agent_seconds: Histogram,
    /// Seconds spent in each step before the agent call (dedupe, record, admit): where the
    /// router's added latency goes.
    pub stage_seconds: Family<StageLabels, Histogram>,
    /// Outbound sends refused by a platform with 429.
    pub outbound_throttled: Family<ChannelLabels, Counter>,
    /// 1 while this replica holds the Discord Gateway lease (and so the connection).
    pub discord_gateway_connected: Gauge,
    /// Last-activity annotations written to UserWorkspaces, wake signals included.
    pub activity_notes: Counter,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let messages = Family::<MessageLabels, Counter>::default();
        let wake_seconds =
            Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]);
        let agent_seconds = Histogram::new(latency_buckets().chain([30.0, 60.0, 120.0]));
        let stage_seconds = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0001, 0.00025].into_iter().chain(latency_buckets()))
        });
        let outbound_throttled = Family::<ChannelLabels, Counter>::default();
        let discord_gateway_connected = Gauge::default();
        let activity_notes = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request duration",
            http_duration.clone(),
        );
        let router = registry.sub_registry_with_prefix("router");
        router.register(
            "messages",
            "Messages routed, by channel and outcome",
            messages.clone(),
        );
        router.register(
            "wake_latency_seconds",
            "Time for a hibernated tenant to become ready",
            wake_seconds.clone(),
        );
        router.register(
            "agent_latency_seconds",
            "Time the agent took to answer",
            agent_seconds.clone(),
        );
        router.register(
            "stage_seconds",
            "Time of each step before the agent call (dedupe, record, admit)",
            stage_seconds.clone(),
        );
        router.register(
            "outbound_throttled",
            "Sends refused by a platform with 429",
            outbound_throttled.clone(),
        );
        router.register(
            "discord_gateway_connected",
            "1 while this replica holds the Discord Gateway lease and connection",
            discord_gateway_connected.clone(),
        );
        router.register(
            "activity_notes",
            "Last-activity annotations written to UserWorkspaces (wake signals included)",
            activity_notes.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            messages,
            wake_seconds,
            agent_seconds,
            stage_seconds,
            outbound_throttled,
            discord_gateway_connected,
            activity_notes,
        }
    }

    pub fn message(&self, channel: &str, outcome: &str) {
        self.messages
            .get_or_create(&MessageLabels {
                channel: channel.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records the time since `started` as `stage`'s.
    pub fn stage(&self, stage: &'static str, started: Instant) {
        self.stage_seconds
            .get_or_create(&StageLabels { stage })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Middleware counting and timing every request by its route template. Answers of 400 and
/// above are also logged (route template, never the raw path or query, which may carry codes
/// or tokens), so that a refused request can be told from one that never reached the router.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if status >= 400 {
        tracing::info!(method, route, status, "request answered");
    }
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    metrics
        .http_duration
        .get_or_create(&RouteLabels { method, route })
        .observe(start.elapsed().as_secs_f64());
    response
}
