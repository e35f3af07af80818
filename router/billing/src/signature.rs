//! Stripe's webhook signature scheme: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=...]`
//! where each `v1` is HMAC-SHA256 of `"<t>.<raw body>"` under the endpoint's signing secret.
//! A signature older or newer than the tolerance is refused, so a captured request cannot be
//! replayed later (Stripe's libraries use 300 seconds).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Stripe's default tolerance.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// Checks `header` against `payload` at time `now` (unix seconds). Any one matching `v1`
/// passes (Stripe sends two while a secret is being rolled); other schemes are ignored.
pub fn verify(
    payload: &[u8],
    header: &str,
    secret: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<()> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.extend(hex::decode(s).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Error::Signature("no timestamp"))?;
    if signatures.is_empty() {
        return Err(Error::Signature("no v1 signature"));
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(Error::Signature("timestamp outside the tolerance"));
    }
    let expected = mac(secret, timestamp, payload);
    if signatures
        .iter()
        .any(|s| expected.clone().verify_slice(s).is_ok())
    {
        Ok(())
    } else {
        Err(Error::Signature("no signature matches"))
    }
}

/// The header Stripe would send for `payload` at `timestamp` (for tools and tests).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let sig = hex::encode(mac(secret, timestamp, payload).finalize().into_bytes());
    format!("t={timestamp},v1={sig}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    #[test]
    fn a_genuine_signature_within_the_tolerance_passes() {
        let header = sign(BODY, SECRET, 1_000);
        assert!(verify(BODY, &header, SECRET, 1_000, 300).is_ok());
        assert!(verify(BODY, &header, SECRET, 1_300, 300).is_ok());
        // A second, unknown signature beside the genuine one (secret rolling) still passes.
        let rolled = format!("{header},v1={},v0=abc", "00".repeat(32));
        assert!(verify(BODY, &rolled, SECRET, 1_000, 300).is_ok());
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        let header = sign(BODY, SECRET, 1_000);
        let refused = |body: &[u8], header: &str, secret: &str, now: i64| match verify(
            body, header, secret, now, 300,
        ) {
            Err(Error::Signature(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            refused(BODY, &header, SECRET, 1_301),
            "timestamp outside the tolerance"
        );
        assert_eq!(
            refused(BODY, &header, SECRET, 699),
            "timestamp outside the tolerance"
        );
        assert_eq!(
            refused(BODY, &header, "whsec_other", 1_000),
            "no signature matches"
        );
        assert_eq!(
            refused(b"{}", &header, SECRET, 1_000),
            "no signature matches"
        );
        assert_eq!(refused(BODY, "v1=abcd", SECRET, 1_000), "no timestamp");
        assert_eq!(refused(BODY, "t=1000", SECRET, 1_000), "no v1 signature");
        assert_eq!(refused(BODY, "", SECRET, 1_000), "no timestamp");
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replacen("t=1000", "t=1001", 1);
        assert_eq!(refused(BODY, &moved, SECRET, 1_000), "no signature matches");
    }
}
