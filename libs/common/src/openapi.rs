//! OpenAPI pieces every service's document shares.

use utoipa::{
    Modify,
    openapi::{
        OpenApi,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

/// Name of the bearer security scheme in every document.
pub const BEARER: &str = "bearer";

/// Adds the `bearer` (JWT) security scheme.
#[derive(Debug)]
pub struct BearerSecurity;

impl Modify for BearerSecurity {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

use utoipa::IntoResponses;

use crate::Problem;

/// The answers any endpoint taking a JSON body can give before its handler
/// runs (see [`crate::error::ApiJson`] and the body limit).
#[derive(Debug, IntoResponses)]
pub enum JsonBodyRejections {
    /// Malformed JSON
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem),
    /// Body over 64 KiB
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body is not `application/json`
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem),
    /// Missing, unknown or invalid fields (listed in `errors`)
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
}

/// The answers of an endpoint that requires a bearer token.
#[derive(Debug, IntoResponses)]
pub enum BearerRejections {
    /// Missing, invalid or expired bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(Problem),
}

/// 503: a dependency (database, signing keys) is unreachable; retry later.
#[derive(Debug, IntoResponses)]
#[response(status = 503, content_type = "application/problem+json")]
pub struct Unavailable(pub Problem);
