//! The accounts operations: what the API's handlers and `clawdbot-admin` call.
//!
//! Each operation names the user it acts for, and every query it makes is scoped to that user.
//! Argon2 runs on the blocking pool (it is ~30 ms of CPU and would stall a runtime worker).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clawdbot_api::{Plan, PlanPolicy, Plans, UserWorkspace};
use sqlx::PgPool;
use uuid::Uuid;

use crate::attempts::LoginAttempts;
use crate::error::{Error, Result};
use crate::password::{self, Hasher};
use crate::provision::{self, PlatformModel, WorkspaceDefaults};
use crate::settings::{Allowed, SettingsPatch, apply_patch};
use crate::store::{
    self, Connection, DeletedTraces, IdentityRecord, KeyRow, Presented, SessionRecord, UsageDay,
};
use crate::tokens::{self, AccessClaims, TokenSigner};
use crate::types::{AgentSettings, KeyProvider, Role, User, mask_key, normalize_email};
use crate::vault::Keyring;

/// A signed-in session: what register, login and refresh return.
#[derive(Clone)]
pub struct Session {
    pub user: User,
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user.id)
            .finish_non_exhaustive()
    }
}

/// Someone an identity provider vouched for (its ID token checked by the caller).
#[derive(Clone, Debug)]
pub struct ExternalIdentity {
    pub issuer: String,
    /// The provider's stable id of the person: what an account is linked on.
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// A change to the account itself.
#[derive(Clone, Default)]
pub struct AccountPatch {
    pub email: Option<String>,
    /// `Some(None)` clears the name.
    pub display_name: Option<Option<String>>,
    pub new_password: Option<String>,
    /// Required with `email` or `new_password`.
    pub current_password: Option<String>,
}

/// A model the user can pick.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelChoice {
    pub provider: &'static str,
    pub name: String,
    /// The ModelEndpoint serving it (platform models).
    pub endpoint: Option<String>,
    /// Whether it can answer now (a platform model with a ready server; own keys: always).
    pub available: bool,
    pub selected: bool,
}

/// Everything the platform holds about a user, never a secret in clear. The agent's
/// conversations are fetched through the agent by the router and set in `conversations`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Export {
    pub exported_at: DateTime<Utc>,
    pub account: User,
    pub settings: AgentSettings,
    pub provider_keys: Vec<ExportedKey>,
    pub connections: Vec<Connection>,
    pub sessions: Vec<SessionRecord>,
    /// Sign-ins through identity providers (issuer and address, never a token).
    pub identities: Vec<IdentityRecord>,
    pub usage: Vec<UsageDay>,
    pub workspace: Option<serde_json::Value>,
    /// Filled by the agents' sessions export; `None` here.
    pub conversations: Option<serde_json::Value>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportedKey {
    pub id: Uuid,
    pub provider: KeyProvider,
    pub masked: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&KeyRow> for ExportedKey {
    fn from(k: &KeyRow) -> Self {
        ExportedKey {
            id: k.id,
            provider: k.provider,
            masked: k.hint.clone(),
            created_at: k.created_at,
            updated_at: k.updated_at,
        }
    }
}

/// What rotation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    pub resealed: u64,
    pub raced: u64,
}

/// Settings of the accounts side.
#[derive(Clone)]
pub struct Settings {
    pub token_secret: Vec<u8>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub keyring: Keyring,
    pub workspace: WorkspaceDefaults,
    /// The plans (the same definition the operator and the router's quotas read).
    pub plans: Arc<Plans>,
}

/// The accounts domain, connected.
#[derive(Clone)]
pub struct Accounts {
    db: PgPool,
    kube: kube::Client,
    hasher: Arc<Hasher>,
    tokens: TokenSigner,
    keyring: Arc<Keyring>,
    attempts: LoginAttempts,
    defaults: WorkspaceDefaults,
    refresh_ttl: Duration,
    plans: Arc<Plans>,
}

