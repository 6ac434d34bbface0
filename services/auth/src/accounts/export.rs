//! Everything auth holds about a user, for their data export: the
//! account, its live sessions, its second factor's state and its audit
//! trail (secrets — hashes, sealed keys, tokens — never leave).

use uuid::Uuid;

use super::{Accounts, MfaState, SessionView};
use crate::{domain::audit::AuditEvent, error::AuthError, storage::AuditQuery};

/// At most this many audit events go into one export (the newest).
pub const MAX_EXPORTED_EVENTS: usize = 10_000;

/// What auth holds about one user.
#[derive(Debug)]
pub struct AccountExport {
    pub email: String,
    pub email_verified: bool,
    pub mfa: MfaState,
    pub sessions: Vec<SessionView>,
    /// Newest first, at most [`MAX_EXPORTED_EVENTS`].
    pub audit_events: Vec<AuditEvent>,
}

impl Accounts {
    /// The caller's account data (`current` marks the asking session).
    pub async fn export(&self, user_id: Uuid, current: Uuid) -> Result<AccountExport, AuthError> {
        let (email, email_verified) = self
            .store
            .account_email(user_id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        let audit_events = self
            .store
            .audit_events(&AuditQuery {
                user_id: Some(user_id),
                kind: None,
                before: None,
                limit: MAX_EXPORTED_EVENTS as i64,
            })
            .await?;
        Ok(AccountExport {
            email,
            email_verified,
            mfa: self.mfa_state(user_id).await?,
            sessions: self.sessions(user_id, current).await?,
            audit_events,
        })
    }
}
