//! HTTP layer of the auth service: routes, OpenAPI, shared handler state.

mod admin;
mod client;

pub use client::Cidr;
mod email;
mod errors;
pub mod events;
mod mfa;
mod own_sessions;
mod revocations;
mod sessions;
mod token;
mod well_known;

use std::sync::Arc;

use axum::Router;
use portico_common::{
    FieldError, Problem, http::pipeline, identity::Role, jwt::TokenVerifier,
    openapi::BearerSecurity,
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{accounts::Accounts, domain::clients::ServiceClients, signing_keys::SigningKeys};

pub use sessions::{LoginRequest, RefreshRequest, RegisterRequest, TokenResponse};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub accounts: Accounts,
    /// Verifies this service's own access tokens (logout).
    pub verifier: Arc<TokenVerifier>,
    /// Peers whose `x-forwarded-for` is believed (the gateways).
    pub trusted_proxies: Arc<Vec<Cidr>>,
    /// Service clients of the client credentials grant.
    pub clients: Arc<ServiceClients>,
    /// Rotates signing keys (admin API) and holds the keyring.
    pub signing_keys: SigningKeys,
    /// Verifies events other services deliver.
    pub inbox: Arc<events::Inbox>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portico auth service",
        description = "Registration, login, token refresh and logout; the public keys that verify access tokens."
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerSecurity, &ClientBasicSecurity, &WEBHOOKS),
    tags((name = "auth", description = "Accounts and sign-in"), (name = "sessions", description = "The caller's own sessions and password"), (name = "mfa", description = "The caller's second factor (TOTP)"), (name = "keys", description = "Token verification keys and discovery"), (name = "admin", description = "Roles, the audit log, key rotation and webhook deliveries (admin role)"), (name = "internal", description = "Service-to-service API"), (name = "events", description = "Webhooks this service sends to its subscribers (`outbox.subscribers`)"))
)]
struct ApiDoc;

/// The events this service sends, in the document's `webhooks`.
const WEBHOOKS: portico_common::outbox::document::Webhooks =
    portico_common::outbox::document::Webhooks(crate::domain::events::documented);

/// HTTP Basic client authentication of the token endpoint.
struct ClientBasicSecurity;

impl utoipa::Modify for ClientBasicSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "client_basic",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
            );
    }
}

/// The user and session of the bearer token, refused unless the session
/// is still live: auth is where revocations happen, so its own endpoints
/// check the session itself rather than wait for the feed.
async fn session_caller(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<(uuid::Uuid, uuid::Uuid), Problem> {
    live_session_claims(state, headers)
        .await
        .map(|(user_id, session_id, _)| (user_id, session_id))
}

/// The admin calling, refused (403) unless the token's live session
/// carries the `admin` role. A revoked role cannot linger in a token:
/// changing roles ends the user's sessions.
async fn admin_caller(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<uuid::Uuid, Problem> {
    let (user_id, _, claims) = live_session_claims(state, headers).await?;
    if !claims.roles.contains(Role::ADMIN) {
        return Err(Problem::forbidden("this needs the admin role"));
    }
    Ok(user_id)
}

async fn live_session_claims(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<(uuid::Uuid, uuid::Uuid, portico_common::jwt::Claims), Problem> {
    let claims = state.verifier.authenticate(headers).await?;
    let (Some(user_id), Some(session_id)) = (claims.user_id(), claims.session_id()) else {
        return Err(Problem::unauthorized("the bearer token has no session"));
    };
    if !state.accounts.is_live(user_id, session_id).await? {
        return Err(Problem::unauthorized(
            "the bearer token's session has ended",
        ));
    }
    Ok((user_id, session_id, claims))
}

pub fn router(state: AppState) -> Router {
    pipeline::documented_service_router(documented_routes(), state)
}

/// Every route with its OpenAPI description.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(sessions::register))
        .routes(routes!(sessions::login))
        .routes(routes!(sessions::refresh))
        .routes(routes!(sessions::logout))
        .routes(routes!(token::token))
        .routes(routes!(
            own_sessions::list_sessions,
            own_sessions::end_other_sessions
        ))
        .routes(routes!(own_sessions::end_session))
        .routes(routes!(own_sessions::change_password))
        .routes(routes!(own_sessions::export))
        .routes(routes!(email::request_verification))
        .routes(routes!(email::confirm_verification))
        .routes(routes!(email::request_reset))
        .routes(routes!(email::confirm_reset))
        .routes(routes!(mfa::status))
        .routes(routes!(mfa::enrol_totp))
        .routes(routes!(mfa::confirm_totp))
        .routes(routes!(mfa::disable_totp))
        .routes(routes!(mfa::complete_login))
        .routes(routes!(admin::grant_role, admin::revoke_role))
        .routes(routes!(admin::audit_log))
        .routes(routes!(admin::rotate_keys))
        .routes(routes!(admin::dead_deliveries))
        .routes(routes!(admin::redeliver))
        .routes(routes!(revocations::feed))
        .routes(routes!(events::receive))
        .routes(routes!(well_known::jwks))
        .routes(routes!(well_known::openid_configuration))
}

#[cfg(test)]
mod tests {
    use portico_common::types::{DisplayName, Email};
    use portico_testkit::fields;

    /// The schemas in the document accept exactly what the validators
    /// accept, judged by running the documented rules over the samples.
    #[test]
    fn documented_field_rules_are_the_validators_rules() {
        let (_, api) = super::documented_routes().split_for_parts();
        let document = serde_json::to_value(&api).unwrap();
        let fields_of = &document["components"]["schemas"]["RegisterRequest"]["properties"];
        fields::assert_schema_agrees_with_validator(
            &fields_of["email"],
            |raw| Email::parse(raw).is_ok(),
            &fields::emails(),
        );
        fields::assert_schema_agrees_with_validator(
            &fields_of["display_name"],
            |raw| DisplayName::parse(raw).is_ok(),
            &fields::display_names(),
        );
    }
}
