//! Secrets (the gateway token, provider keys): a redacting `Debug`, no `Display`, and a
//! constant-time comparison.

use sha2::{Digest, Sha256};

use crate::Error;

/// A secret string. `Debug` prints `Secret(***)`; there is no `Display`, so a secret cannot
/// reach a log line or an error message through `{}`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads a mounted secret file, trimming the trailing newline editors and `echo` add.
    pub fn read_file(path: &str) -> Result<Self, Error> {
        let raw = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value = raw.trim();
        if value.is_empty() {
            return Err(Error::Config(format!("secret file {path} is empty")));
        }
        Ok(Secret(value.to_string()))
    }

    /// The value, for the one place that must send it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time independent of where they differ: both sides are
    /// hashed first, so neither content nor length leaks through timing.
    pub fn matches(&self, candidate: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(candidate.as_bytes());
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    /// Replaces every occurrence of the secret in `text` (for provider error bodies that echo
    /// the key before they reach the log).
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            text.to_string()
        } else {
            text.replace(&self.0, "***")
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_and_matches_compares() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(s.matches("sk-very-secret"));
        assert!(!s.matches("sk-very-secreT"));
        assert!(!s.matches(""));
        assert_eq!(s.redact("bad key sk-very-secret!"), "bad key ***!");
    }

    #[test]
    fn read_file_trims_and_refuses_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "tok\n").unwrap();
        assert!(
            Secret::read_file(p.to_str().unwrap())
                .unwrap()
                .matches("tok")
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(Secret::read_file(p.to_str().unwrap()).is_err());
    }
}
