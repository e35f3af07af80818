//! Accounts of Clawdbot Cloud: sign-up and sign-in (Argon2id passwords, short-lived JWT access
//! tokens, rotating refresh tokens with reuse detection), failed-login limits in Redis, users'
//! own provider keys sealed with AES-256-GCM under rotatable master keys, the agent settings a
//! user may choose, and the user's UserWorkspace and key Secret in Kubernetes.
//!
//! No HTTP here: the router's `/api/v1` handlers and `clawdbot-admin` call [`Accounts`].

pub mod attempts;
pub mod error;
pub mod password;
pub mod provision;
pub mod service;
pub mod settings;
pub mod store;
pub mod tokens;
pub mod types;
pub mod vault;

pub use error::{Error, Result};
pub use service::{Accounts, ExternalIdentity, Session};
pub use types::{AgentSettings, KeyProvider, Role, User};
pub use vault::Keyring;
