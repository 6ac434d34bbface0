//! HTTP layer of the user service: routes, OpenAPI, shared handler state.

mod admin;
mod conditional;
mod errors;
mod export;
pub use export::AuthApi;
mod internal;
mod profile;

use std::sync::Arc;

use axum::Router;
use portico_common::{
    FieldError, Problem, clock::SharedClock, http::pipeline, jwt::TokenVerifier,
    openapi::BearerSecurity, outbox::document::Webhooks,
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::Accounts;

/// What handlers share: one `Arc`, so axum's per-request copy of the
/// state is one reference count, not one per part.
pub type AppState = Arc<Shared>;

/// The parts of [`AppState`].
pub struct Shared {
    pub accounts: Accounts,
    /// Timestamps of changes.
    pub clock: SharedClock,
    /// Verifies user access tokens (public API).
    pub user_tokens: Arc<TokenVerifier>,
    /// Verifies service tokens (internal API).
    pub service_tokens: Arc<TokenVerifier>,
    /// Services allowed on the internal API.
    /// Who may call `/internal/*`, with which audience and scope.
    pub internal_api: Arc<crate::config::InternalApiConfig>,
    /// The auth service, for the data export.
    pub auth_api: export::AuthApi,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portico user service",
        description = "Profiles. `/v1/users/*` is public through the gateway; `/internal/*` is for other services only."
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerSecurity, &WEBHOOKS),
    tags((name = "users", description = "The caller's profile"), (name = "admin", description = "The user directory and webhook deliveries (admin role)"), (name = "internal", description = "Service-to-service API"), (name = "events", description = "Webhooks this service sends to its subscribers (`events.subscribers`)"))
)]
struct ApiDoc;

/// The events this service sends, in the document's `webhooks`.
const WEBHOOKS: Webhooks = Webhooks(crate::events::documented);

/// The API router, pipeline and `/openapi.json` included.
pub fn router(state: AppState) -> Router {
    pipeline::documented_service_router(documented_routes(), state)
}

/// Every route with its OpenAPI description.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            profile::get_me,
            profile::update_me,
            profile::delete_me
        ))
        .routes(routes!(profile::get_user))
        .routes(routes!(export::export_me))
        .routes(routes!(admin::directory))
        .routes(routes!(admin::dead_deliveries))
        .routes(routes!(admin::redeliver))
        .routes(routes!(internal::create_user))
        .routes(routes!(internal::get_user))
}

#[cfg(test)]
mod tests {
    use portico_testkit::fields;

    /// The schemas in the document accept exactly what the validators
    /// accept, judged by running the documented rules over the samples.
    #[test]
    fn documented_field_rules_are_the_validators_rules() {
        use portico_common::types::{DisplayName, Email};
        let (_, api) = super::documented_routes().split_for_parts();
        let document = serde_json::to_value(&api).unwrap();
        let schemas = &document["components"]["schemas"];
        for (schema, field) in [
            ("CreateUser", "email"),
            ("CreateUser", "display_name"),
            ("UpdateProfile", "display_name"),
        ] {
            let rules = &schemas[schema]["properties"][field];
            match field {
                "email" => fields::assert_schema_agrees_with_validator(
                    rules,
                    |raw| Email::parse(raw).is_ok(),
                    &fields::emails(),
                ),
                _ => fields::assert_schema_agrees_with_validator(
                    rules,
                    |raw| DisplayName::parse(raw).is_ok(),
                    &fields::display_names(),
                ),
            }
        }
    }
}
