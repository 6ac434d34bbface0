//! HTTP layer of the auth service: routes, OpenAPI, shared handler state.

mod sessions;
mod well_known;

use std::sync::Arc;

use axum::Router;
use portico_common::{
    FieldError, Problem, auth::TokenVerifier, http::pipeline, openapi::BearerSecurity,
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::Accounts;

pub use sessions::{LoginRequest, RefreshRequest, RegisterRequest, TokenResponse};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub accounts: Accounts,
    /// Verifies this service's own access tokens (logout).
    pub verifier: Arc<TokenVerifier>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portico auth service",
        description = "Registration, login, token refresh and logout; the public keys that verify access tokens."
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerSecurity),
    tags((name = "auth", description = "Accounts and sessions"), (name = "keys", description = "Token verification keys and discovery"))
)]
struct ApiDoc;

pub fn router(state: AppState) -> Router {
    let (router, api) = documented_routes().split_for_parts();
    pipeline::service_router(router.with_state(state), &api)
}

/// Every route with its OpenAPI description.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(sessions::register))
        .routes(routes!(sessions::login))
        .routes(routes!(sessions::refresh))
        .routes(routes!(sessions::logout))
        .routes(routes!(well_known::jwks))
        .routes(routes!(well_known::openid_configuration))
}

#[cfg(test)]
mod tests {
    use portico_common::types::{DISPLAY_NAME_PATTERN, EMAIL_PATTERN};

    /// The documented patterns are the validators' own, so the schema
    /// accepts exactly what the service accepts.
    #[test]
    fn schema_patterns_are_the_validators_patterns() {
        let (_, api) = super::documented_routes().split_for_parts();
        let document = serde_json::to_value(&api).unwrap();
        let fields = &document["components"]["schemas"]["RegisterRequest"]["properties"];
        assert_eq!(fields["email"]["pattern"], EMAIL_PATTERN);
        assert_eq!(fields["display_name"]["pattern"], DISPLAY_NAME_PATTERN);
    }
}
