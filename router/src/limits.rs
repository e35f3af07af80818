//! Redis: webhook dedupe across replicas, per-user rate limit and daily plan quota, code
//! attempt counters, and the cross-replica gate on activity annotations.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use uuid::Uuid;

/// How long a dedupe key is kept: past the platforms' retry horizon (Telegram and Meta retry
/// for up to about a day).
const DEDUPE_TTL_SECS: u64 = 48 * 3600;
/// How long a claim stands while its message is being recorded: if its replica dies before
/// recording it, a platform retry after this gets through.
const DEDUPE_PENDING_MS: u64 = 30_000;

/// Outcome of the rate and quota check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Too many messages this minute; try again in this many seconds.
    RateLimited {
        retry_after_secs: u64,
    },
    /// The day's plan quota is used up; it resets at this time (UTC midnight).
    QuotaExceeded {
        resets_at: DateTime<Utc>,
    },
}

/// What Redis knows of a delivery's message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// First seen now: this delivery records it.
    New,
    /// Another delivery claimed it less than `DEDUPE_PENDING_MS` ago: it may still be
    /// recording it, or have recorded it (Postgres knows), or its replica may have died.
    BeingRecorded,
    /// Known recorded: a platform retry, answered without doing anything.
    Recorded,
    /// Claimed longer ago than `DEDUPE_PENDING_MS`, and this delivery has taken the claim
    /// over: the message was recorded (nearly always; Postgres knows) or its replica died
    /// before recording it. Not counted against the limits.
    Lapsed,
}

/// The rate and quota check as a Lua function, shared by [`ADMIT_SCRIPT`] and
/// [`BEGIN_SCRIPT`]. Rate limit first (a burst does not eat the day's quota), then the quota.
/// Returns the verdict (0 allowed, 1 rate limited, 2 over quota) and the day's count with this
/// message (0 when rate limited), so the caller can say what remains without a second call.
macro_rules! admit_lua {
    () => {
        r"
local function admit(rate, quota, per_minute, per_day)
  local r = redis.call('INCR', rate)
  if r == 1 then redis.call('EXPIRE', rate, 120) end
  if r > tonumber(per_minute) then return {1, 0} end
  local q = redis.call('INCR', quota)
  if q == 1 then redis.call('EXPIRE', quota, 172800) end
  if q > tonumber(per_day) then return {2, q} end
  return {0, q}
end
"
    };
}

/// Counts one message against the limits, atomically: KEYS rate, quota; ARGV per minute, per
/// day.
const ADMIT_SCRIPT: &str = concat!(
    admit_lua!(),
    "return admit(KEYS[1], KEYS[2], ARGV[1], ARGV[2])"
);

/// Claims a message id unless it is claimed already, and only then, when given the rate and
/// quota keys (`KEYS[2]`, `KEYS[3]`), counts it against them (`ARGV[3]`, `ARGV[4]`): a retry
/// is not counted twice. The key lives `ARGV[2]` seconds (the retry horizon) from the first
/// delivery and holds the claim's deadline (Redis's clock, ms): nothing needs to write it
/// again once the message is recorded, so a message costs one Redis round trip. A claim past
/// its deadline (`ARGV[1]` ms) is taken over (state 3). Values 1 (a claim for as long as the
/// key lives) and 2 (recorded) are those of earlier versions, still understood. Returns the
/// earlier state of the id (0 none, 1 being recorded, 2 recorded, 3 lapsed) and the
/// admission's verdict and count (0, 0 when not counted). The keys live on one server (no
/// Redis Cluster here).
const BEGIN_SCRIPT: &str = concat!(
    admit_lua!(),
    r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
local v = redis.call('GET', KEYS[1])
if v then
  local n = tonumber(v)
  if n == 2 then return {2, 0, 0} end
  if n == 1 or n > now then return {1, 0, 0} end
  redis.call('SET', KEYS[1], deadline, 'KEEPTTL')
  return {3, 0, 0}
end
redis.call('SET', KEYS[1], deadline, 'EX', ARGV[2])
if #KEYS < 3 then return {0, 0, 0} end
local a = admit(KEYS[2], KEYS[3], ARGV[3], ARGV[4])
return {0, a[1], a[2]}
"
);

