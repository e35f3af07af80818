//! The whole sign-in against a local OpenID provider speaking the real protocol
//! (`clawdbot_testkit::fake_oidc`): discovery, authorization with PKCE, the token endpoint,
//! JWKS and RS256 ID tokens; each check of the client proven by a provider that breaks it.

use std::collections::HashMap;
use std::time::Duration;

use clawdbot_oidc::{Error, OidcClient, OidcConfig, PendingLogin, Secret, VerifiedIdentity};
use clawdbot_testkit::fake_oidc::{ClientAuth, FakeOidc, Misbehave, TestUser};

const CLIENT_ID: &str = "clawdbot-test.apps.example";
const CLIENT_SECRET: &str = "s3cr3t: with spaces & symbols";
const REDIRECT: &str = "http://127.0.0.1:1/api/v1/auth/oauth/google/callback";

async fn provider() -> FakeOidc {
    clawdbot_testkit::init_tracing();
    FakeOidc::start(CLIENT_ID, CLIENT_SECRET, &[REDIRECT]).await
}

fn config(p: &FakeOidc) -> OidcConfig {
    OidcConfig::new(p.issuer(), CLIENT_ID, Secret::new(CLIENT_SECRET), REDIRECT)
}

async fn client(p: &FakeOidc) -> OidcClient {
    OidcClient::discover(config(p)).await.expect("discovery")
}

/// Start, follow the authorization URL as a browser would, return the callback's query.
async fn authorize(p: &FakeOidc, c: &OidcClient) -> (PendingLogin, HashMap<String, String>) {
    let (url, pending) = c.start().expect("start");
    let back = p
        .authorize(url.as_str())
        .await
        .expect("provider redirects back");
    (pending, back)
}

async fn sign_in(p: &FakeOidc, c: &OidcClient) -> Result<VerifiedIdentity, Error> {
    let (pending, back) = authorize(p, c).await;
    assert!(!back.contains_key("error"), "provider refused: {back:?}");
    c.finish(pending, &back["code"], &back["state"]).await
}

fn invalid_token(r: Result<VerifiedIdentity, Error>, reason: &str) {
    match r {
        Err(Error::InvalidIdToken(why)) => {
            assert!(
                why.contains(reason),
                "rejected for {why:?}, expected {reason:?}"
            )
        }
        other => panic!("expected an ID token rejected for {reason:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn happy_path_signs_in_the_provider_user() {
    let p = provider().await;
    let c = client(&p).await;
    assert_eq!(c.metadata().token_endpoint, format!("{}/token", p.issuer()));

    let (url, pending) = c.start().expect("start");
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], REDIRECT);
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["state"], pending.state);
    assert_eq!(q["nonce"], pending.nonce.expose());
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["code_challenge"],
        clawdbot_oidc::pkce_challenge(pending.pkce_verifier.expose())
    );
    // The verifier itself never leaves the server.
    assert!(!url.as_str().contains(pending.pkce_verifier.expose()));

    let back = p.authorize(url.as_str()).await.expect("redirect");
    let who = c
        .finish(pending, &back["code"], &back["state"])
        .await
        .expect("sign-in");
    let user = TestUser::default();
    assert_eq!(
        who,
        VerifiedIdentity {
            issuer: p.issuer(),
            subject: user.sub,
            email: user.email,
            email_verified: true,
            name: user.name,
        }
    );
    // The client secret went in the Basic header (the default of the spec).
    let reqs = p.token_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].auth, Some(ClientAuth::Basic));
    assert_eq!(reqs[0].error, None);
}

