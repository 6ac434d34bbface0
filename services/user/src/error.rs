//! The user service's one error type: what can go wrong in its flows, in
//! domain terms. The HTTP layer maps it to problems (`http::errors`).

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The profile does not exist (or the account was deleted).
    #[error("profile not found")]
    NotFound,
    /// The email belongs to another profile.
    #[error("email already belongs to another user")]
    EmailTaken,
    /// The id belongs to a profile with another email.
    #[error("id already belongs to another profile")]
    IdTaken,
    /// The profile is not at the version the caller based its change on.
    #[error("the profile changed since the caller read it")]
    PreconditionFailed,
    /// The database failed; whether a retry helps is the storage layer's call.
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}
