//! A local OpenID provider speaking the real protocol, standing in for Google sign-in:
//!
//! - `GET /.well-known/openid-configuration`: the discovery document (issuer
//!   `http://127.0.0.1:<port>`);
//! - `GET /jwks`: the public keys (RSA 2048, generated at start; [`FakeOidc::rotate_key`]
//!   adds one);
//! - `GET /authorize`: checks the client, the registered redirect URI, `response_type=code`,
//!   the `openid` scope and an S256 PKCE challenge, then (no login page: tests drive no
//!   browser) redirects at once to the redirect URI with a code for the configured test user
//!   and the `state`;
//! - `POST /token`: checks client authentication (`client_secret_basic` or
//!   `client_secret_post`), the grant, that the code is unused, unexpired and was issued for
//!   this redirect URI, and the PKCE verifier against the challenge; answers with an RS256 ID
//!   token carrying the `nonce` of the authorization request, and OAuth's error bodies
//!   otherwise.
//!
//! [`Misbehave`] makes it issue bad tokens (another audience, expired, a payload changed after
//! signing, another nonce, another issuer) so that tests prove each check of the client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long an authorization code stays usable (Google's are short-lived too).
const CODE_TTL: Duration = Duration::from_secs(60);

/// The user the provider signs in.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
}

impl Default for TestUser {
    fn default() -> Self {
        TestUser {
            sub: "109876543210987654321".into(),
            email: "alice@example.com".into(),
            email_verified: true,
            name: Some("Alice Example".into()),
        }
    }
}

/// Ways to issue a bad ID token. All off by default.
#[derive(Clone, Debug, Default)]
pub struct Misbehave {
    /// `aud` of the ID token instead of the client id.
    pub audience: Option<String>,
    /// `iss` of the ID token instead of the issuer.
    pub issuer: Option<String>,
    /// `exp` (and `iat`) an hour in the past.
    pub expired: bool,
    /// The payload changed (another `sub` and `email`) after signing.
    pub tamper: bool,
    /// `nonce` of the ID token instead of the one the client sent.
    pub nonce: Option<String>,
    /// Sign with a key the JWKS does not publish, under a `kid` the JWKS does not name.
    pub unpublished_key: bool,
}

/// Client authentication methods the discovery document advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

struct Key {
    kid: String,
    private: RsaPrivateKey,
}

impl Key {
    fn generate(kid: String) -> Self {
        let private =
            RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA key");
        Key { kid, private }
    }

    fn jwk(&self) -> Value {
        let public = self.private.to_public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        })
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = SigningKey::<Sha256>::new(self.private.clone()).sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    issued: Instant,
}

/// A token request as the provider saw it (secrets left out).
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// How the client authenticated.
    pub auth: Option<ClientAuth>,
    /// The OAuth error answered, or `None` when tokens were issued.
    pub error: Option<String>,
}

struct Shared {
    issuer: String,
    client_id: String,
    client_secret: String,
    redirect_uris: Vec<String>,
    auth_methods: Mutex<Vec<ClientAuth>>,
    keys: Mutex<Vec<Arc<Key>>>,
    stray: Mutex<Option<Arc<Key>>>,
    grants: Mutex<HashMap<String, Grant>>,
    user: Mutex<TestUser>,
    misbehave: Mutex<Misbehave>,
    jwks_fetches: AtomicUsize,
    token_requests: Mutex<Vec<TokenRequest>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The provider, on `127.0.0.1:<random port>`, stopped when dropped.
pub struct FakeOidc {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOidc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeOidc {
    /// A provider with one registered client (`client_id`, `client_secret`, redirect URIs).
    pub async fn start(client_id: &str, client_secret: &str, redirect_uris: &[&str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake OpenID provider");
        let addr = listener.local_addr().expect("local addr");
        let key = tokio::task::spawn_blocking(|| Key::generate("key-1".into()))
            .await
            .expect("key generation");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            auth_methods: Mutex::new(vec![ClientAuth::Basic, ClientAuth::Post]),
            keys: Mutex::new(vec![Arc::new(key)]),
            stray: Mutex::new(None),
            grants: Mutex::new(HashMap::new()),
            user: Mutex::new(TestUser::default()),
            misbehave: Mutex::new(Misbehave::default()),
            jwks_fetches: AtomicUsize::new(0),
            token_requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOidc { addr, shared, task }
    }

    /// The issuer identifier (also the base URL).
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The user signed in from now on.
    pub fn set_user(&self, user: TestUser) {
        *lock(&self.shared.user) = user;
    }

    /// How the ID tokens issued from now on are broken ([`Misbehave::default`] mends them).
    pub fn misbehave(&self, how: Misbehave) {
        let stray = how.unpublished_key;
        *lock(&self.shared.misbehave) = how;
        if stray && lock(&self.shared.stray).is_none() {
            *lock(&self.shared.stray) = Some(Arc::new(Key::generate("stray".into())));
        }
    }

    /// Advertises only these client authentication methods in discovery.
    pub fn set_auth_methods(&self, methods: &[ClientAuth]) {
        *lock(&self.shared.auth_methods) = methods.to_vec();
    }

    /// Adds a new signing key (published beside the old ones) and signs with it from now on,
    /// as a provider rotating its keys does. Returns the new `kid`.
    pub async fn rotate_key(&self) -> String {
        let kid = format!("key-{}", lock(&self.shared.keys).len() + 1);
        let k = kid.clone();
        let key = tokio::task::spawn_blocking(move || Key::generate(k))
            .await
            .expect("key generation");
        lock(&self.shared.keys).push(Arc::new(key));
        kid
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Every token request, in order.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.token_requests).clone()
    }