#[tokio::test]
async fn a_provider_without_basic_auth_gets_the_secret_in_the_form() {
    let p = provider().await;
    p.set_auth_methods(&[ClientAuth::Post]);
    let c = client(&p).await;
    sign_in(&p, &c).await.expect("sign-in");
    assert_eq!(p.token_requests()[0].auth, Some(ClientAuth::Post));
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_by_the_provider_and_not_echoed() {
    let p = provider().await;
    let mut cfg = config(&p);
    cfg.client_secret = Secret::new("not-the-secret");
    let c = OidcClient::discover(cfg).await.expect("discovery");
    let (pending, back) = authorize(&p, &c).await;
    let err = c
        .finish(pending, &back["code"], &back["state"])
        .await
        .expect_err("wrong secret");
    assert!(
        matches!(&err, Error::TokenRefused { error, .. } if error == "invalid_client"),
        "{err:?}"
    );
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("not-the-secret") && !shown.contains(&back["code"]),
        "{shown}"
    );
}

#[tokio::test]
async fn a_pkce_verifier_that_does_not_match_the_challenge_is_refused() {
    let p = provider().await;
    let c = client(&p).await;
    let (mut pending, back) = authorize(&p, &c).await;
    // As if the code had been stolen and redeemed by someone without the verifier.
    pending.pkce_verifier = Secret::new("a".repeat(43));
    let err = c
        .finish(pending, &back["code"], &back["state"])
        .await
        .expect_err("PKCE mismatch");
    match err {
        Error::TokenRefused { error, description } => {
            assert_eq!(error, "invalid_grant");
            assert!(description.unwrap_or_default().contains("PKCE"));
        }
        other => panic!("expected the token endpoint to refuse, got {other:?}"),
    }
}

#[tokio::test]
async fn a_returned_state_that_differs_is_refused_before_the_code_is_used() {
    let p = provider().await;
    let c = client(&p).await;
    let (pending, back) = authorize(&p, &c).await;
    let err = c
        .finish(pending.clone(), &back["code"], "forged-state")
        .await
        .expect_err("state mismatch");
    assert!(matches!(err, Error::StateMismatch), "{err:?}");
    assert!(p.token_requests().is_empty(), "the code was not spent");
    // The genuine callback still works.
    c.finish(pending, &back["code"], &back["state"])
        .await
        .expect("sign-in");
}

