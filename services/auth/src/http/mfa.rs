//! `/v1/auth/mfa/*` and `/v1/auth/login/mfa`: a signed-in user enrols,
//! confirms and disables a TOTP authenticator; a sign-in with MFA on is
//! completed with a code.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    error::{ApiJson, FieldError},
    openapi::{BearerRejections, JsonBodyRejections, Unavailable},
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    AppState,
    client::Client,
    sessions::{TokenResponse, no_store},
};
use crate::accounts::{MfaState, SecondFactor};

/// A sign-in stopped at its second factor.
#[derive(Serialize, ToSchema)]
pub struct MfaRequired {
    /// Always true.
    pub mfa_required: bool,
    /// Single use; send it with a code to `POST /v1/auth/login/mfa`.
    pub mfa_token: String,
    /// Seconds the challenge waits for its code.
    #[schema(example = 300)]
    pub expires_in: i64,
}

/// The caller's second factor.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaStatus {
    /// `off`, `pending` (enrolled, not confirmed) or `on`.
    #[schema(example = "on")]
    pub totp: String,
    /// Unused recovery codes (MFA on only).
    pub recovery_codes_left: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolTotp {
    /// The account's password, asked again.
    #[schema(value_type = String)]
    pub password: SecretString,
}

/// The authenticator's secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct TotpEnrolled {
    /// Base32, to type into an authenticator app.
    pub secret: String,
    /// `otpauth://totp/…` (show it as a QR code).
    pub otpauth_uri: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotp {
    /// The authenticator's current six-digit code.
    #[schema(pattern = "^[0-9]{6}$", example = "123456")]
    pub code: String,
}

/// Recovery codes, shown this once: each stands in for the authenticator
/// once.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// A second factor: an authenticator code, or a recovery code (exactly
/// one; the document says so with `oneOf`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SecondFactorProof {
    Code(CodeProof),
    RecoveryCode(RecoveryCodeProof),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeProof {
    /// The authenticator's current six-digit code.
    #[schema(pattern = "^[0-9]{6}$", example = "123456")]
    pub code: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryCodeProof {
    /// One of the recovery codes (used up).
    #[schema(value_type = String, example = "abcd-efgh-ijkl-mnop")]
    pub recovery_code: SecretString,
}

/// The challenge's `mfa_token` with a code, or with a recovery code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CompleteMfaLogin {
    Code(CodeLogin),
    RecoveryCode(RecoveryCodeLogin),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeLogin {
    /// From the sign-in's `mfa_required` answer.
    #[schema(value_type = String)]
    pub mfa_token: SecretString,
    /// The authenticator's current six-digit code.
    #[schema(pattern = "^[0-9]{6}$", example = "123456")]
    pub code: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryCodeLogin {
    /// From the sign-in's `mfa_required` answer.
    #[schema(value_type = String)]
    pub mfa_token: SecretString,
    /// One of the recovery codes (used up).
    #[schema(value_type = String)]
    pub recovery_code: SecretString,
}

/// A well-formed code: six ASCII digits.
fn parse_code(field: &str, code: String) -> Result<String, Problem> {
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(Problem::validation(vec![FieldError::new(
            field,
            "must be the six digits the authenticator shows",
        )]))
    }
}

impl SecondFactorProof {
    fn into_domain(self) -> Result<SecondFactor, Problem> {
        Ok(match self {
            Self::Code(proof) => SecondFactor::Code(parse_code("code", proof.code)?),
            Self::RecoveryCode(proof) => SecondFactor::RecoveryCode(proof.recovery_code),
        })
    }
}

impl CompleteMfaLogin {
    fn into_parts(self) -> Result<(SecretString, SecondFactor), Problem> {
        Ok(match self {
            Self::Code(login) => (
                login.mfa_token,
                SecondFactor::Code(parse_code("code", login.code)?),
            ),
            Self::RecoveryCode(login) => (
                login.mfa_token,
                SecondFactor::RecoveryCode(login.recovery_code),
            ),
        })
    }
}

/// Where the caller's second factor stands.
#[utoipa::path(
    get,
    path = "/v1/auth/mfa",
    tag = "mfa",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's second factor", body = MfaStatus),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<ApiJson<MfaStatus>, Problem> {
    let (user_id, _) = super::session_caller(&state, &headers).await?;
    let status = match state.accounts.mfa_state(user_id).await? {
        MfaState::Off => MfaStatus {
            totp: "off".into(),
            recovery_codes_left: None,
        },
        MfaState::Pending => MfaStatus {
            totp: "pending".into(),
            recovery_codes_left: None,
        },
        MfaState::On {
            recovery_codes_left,
        } => MfaStatus {
            totp: "on".into(),
            recovery_codes_left: Some(recovery_codes_left),
        },
    };
    Ok(ApiJson(status))
}

