//! `/internal/users`: profile creation, called by the auth service at
//! registration with a service token, and the read its registration
//! reconciler asks before it finishes or abandons a registration. Never
//! routed by the gateway.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    error::{ApiJson, Validation},
    openapi::{JsonBodyRejections, Unavailable},
    types::{DisplayName, Email},
};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::domain::{Created, NewProfile, ProfileBody};

/// A profile to create for a user auth has just registered.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The user id minted by auth (UUIDv7).
    pub id: Uuid,
    #[schema(schema_with = portico_common::types::email_schema)]
    pub email: String,
    #[schema(schema_with = portico_common::types::display_name_schema)]
    pub display_name: String,
}

/// The calling service, if its token is a service token with the internal
/// API's scope from a service allowed here.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<portico_common::identity::ServiceIdentity, Problem> {
    let claims = state.service_tokens.authenticate(headers).await?;
    let Some(caller) = claims.service() else {
        return Err(Problem::forbidden("a service token is required"));
    };
    if !claims.has_scope(&state.internal_api.create_scope) {
        return Err(Problem::forbidden(format!(
            "the service token lacks the `{}` scope",
            state.internal_api.create_scope
        ))
        .with_cause(format!("service `{caller}` called without the scope")));
    }
    if !state.internal_api.allowed_callers.contains(&caller) {
        return Err(
            Problem::forbidden("this service may not use the internal API").with_cause(format!(
                "service `{caller}` is not in internal_api.allowed_callers"
            )),
        );
    }
    Ok(caller)
}

/// The problem type (after `urn:portico:problem:`) of an unknown id.
pub const NO_SUCH_USER: &str = "no-such-user";

/// A profile by id, whatever its status: whether a registration auth
/// could not finish created it.
#[utoipa::path(
    get,
    path = "/internal/users/{id}",
    tag = "internal",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user id")),
    responses(
        (status = 200, description = "The profile (`status` says whether it is active)", body = ProfileBody),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid service token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a service token, without the internal API's scope, or from a service not allowed here", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No profile with this id (problem type `urn:portico:problem:no-such-user`)", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<ApiJson<ProfileBody>, Problem> {
    authorize(&state, &headers).await?;
    let id = Uuid::parse_str(&id).map_err(|_| Problem::bad_request("the user id is not a UUID"))?;
    let profile = state
        .accounts
        .get(id)
        .await?
        // Its own problem type: a caller tells "no such profile" from a
        // 404 of anything else (a route an older replica lacks).
        .ok_or_else(|| {
            Problem::new(
                axum::http::StatusCode::NOT_FOUND,
                NO_SUCH_USER,
                "no profile with this id",
            )
        })?;
    Ok(ApiJson(ProfileBody::from(profile)))
}

/// Creates a profile; idempotent by id.
#[utoipa::path(
    post,
    path = "/internal/users",
    tag = "internal",
    security(("bearer" = [])),
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = ProfileBody),
        (status = 200, description = "Already existed (a retried call)", body = ProfileBody),
        (status = 401, description = "No valid service token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a service token, without the `users:write` scope, or from a service not allowed here", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email or id belongs to another profile", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        Unavailable,
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<CreateUser>, Problem>,
) -> Result<Response, Problem> {
    let caller = authorize(&state, &headers).await?;
    let ApiJson(request) = body?;
    let mut validation = Validation::new();
    let email = validation.check("email", Email::parse(&request.email));
    let display_name = validation.check("display_name", DisplayName::parse(&request.display_name));
    validation.finish()?;
    let (Some(email), Some(display_name)) = (email, display_name) else {
        return Err(Problem::internal().with_cause("validation passed without values"));
    };
    let new = NewProfile {
        id: request.id,
        email,
        display_name,
    };
    let created = state.accounts.create(&new, state.clock.now()).await?;
    Ok(match created {
        Created::New(profile) => {
            tracing::info!(user_id = %profile.id, %caller, "profile created");
            (StatusCode::CREATED, ApiJson(ProfileBody::from(profile))).into_response()
        }
        Created::Existing(profile) => {
            (StatusCode::OK, ApiJson(ProfileBody::from(profile))).into_response()
        }
    })
}