impl Accounts {
    pub fn new(
        settings: Settings,
        db: PgPool,
        kube: kube::Client,
        attempts: LoginAttempts,
        hasher: Hasher,
    ) -> Result<Self> {
        Ok(Accounts {
            tokens: TokenSigner::new(&settings.token_secret, settings.access_ttl)?,
            db,
            kube,
            hasher: Arc::new(hasher),
            keyring: Arc::new(settings.keyring),
            attempts,
            defaults: settings.workspace,
            refresh_ttl: settings.refresh_ttl,
            plans: settings.plans,
        })
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    pub fn defaults(&self) -> &WorkspaceDefaults {
        &self.defaults
    }

    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    fn policy(&self, plan: Plan) -> &PlanPolicy {
        self.plans.policy(plan)
    }

    async fn hash(&self, password: String) -> Result<String> {
        let h = self.hasher.clone();
        tokio::task::spawn_blocking(move || h.hash(&password))
            .await
            .map_err(|e| Error::Internal(format!("hashing task: {e}")))?
    }

    async fn verify(&self, password: String, hash: Option<String>) -> Result<bool> {
        let h = self.hasher.clone();
        tokio::task::spawn_blocking(move || h.verify(&password, hash.as_deref()))
            .await
            .map_err(|e| Error::Internal(format!("verify task: {e}")))
    }

    // --- sign-up and sessions ---

    /// Creates an account with a password and its workspace; signs it in.
    #[tracing::instrument(skip_all)]
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        addr: Option<IpAddr>,
    ) -> Result<Session> {
        let normalized = normalize_email(email).ok();
        self.attempts
            .registration(normalized.as_deref(), addr)
            .await?;
        let user = self
            .create_account(email, password, Plan::Free, Role::User)
            .await?;
        tracing::info!(user = %user.id, "account registered");
        self.start_session(user).await
    }

    /// Creates an account (any role; `clawdbot-admin create-admin` uses it too) and provisions
    /// its workspace. The row is committed only once the workspace is applied, so a failed
    /// provisioning leaves no half account behind.
    pub async fn create_account(
        &self,
        email: &str,
        password: &str,
        plan: Plan,
        role: Role,
    ) -> Result<User> {
        let email = normalize_email(email)?;
        password::check_rules(password, Some(&email))?;
        let hash = self.hash(password.to_string()).await?;
        let mut tx = self.db.begin().await?;
        let user = store::insert_user(&mut *tx, &email, Some(&hash), plan, role).await?;
        let settings = AgentSettings::default();
        store::put_settings(&mut *tx, user.id, &settings).await?;
        self.provision(&user, &settings, &BTreeMap::new()).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Applies the user's workspace and key Secret as the settings and keys say.
    async fn provision(
        &self,
        user: &User,
        settings: &AgentSettings,
        keys: &BTreeMap<KeyProvider, String>,
    ) -> Result<UserWorkspace> {
        let ws =
            provision::build_workspace(user, settings, &self.defaults, self.policy(user.plan))?;
        // Keys before the spec that may start using them: the operator finds them at once.
        let existing =
            provision::get_workspace(&self.kube, &self.defaults.namespace, user.id).await?;
        if let Some(current) = &existing {
            provision::apply_keys_secret(&self.kube, current, keys).await?;
        }
        let applied = provision::apply_workspace(&self.kube, &ws).await?;
        if existing.is_none() {
            provision::apply_keys_secret(&self.kube, &applied, keys).await?;
        }
        Ok(applied)
    }

    /// Signs in with e-mail and password, within the attempt limits.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        addr: Option<IpAddr>,
    ) -> Result<Session> {
        let email = normalize_email(email).map_err(|_| Error::BadCredentials)?;
        self.attempts.check(&email, addr).await?;
        let found = store::find_login(&self.db, &email).await?;
        let hash = found.as_ref().and_then(|(_, h)| h.clone());
        let ok = self.verify(password.to_string(), hash).await?;
        let user = match (ok, found) {
            (true, Some((user, _))) => user,
            _ => {
                self.attempts.failed(&email, addr).await?;
                return Err(Error::BadCredentials);
            }
        };
        self.attempts.clear(&email).await?;
        if user.suspended() {
            return Err(Error::Forbidden(
                "this account is suspended; contact support".into(),
            ));
        }
        tracing::info!(user = %user.id, "signed in");
        self.start_session(user).await
    }