/// Enrols a TOTP authenticator (replacing one not yet confirmed); MFA is
/// on once a code confirms it.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/totp",
    tag = "mfa",
    security(("bearer" = [])),
    request_body = EnrolTotp,
    responses(
        (status = 201, description = "Enrolled: the secret, shown this once", body = TotpEnrolled),
        (status = 403, description = "The password does not match", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA is on already", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords; wait `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        BearerRejections,
        Unavailable,
    )
)]
pub async fn enrol_totp(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Result<ApiJson<EnrolTotp>, Problem>,
) -> Result<Response, Problem> {
    let (user_id, session_id) = super::session_caller(&state, &headers).await?;
    let ApiJson(request) = body?;
    let enrolment = state
        .accounts
        .enrol_totp(user_id, session_id, request.password, client.0)
        .await?;
    Ok(no_store(
        StatusCode::CREATED,
        TotpEnrolled {
            secret: enrolment.secret,
            otpauth_uri: enrolment.uri,
        },
    ))
}

/// Confirms the enrolled authenticator with a code: MFA is on, and the
/// recovery codes are returned this once.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/totp/confirm",
    tag = "mfa",
    security(("bearer" = [])),
    request_body = ConfirmTotp,
    responses(
        (status = 200, description = "MFA on; recovery codes, shown this once", body = RecoveryCodes),
        (status = 403, description = "The code does not match", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No authenticator enrolled, or MFA on already", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong codes; wait `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        BearerRejections,
        Unavailable,
    )
)]
pub async fn confirm_totp(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Result<ApiJson<ConfirmTotp>, Problem>,
) -> Result<Response, Problem> {
    let (user_id, session_id) = super::session_caller(&state, &headers).await?;
    let ApiJson(request) = body?;
    let code = parse_code("code", request.code)?;
    let codes = state
        .accounts
        .confirm_totp(user_id, session_id, code, client.0)
        .await?;
    Ok(no_store(
        StatusCode::OK,
        RecoveryCodes {
            recovery_codes: codes,
        },
    ))
}

/// Turns MFA off, proven with a code or a recovery code.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/totp/disable",
    tag = "mfa",
    security(("bearer" = [])),
    request_body = SecondFactorProof,
    responses(
        (status = 204, description = "MFA off; the authenticator and recovery codes are gone"),
        (status = 403, description = "The code does not match (or was used)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA is not on", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong codes; wait `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        BearerRejections,
        Unavailable,
    )
)]
pub async fn disable_totp(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Result<ApiJson<SecondFactorProof>, Problem>,
) -> Result<Response, Problem> {
    let (user_id, session_id) = super::session_caller(&state, &headers).await?;
    let ApiJson(request) = body?;
    let proof = request.into_domain()?;
    state
        .accounts
        .disable_totp(user_id, session_id, proof, client.0)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Completes a sign-in with MFA on: the challenge's `mfa_token` and a code
/// (or a recovery code) open the session.
#[utoipa::path(
    post,
    path = "/v1/auth/login/mfa",
    tag = "auth",
    request_body = CompleteMfaLogin,
    responses(
        (status = 200, description = "Tokens for a new session", body = TokenResponse),
        (status = 401, description = "The code does not match (or was used), or the mfa_token is invalid, expired or used up (five wrong codes end it)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong codes; wait `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        Unavailable,
    )
)]
pub async fn complete_login(
    State(state): State<AppState>,
    client: Client,
    body: Result<ApiJson<CompleteMfaLogin>, Problem>,
) -> Result<Response, Problem> {
    let ApiJson(request) = body?;
    let (mfa_token, proof) = request.into_parts()?;
    let tokens = state
        .accounts
        .complete_mfa_login(mfa_token, proof, client.0)
        .await?;
    Ok(no_store(
        StatusCode::OK,
        TokenResponse::from_issued(tokens, false),
    ))
}
