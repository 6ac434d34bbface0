//! `/internal/users`: profile creation, called by the auth service at
//! registration with a service token. Never routed by the gateway.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    auth::SERVICE_ROLE,
    error::{ApiJson, Validation},
    openapi::{JsonBodyRejections, Unavailable},
    types::{DisplayName, Email},
};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::{
    domain::{self, Created, NewProfile, ProfileBody},
    error::UserError,
};

/// A profile to create for a user auth has just registered.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The user id minted by auth (UUIDv7).
    pub id: Uuid,
    #[schema(
        max_length = 254,
        pattern = r"^[\x21-\x3f\x41-\x7e]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
    )]
    pub email: String,
    /// 1–100 characters after trimming, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub display_name: String,
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
        (status = 403, description = "Token is not a service token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email or id belongs to another profile", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        Unavailable,
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<CreateUser>, Problem>,
) -> Result<Response, UserError> {
    let claims = state.service_tokens.authenticate(&headers).await?;
    if !claims.roles.iter().any(|role| role == SERVICE_ROLE) {
        return Err(UserError::Forbidden("a service token is required"));
    }
    let ApiJson(request) = body?;
    let mut validation = Validation::new();
    let email = validation.check("email", Email::parse(&request.email));
    let display_name = validation.check("display_name", DisplayName::parse(&request.display_name));
    validation.finish()?;
    let (Some(email), Some(display_name)) = (email, display_name) else {
        return Err(Problem::internal().into());
    };
    let new = NewProfile {
        id: request.id,
        email,
        display_name,
    };
    let created = state.store.create(&new, domain::now()).await?;
    Ok(match created {
        Created::New(profile) => {
            tracing::info!(user_id = %profile.id, caller = %claims.sub, "profile created");
            (StatusCode::CREATED, ApiJson(ProfileBody::from(profile))).into_response()
        }
        Created::Existing(profile) => {
            (StatusCode::OK, ApiJson(ProfileBody::from(profile))).into_response()
        }
    })
}
