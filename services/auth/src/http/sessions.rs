//! `/v1/auth/*`: register, login, refresh, logout.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    error::{ApiJson, Validation},
    http::pipeline,
    openapi::{BearerRejections, JsonBodyRejections, Unavailable},
    types::{DisplayName, Email},
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, client::Client};
use crate::{
    accounts::{IssuedTokens, LoginOutcome, Registration},
    domain::{password_policy::PersonalData, tokens::RefreshToken},
    error::AuthError,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(schema_with = portico_common::types::email_schema)]
    pub email: String,
    /// At least 8 characters (more if the operator raised
    /// `password_policy.min_chars`) after NFKC normalisation and at most 1024
    /// bytes; not a common or leaked password; not containing the email's
    /// name or the display name.
    #[schema(value_type = String, example = "vellum otter quarry", min_length = 8, max_length = 1024)]
    pub password: SecretString,
    #[schema(schema_with = portico_common::types::display_name_schema)]
    pub display_name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(value_type = String, example = "correct horse battery staple")]
    pub password: SecretString,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

/// Tokens for a session.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// EdDSA-signed JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Opaque; exchange at `/v1/auth/refresh`. Rotated on every use (a retry within the grace window gets the same successor).
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: i64,
    /// The new user's id (registration only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
}

/// What a sign-in answers: tokens, or (MFA on) a challenge for the code.
#[derive(ToSchema)]
#[allow(dead_code)] // the document's shape; handlers send the variants
pub enum LoginAnswer {
    Tokens(TokenResponse),
    MfaRequired(super::mfa::MfaRequired),
}

/// Redacted: token values never reach logs.
impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl TokenResponse {
    pub(super) fn from_issued(tokens: IssuedTokens, with_user_id: bool) -> Self {
        Self {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token.expose().to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: tokens.expires_in,
            user_id: with_user_id.then_some(tokens.user_id),
        }
    }
}

/// Token responses must never be cached (RFC 6749 §5.1).
pub(super) fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], ApiJson(body)).into_response()
}

/// Creates an account and its profile, and opens a session.
#[utoipa::path(
    post,
    path = "/v1/auth/register",
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created; tokens for its first session", body = TokenResponse),
        (status = 409, description = "Email already registered (in any letter case)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The profile's creation is uncertain (the registration stays pending: the same request retried resumes it), or sign-ins are saturated; retry shortly", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
    )
)]
pub async fn register(
    State(state): State<AppState>,
    client: Client,
    body: Result<ApiJson<RegisterRequest>, Problem>,
) -> Result<Response, Problem> {
    let ApiJson(request) = body?;
    let mut validation = Validation::new();
    let email = validation.check("email", Email::parse(&request.email));
    let display_name = DisplayName::parse(&request.display_name);
    // The password may not contain the email's name or the display name.
    let personal = PersonalData {
        email: email.as_ref().map(Email::as_str),
        display_name: display_name.as_ref().ok().map(DisplayName::as_str),
    };
    let password = validation.check(
        "password",
        state
            .accounts
            .password_policy()
            .check(&request.password, personal),
    );
    let display_name = validation.check("display_name", display_name);
    validation.finish()?;
    let (Some(email), Some(password), Some(display_name)) = (email, password, display_name) else {
        return Err(Problem::internal().with_cause("validation passed without values"));
    };
    // Run the flow as its own task: if the client goes away or a timeout
    // drops this handler, registration still finishes or cleans up.
    let accounts = state.accounts.clone();
    let registration = Registration {
        email,
        password,
        display_name,
    };
    let tokens = pipeline::spawn_in_request_context(async move {
        accounts.register(registration, client.0).await
    })
    .await
    .map_err(|err| AuthError::Internal(format!("registration task: {err}")))??;
    Ok(no_store(
        StatusCode::CREATED,
        TokenResponse::from_issued(tokens, true),
    ))
}

/// Opens a session with email and password.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Tokens for a new session; with MFA on, a challenge instead (`mfa_required`), completed at `POST /v1/auth/login/mfa`", body = LoginAnswer),
        (status = 401, description = "Unknown email or wrong password (indistinguishable)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The right password, but `email_verification.required` is on and the address is not verified yet", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts for this account or address; wait `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        Unavailable,
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: Client,
    body: Result<ApiJson<LoginRequest>, Problem>,
) -> Result<Response, Problem> {
    let ApiJson(request) = body?;
    let outcome = state
        .accounts
        .login(&request.email, request.password, client.0)
        .await?;
    Ok(match outcome {
        LoginOutcome::Tokens(tokens) => {
            no_store(StatusCode::OK, TokenResponse::from_issued(tokens, false))
        }
        LoginOutcome::MfaRequired {
            mfa_token,
            expires_in,
        } => no_store(
            StatusCode::OK,
            super::mfa::MfaRequired {
                mfa_required: true,
                mfa_token,
                expires_in,
            },
        ),
    })
}

/// Exchanges a refresh token for new tokens (rotation). The same token sent
/// again within the grace window (10 s by default) gets the same tokens
/// again; later, it revokes the whole session.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens (rotated); the same ones for a retry within the grace window", body = TokenResponse),
        (status = 401, description = "Refresh token invalid, expired, idle too long, reused or revoked", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        Unavailable,
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    client: Client,
    body: Result<ApiJson<RefreshRequest>, Problem>,
) -> Result<Response, Problem> {
    let ApiJson(request) = body?;
    let tokens = state
        .accounts
        .refresh(RefreshToken::from_client(request.refresh_token), client.0)
        .await?;
    Ok(no_store(
        StatusCode::OK,
        TokenResponse::from_issued(tokens, false),
    ))
}

/// Ends the session of the presented access token: its refresh token stops working.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Session revoked"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (user_id, session_id) = super::session_caller(&state, &headers).await?;
    state.accounts.logout(user_id, session_id, client.0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
