//! `/v1/users/me`: the caller's own profile.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    error::{ApiJson, Validation},
    openapi::{BearerRejections, JsonBodyRejections, Unavailable},
    types::DisplayName,
};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::{
    domain::{Profile, ProfileBody},
    error::UserError,
};

/// Fields of the profile a user may change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    #[schema(schema_with = portico_common::types::display_name_schema)]
    pub display_name: String,
}

async fn caller_id(state: &AppState, headers: &HeaderMap) -> Result<Uuid, Problem> {
    let claims = state.user_tokens.authenticate(headers).await?;
    // A valid token whose subject is not a user id is not a user's token.
    claims
        .user_id()
        .ok_or_else(|| Problem::unauthorized("the bearer token is not a user token"))
}

fn profile_response(profile: Profile) -> Response {
    let etag = HeaderValue::from_str(&profile.etag()).ok();
    let mut response = ApiJson(ProfileBody::from(profile)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The caller's profile.
#[utoipa::path(
    get,
    path = "/v1/users/me",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = ProfileBody,
            headers(("etag" = String, description = "Version of the profile"))),
        (status = 404, description = "No profile for this user", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn get_me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = caller_id(&state, &headers).await?;
    let profile = state
        .store
        .get(id)
        .await
        .map_err(UserError::from)?
        .ok_or(UserError::NotFound)?;
    Ok(profile_response(profile))
}

/// Changes the caller's profile.
#[utoipa::path(
    patch,
    path = "/v1/users/me",
    tag = "users",
    security(("bearer" = [])),
    request_body = UpdateProfile,
    responses(
        (status = 200, description = "The updated profile", body = ProfileBody,
            headers(("etag" = String, description = "Version of the profile"))),
        (status = 404, description = "No profile for this user", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        BearerRejections,
        Unavailable,
    )
)]
pub async fn update_me(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<UpdateProfile>, Problem>,
) -> Result<Response, Problem> {
    // Authenticate before looking at the body: an anonymous caller learns nothing.
    let id = caller_id(&state, &headers).await?;
    let ApiJson(update) = body?;
    let mut validation = Validation::new();
    let display_name = validation.check("display_name", DisplayName::parse(&update.display_name));
    validation.finish()?;
    let Some(display_name) = display_name else {
        return Err(Problem::internal().with_cause("validation passed without values"));
    };
    let profile = state
        .store
        .update_display_name(id, display_name.as_str(), state.clock.now())
        .await
        .map_err(UserError::from)?
        .ok_or(UserError::NotFound)?;
    tracing::info!(user_id = %id, "profile updated");
    Ok(profile_response(profile))
}
