//! schemathesis (PyPI) against the running API with its own OpenAPI document: generated
//! requests to every operation, signed in as a user; no response may be a 5xx, and every
//! status, content type and body must be what the document says.
//! `hack/schemathesis.sh` installs schemathesis into a cached venv the first time.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::World;
use support::api::ApiClient;

#[tokio::test]
async fn the_api_keeps_to_its_openapi_document() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let mut user = ApiClient::new(&r);
    user.register(
        &format!("schema-{:08x}@example.com", rand::random::<u32>()),
        "schemathesis password 1",
    )
    .await;
    // Pro: the key endpoints do more than refuse.
    sqlx::query("UPDATE users SET plan = 'pro' WHERE id = $1")
        .bind(user.user())
        .execute(&w.db)
        .await
        .unwrap();
    let script = clawdbot_testkit::repo_root().join("hack/schemathesis.sh");
    let run = tokio::process::Command::new("bash")
        .arg(script)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", r.base))
        .args(["--url", &r.base])
        .args(["-H", &format!("Authorization: Bearer {}", user.access.as_deref().unwrap())])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "15"])
        // Deleting the account would sign the run out of every other operation.
        .args(["--exclude-operation-id", "delete_me"])
        .args(["--request-timeout", "20"])
        .arg("--no-color")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("schemathesis finished in time")
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    r.shutdown().await;
}
