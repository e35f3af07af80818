//! Wake from hibernation on the real node, lite runtime, instant fake model:
//!
//!   cargo bench -p clawdbot-router --bench wake
//!
//! A lite workspace (the operator in this process, the router in this process, the agent a pod
//! the kubelet runs) with a short idle timeout (`BENCH_IDLE`, default 8 s) hibernates; then a
//! Telegram message wakes it. `BENCH_WAKES` times (default 20): message -> reply, split by what
//! this process sees through two watches into
//!   wake signal   message sent -> the router's last-activity annotation seen
//!   operator      annotation -> the agent pod created (scale up)
//!   pod start     pod created -> pod Ready (scheduling, sandbox, container, readiness probe)
//!   answer        pod Ready -> reply at Telegram (operator status, the router's reflector,
//!                 the agent's first answer, the Telegram send)
//! Needs `hack/dev-env.sh up` (the node) and `hack/build-images.sh lite`.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawdbot_api::workspace::Phase;
use clawdbot_api::{Plan, UserWorkspace, annotations, names};
use clawdbot_testkit::fake_chat::telegram_text_update;
use clawdbot_testkit::fake_llm::{FakeLlm, Flavor, Reply};
use clawdbot_testkit::{node, wait_for};
use common::env_or;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use support::World;
use support::node::{API_KEY, LITE_IMAGE, Operator, create_workspace, operator_config, wait_phase};

#[derive(Default)]
struct Seen {
    annotation: Option<(String, Instant)>,
    pod_created: Option<(String, Instant)>,
    pod_ready: Option<(String, Instant)>,
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s.get(i).copied().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let wakes: usize = env_or("BENCH_WAKES", 20);
    let idle: u64 = env_or("BENCH_IDLE", 8);
    let w = World::on_node().await;
    node::require_image(LITE_IMAGE, "lite");
    let llm = FakeLlm::start_on(Flavor::OpenAi, &node::host_ip()).await;
    llm.require_api_key(API_KEY);
    let operator = Operator::start(&w.kube, &w.namespace, operator_config(llm.base_url())).await;
    let mut config = w.config();
    config.limits.wake_hold = Duration::from_secs(60);
    config.limits.agent_timeout = Duration::from_secs(30);
    let r = w.start_router(config).await;
    let user = clawdbot_router::admin::create_user(&w.db, None, Plan::Pro)
        .await
        .expect("user");
    let name = "wake";
    create_workspace(&w, name, user, &idle.to_string()).await;
    // No wait for Running here: on a busy machine the first pod may take longer than the idle
    // timeout, and the workspace hibernates before it is ever Running. The loop starts from
    // Hibernated either way.
    let chat = 8_100_001;
    w.connect("telegram", &chat.to_string(), user).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let ws_api: Api<UserWorkspace> = Api::namespaced(w.kube.clone(), &w.namespace);
    let pod_api: Api<Pod> = Api::namespaced(w.kube.clone(), &w.namespace);
    let selector = format!("{}={name}", names::LABEL_WORKSPACE);
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut s = watcher(ws_api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(ws)) = s.next().await {
                if let Some(a) = ws.annotations().get(annotations::LAST_ACTIVITY) {
                    let mut seen = seen.lock().expect("seen");
                    if seen.annotation.as_ref().is_none_or(|(v, _)| v != a) {
                        seen.annotation = Some((a.clone(), Instant::now()));
                    }
                }
            }
        });
    }
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut s = watcher(pod_api, watcher::Config::default().labels(&selector))
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(pod)) = s.next().await {
                let uid = pod.uid().unwrap_or_default();
                let mut seen = seen.lock().expect("seen");
                if seen.pod_created.as_ref().is_none_or(|(u, _)| *u != uid) {
                    seen.pod_created = Some((uid.clone(), Instant::now()));
                }
                if node::pod_ready(&pod) && seen.pod_ready.as_ref().is_none_or(|(u, _)| *u != uid) {
                    seen.pod_ready = Some((uid, Instant::now()));
                }
            }
        });
    }

    let (mut total, mut signal, mut operator_part, mut start, mut answer) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..wakes {
        wait_phase(&w, name, Phase::Hibernated, Duration::from_secs(idle + 120)).await;
        wait_for("the pod gone", Duration::from_secs(120), || async {
            node::pods(
                &w.kube,
                &w.namespace,
                &format!("{}={name}", names::LABEL_WORKSPACE),
            )
            .await
            .is_empty()
            .then_some(())
        })
        .await;
        let text = format!("answer {i}");
        llm.push(Reply::text(text.clone()));
        let before = w.telegram.sent_to(chat).len();
        // What the router knew when the message came: printed for a slow wake.
        let view = r.core.directory.tenant_of(&user.to_string()).map(|t| {
            format!(
                "ready {} hibernated {} last activity {:?} hibernated since {:?}",
                t.ready, t.hibernated, t.last_activity, t.hibernated_since
            )
        });
        let sent = Instant::now();
        w.telegram_update(&r, &telegram_text_update(i as i64 + 1, chat, "wake up"))
            .await;
        wait_for("the reply", Duration::from_secs(120), || async {
            w.telegram
                .sent_to(chat)
                .iter()
                .skip(before)
                .any(|m| m.text == text)
                .then_some(())
        })
        .await;
        let replied = Instant::now();
        if replied - sent > Duration::from_secs(20) {
            println!("wake {i}: slow; the router's view when the message came: {view:?}");
        }
        let s = seen.lock().expect("seen");
        let at = |x: &Option<(String, Instant)>| x.as_ref().map(|(_, t)| *t).filter(|t| *t >= sent);
        let (Some(a), Some(c), Some(rd)) =
            (at(&s.annotation), at(&s.pod_created), at(&s.pod_ready))
        else {
            println!("wake {i}: a step was not seen; skipped");
            continue;
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        total.push(ms(replied - sent));
        signal.push(ms(a - sent));
        operator_part.push(ms(c.saturating_duration_since(a)));
        start.push(ms(rd.saturating_duration_since(c)));
        answer.push(ms(replied.saturating_duration_since(rd)));
        println!(
            "wake {i}: total {:.0} ms = signal {:.0} + operator {:.0} + pod start {:.0} + answer {:.0}",
            total[total.len() - 1],
            signal[signal.len() - 1],
            operator_part[operator_part.len() - 1],
            start[start.len() - 1],
            answer[answer.len() - 1]
        );
    }
    println!(
        "\n{} wakes, lite agent, instant fake model (ms):",
        total.len()
    );
    println!("| part | p50 | p99 | max |\n| --- | ---: | ---: | ---: |");
    for (label, v) in [
        ("message -> reply", &total),
        ("router: message -> wake signal", &signal),
        ("operator: signal -> pod created", &operator_part),
        ("pod scheduling + start + readiness", &start),
        ("pod ready -> reply (status, router, agent)", &answer),
    ] {
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} |",
            quantile(v, 0.5),
            quantile(v, 0.99),
            quantile(v, 1.0)
        );
    }
    r.shutdown().await;
    operator.stop().await;
    node::delete_namespace(&w.kube, &w.namespace).await;
}
