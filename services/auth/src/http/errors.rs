//! How the auth service's errors look to a client.

use portico_common::{Problem, db, error::FieldError};

use crate::error::AuthError;

/// Seconds a client waits after hashing was saturated.
const OVERLOADED_RETRY_AFTER_SECS: u32 = 1;

impl From<AuthError> for Problem {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidCredentials => Problem::unauthorized("invalid email or password"),
            AuthError::InvalidRefreshToken => {
                Problem::unauthorized("the refresh token is invalid, expired or revoked")
            }
            AuthError::InvalidField { field, message } => {
                Problem::validation(vec![FieldError::new(field, message)])
            }
            AuthError::UserNotFound => Problem::not_found("no such user"),
            AuthError::UnknownRole => {
                Problem::not_found("no such role (roles granted by hand: admin)")
            }
            AuthError::EmailTaken => Problem::conflict("this email is already registered"),
            AuthError::SessionNotFound => Problem::not_found("no such session of yours"),
            // The caller is authenticated; the proof asked on top of that
            // failed.
            AuthError::WrongCurrentPassword => {
                Problem::forbidden("the current password does not match")
            }
            AuthError::ProfileUnavailable(cause) => Problem::service_unavailable(
                "the account could not be created right now; retry the same registration shortly",
            )
            .with_cause(format!(
                "registration pending, profile creation uncertain: {cause}"
            )),
            AuthError::MfaAlreadyOn => Problem::conflict(
                "MFA is already on; disable it before enrolling another authenticator",
            ),
            AuthError::NoTotpEnrolment => {
                Problem::conflict("no authenticator is enrolled; enrol one first")
            }
            AuthError::MfaOff => Problem::conflict("MFA is not on"),
            AuthError::RolesContended => Problem::service_unavailable(
                "the account's roles kept changing under this change; retry shortly",
            )
            .retry_after(1),
            AuthError::EmailAlreadyVerified => Problem::conflict("the email is verified already"),
            AuthError::InvalidMailToken => Problem::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid-token",
                "the token is invalid, expired, used, or replaced by a newer mail's",
            ),
            AuthError::MailUnavailable(cause) => {
                Problem::service_unavailable("the mail could not be sent right now; retry shortly")
                    .with_cause(cause)
            }
            AuthError::EmailNotVerified => Problem::forbidden(
                "the account's email is not verified yet: open the link mailed to it (or ask for a new one)",
            ),
            AuthError::WrongMfaCode => Problem::forbidden("the code does not match"),
            AuthError::InvalidMfaCode => Problem::unauthorized("the code does not match"),
            AuthError::InvalidMfaToken => {
                Problem::unauthorized("the mfa_token is invalid, expired or used up; sign in again")
            }
            AuthError::Throttled { retry_after_secs } => Problem::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "too many failed attempts; retry later",
            )
            .retry_after(u32::try_from(retry_after_secs).unwrap_or(u32::MAX))
            .with_cause("sign-in throttled"),
            AuthError::Overloaded => {
                Problem::service_unavailable("too many sign-ins at once; retry shortly")
                    .retry_after(OVERLOADED_RETRY_AFTER_SECS)
                    .with_cause("password hashing saturated; request shed")
            }
            AuthError::Storage(err) => db::problem_for(&err),
            AuthError::Internal(cause) => Problem::internal().with_cause(cause),
        }
    }
}