    /// A new session (a new refresh-token family) for an account already authenticated, for
    /// example by an identity provider.
    pub async fn start_session(&self, user: User) -> Result<Session> {
        let family = Uuid::new_v4();
        let (refresh_token, refresh_expires_at) =
            self.new_refresh(&self.db, user.id, family).await?;
        let (access_token, access_expires_at) = self.tokens.issue(user.id, user.role)?;
        Ok(Session {
            user,
            access_token,
            access_expires_at,
            refresh_token,
            refresh_expires_at,
        })
    }

    /// Signs in someone an identity provider vouched for: the account linked to the
    /// provider's subject, or a new account (with its workspace) when neither the subject nor
    /// the e-mail is known. An existing account with the same e-mail is not linked: its
    /// address was never proven (registration does not verify it), so whoever registered it
    /// first could otherwise share the provider user's account. The answer says to sign in
    /// with the password instead. Returns the session and whether the account is new.
    #[tracing::instrument(skip_all, fields(issuer = %id.issuer))]
    pub async fn sign_in_external(&self, id: &ExternalIdentity) -> Result<(Session, bool)> {
        if let Some(user) = store::identity_user(&self.db, &id.issuer, &id.subject).await? {
            let user = self.user(user).await?;
            Self::require_active(&user)?;
            store::touch_identity(&self.db, &id.issuer, &id.subject, &id.email).await?;
            tracing::info!(user = %user.id, "signed in through a provider");
            return Ok((self.start_session(user).await?, false));
        }
        if !id.email_verified {
            return Err(Error::Forbidden(
                "the provider did not verify this e-mail address".into(),
            ));
        }
        let email = normalize_email(&id.email)?;
        if store::find_login(&self.db, &email).await?.is_some() {
            return Err(Error::Conflict(
                "an account with this e-mail already exists; sign in with its password".into(),
            ));
        }
        let mut tx = self.db.begin().await?;
        let user = store::insert_user(&mut *tx, &email, None, Plan::Free, Role::User).await?;
        let settings = AgentSettings::default();
        store::put_settings(&mut *tx, user.id, &settings).await?;
        store::insert_identity(&mut *tx, &id.issuer, &id.subject, user.id, &email).await?;
        self.provision(&user, &settings, &BTreeMap::new()).await?;
        tx.commit().await?;
        let user = match id.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() && name.chars().count() <= 100 => {
                store::update_user(&self.db, user.id, None, Some(Some(name)), None).await?
            }
            _ => user,
        };
        tracing::info!(user = %user.id, "account registered through a provider");
        Ok((self.start_session(user).await?, true))
    }

    async fn new_refresh<'e>(
        &self,
        db: impl sqlx::PgExecutor<'e>,
        user: Uuid,
        family: Uuid,
    ) -> Result<(String, DateTime<Utc>)> {
        let (token, hash) = tokens::new_refresh_token();
        let expires = Utc::now() + chrono::Duration::from_std(self.refresh_ttl).unwrap_or_default();
        store::insert_refresh(db, &hash, family, user, expires).await?;
        Ok((token, expires))
    }

    /// Exchanges a refresh token for a new pair. A token presented twice revokes its family
    /// (whoever holds the copy is signed out too).
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session> {
        let hash = tokens::hash_refresh_token(refresh_token);
        let mut tx = self.db.begin().await?;
        match store::use_refresh(&mut tx, &hash).await? {
            Presented::Fresh { user, family } => {
                let Some(user) = store::get_user(&mut *tx, user).await? else {
                    return Err(Error::BadToken);
                };
                if user.suspended() {
                    store::revoke_family(&mut *tx, family).await?;
                    tx.commit().await?;
                    return Err(Error::Forbidden(
                        "this account is suspended; contact support".into(),
                    ));
                }
                let (refresh_token, refresh_expires_at) =
                    self.new_refresh(&mut *tx, user.id, family).await?;
                tx.commit().await?;
                let (access_token, access_expires_at) = self.tokens.issue(user.id, user.role)?;
                Ok(Session {
                    user,
                    access_token,
                    access_expires_at,
                    refresh_token,
                    refresh_expires_at,
                })
            }
            Presented::Reused => {
                // The revocation must stick although the request fails.
                tx.commit().await?;
                tracing::warn!("a used refresh token was presented again; its family is revoked");
                Err(Error::BadToken)
            }
            Presented::Invalid => Err(Error::BadToken),
        }
    }

    /// Ends the session of a refresh token (its whole family). Unknown tokens are ignored.
    pub async fn logout(&self, user: Uuid, refresh_token: &str) -> Result<()> {
        let hash = tokens::hash_refresh_token(refresh_token);
        if let Some((family, owner)) = store::family_of(&self.db, &hash).await?
            && owner == user
        {
            store::revoke_family(&self.db, family).await?;
        }
        Ok(())
    }

    /// The claims of an access token.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims> {
        self.tokens.verify(token)
    }

    /// The account behind valid claims; `BadToken` once it is deleted.
    pub async fn user(&self, id: Uuid) -> Result<User> {
        store::get_user(&self.db, id).await?.ok_or(Error::BadToken)
    }

    // --- the account ---

    pub async fn update_account(&self, user: &User, patch: AccountPatch) -> Result<User> {
        let email = patch.email.as_deref().map(normalize_email).transpose()?;
        if let Some(Some(name)) = &patch.display_name
            && (name.chars().count() > 100 || name.chars().any(char::is_control))
        {
            return Err(Error::invalid(
                "display_name",
                "must be at most 100 characters, without control characters",
            ));
        }
        if email.is_some() || patch.new_password.is_some() {
            let current = patch.current_password.clone().ok_or_else(|| {
                Error::invalid(
                    "current_password",
                    "is required to change the e-mail or the password",
                )
            })?;
            let hash = store::password_hash(&self.db, user.id).await?;
            if !self.verify(current, hash).await? {
                return Err(Error::invalid(
                    "current_password",
                    "is not your current password",
                ));
            }
        }
        let new_hash = match &patch.new_password {
            Some(p) => {
                let mail = email.as_deref().or(user.email.as_deref());
                password::check_rules(p, mail)
                    .map_err(|_| Error::invalid("new_password", password::RULES))?;
                Some(self.hash(p.clone()).await?)
            }
            None => None,
        };
        let display = patch
            .display_name
            .as_ref()
            .map(|n| n.as_deref().map(str::trim));
        let updated = store::update_user(
            &self.db,
            user.id,
            email.as_deref(),
            display,
            new_hash.as_deref(),
        )
        .await?;
        if new_hash.is_some() {
            // A new password signs every other session out.
            store::revoke_all_refresh(&self.db, user.id).await?;
        }
        Ok(updated)
    }

    /// Deletes the account: its workspace (the volume follows its retention policy), every
    /// row about it, its login counter. Returns what the router must clear from its caches.
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn delete_account(&self, user: &User) -> Result<DeletedTraces> {
        provision::delete_workspace(&self.kube, &self.defaults.namespace, user.id).await?;
        let traces = store::delete_user(&self.db, user.id).await?;
        if let Some(email) = &user.email {
            self.attempts.clear(email).await?;
        }
        tracing::info!("account deleted");
        Ok(traces)
    }

    pub async fn workspace(&self, user: Uuid) -> Result<Option<UserWorkspace>> {
        provision::get_workspace(&self.kube, &self.defaults.namespace, user).await
    }

    pub async fn export(&self, user: &User) -> Result<Export> {
        let keys = store::list_keys(&self.db, user.id).await?;
        let ws = self.workspace(user.id).await?.map(|ws| {
            serde_json::json!({
                "name": ws.metadata.name,
                "namespace": ws.metadata.namespace,
                "spec": ws.spec,
                "status": ws.status,
            })
        });
        Ok(Export {
            exported_at: Utc::now(),
            account: user.clone(),
            settings: store::get_settings(&self.db, user.id).await?,
            provider_keys: keys.iter().map(ExportedKey::from).collect(),
            connections: store::list_connections(&self.db, user.id).await?,
            sessions: store::sessions_of(&self.db, user.id).await?,
            identities: store::identities_of(&self.db, user.id).await?,
            usage: store::usage_by_day(&self.db, user.id, 3660).await?,
            workspace: ws,
            conversations: None,
        })
    }

    pub async fn usage(&self, user: Uuid, days: u32) -> Result<Vec<UsageDay>> {
        if !(1..=366).contains(&days) {
            return Err(Error::invalid("days", "must be between 1 and 366"));
        }
        store::usage_by_day(&self.db, user, days).await
    }

    // --- provider keys ---

    fn require_own_keys(&self, user: &User) -> Result<()> {
        if !self.policy(user.plan).allows_own_key {
            return Err(Error::Forbidden(format!(
                "your own provider keys are not available on the {} plan",
                user.plan
            )));
        }
        Ok(())
    }

    fn require_active(user: &User) -> Result<()> {
        if user.suspended() {
            return Err(Error::Forbidden(
                "this account is suspended; contact support".into(),
            ));
        }
        Ok(())
    }

    /// Opens every key of the user (for their Secret).
    async fn open_keys(&self, user: Uuid) -> Result<BTreeMap<KeyProvider, String>> {
        let mut out = BTreeMap::new();
        for k in store::list_keys(&self.db, user).await? {
            out.insert(k.provider, self.keyring.open(user, k.provider, &k.sealed)?);
        }
        Ok(out)
    }

    /// Applies the user's workspace and Secret from what is stored now.
    async fn sync(&self, user: &User) -> Result<UserWorkspace> {
        let settings = store::get_settings(&self.db, user.id).await?;
        let keys = self.open_keys(user.id).await?;
        self.provision(user, &settings, &keys).await
    }

    pub async fn add_key(&self, user: &User, provider: KeyProvider, key: &str) -> Result<KeyRow> {
        Self::require_active(user)?;
        self.require_own_keys(user)?;
        provider.check_key(key)?;
        let sealed = self.keyring.seal(user.id, provider, key)?;
        let row = store::insert_key(&self.db, user.id, provider, &sealed, &mask_key(key)).await?;
        if let Err(e) = self.sync(user).await {
            // Stored but not delivered: take it back so the list says the truth.
            let _ = store::delete_key(&self.db, user.id, row.id).await;
            return Err(e);
        }
        Ok(row)
    }

    pub async fn list_keys(&self, user: Uuid) -> Result<Vec<KeyRow>> {
        store::list_keys(&self.db, user).await
    }

    pub async fn get_key(&self, user: Uuid, id: Uuid) -> Result<KeyRow> {
        store::get_key(&self.db, user, id).await
    }

    pub async fn replace_key(&self, user: &User, id: Uuid, key: &str) -> Result<KeyRow> {
        Self::require_active(user)?;
        self.require_own_keys(user)?;
        let current = store::get_key(&self.db, user.id, id).await?;
        current.provider.check_key(key)?;
        let sealed = self.keyring.seal(user.id, current.provider, key)?;
        let row = store::replace_key(&self.db, user.id, id, &sealed, &mask_key(key)).await?;
        self.sync(user).await?;
        Ok(row)
    }

    pub async fn delete_key(&self, user: &User, id: Uuid) -> Result<()> {
        let current = store::get_key(&self.db, user.id, id).await?;
        let settings = store::get_settings(&self.db, user.id).await?;
        if KeyProvider::of(settings.provider) == Some(current.provider) {
            return Err(Error::Conflict(format!(
                "your agent uses this {} key; choose another provider in PATCH /api/v1/config first",
                current.provider.as_str()
            )));
        }
        store::delete_key(&self.db, user.id, id).await?;
        self.sync(user).await?;
        Ok(())
    }

    /// Re-seals every key under the keyring's current master key, a row at a time, while the
    /// old key stays loaded: every row opens at every moment. The tenants' Secrets hold the
    /// plaintext and do not change, so agents answer throughout.
    pub async fn rotate_master_key(&self) -> Result<Rotation> {
        let current = self.keyring.current_id().to_string();
        let mut report = Rotation::default();
        loop {
            let batch = store::keys_not_under(&self.db, &current, 200).await?;
            if batch.is_empty() {
                break;
            }
            for row in &batch {
                let sealed = self
                    .keyring
                    .reseal(row.user_id, row.provider, &row.sealed)?;
                if store::reseal_key(&self.db, row, &sealed).await? {
                    report.resealed += 1;
                } else {
                    report.raced += 1;
                }
            }
        }
        Ok(report)
    }

    // --- agent settings and models ---

    pub async fn settings(&self, user: Uuid) -> Result<AgentSettings> {
        store::get_settings(&self.db, user).await
    }

    pub async fn update_settings(
        &self,
        user: &User,
        patch: &SettingsPatch,
    ) -> Result<AgentSettings> {
        Self::require_active(user)?;
        let current = store::get_settings(&self.db, user.id).await?;
        let policy = self.policy(user.plan);
        let own_keys: Vec<KeyProvider> = store::list_keys(&self.db, user.id)
            .await?
            .iter()
            .map(|k| k.provider)
            .collect();
        let platform = if patch.model.is_some() {
            provision::platform_models(&self.kube, &self.defaults.namespace).await?
        } else {
            Vec::new()
        };
        let next = apply_patch(
            &current,
            patch,
            &Allowed {
                plan: user.plan,
                policy,
                own_keys: &own_keys,
                platform_models: &platform,
            },
        )?;
        let mut tx = self.db.begin().await?;
        store::put_settings(&mut *tx, user.id, &next).await?;
        let keys = self.open_keys(user.id).await?;
        self.provision(user, &next, &keys).await?;
        tx.commit().await?;
        Ok(next)
    }

    pub async fn models(&self, user: &User) -> Result<Vec<ModelChoice>> {
        let settings = store::get_settings(&self.db, user.id).await?;
        let selected_platform = settings
            .model
            .clone()
            .unwrap_or_else(|| self.defaults.model.clone());
        let mut out: Vec<ModelChoice> =
            provision::platform_models(&self.kube, &self.defaults.namespace)
                .await?
                .into_iter()
                .filter(|m| self.policy(user.plan).allows_platform_model(&m.name))
                .map(
                    |PlatformModel {
                         name,
                         endpoint,
                         ready,
                     }| ModelChoice {
                        provider: "platform",
                        selected: settings.provider
                            == clawdbot_api::workspace::ModelProvider::Platform
                            && name == selected_platform,
                        name,
                        endpoint: Some(endpoint),
                        available: ready,
                    },
                )
                .collect();
        if self.policy(user.plan).allows_own_key {
            for k in store::list_keys(&self.db, user.id).await? {
                for m in k.provider.models() {
                    out.push(ModelChoice {
                        provider: k.provider.as_str(),
                        name: m.to_string(),
                        endpoint: None,
                        available: true,
                        selected: KeyProvider::of(settings.provider) == Some(k.provider)
                            && settings.model.as_deref() == Some(*m),
                    });
                }
            }
        }
        Ok(out)
    }

    // --- channels ---

    pub async fn connections(&self, user: Uuid) -> Result<Vec<Connection>> {
        store::list_connections(&self.db, user).await
    }

    pub async fn delete_connection(&self, user: Uuid, id: Uuid) -> Result<(String, String)> {
        store::delete_connection(&self.db, user, id).await
    }

    /// Refuses a new code when the plan's chat accounts are all connected.
    pub async fn check_channel_limit(&self, user: &User) -> Result<()> {
        Self::require_active(user)?;
        let limit = self.policy(user.plan).max_channels;
        if store::count_connections(&self.db, user.id).await? >= i64::from(limit) {
            return Err(Error::Forbidden(format!(
                "the {} plan connects at most {limit} chat accounts; remove one first",
                user.plan
            )));
        }
        Ok(())
    }

    // --- plans ---

    /// Moves an account to `plan` and re-plans its workspace in one step: the row changes only
    /// once the UserWorkspace (plan, and settings fitted to what the plan allows) is applied,
    /// so a failure leaves both as they were. Returns the account and what was switched off.
    #[tracing::instrument(skip(self), fields(plan = %plan))]
    pub async fn set_plan(&self, id: Uuid, plan: Plan) -> Result<(User, Vec<String>)> {
        let mut tx = self.db.begin().await?;
        let user = store::set_plan(&mut *tx, id, plan).await?;
        let current = store::get_settings(&mut *tx, id).await?;
        let (settings, mut notes) = crate::settings::fit_to_plan(&current, plan, self.policy(plan));
        // Chat accounts past the plan's channel limit stay connected (the router does not
        // answer them: the oldest ones are in use), so nothing is lost by a downgrade.
        let max = self.policy(plan).max_channels as usize;
        let connections = store::list_connections(&mut *tx, id).await?;
        if connections.len() > max {
            let past: Vec<&str> = connections[max..]
                .iter()
                .map(|c| c.channel.as_str())
                .collect();
            notes.push(format!(
                "the {plan} plan connects {max} chat accounts: your newest {} ({}) stay connected but are not answered until you disconnect others or upgrade",
                past.len(),
                past.join(", ")
            ));
        }
        if settings != current {
            store::put_settings(&mut *tx, id, &settings).await?;
        }
        let keys = if self.policy(plan).allows_own_key {
            self.open_keys(id).await?
        } else {
            // Kept sealed in Postgres; the agent no longer gets them.
            BTreeMap::new()
        };
        self.provision(&user, &settings, &keys).await?;
        tx.commit().await?;
        tracing::info!(user = %id, switched_off = notes.len(), "plan changed");
        Ok((user, notes))
    }

    // --- admin ---

    pub async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<User>> {
        if !(1..=500).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 500"));
        }
        if offset < 0 {
            return Err(Error::invalid("offset", "must not be negative"));
        }
        store::list_users(&self.db, limit, offset).await
    }

    /// Suspends or resumes an account: sessions end, the workspace sleeps (or wakes).
    #[tracing::instrument(skip(self))]
    pub async fn set_suspended(&self, id: Uuid, suspended: bool) -> Result<User> {
        let user = store::set_suspended(&self.db, id, suspended).await?;
        if suspended {
            store::revoke_all_refresh(&self.db, id).await?;
        }
        self.sync(&user).await?;
        tracing::info!(suspended, "account suspension changed");
        Ok(user)
    }

    /// Makes an account an admin, creating it (with its workspace) if the e-mail is new.
    pub async fn create_admin(&self, email: &str, password: &str) -> Result<User> {
        let normalized = normalize_email(email)?;
        if let Some((user, _)) = store::find_login(&self.db, &normalized).await? {
            store::set_role(&self.db, user.id, Role::Admin).await?;
            return self.user(user.id).await;
        }
        self.create_account(email, password, Plan::Free, Role::Admin)
            .await
    }
}
