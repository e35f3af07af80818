//! One send-with-retry for Telegram, WhatsApp and Discord, which each say "slow down" their
//! own way:
//!
//! - Telegram: HTTP 429, `{"ok":false,"error_code":429,"parameters":{"retry_after":N}}` (whole
//!   seconds).
//! - Discord: HTTP 429, `{"retry_after": 1.5, "global": false}` (seconds, fractional) and the
//!   `Retry-After` / `X-RateLimit-Reset-After` headers; a success with
//!   `X-RateLimit-Remaining: 0` says the route's bucket is empty until `X-RateLimit-Reset-After`.
//! - WhatsApp (Graph API): HTTP 429 or 400 with `error.code` 4 (app call limit), 80007
//!   (business account limit), 130429 (the number's throughput, 80 messages/s by default) or
//!   131056 (one business to one user pair limit, about one message every 6 s). No wait is
//!   given: exponential backoff.
//!
//! A wait the platform asks for pauses that route (chat, channel, recipient) for every send,
//! not only the retried one, through a [`Pacer`]. 5xx and connection failures are retried with
//! backoff; any other 4xx is final. Bounded: at most [`Policy::attempts`] attempts and
//! [`Policy::budget`] of waiting in all; a platform asking for more is reported as
//! [`SendError::Throttled`] rather than holding the reply (and its claim on the message) for
//! minutes. Errors never carry the request URL (a Telegram URL holds the bot token).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;

use crate::outbound::SendError;

/// Whose answers a send reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Telegram,
    WhatsApp,
    Discord,
}

/// How hard one send tries.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// Most time spent waiting between attempts, in all.
    pub budget: Duration,
    /// First backoff where the platform gives no wait (doubled each time, plus up to a
    /// quarter of jitter so that sends throttled together do not come back together).
    pub first_backoff: Duration,
}

impl Policy {
    /// Replies and notices: a short throttle is waited out, a long one reported.
    pub const REPLY: Policy = Policy {
        attempts: 5,
        budget: Duration::from_secs(30),
        first_backoff: Duration::from_millis(500),
    };
    /// Typing indicators: worth one try, never a wait of their own.
    pub const ONCE: Policy = Policy {
        attempts: 1,
        budget: Duration::ZERO,
        first_backoff: Duration::ZERO,
    };
}

/// What a failed answer says about sending again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// The platform asked to slow down, with the wait it gave (None: back off).
    Throttled(Option<Duration>),
    /// A 5xx: try again after a backoff.
    Transient,
    /// Refused for good (bad request, blocked by the user, bad token...).
    Final,
}

/// Where sends to one platform wait their turn: the spacing the platform's limits need and
/// the pauses its throttling answers ask for.
pub trait Pacer: Send + Sync {
    type Key: ?Sized + Sync;
    /// When the next send to `key` may go (taking that slot).
    fn slot(&self, key: &Self::Key) -> Instant;
    /// The platform asked for nothing more to `key` for `wait`.
    fn pause(&self, key: &Self::Key, wait: Duration);
}

/// Pauses by route, for platforms that need no spacing of their own (WhatsApp, Discord).
#[derive(Default)]
pub struct Pauses {
    until: Mutex<HashMap<String, Instant>>,
}

/// Past this many routes, lapsed pauses are dropped.
const MAX_PAUSED_ROUTES: usize = 10_000;

impl Pacer for Pauses {
    type Key = str;

    fn slot(&self, key: &str) -> Instant {
        let now = Instant::now();
        let until = self.until.lock().expect("pauses lock");
        until.get(key).map_or(now, |t| now.max(*t))
    }

    fn pause(&self, key: &str, wait: Duration) {
        let now = Instant::now();
        let mut until = self.until.lock().expect("pauses lock");
        if until.len() >= MAX_PAUSED_ROUTES {
            until.retain(|_, t| *t > now);
        }
        let t = until.entry(key.to_string()).or_insert(now);
        *t = (*t).max(now + wait);
    }
}

