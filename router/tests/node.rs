//! The whole platform on the real node: the operator (in-process) turns a UserWorkspace into a
//! lite agent pod that the kubelet really runs (restricted security settings, a `local` volume
//! from hack/provisioner, the token from the Secret), and the router (in-process, outside the
//! cluster) reaches it through its Service's ClusterIP (`--service-addresses=cluster-ip`: no
//! cluster DNS here). The model is the user's own "OpenAI" key, pointed at a local server on
//! the node's bridge address. Needs `hack/dev-env.sh up` (the node) and `hack/build-images.sh
//! lite`.

mod support;

use std::time::Duration;

use clawdbot_api::workspace::Phase;
use clawdbot_api::{Plan, conditions, names};
use clawdbot_testkit::fake_chat::telegram_text_update;
use clawdbot_testkit::fake_llm::{FakeLlm, Flavor, Reply};
use clawdbot_testkit::{node, wait_for};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::Api;
use support::World;
use support::node::{
    API_KEY, LITE_IMAGE, OPENCLAW_IMAGE, Operator, create_openclaw_workspace, create_workspace,
    create_workspace_with_model, operator_config, wait_phase,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lite_workspace_runs_on_the_node_answers_through_its_service_and_hibernates() {
    let w = World::on_node().await;
    node::require_image(LITE_IMAGE, "lite");
    let llm = FakeLlm::start_on(Flavor::OpenAi, &node::host_ip()).await;
    llm.require_api_key(API_KEY);
    llm.push(Reply::text("Hello Ada, from a pod."));
    llm.push(Reply::text("Your name is Ada."));
    let operator = Operator::start(&w.kube, &w.namespace, operator_config(llm.base_url())).await;
    let mut config = w.config();
    // As long as a pod start may take on a busy machine (testkit's POD_START is 90 s).
    config.limits.wake_hold = Duration::from_secs(120);
    config.limits.agent_timeout = Duration::from_secs(30);
    let r = w.start_router(config).await;

    let user = clawdbot_router::admin::create_user(&w.db, None, Plan::Pro)
        .await
        .expect("user");
    let name = "ada";
    create_workspace(&w, name, user, "25").await;

    // The kubelet runs the pod; the operator reports it Running once its probe passes.
    let ws = wait_phase(&w, name, Phase::Running, node::POD_START).await;
    let url = ws.status.as_ref().and_then(|s| s.url.clone()).expect("url");
    assert!(url.starts_with("http://10."), "a ClusterIP URL: {url}");
    let pods = node::pods(
        &w.kube,
        &w.namespace,
        &format!("{}={name}", names::LABEL_WORKSPACE),
    )
    .await;
    let pod: &Pod = pods
        .iter()
        .find(|p| node::pod_ready(p))
        .expect("a ready pod");
    let spec = pod.spec.as_ref().expect("pod spec");
    let security = spec
        .security_context
        .as_ref()
        .expect("pod security context");
    assert_eq!(security.run_as_non_root, Some(true));
    let container = &spec.containers[0];
    let c_security = container
        .security_context
        .as_ref()
        .expect("container security");
    assert_eq!(c_security.read_only_root_filesystem, Some(true));
    assert_eq!(c_security.allow_privilege_escalation, Some(false));
    let token_secret = names::gateway_token_secret(name);
    assert!(
        spec.volumes.iter().flatten().any(|v| v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(token_secret.as_str()))),
        "the token comes from the Secret"
    );
    // The claim is bound to a `local` volume made by hack/provisioner.
    let pvc = Api::<PersistentVolumeClaim>::namespaced(w.kube.clone(), &w.namespace)
        .get(&names::agent(name))
        .await
        .expect("pvc");
    let pv_name = pvc.spec.and_then(|s| s.volume_name).expect("bound pvc");
    let pv = Api::<PersistentVolume>::all(w.kube.clone())
        .get(&pv_name)
        .await
        .expect("pv");
    let dir = pv
        .spec
        .and_then(|s| s.local)
        .map(|l| l.path)
        .expect("local volume");

    // A Telegram message through the router reaches the pod through its Service.
    let chat = 7_100_001;
    w.connect("telegram", &chat.to_string(), user).await;
    w.telegram_update(&r, &telegram_text_update(1, chat, "Hi, my name is Ada."))
        .await;
    let sent = w
        .telegram
        .wait_for_messages(chat, 1, Duration::from_secs(60))
        .await;
    assert_eq!(sent[0].text, "Hello Ada, from a pod.");
    // The agent, running as a non-root user, wrote its sessions onto the real volume.
    let written = std::fs::read_dir(&dir)
        .map(|d| d.count())
        .unwrap_or_default();
    assert!(written > 0, "the agent wrote to its volume {dir}");

    // Hibernation for real: after the idle timeout the agent stops (its pod is deleted, or
    // being deleted with its container stopped: the kubelet removes the object later).
    wait_phase(&w, name, Phase::Hibernated, Duration::from_secs(90)).await;
    let selector = format!("{}={name}", names::LABEL_WORKSPACE);
    wait_for("the agent pod stopped", Duration::from_secs(90), || async {
        let pods = node::pods(&w.kube, &w.namespace, &selector).await;
        pods.iter().all(node::pod_stopped).then_some(())
    })
    .await;

    // The next message wakes it and is answered; the conversation survived on the volume.
    w.telegram_update(&r, &telegram_text_update(2, chat, "What is my name?"))
        .await;
    let sent = wait_for(
        "the answer after the wake",
        Duration::from_secs(180),
        || async {
            let sent = w.telegram.sent_to(chat);
            sent.iter()
                .any(|m| m.text == "Your name is Ada.")
                .then_some(sent)
        },
    )
    .await;
    // The wake took less than the router's hold: answered directly, with no note.
    assert_eq!(
        sent.len(),
        2,
        "the woken agent answered within the hold: {sent:?}"
    );
    let calls = llm.completions();
    let last = calls.last().expect("model calls").body.to_string();
    assert!(
        last.contains("my name is Ada") && last.contains("Hello Ada, from a pod."),
        "the woken agent had the first turn from its volume: {last}"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM inbound_messages WHERE state <> 'done'")
            .await,
        0,
        "nothing lost"
    );

    r.shutdown().await;
    operator.stop().await;
    node::delete_namespace(&w.kube, &w.namespace).await;
}

