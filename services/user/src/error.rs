//! The user service's one error type; each variant documents its status.

use axum::response::{IntoResponse, Response};
use portico_common::{Problem, db};

use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// 401/503 from token verification, 4xx from request parsing.
    #[error("{0}")]
    Rejected(Problem),
    /// 403: authenticated, but not allowed.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// 404: the profile does not exist.
    #[error("profile not found")]
    NotFound,
    /// 409: the email (or id) belongs to another profile.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// 503 when the database is unreachable, 500 otherwise; logged, not sent.
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

impl From<Problem> for UserError {
    fn from(problem: Problem) -> Self {
        Self::Rejected(problem)
    }
}

impl From<StoreError> for UserError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::EmailTaken => Self::Conflict("this email already belongs to another user"),
            StoreError::IdTaken => Self::Conflict("this id already belongs to another profile"),
            StoreError::Database(err) => Self::Storage(err),
        }
    }
}

impl IntoResponse for UserError {
    fn into_response(self) -> Response {
        match self {
            Self::Rejected(problem) => problem,
            Self::Forbidden(detail) => Problem::forbidden(detail),
            Self::NotFound => Problem::not_found("no profile for this user"),
            Self::Conflict(detail) => Problem::conflict(detail),
            Self::Storage(err) => db::problem_for(&err),
        }
        .into_response()
    }
}
