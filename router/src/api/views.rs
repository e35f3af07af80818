//! The API's JSON shapes that several resources share, with their OpenAPI schemas.

use chrono::{DateTime, Utc};
use clawdbot_accounts::User;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// An account as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// `free`, `pro` or `team`.
    pub plan: String,
    /// `user` or `admin`.
    pub role: String,
    pub suspended: bool,
    pub created_at: DateTime<Utc>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id,
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            plan: u.plan.as_str().into(),
            role: u.role.as_str().into(),
            suspended: u.suspended(),
            created_at: u.created_at,
        }
    }
}

/// An error: a message, and the field at fault for a 422.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
