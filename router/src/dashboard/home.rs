//! Home: the assistant's state in words (kept current by htmx polling a fragment), messages
//! and tokens today and over 7 days with a chart, the connected channels.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{Days, Utc};
use clawdbot_api::workspace::Phase;
use clawdbot_api::{UserWorkspace, conditions};
use serde::Deserialize;

use super::guard::Viewer;
use super::{Ctx, DashState, error_page, render};
use crate::error::ApiError;

/// What the state in words is read from.
struct Observed {
    suspended: bool,
    ready: bool,
    phase: Phase,
    /// `hibernatedSince` is still set: it slept and is not ready yet.
    was_asleep: bool,
    wake_asked: bool,
}

/// The assistant's state, as a person would say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssistantState {
    Starting,
    Ready,
    Asleep,
    WakingUp,
    Failed,
    Suspended,
}

impl AssistantState {
    /// From the workspace the operator reports (none yet: starting).
    pub fn of(ws: Option<&UserWorkspace>, user_suspended: bool) -> Self {
        let Some(ws) = ws else {
            return AssistantState::Starting;
        };
        let status = ws.status.clone().unwrap_or_default();
        AssistantState::from_status(&Observed {
            suspended: user_suspended || ws.spec.suspend,
            ready: ws.is_ready(),
            phase: status.phase,
            was_asleep: status.hibernated_since.is_some(),
            wake_asked: status
                .conditions
                .iter()
                .any(|c| c.reason == conditions::REASON_AWAKE),
        })
    }

    fn from_status(o: &Observed) -> Self {
        match o.phase {
            _ if o.suspended => AssistantState::Suspended,
            _ if o.ready => AssistantState::Ready,
            Phase::Failed => AssistantState::Failed,
            Phase::Hibernated if o.wake_asked => AssistantState::WakingUp,
            Phase::Hibernated => AssistantState::Asleep,
            _ if o.was_asleep => AssistantState::WakingUp,
            _ => AssistantState::Starting,
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            AssistantState::Starting => "starting",
            AssistantState::Ready => "ready",
            AssistantState::Asleep => "asleep",
            AssistantState::WakingUp => "waking",
            AssistantState::Failed => "failed",
            AssistantState::Suspended => "suspended",
        }
    }

    /// The text keys of the state's name and explanation.
    pub fn label(self) -> &'static str {
        match self {
            AssistantState::Starting => "state.starting",
            AssistantState::Ready => "state.ready",
            AssistantState::Asleep => "state.asleep",
            AssistantState::WakingUp => "state.waking",
            AssistantState::Failed => "state.failed",
            AssistantState::Suspended => "state.suspended",
        }
    }

    pub fn hint(self) -> String {
        format!("{}.hint", self.label())
    }
}

#[derive(Template)]
#[template(path = "dashboard/state.html")]
pub struct StateFragment {
    pub c: Ctx,
    pub state: AssistantState,
}

#[derive(Template)]
#[template(path = "dashboard/home.html")]
pub struct HomePage {
    pub c: Ctx,
    pub state: AssistantState,
    pub today_messages: i64,
    pub today_tokens: i64,
    pub week_messages: i64,
    pub week_tokens: i64,
    pub chart: String,
    pub channels: Vec<String>,
    /// A payment failed: the plan is kept until the grace period ends.
    pub failed: Option<super::billing::PaymentFailed>,
}

async fn state_of(
    s: &DashState,
    user: &clawdbot_accounts::User,
) -> Result<AssistantState, ApiError> {
    let ws = s.api.accounts.workspace(user.id).await?;
    Ok(AssistantState::of(ws.as_ref(), user.suspended()))
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn page(State(s): State<Arc<DashState>>, Viewer(user): Viewer, c: Ctx) -> Response {
    let c = c.signed_in(&user);
    match home(&s, &user).await {
        Ok((state, usage, channels, failed)) => {
            let today = Utc::now().date_naive();
            let days: Vec<(String, i64, i64)> = (0..7u64)
                .rev()
                .map(|back| {
                    let day = today - Days::new(back);
                    let row = usage.iter().find(|r| r.day == day);
                    (
                        day.format("%d.%m").to_string(),
                        row.map_or(0, |r| r.messages),
                        row.map_or(0, |r| r.total_tokens),
                    )
                })
                .collect();
            let (_, today_messages, today_tokens) = days.last().cloned().unwrap_or_default();
            let chart = super::svg::bar_chart(
                &days
                    .iter()
                    .map(|(d, m, _)| (d.clone(), *m))
                    .collect::<Vec<_>>(),
            );
            render(&HomePage {
                c,
                state,
                today_messages,
                today_tokens,
                week_messages: days.iter().map(|d| d.1).sum(),
                week_tokens: days.iter().map(|d| d.2).sum(),
                chart,
                channels,
                failed,
            })
        }
        Err(e) => error_page(c, &e),
    }
}

type HomeData = (
    AssistantState,
    Vec<clawdbot_accounts::store::UsageDay>,
    Vec<String>,
    Option<super::billing::PaymentFailed>,
);

async fn home(s: &DashState, user: &clawdbot_accounts::User) -> Result<HomeData, ApiError> {
    let state = state_of(s, user).await?;
    let usage = s.api.accounts.usage(user.id, 7).await?;
    let channels = s
        .api
        .accounts
        .connections(user.id)
        .await?
        .into_iter()
        .map(|c| c.channel)
        .collect();
    let failed = super::billing::payment_failed_of(s, user).await?;
    Ok((state, usage, channels, failed))
}

#[derive(Deserialize)]
pub struct Was {
    was: Option<String>,
}

/// The state alone, polled by the home page: 204 (htmx keeps the element, and a screen reader
/// hears nothing) while it is the state the page shows.
pub async fn state_fragment(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Query(q): Query<Was>,
) -> Response {
    match state_of(&s, &user).await {
        Ok(state) if q.was.as_deref() == Some(state.key()) => {
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(state) => render(&StateFragment { c, state }),
        Err(e) => error_page(c, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(phase: Phase, ready: bool, was_asleep: bool, wake_asked: bool) -> AssistantState {
        AssistantState::from_status(&Observed {
            suspended: false,
            ready,
            phase,
            was_asleep,
            wake_asked,
        })
    }

    #[test]
    fn states_in_words() {
        assert_eq!(AssistantState::of(None, false), AssistantState::Starting);
        assert_eq!(
            state(Phase::Pending, false, false, false),
            AssistantState::Starting
        );
        assert_eq!(
            state(Phase::Provisioning, false, false, false),
            AssistantState::Starting
        );
        assert_eq!(
            state(Phase::Running, true, false, false),
            AssistantState::Ready
        );
        assert_eq!(
            state(Phase::Hibernated, false, true, false),
            AssistantState::Asleep
        );
        assert_eq!(
            state(Phase::Hibernated, false, true, true),
            AssistantState::WakingUp
        );
        assert_eq!(
            state(Phase::Provisioning, false, true, false),
            AssistantState::WakingUp
        );
        assert_eq!(
            state(Phase::Failed, false, false, false),
            AssistantState::Failed
        );
        let suspended = AssistantState::from_status(&Observed {
            suspended: true,
            ready: true,
            phase: Phase::Running,
            was_asleep: false,
            wake_asked: false,
        });
        assert_eq!(suspended, AssistantState::Suspended);
    }
}
