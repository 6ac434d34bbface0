//! How the user service's errors look to a client.

use axum::http::StatusCode;
use portico_common::{Problem, db};

use crate::error::UserError;

impl From<UserError> for Problem {
    fn from(err: UserError) -> Self {
        match err {
            UserError::NotFound => Problem::not_found("no profile for this user"),
            UserError::EmailTaken => {
                Problem::conflict("this email already belongs to another user")
            }
            UserError::IdTaken => Problem::conflict("this id already belongs to another profile"),
            UserError::PreconditionFailed => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "the profile changed since this version was read: read it again and reapply the change",
            ),
            UserError::Storage(err) => db::problem_for(&err),
        }
    }
}
