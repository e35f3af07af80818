//! Failed-login counters in Redis, per account and per client address, shared by replicas.
//!
//! Only failures count; a success clears the account's counter. The account is keyed by the
//! SHA-256 of its e-mail, so Redis holds no address in clear. Both limits are checked before
//! the password is (an attacker at the limit costs no Argon2 time).

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Limits of failed logins.
#[derive(Clone, Copy, Debug)]
pub struct AttemptLimits {
    pub per_account: u32,
    pub per_address: u32,
    pub window: Duration,
    /// Registrations (every attempt, not only failures) per client address per
    /// `registration_window`: sign-up creates a workspace, so it is not free to repeat.
    pub registrations_per_address: u32,
    /// Registration attempts per e-mail address per `registration_window`.
    pub registrations_per_email: u32,
    pub registration_window: Duration,
}

impl Default for AttemptLimits {
    fn default() -> Self {
        AttemptLimits {
            per_account: 10,
            per_address: 50,
            window: Duration::from_secs(15 * 60),
            registrations_per_address: 20,
            registrations_per_email: 5,
            registration_window: Duration::from_secs(3600),
        }
    }
}

#[derive(Clone)]
pub struct LoginAttempts {
    conn: ConnectionManager,
    prefix: String,
    limits: AttemptLimits,
}

impl LoginAttempts {
    pub fn new(conn: ConnectionManager, prefix: &str, limits: AttemptLimits) -> Self {
        LoginAttempts {
            conn,
            prefix: prefix.to_string(),
            limits,
        }
    }

    /// The Redis key of an account's counter.
    pub fn account_key(&self, email: &str) -> String {
        format!(
            "{}login:account:{}",
            self.prefix,
            hex::encode(Sha256::digest(email.as_bytes()))
        )
    }

    fn address_key(&self, addr: IpAddr) -> String {
        format!("{}login:address:{addr}", self.prefix)
    }

    /// `TooManyAttempts` when either counter is at its limit.
    pub async fn check(&self, email: &str, addr: Option<IpAddr>) -> Result<()> {
        let mut keys = vec![(self.account_key(email), self.limits.per_account)];
        if let Some(a) = addr {
            keys.push((self.address_key(a), self.limits.per_address));
        }
        let mut conn = self.conn.clone();
        for (key, limit) in keys {
            let (count, ttl): (Option<u32>, i64) = redis::pipe()
                .get(&key)
                .ttl(&key)
                .query_async(&mut conn)
                .await?;
            if count.unwrap_or(0) >= limit {
                return Err(Error::TooManyAttempts {
                    retry_after_secs: ttl.max(1) as u64,
                });
            }
        }
        Ok(())
    }

    /// Counts a failed login.
    pub async fn failed(&self, email: &str, addr: Option<IpAddr>) -> Result<()> {
        let mut keys = vec![self.account_key(email)];
        if let Some(a) = addr {
            keys.push(self.address_key(a));
        }
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.incr(key, 1)
                .ignore()
                .cmd("EXPIRE")
                .arg(key)
                .arg(self.limits.window.as_secs().max(1))
                .arg("NX")
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Counts a registration attempt from `addr` for `email`; `TooManyAttempts` once either
    /// is over its limit in the window. Counted before the password is hashed, so a flood
    /// costs no Argon2 time.
    pub async fn registration(&self, email: Option<&str>, addr: Option<IpAddr>) -> Result<()> {
        let mut keys = Vec::new();
        if let Some(email) = email {
            keys.push((
                format!(
                    "{}register:email:{}",
                    self.prefix,
                    hex::encode(Sha256::digest(email.as_bytes()))
                ),
                self.limits.registrations_per_email,
            ));
        }
        if let Some(a) = addr {
            keys.push((
                format!("{}register:address:{a}", self.prefix),
                self.limits.registrations_per_address,
            ));
        }
        if keys.is_empty() {
            return Ok(());
        }
        let window = self.limits.registration_window.as_secs().max(1);
        // Every attempt counts on every key (one round trip), then any key over its limit
        // refuses it.
        let mut pipe = redis::pipe();
        for (key, _) in &keys {
            pipe.incr(key, 1)
                .cmd("EXPIRE")
                .arg(key)
                .arg(window)
                .arg("NX")
                .ignore()
                .ttl(key);
        }
        let counted: Vec<i64> = pipe.query_async(&mut self.conn.clone()).await?;
        for ((_, limit), pair) in keys.iter().zip(counted.chunks(2)) {
            if let [count, ttl] = pair
                && *count > i64::from(*limit)
            {
                return Err(Error::TooManyAttempts {
                    retry_after_secs: (*ttl).max(1) as u64,
                });
            }
        }
        Ok(())
    }

    /// The Redis keys that name `email` (for deleting an account without trace).
    pub fn email_keys(&self, email: &str) -> Vec<String> {
        vec![
            self.account_key(email),
            format!(
                "{}register:email:{}",
                self.prefix,
                hex::encode(Sha256::digest(email.as_bytes()))
            ),
        ]
    }

    /// A successful login (or a deleted account): the account's counter goes.
    pub async fn clear(&self, email: &str) -> Result<()> {
        redis::cmd("DEL")
            .arg(self.email_keys(email))
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
