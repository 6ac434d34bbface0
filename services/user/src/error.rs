//! The user service's one error type: what can go wrong in its flows, in
//! domain terms. The HTTP layer maps it to problems (`http::errors`).

use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The profile does not exist.
    #[error("profile not found")]
    NotFound,
    /// The email belongs to another profile.
    #[error("email already belongs to another user")]
    EmailTaken,
    /// The id belongs to a profile with another email.
    #[error("id already belongs to another profile")]
    IdTaken,
    /// The database failed; whether a retry helps is the storage layer's call.
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

impl From<StoreError> for UserError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::IdTaken => Self::IdTaken,
            StoreError::Database(err) => Self::Storage(err),
        }
    }
}
