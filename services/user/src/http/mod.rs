//! HTTP layer of the user service: routes, OpenAPI, shared handler state.

mod internal;
mod profile;

use std::sync::Arc;

use axum::Router;
use portico_common::{
    FieldError, Problem, auth::TokenVerifier, http::pipeline, openapi::BearerSecurity,
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::storage::UserStore;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: UserStore,
    /// Verifies user access tokens (public API).
    pub user_tokens: Arc<TokenVerifier>,
    /// Verifies service tokens (internal API).
    pub service_tokens: Arc<TokenVerifier>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portico user service",
        description = "Profiles. `/v1/users/*` is public through the gateway; `/internal/*` is for other services only."
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerSecurity),
    tags((name = "users", description = "The caller's profile"), (name = "internal", description = "Service-to-service API"))
)]
struct ApiDoc;

/// The API router, pipeline and `/openapi.json` included.
pub fn router(state: AppState) -> Router {
    let (router, api) = documented_routes().split_for_parts();
    pipeline::service_router(router.with_state(state), &api)
}

/// Every route with its OpenAPI description.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(profile::get_me, profile::update_me))
        .routes(routes!(internal::create_user))
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
        let fields = &document["components"]["schemas"]["CreateUser"]["properties"];
        assert_eq!(fields["email"]["pattern"], EMAIL_PATTERN);
        assert_eq!(fields["display_name"]["pattern"], DISPLAY_NAME_PATTERN);
    }
}