/// Limits to count a message against along with its claim ([`Limits::dedupe_begin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admit {
    pub user: Uuid,
    pub per_minute: u32,
    pub per_day: u32,
}

/// What a claim found, and the admission of the message when it was counted with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Begun {
    pub delivery: Delivery,
    /// Some when an [`Admit`] was given and the delivery is [`Delivery::New`].
    pub admission: Option<Admission>,
}

/// Where a user stands against the daily message quota after a check (the
/// `X-RateLimit-*` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// When the count starts again (UTC midnight).
    pub resets_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Limits {
    conn: ConnectionManager,
    prefix: String,
    admit: redis::Script,
    begin: redis::Script,
}

impl Limits {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Limits {
            conn,
            prefix: prefix.to_string(),
            admit: redis::Script::new(ADMIT_SCRIPT),
            begin: redis::Script::new(BEGIN_SCRIPT),
        })
    }

    fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{}", self.prefix, parts)
    }

    /// Claims a message id for this delivery, or says what became of an earlier one; with
    /// `admit`, a new message is also counted against the user's limits in the same call.
    pub async fn dedupe_begin(
        &self,
        channel: &str,
        id: &str,
        admit: Option<Admit>,
    ) -> Result<Begun, redis::RedisError> {
        let now = Utc::now();
        let mut call = self
            .begin
            .key(self.key(format_args!("dedupe:{channel}:{id}")));
        call.arg(DEDUPE_PENDING_MS).arg(DEDUPE_TTL_SECS);
        if let Some(a) = admit {
            let (rate, quota) = self.admit_keys(a.user, now);
            call.key(rate).key(quota).arg(a.per_minute).arg(a.per_day);
        }
        let (state, verdict, count): (i64, i64, i64) =
            call.invoke_async(&mut self.conn.clone()).await?;
        let delivery = match state {
            0 => Delivery::New,
            1 => Delivery::BeingRecorded,
            3 => Delivery::Lapsed,
            _ => Delivery::Recorded,
        };
        let admission = match (delivery, admit) {
            (Delivery::New, Some(a)) => Some(verdict_of(now, a.per_day, verdict, count).0),
            _ => None,
        };
        Ok(Begun {
            delivery,
            admission,
        })
    }

    /// The message is known recorded: later retries need not ask Postgres.
    pub async fn dedupe_confirm(&self, channel: &str, id: &str) -> Result<(), redis::RedisError> {
        let key = self.key(format_args!("dedupe:{channel}:{id}"));
        redis::cmd("SET")
            .arg(&key)
            .arg(2)
            .arg("EX")
            .arg(DEDUPE_TTL_SECS)
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    /// Recording failed: let the platform's retry through.
    pub async fn dedupe_abort(&self, channel: &str, id: &str) -> Result<(), redis::RedisError> {
        let key = self.key(format_args!("dedupe:{channel}:{id}"));
        redis::cmd("DEL")
            .arg(&key)
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    /// Counts one message of `user` against the per-minute limit and the daily quota.
    pub async fn admit(
        &self,
        user: Uuid,
        per_minute: u32,
        per_day: u32,
    ) -> Result<Admission, redis::RedisError> {
        Ok(self.admit_counted(user, per_minute, per_day).await?.0)
    }

    /// [`Limits::admit`], and where the user then stands against the daily quota: one Redis
    /// call.
    pub async fn admit_counted(
        &self,
        user: Uuid,
        per_minute: u32,
        per_day: u32,
    ) -> Result<(Admission, Quota), redis::RedisError> {
        let now = Utc::now();
        let (rate_key, quota_key) = self.admit_keys(user, now);
        let (verdict, count): (i64, i64) = self
            .admit
            .key(rate_key)
            .key(quota_key)
            .arg(per_minute)
            .arg(per_day)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(verdict_of(now, per_day, verdict, count))
    }

    /// The per-minute and daily counters of `user` at `now`.
    fn admit_keys(&self, user: Uuid, now: DateTime<Utc>) -> (String, String) {
        let minute = now.timestamp() / 60;
        let day = Day(now);
        (
            self.key(format_args!("rate:{user}:{minute}")),
            self.key(format_args!("quota:{user}:{day}")),
        )
    }

    /// Messages of `user` counted today (UTC), without counting one.
    pub async fn quota_used(&self, user: Uuid) -> Result<u32, redis::RedisError> {
        let day = Day(Utc::now());
        let key = self.key(format_args!("quota:{user}:{day}"));
        let n: Option<u32> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// Counts a code attempt of a sender; returns the number of attempts in the window.
    pub async fn code_attempt(
        &self,
        channel: &str,
        sender: &str,
        window: Duration,
    ) -> Result<u64, redis::RedisError> {
        let key = self.key(format_args!("code-attempts:{channel}:{sender}"));
        let (n,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(window.as_secs())
            .arg("NX")
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n)
    }

    /// True for the first caller per `name` per `window`, across replicas.
    pub async fn gate(&self, name: &str, window: Duration) -> Result<bool, redis::RedisError> {
        let key = self.key(format_args!("gate:{name}"));
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(window.as_millis().max(1) as u64)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(set.is_some())
    }

    /// Removes every key about a deleted user: its rate and quota counters, its tenant's
    /// activity gates, the code-attempt counters of its chat accounts and the dedupe keys of
    /// its messages.
    pub async fn forget_user(
        &self,
        user: Uuid,
        tenant: &str,
        senders: &[(String, String)],
        messages: &[(String, String)],
    ) -> Result<(), redis::RedisError> {
        let mut keys: Vec<String> = senders
            .iter()
            .map(|(c, s)| self.key(format_args!("code-attempts:{c}:{s}")))
            .chain(
                messages
                    .iter()
                    .map(|(c, id)| self.key(format_args!("dedupe:{c}:{id}"))),
            )
            .chain(["activity", "wake"].map(|g| self.key(format_args!("gate:{g}:{tenant}"))))
            .collect();
        let mut conn = self.conn.clone();
        // Built before the loop: a `format_args!` temporary must not live across an await.
        let patterns = [
            self.key(format_args!("rate:{user}:*")),
            self.key(format_args!("quota:{user}:*")),
        ];
        for pattern in patterns {
            let mut cursor: u64 = 0;
            loop {
                let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        for chunk in keys.chunks(500) {
            redis::cmd("DEL")
                .arg(chunk)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(|_| ())
    }
}

/// The admission and quota standing of the admit script's answer (verdict, count) at `now`.
fn verdict_of(now: DateTime<Utc>, per_day: u32, verdict: i64, count: i64) -> (Admission, Quota) {
    let resets_at = next_utc_midnight(now);
    let admission = match verdict {
        1 => Admission::RateLimited {
            retry_after_secs: (60 - now.timestamp() % 60) as u64,
        },
        2 => Admission::QuotaExceeded { resets_at },
        _ => Admission::Allowed,
    };
    let quota = Quota {
        limit: per_day,
        remaining: u32::try_from(i64::from(per_day) - count).unwrap_or(0),
        resets_at,
    };
    (admission, quota)
}

fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive().succ_opt().unwrap_or(now.date_naive());
    tomorrow
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now)
}

/// A quota key's UTC day, `YYYYMMDD`: what `format("%Y%m%d")` writes, without parsing the
/// pattern on every message.
struct Day(DateTime<Utc>);

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use chrono::Datelike;
        let d = self.0.date_naive();
        write!(f, "{:04}{:02}{:02}", d.year(), d.month(), d.day())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_day_is_written_as_before() {
        for at in [
            "2026-01-02T00:00:00Z",
            "2026-12-31T23:59:59Z",
            "0999-03-04T12:00:00Z",
        ] {
            let t: DateTime<Utc> = at.parse().expect("time");
            assert_eq!(Day(t).to_string(), t.format("%Y%m%d").to_string(), "{at}");
        }
    }

    #[test]
    fn quota_resets_at_the_next_utc_midnight() {
        let now: DateTime<Utc> = "2026-11-25T17:30:00Z".parse().unwrap();
        assert_eq!(
            next_utc_midnight(now).to_rfc3339(),
            "2026-11-26T00:00:00+00:00"
        );
    }
}
