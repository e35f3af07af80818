//! Prometheus metrics of one agent: turns by outcome, the agent's own time per turn (what
//! the lite runtime costs beyond the model), model time, tokens. Labels are bounded: an
//! outcome is `ok` or an error category, never a session or user.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    turns: Family<OutcomeLabels, Counter>,
    overhead: Histogram,
    model: Histogram,
    tokens: Family<TokenLabels, Counter>,
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sub = registry.sub_registry_with_prefix("lite_agent");
        let turns = Family::<OutcomeLabels, Counter>::default();
        sub.register(
            "turns",
            "Turns by outcome (ok or error category)",
            turns.clone(),
        );
        // The agent's own share is milliseconds; the model's is seconds.
        let overhead = Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25]);
        sub.register(
            "turn_overhead_seconds",
            "Time of a turn spent outside the model",
            overhead.clone(),
        );
        let model = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]);
        sub.register(
            "model_seconds",
            "Time of a turn spent waiting for the model",
            model.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        sub.register(
            "tokens",
            "Model tokens by kind (prompt, completion)",
            tokens.clone(),
        );
        let in_flight = Gauge::default();
        sub.register("turns_in_flight", "Turns under way", in_flight.clone());
        Metrics {
            registry,
            turns,
            overhead,
            model,
            tokens,
            in_flight,
        }
    }

    /// Counts one finished turn.
    pub fn turn(
        &self,
        error: Option<&'static str>,
        overhead: Duration,
        model: Duration,
        prompt_tokens: u64,
        completion_tokens: u64,
    ) {
        self.turns
            .get_or_create(&OutcomeLabels {
                outcome: error.unwrap_or("ok"),
            })
            .inc();
        self.overhead.observe(overhead.as_secs_f64());
        if !model.is_zero() {
            self.model.observe(model.as_secs_f64());
        }
        self.tokens
            .get_or_create(&TokenLabels { kind: "prompt" })
            .inc_by(prompt_tokens);
        self.tokens
            .get_or_create(&TokenLabels { kind: "completion" })
            .inc_by(completion_tokens);
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_counted_by_outcome_with_their_times_and_tokens() {
        let m = Metrics::new();
        m.turn(
            None,
            Duration::from_micros(800),
            Duration::from_secs(2),
            30,
            12,
        );
        m.turn(
            Some("provider_auth"),
            Duration::from_micros(300),
            Duration::ZERO,
            0,
            0,
        );
        let text = m.encode();
        assert!(
            text.contains(r#"lite_agent_turns_total{outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lite_agent_turns_total{outcome="provider_auth"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lite_agent_tokens_total{kind="prompt"} 30"#),
            "{text}"
        );
        assert!(
            text.contains("lite_agent_turn_overhead_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("lite_agent_model_seconds_count 1"), "{text}");
        assert!(
            text.contains(r#"lite_agent_turn_overhead_seconds_bucket{le="0.001"} 2"#),
            "{text}"
        );
    }
}
