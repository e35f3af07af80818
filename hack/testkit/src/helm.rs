//! Helm without a helm binary: `hack/helm.py` (template, lint, install, upgrade, uninstall,
//! test) on Helm's own Go library from PyPI `helm-python-sdk`, in the venv that
//! `hack/install-helm.sh` makes once (cached).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The venv's interpreter, installed (or found cached) once per test process.
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(crate::repo_root().join("hack/install-helm.sh"))
            .output()
            .expect("run hack/install-helm.sh");
        assert!(
            out.status.success(),
            "hack/install-helm.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        PathBuf::from(stdout.lines().last().expect("interpreter path").trim())
    })
}

/// Runs `hack/helm.py` with `args` against the test cluster (its kubeconfig): stdout on
/// success, stderr and stdout on failure (exit status 1, `Error: ...`).
pub fn helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(python())
        .arg(crate::repo_root().join("hack/helm.py"))
        .args(args)
        .env("KUBECONFIG", &crate::env::get().kubeconfig)
        .output()
        .expect("run hack/helm.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stderr}{stdout}"))
    }
}