/// A pod that cannot run (its image is missing): the workspace says so with the kubelet's
/// reason, the user who writes meanwhile is told the assistant is unavailable, and the message
/// is answered once the image is there and the pod runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_cannot_run_is_reported_and_the_message_is_answered_once_it_runs() {
    let w = World::on_node().await;
    node::require_image(LITE_IMAGE, "lite");
    let llm = FakeLlm::start_on(Flavor::OpenAi, &node::host_ip()).await;
    llm.push(Reply::text("Back and answering."));
    let missing = format!(
        "ghcr.io/clawdbot/agent-lite:missing-{:08x}",
        rand::random::<u32>()
    );
    let mut config = operator_config(llm.base_url());
    config.lite_image = missing.clone();
    let operator = Operator::start(&w.kube, &w.namespace, config).await;
    let r = w.start_router(w.config()).await;
    let user = clawdbot_router::admin::create_user(&w.db, None, Plan::Pro)
        .await
        .expect("user");
    let name = "broken";
    create_workspace(&w, name, user, "0").await;

    let ws = wait_phase(&w, name, Phase::Failed, node::POD_START).await;
    let ready = ws
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == conditions::READY)
                .cloned()
        })
        .expect("Ready condition");
    assert_eq!(ready.reason, conditions::REASON_AGENT_NOT_RUNNING);
    assert!(
        ready.message.contains("ErrImage") || ready.message.contains("ImagePullBackOff"),
        "the kubelet's reason: {}",
        ready.message
    );

    let chat = 7_200_001;
    w.connect("telegram", &chat.to_string(), user).await;
    let started = std::time::Instant::now();
    w.telegram_update(&r, &telegram_text_update(1, chat, "Are you there?"))
        .await;
    let sent = w
        .telegram
        .wait_for_messages(chat, 1, Duration::from_secs(30))
        .await;
    assert!(
        sent[0].text.contains("unavailable"),
        "told at once that the assistant is unavailable: {:?}",
        sent[0].text
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not left waiting"
    );

    // The image arrives (as a push would); the kubelet's next pull attempt finds it.
    node::tag_image(LITE_IMAGE, &missing);
    wait_phase(&w, name, Phase::Running, Duration::from_secs(180)).await;
    let sent = w
        .telegram
        .wait_for_messages(chat, 2, Duration::from_secs(60))
        .await;
    assert_eq!(
        sent[1].text, "Back and answering.",
        "the kept message was answered"
    );
    r.shutdown().await;
    operator.stop().await;
    node::delete_namespace(&w.kube, &w.namespace).await;
}