impl Platform {
    fn name(self) -> &'static str {
        match self {
            Platform::Telegram => "telegram",
            Platform::WhatsApp => "whatsapp",
            Platform::Discord => "discord",
        }
    }

    /// What a non-success answer means for a retry.
    pub fn verdict(self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
        let throttled = match self {
            Platform::Telegram => (status == StatusCode::TOO_MANY_REQUESTS
                || telegram_error_code(body) == Some(429))
            .then(|| telegram_retry_after(body)),
            Platform::Discord => (status == StatusCode::TOO_MANY_REQUESTS)
                .then(|| discord_retry_after(headers, body)),
            Platform::WhatsApp => whatsapp_throttled(status, body).then_some(None),
        };
        match throttled {
            Some(wait) => Verdict::Throttled(wait),
            None if status.is_server_error() => Verdict::Transient,
            None => Verdict::Final,
        }
    }

    /// How long a route must rest after a successful send (Discord: its bucket is empty).
    pub fn rest_after_success(self, headers: &HeaderMap) -> Option<Duration> {
        match self {
            Platform::Discord => discord_bucket_empty(headers),
            Platform::Telegram | Platform::WhatsApp => None,
        }
    }

    /// Sends `request()` (built afresh for each attempt) to `key` when `pacer` lets it go,
    /// retrying as the platform's answers and `policy` allow. The successful response is
    /// returned for its body.
    pub async fn send<P: Pacer + ?Sized>(
        self,
        policy: &Policy,
        pacer: &P,
        key: &P::Key,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        let platform = self.name();
        let mut waited = Duration::ZERO;
        let mut backoff = policy.first_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            tokio::time::sleep_until(pacer.slot(key)).await;
            let (verdict, failure) = match request().send().await {
                Ok(response) if response.status().is_success() => {
                    if let Some(rest) = self.rest_after_success(response.headers()) {
                        pacer.pause(key, rest);
                    }
                    return Ok(response);
                }
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    let verdict = self.verdict(status, &headers, &body);
                    let failure = match verdict {
                        Verdict::Throttled(_) => SendError::Throttled {
                            status: status.as_u16(),
                        },
                        _ => SendError::Refused {
                            status: status.as_u16(),
                        },
                    };
                    (verdict, failure)
                }
                Err(e) => {
                    // Without the URL: a Telegram URL holds the bot token.
                    let e = e.without_url();
                    (Verdict::Transient, SendError::Unreachable(e.to_string()))
                }
            };
            let wait = match verdict {
                Verdict::Final => return Err(failure),
                Verdict::Throttled(Some(wait)) => wait,
                Verdict::Throttled(None) | Verdict::Transient => {
                    let wait = backoff.mul_f64(rand::random_range(1.0..1.25));
                    backoff *= 2;
                    wait
                }
            };
            if attempt >= policy.attempts || waited + wait > policy.budget {
                if policy.attempts > 1 {
                    tracing::warn!(platform, attempt, ?wait, error = %failure, "send failed; retry budget spent");
                }
                return Err(failure);
            }
            waited += wait;
            match verdict {
                Verdict::Throttled(_) => {
                    // Every send to this route waits, not only this one.
                    tracing::info!(platform, attempt, ?wait, "asked to slow down");
                    pacer.pause(key, wait);
                }
                _ => {
                    tracing::warn!(platform, attempt, ?wait, error = %failure, "send failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// A Bot API error answer: `{"ok":false,"error_code":429,"description":"Too Many Requests:
/// retry after 5","parameters":{"retry_after":5}}`.
#[derive(Deserialize)]
struct TelegramError {
    error_code: Option<i64>,
    #[serde(default)]
    parameters: TelegramParameters,
}

#[derive(Default, Deserialize)]
struct TelegramParameters {
    retry_after: Option<u64>,
}

fn telegram_error(body: &[u8]) -> Option<TelegramError> {
    serde_json::from_slice(body).ok()
}

fn telegram_error_code(body: &[u8]) -> Option<i64> {
    telegram_error(body)?.error_code
}

/// The wait a Telegram 429 asks for (`parameters.retry_after`, seconds).
pub fn telegram_retry_after(body: &[u8]) -> Option<Duration> {
    telegram_error(body)?
        .parameters
        .retry_after
        .map(Duration::from_secs)
}

/// The wait a Discord 429 asks for: the body's `retry_after`, else `X-RateLimit-Reset-After`,
/// else `Retry-After` (seconds; the first two fractional, the header whole, rounded up).
pub fn discord_retry_after(headers: &HeaderMap, body: &[u8]) -> Option<Duration> {
    #[derive(Deserialize)]
    struct RateLimited {
        retry_after: Option<f64>,
    }
    let from_body = serde_json::from_slice::<RateLimited>(body)
        .ok()
        .and_then(|b| b.retry_after)
        .and_then(seconds);
    from_body
        .or_else(|| header_seconds(headers, "x-ratelimit-reset-after").and_then(seconds))
        .or_else(|| header_seconds(headers, "retry-after").and_then(seconds))
}

/// After a success: the route's bucket is empty (`X-RateLimit-Remaining: 0`) until
/// `X-RateLimit-Reset-After`.
pub fn discord_bucket_empty(headers: &HeaderMap) -> Option<Duration> {
    let remaining = headers.get("x-ratelimit-remaining")?.to_str().ok()?;
    if remaining.trim() != "0" {
        return None;
    }
    header_seconds(headers, "x-ratelimit-reset-after").and_then(seconds)
}

fn header_seconds(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Seconds from a platform's answer as a duration (nothing for negative or absurd values).
fn seconds(s: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(s).ok()
}

/// Graph API error codes that mean "too many, wait and retry" for a WhatsApp send
/// (developers.facebook.com, WhatsApp Cloud API error codes: throttling errors).
pub const WHATSAPP_THROTTLING_CODES: [i64; 4] = [
    4,      // API Too Many Calls: the app's call rate limit
    80007,  // Rate limit issues: the WhatsApp Business Account's limit
    130429, // Rate limit hit: the number's message throughput
    131056, // (Business Account, Consumer Account) pair rate limit hit
];

/// Whether a Graph API answer says the send was throttled (HTTP 429, or an error code from
/// [`WHATSAPP_THROTTLING_CODES`], which Meta sends with HTTP 400 as often as 429).
pub fn whatsapp_throttled(status: StatusCode, body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Answer {
        error: Option<GraphError>,
    }
    #[derive(Deserialize)]
    struct GraphError {
        code: Option<serde_json::Value>,
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return true;
    }
    let code = serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|a| a.error?.code)
        .and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()));
    code.is_some_and(|c| WHATSAPP_THROTTLING_CODES.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    const TOO_MANY: StatusCode = StatusCode::TOO_MANY_REQUESTS;

    #[test]
    fn telegram_429_gives_its_retry_after() {
        let body = br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
        assert_eq!(telegram_retry_after(body), Some(Duration::from_secs(7)));
        assert_eq!(
            Platform::Telegram.verdict(TOO_MANY, &HeaderMap::new(), body),
            Verdict::Throttled(Some(Duration::from_secs(7)))
        );
        // A 429 without parameters (or without a JSON body): back off.
        assert_eq!(
            Platform::Telegram.verdict(TOO_MANY, &HeaderMap::new(), b"Too Many Requests"),
            Verdict::Throttled(None)
        );
        // Other errors carry no wait and are final; a 5xx is transient.
        let blocked = br#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#;
        assert_eq!(telegram_retry_after(blocked), None);
        assert_eq!(
            Platform::Telegram.verdict(StatusCode::FORBIDDEN, &HeaderMap::new(), blocked),
            Verdict::Final
        );
        assert_eq!(
            Platform::Telegram.verdict(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b""),
            Verdict::Transient
        );
    }

    #[test]
    fn discord_429_waits_what_the_body_or_the_headers_say() {
        let body =
            br#"{"message":"You are being rate limited.","retry_after":0.75,"global":false}"#;
        assert_eq!(
            discord_retry_after(&HeaderMap::new(), body),
            Some(Duration::from_millis(750))
        );
        // The body's exact figure wins over the rounded-up header.
        let h = headers(&[
            ("retry-after", "1"),
            ("x-ratelimit-reset-after", "0.750"),
            ("x-ratelimit-remaining", "0"),
        ]);
        assert_eq!(
            discord_retry_after(&h, body),
            Some(Duration::from_millis(750))
        );
        // Headers alone (a 429 from the edge without a JSON body).
        let h = headers(&[("retry-after", "2"), ("x-ratelimit-reset-after", "1.250")]);
        assert_eq!(
            Platform::Discord.verdict(TOO_MANY, &h, b"<html>"),
            Verdict::Throttled(Some(Duration::from_millis(1250)))
        );
        let h = headers(&[("retry-after", "2")]);
        assert_eq!(discord_retry_after(&h, b""), Some(Duration::from_secs(2)));
        assert_eq!(
            Platform::Discord.verdict(TOO_MANY, &HeaderMap::new(), b""),
            Verdict::Throttled(None)
        );
        // Garbage never becomes a wait.
        let h = headers(&[("retry-after", "-3"), ("x-ratelimit-reset-after", "soon")]);
        assert_eq!(discord_retry_after(&h, br#"{"retry_after":"x"}"#), None);
        let missing = br#"{"message":"Missing Access","code":50001}"#;
        assert_eq!(
            Platform::Discord.verdict(StatusCode::FORBIDDEN, &HeaderMap::new(), missing),
            Verdict::Final
        );
    }

    #[test]
    fn discord_empty_bucket_rests_the_route_after_a_success() {
        let h = headers(&[
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "0.5"),
        ]);
        assert_eq!(discord_bucket_empty(&h), Some(Duration::from_millis(500)));
        assert_eq!(
            Platform::Discord.rest_after_success(&h),
            Some(Duration::from_millis(500))
        );
        let h = headers(&[
            ("x-ratelimit-remaining", "3"),
            ("x-ratelimit-reset-after", "0.5"),
        ]);
        assert_eq!(discord_bucket_empty(&h), None);
        assert_eq!(Platform::Telegram.rest_after_success(&h), None);
        assert_eq!(discord_bucket_empty(&HeaderMap::new()), None);
    }

    #[test]
    fn whatsapp_throttling_codes_back_off_whatever_the_status() {
        let pair = br#"{"error":{"message":"(#131056) (Business Account, Consumer Account) pair rate limit hit","type":"OAuthException","code":131056,"error_data":{"messaging_product":"whatsapp","details":"Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."},"fbtrace_id":"A1b2"}}"#;
        assert!(whatsapp_throttled(StatusCode::BAD_REQUEST, pair));
        for code in WHATSAPP_THROTTLING_CODES {
            let body = format!(r#"{{"error":{{"message":"(#{code}) Rate limit","code":{code}}}}}"#);
            assert_eq!(
                Platform::WhatsApp.verdict(
                    StatusCode::BAD_REQUEST,
                    &HeaderMap::new(),
                    body.as_bytes()
                ),
                Verdict::Throttled(None),
                "{code}"
            );
        }
        // Some providers relay the code as a string.
        assert!(whatsapp_throttled(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":"130429"}}"#
        ));
        assert!(whatsapp_throttled(TOO_MANY, b""));
        // The closed service window (131047) and a bad token (190) are final.
        let window = br#"{"error":{"message":"(#131047) Re-engagement message","code":131047}}"#;
        assert_eq!(
            Platform::WhatsApp.verdict(StatusCode::BAD_REQUEST, &HeaderMap::new(), window),
            Verdict::Final
        );
        let token = br#"{"error":{"message":"Invalid OAuth access token.","type":"OAuthException","code":190}}"#;
        assert_eq!(
            Platform::WhatsApp.verdict(StatusCode::UNAUTHORIZED, &HeaderMap::new(), token),
            Verdict::Final
        );
        assert_eq!(
            Platform::WhatsApp.verdict(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b""),
            Verdict::Transient
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_its_route_only() {
        let pauses = Pauses::default();
        let t0 = Instant::now();
        pauses.pause("a", Duration::from_secs(3));
        pauses.pause("a", Duration::from_secs(1));
        assert_eq!(
            pauses.slot("a") - t0,
            Duration::from_secs(3),
            "the longer pause holds"
        );
        assert_eq!(pauses.slot("b"), t0);
    }

    #[tokio::test]
    async fn an_unreachable_platform_error_has_no_url() {
        let token = "123456:SECRET-bot-token";
        let http = reqwest::Client::new();
        // Port 1 on loopback: refused at once.
        let url = format!("http://127.0.0.1:1/bot{token}/sendMessage");
        let err = Platform::Telegram
            .send(&Policy::ONCE, &Pauses::default(), "chat", || {
                http.post(&url)
            })
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, SendError::Unreachable(_)), "{err:?}");
        assert!(!err.to_string().contains(token), "{err}");
        assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");
    }
}
