//! `/v1/auth/email/verify/*` and `/v1/auth/password/reset/*`: links mailed
//! to the account's address, and what they confirm.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    error::{ApiJson, Validation},
    openapi::{BearerRejections, JsonBodyRejections, Unavailable},
    types::Email,
};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{AppState, client::Client};

/// The address to mail, when asking without being signed in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailRequest {
    #[schema(schema_with = portico_common::types::email_schema)]
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmEmail {
    /// From the link in the mail.
    #[schema(value_type = String)]
    pub token: SecretString,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmReset {
    /// From the link in the mail.
    #[schema(value_type = String)]
    pub token: SecretString,
    /// The same rules as at registration.
    #[schema(value_type = String, min_length = 8, max_length = 1024)]
    pub new_password: SecretString,
}

/// The address of a request body, lower-cased; a 422 naming `email` when
/// it is not one.
fn requested_email(body: Result<ApiJson<MailRequest>, Problem>) -> Result<String, Problem> {
    let ApiJson(request) = body?;
    let mut validation = Validation::new();
    let email = validation.check("email", Email::parse(&request.email));
    validation.finish()?;
    email
        .map(|email| email.normalized())
        .ok_or_else(|| Problem::internal().with_cause("validation passed without a value"))
}

/// Mails a (new) verification link: signed in, to the caller's address;
/// otherwise to the `email` in the body, answering the same whether or not
/// it has an account.
#[utoipa::path(
    post,
    path = "/v1/auth/email/verify/request",
    tag = "auth",
    security((), ("bearer" = [])),
    request_body(content = Option<MailRequest>, description = "Without a bearer token: the address to mail (signed in, the caller's own address is mailed whatever a body says)"),
    responses(
        (status = 202, description = "Mailed (or, asked by address, mailed if it has an unverified account)"),
        (status = 409, description = "The caller's email is verified already", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many mails asked for this address or from this client; wait `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        BearerRejections,
        Unavailable,
    )
)]
pub async fn request_verification(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Result<ApiJson<Option<MailRequest>>, Problem>,
) -> Result<Response, Problem> {
    // No body at all reads as `null`.
    let body = if headers.contains_key(header::CONTENT_TYPE) {
        body.map(|ApiJson(request)| request)?
    } else {
        None
    };
    if headers.contains_key(header::AUTHORIZATION) {
        let (user_id, _) = super::session_caller(&state, &headers).await?;
        // Signed in, the caller's own address is mailed; a body, if sent,
        // must still be a well-formed request.
        if let Some(request) = body {
            requested_email(Ok(ApiJson(request)))?;
        }
        state
            .accounts
            .request_email_verification(user_id, client.0)
            .await?;
    } else {
        let request = body.ok_or_else(|| {
            Problem::validation(vec![portico_common::error::FieldError::new(
                "email",
                "required without a bearer token",
            )])
        })?;
        let email = requested_email(Ok(ApiJson(request)))?;
        state
            .accounts
            .request_verification_by_address(email, client.0)
            .await?;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Marks the address verified with the token from its mail.
#[utoipa::path(
    post,
    path = "/v1/auth/email/verify/confirm",
    tag = "auth",
    request_body = ConfirmEmail,
    responses(
        (status = 204, description = "Verified; new access tokens say `email_verified: true`"),
        (status = 400, description = "The token is invalid, expired, used, or replaced by a newer mail's", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        Unavailable,
    )
)]
pub async fn confirm_verification(
    State(state): State<AppState>,
    client: Client,
    body: Result<ApiJson<ConfirmEmail>, Problem>,
) -> Result<Response, Problem> {
    let ApiJson(request) = body?;
    state
        .accounts
        .confirm_email_verification(request.token, client.0)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Asks for a password reset link. The answer is the same whether or not
/// the address has an account.
#[utoipa::path(
    post,
    path = "/v1/auth/password/reset/request",
    tag = "auth",
    request_body = MailRequest,
    responses(
        (status = 202, description = "If the address has an account, a reset link is on its way"),
        (status = 429, description = "Too many links asked for this address or from this client; wait `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        Unavailable,
    )
)]
pub async fn request_reset(
    State(state): State<AppState>,
    client: Client,
    body: Result<ApiJson<MailRequest>, Problem>,
) -> Result<Response, Problem> {
    let email = requested_email(body)?;
    state
        .accounts
        .request_password_reset(email, client.0)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Sets a new password with the token from the reset mail; every session
/// of the account ends.
#[utoipa::path(
    post,
    path = "/v1/auth/password/reset/confirm",
    tag = "auth",
    request_body = ConfirmReset,
    responses(
        (status = 204, description = "Password set; every session ended"),
        (status = 400, description = "The token is invalid, expired, used, or replaced by a newer mail's", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        Unavailable,
    )
)]
pub async fn confirm_reset(
    State(state): State<AppState>,
    client: Client,
    body: Result<ApiJson<ConfirmReset>, Problem>,
) -> Result<Response, Problem> {
    let ApiJson(request) = body?;
    state
        .accounts
        .confirm_password_reset(request.token, request.new_password, client.0)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