#[tokio::test]
async fn a_code_is_good_for_one_sign_in() {
    let p = provider().await;
    let c = client(&p).await;
    let (pending, back) = authorize(&p, &c).await;
    c.finish(pending.clone(), &back["code"], &back["state"])
        .await
        .expect("first use");
    let err = c
        .finish(pending, &back["code"], &back["state"])
        .await
        .expect_err("replay");
    assert!(
        matches!(&err, Error::TokenRefused { error, .. } if error == "invalid_grant"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_expired_pending_login_is_refused() {
    let p = provider().await;
    let c = client(&p).await;
    let (mut pending, back) = authorize(&p, &c).await;
    pending.started_at -= 601;
    let err = c
        .finish(pending, &back["code"], &back["state"])
        .await
        .expect_err("too old");
    assert!(matches!(err, Error::LoginExpired), "{err:?}");
}

#[tokio::test]
async fn an_id_token_with_another_nonce_is_refused() {
    let p = provider().await;
    let c = client(&p).await;
    p.misbehave(Misbehave {
        nonce: Some("someone-elses-nonce".into()),
        ..Default::default()
    });
    invalid_token(sign_in(&p, &c).await, "nonce");
}

#[tokio::test]
async fn an_id_token_changed_after_signing_is_refused() {
    let p = provider().await;
    let c = client(&p).await;
    p.misbehave(Misbehave {
        tamper: true,
        ..Default::default()
    });
    invalid_token(sign_in(&p, &c).await, "signature does not verify");
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    let p = provider().await;
    let c = client(&p).await;
    p.misbehave(Misbehave {
        expired: true,
        ..Default::default()
    });
    invalid_token(sign_in(&p, &c).await, "expired");
}

#[tokio::test]
async fn an_id_token_for_another_audience_is_refused() {
    let p = provider().await;
    let c = client(&p).await;
    p.misbehave(Misbehave {
        audience: Some("another-client".into()),
        ..Default::default()
    });
    invalid_token(sign_in(&p, &c).await, "audience");
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    let p = provider().await;
    let c = client(&p).await;
    p.misbehave(Misbehave {
        issuer: Some("https://evil.example".into()),
        ..Default::default()
    });
    invalid_token(sign_in(&p, &c).await, "issuer");
}

#[tokio::test]
async fn an_unverified_email_is_refused() {
    let p = provider().await;
    let c = client(&p).await;
    p.set_user(TestUser {
        email_verified: false,
        ..Default::default()
    });
    let err = sign_in(&p, &c).await.expect_err("unverified");
    assert!(matches!(err, Error::EmailNotVerified), "{err:?}");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_when_a_token_names_it() {
    let p = provider().await;
    let mut cfg = config(&p);
    cfg.jwks_refetch_interval = Duration::ZERO;
    let c = OidcClient::discover(cfg).await.expect("discovery");
    sign_in(&p, &c).await.expect("first sign-in");
    sign_in(&p, &c)
        .await
        .expect("second sign-in, from the cache");
    assert_eq!(p.jwks_fetches(), 1, "keys are cached");

    p.rotate_key().await;
    sign_in(&p, &c).await.expect("sign-in with the new key");
    assert_eq!(p.jwks_fetches(), 2, "an unknown kid fetched the JWKS again");
}

#[tokio::test]
async fn unknown_keys_do_not_refetch_the_jwks_more_often_than_allowed() {
    let p = provider().await;
    let c = client(&p).await; // refetch at most every 10 s
    sign_in(&p, &c).await.expect("first sign-in");
    p.rotate_key().await;
    invalid_token(sign_in(&p, &c).await, "unknown key");
    assert_eq!(p.jwks_fetches(), 1);
}

#[tokio::test]
async fn a_token_signed_by_an_unpublished_key_is_refused_after_a_refetch() {
    let p = provider().await;
    let mut cfg = config(&p);
    cfg.jwks_refetch_interval = Duration::ZERO;
    let c = OidcClient::discover(cfg).await.expect("discovery");
    sign_in(&p, &c).await.expect("first sign-in");
    p.misbehave(Misbehave {
        unpublished_key: true,
        ..Default::default()
    });
    invalid_token(sign_in(&p, &c).await, "unknown key");
    assert_eq!(p.jwks_fetches(), 2);
}

#[tokio::test]
async fn discovery_of_another_issuer_is_refused() {
    let p = provider().await;
    let mut cfg = config(&p);
    cfg.issuer = format!("{}/", p.issuer());
    let err = OidcClient::discover(cfg)
        .await
        .expect_err("issuer mismatch");
    assert!(matches!(err, Error::Discovery(_)), "{err:?}");
}

#[tokio::test]
async fn configured_endpoints_skip_discovery() {
    let p = provider().await;
    let mut cfg = config(&p);
    cfg.issuer = p.issuer();
    cfg.endpoints.authorization_endpoint = Some(format!("{}/authorize", p.issuer()));
    cfg.endpoints.token_endpoint = Some(format!("{}/token", p.issuer()));
    cfg.endpoints.jwks_uri = Some(format!("{}/jwks", p.issuer()));
    let c = OidcClient::discover(cfg)
        .await
        .expect("no discovery needed");
    sign_in(&p, &c).await.expect("sign-in");
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let pending = PendingLogin {
        state: "st".into(),
        nonce: Secret::new("the-nonce"),
        pkce_verifier: Secret::new("the-verifier"),
        started_at: 0,
    };
    let shown = format!("{pending:?}");
    assert!(
        !shown.contains("the-nonce") && !shown.contains("the-verifier"),
        "{shown}"
    );
    // Stored server-side, so the real values serialize.
    let json = serde_json::to_string(&pending).unwrap();
    assert!(json.contains("the-verifier"));
    let back: PendingLogin = serde_json::from_str(&json).unwrap();
    assert_eq!(back.pkce_verifier.expose(), "the-verifier");
    let cfg = OidcConfig::new("https://i", "c", Secret::new("client-secret"), "https://r");
    assert!(!format!("{cfg:?}").contains("client-secret"));
}
