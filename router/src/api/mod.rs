//! The HTTP API under `/api/v1`: one module per resource, the signed-in user as an extractor
//! ([`extract::AuthUser`]), and the OpenAPI 3 document generated from the handlers
//! (`/api/v1/openapi.json`), so the document cannot drift from the code.
//!
//! Sign-in through an identity provider is [`google`]; the conversations, read through the
//! tenant's agent, are [`sessions`].

pub mod admin;
pub mod admin_token;
pub mod agent_config;
pub mod api_keys;
pub mod auth;
pub mod billing;
pub mod channels;
pub mod extract;
pub mod google;
pub mod models;
pub mod sessions;
pub mod usage;
pub mod users;
pub mod views;
pub mod web_chat;
pub mod workspace;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use axum::routing::get;
use clawdbot_accounts::Accounts;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::pipeline::Core;

pub use channels::ChannelLinks;

/// What the API's handlers share.
pub struct ApiState {
    pub core: Arc<Core>,
    pub accounts: Accounts,
    pub links: ChannelLinks,
    /// Take the client address from `X-Forwarded-For` (behind a trusted ingress).
    pub trust_forwarded_for: bool,
    /// Stripe billing, when configured.
    pub billing: Option<clawdbot_billing::Billing>,
    /// Sign-in with Google, when configured.
    pub google: Option<Arc<google::GoogleSignIn>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Clawdbot Cloud API",
        version = "1",
        description = "Accounts, channels, provider keys, the assistant's settings and billing. \
            Authenticate with `Authorization: Bearer <access_token>` from /api/v1/auth/login."
    ),
    modifiers(&BearerAuth),
    components(schemas(views::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every documented route.
pub fn openapi_router() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes())
        .merge(google::routes())
        .merge(sessions::routes())
        .merge(users::routes())
        .merge(workspace::routes())
        .merge(channels::routes())
        .merge(api_keys::routes())
        .merge(agent_config::routes())
        .merge(models::routes())
        .merge(usage::routes())
        .merge(admin::routes())
        .merge(billing::routes())
        .merge(web_chat::routes())
}

/// The OpenAPI document, as `/api/v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_router().into_openapi()
}

/// CORS for the dashboard's origin alone; without one, browsers get no cross-origin access.
fn cors(origin: Option<&str>) -> Option<CorsLayer> {
    let origin = HeaderValue::from_str(origin?).ok()?;
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list([origin]))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(3600)),
    )
}

/// The API routes: the accounts API when accounts are configured, and the admin-token
/// endpoints always.
pub fn routes(
    core: Arc<Core>,
    api: Option<Arc<ApiState>>,
    dashboard_origin: Option<&str>,
) -> axum::Router {
    let admin = admin_token::routes(admin_token::AdminState {
        core,
        accounts: api.as_ref().map(|a| a.accounts.clone()),
    });
    let Some(state) = api else {
        return admin;
    };
    let (router, doc) = openapi_router().split_for_parts();
    let doc = Arc::new(doc.to_json().unwrap_or_default());
    let router = router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        doc.to_string(),
                    )
                }
            }),
        )
        .with_state(state)
        // Unknown paths get the API's JSON error shape instead of an empty body.
        .fallback(|| async { crate::error::ApiError::NotFound("no such path".into()) });
    let router = match cors(dashboard_origin) {
        Some(layer) => router.layer(layer),
        None => router,
    };
    router.merge(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_covers_every_resource_and_declares_bearer_auth() {
        let doc: serde_json::Value = serde_json::from_str(&openapi().to_json().unwrap()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/api/v1/auth/register",
            "/api/v1/auth/login",
            "/api/v1/auth/refresh",
            "/api/v1/auth/logout",
            "/api/v1/auth/oauth/google/start",
            "/api/v1/auth/oauth/google/callback",
            "/api/v1/sessions",
            "/api/v1/sessions/{id}/messages",
            "/api/v1/users/me",
            "/api/v1/users/me/export",
            "/api/v1/workspace",
            "/api/v1/channels/codes",
            "/api/v1/channels/connections",
            "/api/v1/channels/connections/{id}",
            "/api/v1/api-keys",
            "/api/v1/api-keys/{id}",
            "/api/v1/config",
            "/api/v1/models",
            "/api/v1/usage",
            "/api/v1/admin/users",
            "/api/v1/admin/users/{id}/suspend",
            "/api/v1/admin/users/{id}/resume",
            "/api/v1/billing/plans",
            "/api/v1/billing/checkout",
            "/api/v1/billing/subscription",
            "/api/v1/billing/portal",
            "/api/v1/billing/usage",
            "/webhooks/stripe",
            "/api/v1/web/chat-token",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        let me = &doc["paths"]["/api/v1/users/me"];
        for method in ["get", "patch", "delete"] {
            assert!(me[method].is_object(), "{method} /users/me");
        }
        let sub = &doc["paths"]["/api/v1/billing/subscription"];
        for method in ["get", "post", "delete"] {
            assert!(sub[method].is_object(), "{method} /billing/subscription");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
