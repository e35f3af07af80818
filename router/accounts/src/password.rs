//! Passwords: the rules a new password must meet, and Argon2id hashing.
//!
//! Parameters are OWASP's Argon2id recommendation (19 MiB, 2 passes, 1 lane): about 20-40 ms
//! per hash on one core of these machines (measured by `cargo bench -p clawdbot-router --bench
//! api`), which bounds logins per core and makes an offline guess as costly.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{Error, Result};

pub const MIN_CHARS: usize = 10;
pub const MAX_CHARS: usize = 128;

/// What the error says, so a client can show the rules without knowing them.
pub const RULES: &str = "must be 10 to 128 characters, not all digits, \
    and must not contain your e-mail address";

/// Memory in KiB, passes and lanes of production hashing.
pub const M_COST_KIB: u32 = 19 * 1024;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

/// Checks a new password against the rules (not a login attempt: those are never judged).
pub fn check_rules(password: &str, email: Option<&str>) -> Result<()> {
    let chars = password.chars().count();
    let all_digits = password.chars().all(|c| c.is_ascii_digit());
    let contains_email = email.is_some_and(|e| {
        let local = e.split('@').next().unwrap_or(e).to_lowercase();
        let lower = password.to_lowercase();
        lower.contains(&e.to_lowercase()) || (local.len() >= 4 && lower.contains(&local))
    });
    if !(MIN_CHARS..=MAX_CHARS).contains(&chars) || all_digits || contains_email {
        return Err(Error::invalid("password", RULES));
    }
    Ok(())
}

/// Argon2id with fixed parameters. Cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    argon: Argon2<'static>,
    /// A hash of nothing, verified when the e-mail is unknown so that the answer takes as
    /// long as for a known one (no account enumeration by timing).
    dummy: String,
}

impl Hasher {
    /// Production parameters.
    pub fn production() -> Self {
        Self::with_params(M_COST_KIB, T_COST, P_COST)
    }

    /// Other parameters: only for tests that hash many passwords.
    pub fn with_params(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Self {
        let params = Params::new(m_cost_kib, t_cost, p_cost, None).expect("valid argon2 params");
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon
            .hash_password(b"no such account", &salt)
            .expect("argon2 hashes")
            .to_string();
        Hasher { argon, dummy }
    }

    /// A PHC string (`$argon2id$v=19$m=...`) with a fresh salt.
    pub fn hash(&self, password: &str) -> Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| Error::Crypto("password hashing failed"))
    }

    /// Whether `password` matches `hash`. With no hash (unknown account, or one that signs in
    /// only with Google) a dummy is verified so the time is the same, and the answer is false.
    pub fn verify(&self, password: &str, hash: Option<&str>) -> bool {
        let (target, real) = match hash {
            Some(h) => (h, true),
            None => (self.dummy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(target) else {
            return false;
        };
        // The parameters in the stored hash are used, so older hashes still verify after the
        // production parameters change.
        let ok = self
            .argon
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_field_and_state_themselves() {
        let long = "x".repeat(129);
        for bad in ["short", "12345678901234", long.as_str()] {
            let e = check_rules(bad, None).unwrap_err();
            assert!(
                matches!(&e, Error::Invalid { field: "password", message } if message == RULES),
                "{e}"
            );
        }
        assert!(check_rules("alice.smith-2026!", Some("alice.smith@example.com")).is_err());
        assert!(check_rules("correct horse battery", Some("bob@example.com")).is_ok());
        // Ten characters, counted as characters rather than bytes.
        assert!(check_rules("ääääääääää", None).is_ok());
    }

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let h = Hasher::with_params(1024, 1, 1);
        let a = h.hash("correct horse battery").unwrap();
        let b = h.hash("correct horse battery").unwrap();
        assert_ne!(a, b, "a fresh salt per hash");
        assert!(a.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(h.verify("correct horse battery", Some(&a)));
        assert!(!h.verify("correct horse batterY", Some(&a)));
        assert!(
            !h.verify("no such account", None),
            "the dummy never matches"
        );
        assert!(!h.verify("x", Some("not a phc string")));
    }

    #[test]
    fn production_parameters_are_owasp_argon2id() {
        let h = Hasher::production();
        let hash = h.hash("correct horse battery").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        // A hash made with other parameters still verifies (they are read from the hash).
        let old = Hasher::with_params(1024, 1, 1)
            .hash("correct horse battery")
            .unwrap();
        assert!(h.verify("correct horse battery", Some(&old)));
    }
}