/// A web chat message answered by the real small model (SmolLM2 behind llama-cpp-python on
/// the node's bridge address), through the router and the pod's Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_chat_message_is_answered_by_the_real_model_through_the_pod() {
    let w = World::on_node().await;
    node::require_image(LITE_IMAGE, "lite");
    let model =
        clawdbot_testkit::model_server::start_with(clawdbot_testkit::model_server::Options {
            host: node::host_ip(),
            n_ctx: 2048,
            ..Default::default()
        })
        .await;
    let operator = Operator::start(&w.kube, &w.namespace, operator_config(model.base_url())).await;
    let mut config = w.config();
    config.limits.agent_timeout = Duration::from_secs(120);
    let r = w.start_router(config).await;
    let user = clawdbot_router::admin::create_user(&w.db, None, Plan::Pro)
        .await
        .expect("user");
    let name = "real";
    create_workspace_with_model(&w, name, user, model.model_name()).await;
    wait_phase(&w, name, Phase::Running, node::POD_START).await;

    w.connect("web", &user.to_string(), user).await;
    let token = clawdbot_router::channels::web::Web::mint(
        &clawdbot_router::Secret::new(support::WEB_SECRET),
        user,
    );
    let body = node::web_chat(
        &w.http,
        &r.base,
        &token,
        "m1",
        "What is the capital of France? One word.",
        Duration::from_secs(180),
    )
    .await;
    let reply: String = body
        .split("\n\n")
        .filter(|e| e.contains("event: reply"))
        .flat_map(|e| e.lines().filter_map(|l| l.strip_prefix("data:")))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!reply.is_empty(), "a reply event with text: {body}");
    assert!(
        !reply.contains("create your account"),
        "answered by the agent, not the onboarding note: {reply}"
    );
    assert!(
        model.log().contains("/v1/chat/completions"),
        "the pod called the real model: {}",
        model.log()
    );
    r.shutdown().await;
    operator.stop().await;
    node::delete_namespace(&w.kube, &w.namespace).await;
}

/// The OpenClaw runtime as the operator writes it (its rendered config from the ConfigMap, the
/// gateway token from the Secret, read-only root, non-root, its state on the volume) runs on
/// the node, and a web chat message reaches it through its Service. Its start-up (Node.js
/// loading the gateway and plugins) takes tens of seconds on two cores: a generous wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openclaw_workspace_runs_on_the_node_and_answers_web_chat() {
    let w = World::on_node().await;
    node::require_image(OPENCLAW_IMAGE, "openclaw");
    let llm = FakeLlm::start_on(Flavor::OpenAi, &node::host_ip()).await;
    llm.require_api_key(API_KEY);
    // The answer to every model call, not only the first: OpenClaw may call the model more
    // than once for a turn (a CI run saw an earlier call take the one scripted reply, and the
    // turn get the fake's echo of OpenClaw's internal context instead).
    for _ in 0..4 {
        llm.push(Reply::text("OpenClaw, answering from a pod."));
    }
    let operator = Operator::start(&w.kube, &w.namespace, operator_config(llm.base_url())).await;
    let mut config = w.config();
    config.limits.agent_timeout = Duration::from_secs(120);
    let r = w.start_router(config).await;
    let user = clawdbot_router::admin::create_user(&w.db, None, Plan::Pro)
        .await
        .expect("user");
    let name = "claw";
    create_openclaw_workspace(&w, name, user).await;
    wait_phase(&w, name, Phase::Running, Duration::from_secs(420)).await;

    let pods = node::pods(
        &w.kube,
        &w.namespace,
        &format!("{}={name}", names::LABEL_WORKSPACE),
    )
    .await;
    let pod = pods
        .iter()
        .find(|p| node::pod_ready(p))
        .expect("a ready pod");
    let spec = pod.spec.as_ref().expect("pod spec");
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(OPENCLAW_IMAGE),
        "the OpenClaw image runs"
    );
    let c_security = spec.containers[0]
        .security_context
        .as_ref()
        .expect("container security");
    assert_eq!(c_security.read_only_root_filesystem, Some(true));

    w.connect("web", &user.to_string(), user).await;
    let token = clawdbot_router::channels::web::Web::mint(
        &clawdbot_router::Secret::new(support::WEB_SECRET),
        user,
    );
    let body = node::web_chat(
        &w.http,
        &r.base,
        &token,
        "oc1",
        "Hello OpenClaw",
        Duration::from_secs(180),
    )
    .await;
    assert!(
        body.contains("OpenClaw, answering from a pod."),
        "the reply from the model through the OpenClaw pod: {body}"
    );
    let calls = llm.completions();
    let last = calls.last().expect("model calls").body.to_string();
    assert!(
        last.contains("Hello OpenClaw"),
        "the message reached the model: {last}"
    );
    r.shutdown().await;
    operator.stop().await;
    node::delete_namespace(&w.kube, &w.namespace).await;
}
