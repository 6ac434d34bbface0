//! The auth service's one error type: what can go wrong in its flows, in
//! domain terms. The HTTP layer maps it to problems (`http::errors`).

use crate::{domain::password::HashError, storage::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown email or wrong password — deliberately one error.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Refresh token unknown, expired, rotated away or revoked.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// The session is not one of the caller's live sessions.
    #[error("session not found")]
    SessionNotFound,
    /// The current password given to change it does not match.
    #[error("current password does not match")]
    WrongCurrentPassword,
    /// A field the domain checked (not the request's shape) is invalid.
    #[error("invalid {field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    /// No active account has this id (admin API).
    #[error("user not found")]
    UserNotFound,
    /// A role that cannot be granted or revoked by hand.
    #[error("unknown role")]
    UnknownRole,
    /// The email is registered already (in any letter case).
    #[error("email already registered")]
    EmailTaken,
    /// The user service could not create the profile; nothing was kept.
    #[error("profile creation failed: {0}")]
    ProfileUnavailable(String),
    /// MFA is on already: disable it before enrolling another authenticator.
    #[error("mfa already on")]
    MfaAlreadyOn,
    /// Confirming without an enrolled authenticator.
    #[error("no totp authenticator enrolled")]
    NoTotpEnrolment,
    /// Disabling MFA that is not on.
    #[error("mfa is off")]
    MfaOff,
    /// A signed-in user's second-factor code (or recovery code) was wrong
    /// or used before.
    #[error("wrong second-factor code")]
    WrongMfaCode,
    /// The code completing a sign-in was wrong or used before.
    #[error("invalid second-factor code")]
    InvalidMfaCode,
    /// The sign-in challenge is unknown, expired, or used up.
    #[error("invalid mfa token")]
    InvalidMfaToken,
    /// The caller's address is verified already.
    #[error("email already verified")]
    EmailAlreadyVerified,
    /// A mailed token unknown, expired, used, or superseded by a newer one.
    #[error("invalid or expired mailed token")]
    InvalidMailToken,
    /// The mail could not be sent.
    #[error("mail unavailable: {0}")]
    MailUnavailable(String),
    /// `email_verification.required` and the address is not verified.
    #[error("email not verified")]
    EmailNotVerified,
    /// Other changes to the account's roles kept landing first.
    #[error("roles kept changing under a role change")]
    RolesContended,
    /// Too many failed attempts for this account or address: wait.
    #[error("throttled for {retry_after_secs} s")]
    Throttled { retry_after_secs: i64 },
    /// Every password-hashing slot stayed busy for the queue timeout.
    #[error("password hashing saturated")]
    Overloaded,
    /// The database failed; whether a retry helps is the storage layer's call.
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    /// Hashing, signing or randomness failed.
    #[error("internal: {0}")]
    Internal(String),
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
