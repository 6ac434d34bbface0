//! The auth service's one error type; each variant documents its status.

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use portico_common::{Problem, db};

use crate::{domain::password::HashError, storage::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 4xx from request parsing or validation, 401/503 from token checks.
    #[error("{0}")]
    Rejected(Problem),
    /// 401: unknown email or wrong password — deliberately one answer.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 401: refresh token unknown, expired, rotated away or revoked.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// 409: the email is registered already (in any letter case).
    #[error("email already registered")]
    EmailTaken,
    /// 503: the user service could not create the profile.
    #[error("profile creation failed: {0}")]
    ProfileUnavailable(String),
    /// 503 with `Retry-After`: every password-hashing slot is busy.
    #[error("overloaded")]
    Overloaded,
    /// 503 when the database is unreachable, 500 otherwise.
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    /// 500: hashing, signing or randomness failed; logged, not sent.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<Problem> for AuthError {
    fn from(problem: Problem) -> Self {
        Self::Rejected(problem)
    }
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::Database(err) => Self::Storage(err),
        }
    }
}

impl From<HashError> for AuthError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => Self::Overloaded,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(err: jsonwebtoken::errors::Error) -> Self {
        Self::Internal(format!("token signing: {err}"))
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        match self {
            Self::Rejected(problem) => problem,
            Self::InvalidCredentials => Problem::unauthorized("invalid email or password"),
            Self::InvalidRefreshToken => {
                Problem::unauthorized("the refresh token is invalid, expired or revoked")
            }
            Self::EmailTaken => Problem::conflict("this email is already registered"),
            Self::ProfileUnavailable(cause) => {
                tracing::error!(%cause, "registration failed: profile not created");
                Problem::service_unavailable(
                    "the account could not be created right now; retry shortly",
                )
            }
            Self::Overloaded => {
                tracing::warn!("password hashing saturated; shedding a request");
                let mut response =
                    Problem::service_unavailable("too many sign-ins at once; retry shortly")
                        .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            Self::Storage(err) => db::problem_for(&err),
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Problem::internal()
            }
        }
        .into_response()
    }
}
