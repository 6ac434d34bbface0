//! `/.well-known/*`: the JWKS and the OpenID discovery document.

use axum::{
    Json,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::domain::keys::Jwks;

/// Public keys that verify access tokens.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "keys",
    responses((status = 200, description = "JSON Web Key Set", body = Jwks))
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let keys = state
        .signing_keys
        .keyring()
        .current()
        .jwks(state.accounts.now());
    // Verifiers cache keys for five minutes: a new key is published
    // longer than that before it signs (`signing_keys.publish_lead_secs`).
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(keys)).into_response()
}

/// Issuer metadata (RFC 8414 names): where the keys that verify its tokens
/// are, and what its token endpoint does. Only what Portico honours is
/// listed (it is not a full OpenID provider).
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscoveryDocument {
    pub issuer: String,
    pub jwks_uri: String,
    /// The OAuth 2.0 token endpoint (client credentials).
    pub token_endpoint: String,
    #[schema(example = json!(["client_credentials"]))]
    pub grant_types_supported: Vec<&'static str>,
    #[schema(example = json!(["client_secret_basic", "client_secret_post"]))]
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    /// How every token it issues is signed (each JWK also names its
    /// `alg`); the OpenID field verifiers commonly read for it.
    #[schema(example = json!(["EdDSA"]))]
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
}

/// Where the issuer's keys and endpoints are.
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "keys",
    responses((status = 200, description = "Discovery document", body = DiscoveryDocument))
)]
pub async fn openid_configuration(State(state): State<AppState>) -> Json<DiscoveryDocument> {
    let issuer = state
        .accounts
        .issuer()
        .settings()
        .issuer
        .trim_end_matches('/')
        .to_owned();
    Json(DiscoveryDocument {
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        token_endpoint: format!("{issuer}/v1/auth/token"),
        grant_types_supported: vec!["client_credentials"],
        token_endpoint_auth_methods_supported: vec!["client_secret_basic", "client_secret_post"],
        id_token_signing_alg_values_supported: vec!["EdDSA"],
        issuer,
    })
}
