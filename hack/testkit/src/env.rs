//! The real servers, started once per machine by `hack/dev-env.sh up` (idempotent, locked),
//! so `cargo test` works on its own as well as under `hack/test.sh`.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Where the shared servers listen.
#[derive(Clone, Debug)]
pub struct TestEnv {
    pub kubeconfig: String,
    pub database_url: String,
    pub redis_url: String,
    /// The host's address on the node's pod bridge, when the real node runs (pods reach
    /// servers the test starts there); None with the API server only (`CLAWDBOT_NODE=0`).
    pub node_host_ip: Option<String>,
    /// The node's containerd socket (to check which images it holds).
    pub containerd_address: Option<String>,
}

static ENV: OnceLock<TestEnv> = OnceLock::new();

/// Starts the servers if they are not running and returns their addresses.
pub fn get() -> &'static TestEnv {
    ENV.get_or_init(|| {
        let script = crate::repo_root().join("hack/dev-env.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("up")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "hack/dev-env.sh up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let vars: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let var = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("dev-env.sh did not print {k}"))
        };
        TestEnv {
            kubeconfig: var("CLAWDBOT_TEST_KUBECONFIG"),
            database_url: var("CLAWDBOT_TEST_DATABASE_URL"),
            redis_url: var("CLAWDBOT_TEST_REDIS_URL"),
            node_host_ip: vars.get("CLAWDBOT_NODE_HOST_IP").cloned(),
            containerd_address: vars.get("CONTAINERD_ADDRESS").cloned(),
        }
    })
}