    /// Follows an authorization URL as a browser would and returns the query of the redirect
    /// to the client (`code` and `state`, or `error`), or the provider's error status when it
    /// refuses to redirect (unknown client or redirect URI).
    pub async fn authorize(&self, url: &str) -> Result<HashMap<String, String>, StatusCode> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        let resp = http.get(url).send().await.expect("authorization request");
        if resp.status() != reqwest::StatusCode::FOUND
            && resp.status() != reqwest::StatusCode::SEE_OTHER
        {
            return Err(StatusCode::from_u16(resp.status().as_u16()).expect("status"));
        }
        let location = resp.headers()[reqwest::header::LOCATION]
            .to_str()
            .expect("location")
            .to_string();
        let location = reqwest::Url::parse(&location).expect("redirect URL");
        Ok(location.query_pairs().into_owned().collect())
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Json<Value> {
    let methods: Vec<&str> = lock(&s.auth_methods)
        .iter()
        .map(|m| match m {
            ClientAuth::Basic => "client_secret_basic",
            ClientAuth::Post => "client_secret_post",
        })
        .collect();
    let i = &s.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": methods,
        "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "name", "sub", "nonce"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": ["authorization_code"],
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> Json<Value> {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = lock(&s.keys).iter().map(|k| k.jwk()).collect();
    Json(json!({ "keys": keys }))
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

async fn authorize(State(s): State<Arc<Shared>>, Query(q): Query<AuthorizeQuery>) -> Response {
    // RFC 6749 4.1.2.1: with a bad client or redirect URI the user is not sent anywhere.
    if q.client_id.as_deref() != Some(s.client_id.as_str()) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let Some(redirect) = q.redirect_uri.filter(|r| s.redirect_uris.contains(r)) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not registered").into_response();
    };
    let mut back = reqwest::Url::parse(&redirect).expect("registered redirect URIs parse");
    let refuse = |mut back: reqwest::Url, error: &str, state: Option<&str>| {
        back.query_pairs_mut().append_pair("error", error);
        if let Some(st) = state {
            back.query_pairs_mut().append_pair("state", st);
        }
        Redirect::to(back.as_str()).into_response()
    };
    let state = q.state.as_deref();
    if q.response_type.as_deref() != Some("code") {
        return refuse(back, "unsupported_response_type", state);
    }
    if !q
        .scope
        .as_deref()
        .is_some_and(|sc| sc.split(' ').any(|x| x == "openid"))
    {
        return refuse(back, "invalid_scope", state);
    }
    // This provider demands PKCE with S256, as a careful one may (OAuth 2.1).
    let challenge = match (q.code_challenge, q.code_challenge_method.as_deref()) {
        (Some(c), Some("S256")) if c.len() == 43 => c,
        _ => return refuse(back, "invalid_request", state),
    };
    let code = random();
    lock(&s.grants).insert(
        code.clone(),
        Grant {
            client_id: s.client_id.clone(),
            redirect_uri: redirect,
            challenge,
            nonce: q.nonce,
            issued: Instant::now(),
        },
    );
    back.query_pairs_mut().append_pair("code", &code);
    if let Some(st) = state {
        back.query_pairs_mut().append_pair("state", st);
    }
    Redirect::to(back.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The client's credentials and how they came: Basic (RFC 6749 2.3.1, form-encoded parts) or
/// the form.
fn client_credentials(
    headers: &HeaderMap,
    form: &TokenForm,
) -> Option<(ClientAuth, String, String)> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let b64 = v.to_str().ok()?.strip_prefix("Basic ")?;
        let raw = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
        let (id, secret) = raw.split_once(':')?;
        let dec = |v: &str| {
            url::form_urlencoded::parse(format!("x={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((ClientAuth::Basic, dec(id)?, dec(secret)?));
    }
    Some((
        ClientAuth::Post,
        form.client_id.clone()?,
        form.client_secret.clone()?,
    ))
}

async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let creds = client_credentials(&headers, &form);
    let record = |auth: Option<ClientAuth>, error: Option<&str>| {
        lock(&s.token_requests).push(TokenRequest {
            auth,
            error: error.map(str::to_string),
        });
    };
    let auth = creds.as_ref().map(|c| c.0);
    let advertised = creds
        .as_ref()
        .is_some_and(|c| lock(&s.auth_methods).contains(&c.0));
    match &creds {
        Some((_, id, secret)) if advertised && *id == s.client_id && *secret == s.client_secret => {
        }
        _ => {
            record(auth, Some("invalid_client"));
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
    }
    let fail = |error: &str, description: &str| {
        record(auth, Some(error));
        oauth_error(StatusCode::BAD_REQUEST, error, description)
    };
    if form.grant_type.as_deref() != Some("authorization_code") {
        return fail("unsupported_grant_type", "only authorization_code");
    }
    // Taken out whatever happens next: a code is good for one attempt (RFC 6749 4.1.2).
    let grant = form.code.as_deref().and_then(|c| lock(&s.grants).remove(c));
    let Some(grant) = grant else {
        return fail("invalid_grant", "unknown or used code");
    };
    if grant.issued.elapsed() > CODE_TTL {
        return fail("invalid_grant", "code expired");
    }
    if grant.client_id != s.client_id || form.redirect_uri.as_deref() != Some(&grant.redirect_uri) {
        return fail(
            "invalid_grant",
            "redirect_uri does not match the authorization request",
        );
    }
    let verified = form.code_verifier.as_deref().is_some_and(|v| {
        (43..=128).contains(&v.len())
            && URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == grant.challenge
    });
    if !verified {
        return fail("invalid_grant", "PKCE verification failed");
    }
    let id_token = issue_id_token(&s, grant.nonce);
    record(auth, None);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": random(),
            "token_type": "Bearer",
            "expires_in": 3599,
            "scope": "openid email profile",
            "id_token": id_token,
        })),
    )
        .into_response()
}

fn issue_id_token(s: &Shared, nonce: Option<String>) -> String {
    let how = lock(&s.misbehave).clone();
    let user = lock(&s.user).clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let iat = if how.expired { now - 7200 } else { now };
    let mut claims = json!({
        "iss": how.issuer.unwrap_or_else(|| s.issuer.clone()),
        "aud": how.audience.unwrap_or_else(|| s.client_id.clone()),
        "azp": s.client_id,
        "sub": user.sub,
        "email": user.email,
        "email_verified": user.email_verified,
        "iat": iat,
        "exp": iat + 3600,
    });
    if let Some(name) = user.name {
        claims["name"] = json!(name);
    }
    if let Some(n) = how.nonce.or(nonce) {
        claims["nonce"] = json!(n);
    }
    let token = if how.unpublished_key {
        let stray = lock(&s.stray).clone().expect("stray key made by misbehave");
        stray.sign("stray", &claims)
    } else {
        let key = lock(&s.keys).last().cloned().expect("a signing key");
        key.sign(&key.kid, &claims)
    };
    if !how.tamper {
        return token;
    }
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    claims["sub"] = json!("attacker");
    claims["email"] = json!("attacker@example.com");
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    parts.join(".")
}
