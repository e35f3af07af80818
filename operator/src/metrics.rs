//! Prometheus metrics of the operator. Labels are bounded: controller kind, result, error
//! category and phase; never a tenant or object name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use clawdbot_api::workspace::Phase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    tenants: Family<PhaseLabels, Gauge>,
    leader: Gauge,
    /// Requests to the API server, counted by the client's own layer (see [`counted_client`]).
    api_requests: Family<VerbLabels, Counter>,
    /// Watch events that asked for a workspace reconcile, by the kind that changed: where
    /// reconciles come from (several may make one reconcile).
    triggers: Family<SourceLabels, Counter>,
    /// Last known phase of each workspace, to keep the per-phase gauge exact.
    phases: Mutex<HashMap<String, Phase>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sub = registry.sub_registry_with_prefix("clawdbot_operator");
        let reconciles = registered(
            sub,
            "reconciles",
            "Reconciles by controller and result",
            Family::<ResultLabels, Counter>::default(),
        );
        let errors = registered(
            sub,
            "reconcile_errors",
            "Reconcile errors by controller and category",
            Family::<ErrorLabels, Counter>::default(),
        );
        let duration = registered(
            sub,
            "reconcile_duration_seconds",
            "Reconcile duration",
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
        );
        let tenants = registered(
            sub,
            "tenants",
            "UserWorkspaces by phase",
            Family::<PhaseLabels, Gauge>::default(),
        );
        let leader = registered(
            sub,
            "leader",
            "1 while this replica holds the leader lease",
            Gauge::default(),
        );
        let api_requests = registered(
            sub,
            "api_requests",
            "Requests to the Kubernetes API server by verb (get includes list; patch_status is a status write; lease and event requests apart)",
            Family::<VerbLabels, Counter>::default(),
        );
        let triggers = registered(
            sub,
            "workspace_triggers",
            "Watch events that asked for a UserWorkspace reconcile, by the kind that changed",
            Family::<SourceLabels, Counter>::default(),
        );
        for phase in Phase::ALL {
            tenants
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(0);
        }
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            tenants,
            leader,
            api_requests,
            triggers,
            phases: Mutex::default(),
        }
    }

    pub fn reconciled(
        &self,
        controller: &'static str,
        took: Duration,
        result: Result<(), &'static str>,
    ) {
        self.duration
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
        let outcome = match result {
            Ok(()) => "success",
            Err(category) => {
                self.errors
                    .get_or_create(&ErrorLabels {
                        controller,
                        category,
                    })
                    .inc();
                "error"
            }
        };
        self.reconciles
            .get_or_create(&ResultLabels {
                controller,
                result: outcome,
            })
            .inc();
    }

    /// Records the phase of a workspace (`None`: it is gone).
    pub fn set_phase(&self, key: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let old = match phase {
            Some(p) => phases.insert(key.to_string(), p),
            None => phases.remove(key),
        };
        if old == phase {
            return;
        }
        if let Some(o) = old {
            self.tenants
                .get_or_create(&PhaseLabels { phase: o.as_str() })
                .dec();
        }
        if let Some(p) = phase {
            self.tenants
                .get_or_create(&PhaseLabels { phase: p.as_str() })
                .inc();
        }
    }

    /// Counts one watch event of `source` that asks for a workspace reconcile.
    pub fn triggered(&self, source: &'static str) {
        self.triggers.get_or_create(&SourceLabels { source }).inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A Kubernetes client whose every request (reads, writes, watches, lease renewals, events)
/// is counted in `metrics` by verb: the cost of convergence in requests per tenant, as the API
/// server sees it.
pub fn counted_client(config: kube::Config, metrics: &Metrics) -> kube::Result<kube::Client> {
    let counter = metrics.api_requests.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        counter
            .get_or_create(&VerbLabels { verb: verb(&req) })
            .inc();
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

fn verb<B>(req: &http::Request<B>) -> &'static str {
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let path = req.uri().path();
    if path.contains("/leases") {
        return "lease";
    }
    if path.contains("/events") {
        return "event";
    }
    match *req.method() {
        http::Method::GET if watch => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH if path.ends_with("/status") => "patch_status",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// Registers a metric and hands back the handle the operator updates.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_gauge_counts_each_workspace_once() {
        let m = Metrics::new();
        m.set_phase("ns/a", Some(Phase::Provisioning));
        m.set_phase("ns/a", Some(Phase::Running));
        m.set_phase("ns/b", Some(Phase::Running));
        m.set_phase("ns/b", None);
        m.reconciled("userworkspace", Duration::from_millis(3), Err("kube"));
        let text = m.encode();
        assert!(
            text.contains(r#"clawdbot_operator_tenants{phase="Running"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"clawdbot_operator_tenants{phase="Provisioning"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"clawdbot_operator_reconcile_errors_total{controller="userworkspace",category="kube"} 1"#), "{text}");
    }
}
