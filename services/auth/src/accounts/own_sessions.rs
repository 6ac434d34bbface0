//! What a signed-in user does with their own account: review the sessions
//! that are live, end one or all others, change the password (which ends
//! all others, so a password change locks out whoever had it).

use secrecy::SecretString;
use uuid::Uuid;

use super::{Accounts, ClientInfo};
use crate::{
    domain::{
        audit::{AuditEvent, AuditKind},
        password::Password,
        password_policy::PersonalData,
        throttle::Attempt,
    },
    error::AuthError,
    storage::{SessionRecord, StoredPassword},
};

/// A live session as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub session: SessionRecord,
    /// The session of the token that asked.
    pub current: bool,
}

/// How long an ended session is kept: past the revocation feed's horizon
/// (an access-token lifetime and some), with a day to spare.
const KEEP_ENDED: time::Duration = time::Duration::days(1);

/// How often ended sessions are purged.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3_600);

impl Accounts {
    /// Deletes sessions that ended more than a day ago (see
    /// `AuthStore::purge_ended_sessions`).
    pub async fn purge_ended_sessions(&self) -> Result<u64, AuthError> {
        let now = self.clock.now();
        Ok(self
            .store
            .purge_ended_sessions(now - KEEP_ENDED, self.idle_since(now) - KEEP_ENDED)
            .await?)
    }

    /// Whether the user's session is neither revoked, expired nor idle.
    pub async fn is_live(&self, user_id: Uuid, session_id: Uuid) -> Result<bool, AuthError> {
        let now = self.clock.now();
        Ok(self
            .store
            .session_is_live(user_id, session_id, now, self.idle_since(now))
            .await?)
    }

    /// The user's live sessions, newest first; `current` marks the caller's.
    pub async fn sessions(
        &self,
        user_id: Uuid,
        current: Uuid,
    ) -> Result<Vec<SessionView>, AuthError> {
        let now = self.clock.now();
        let sessions = self
            .store
            .live_sessions(user_id, now, self.idle_since(now))
            .await?;
        Ok(sessions
            .into_iter()
            .map(|session| SessionView {
                current: session.id == current,
                session,
            })
            .collect())
    }

    /// Ends one of the user's sessions; another user's (or an unknown or
    /// already ended one) is not found, so ids reveal nothing.
    pub async fn end_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let event =
            AuditEvent::in_session(AuditKind::SessionRevoked, now, &client, user_id, session_id);
        if self
            .store
            .revoke_session(session_id, user_id, now, &event)
            .await?
        {
            tracing::info!(%user_id, %session_id, "session ended by its owner");
            Ok(())
        } else {
            Err(AuthError::SessionNotFound)
        }
    }

    /// Ends every session of the user but `current`.
    pub async fn end_other_sessions(
        &self,
        user_id: Uuid,
        current: Uuid,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        // Recorded under the session that asked; the detail counts the ended.
        let event =
            AuditEvent::in_session(AuditKind::SessionRevoked, now, &client, user_id, current);
        let ended = self
            .store
            .revoke_other_sessions(user_id, current, now, event)
            .await?;
        tracing::info!(%user_id, ended, "other sessions ended by their owner");
        Ok(())
    }

    /// Checks the caller's current password — the re-authentication in
    /// front of a sensitive change — throttled like a sign-in (keyed by the
    /// user: a stolen session must not become a password oracle) and
    /// audited when it fails (`purpose` says what for). `before` sees the
    /// stored credential first: what it refuses costs no hashing and counts
    /// as no failed attempt.
    pub(super) async fn reauthenticate<T>(
        &self,
        user_id: Uuid,
        current_session: Uuid,
        password: &SecretString,
        client: &ClientInfo,
        purpose: &'static str,
        before: impl FnOnce(Option<&StoredPassword>) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let account = user_id.to_string();
        let attempt = Attempt {
            account: &account,
            address: None,
        };
        let _turn = self.checks.turn(&account).await;
        if let Err(retry_after_secs) = self.throttle.check(&attempt, self.clock.now()).await {
            let event = AuditEvent::in_session(
                AuditKind::LoginThrottled,
                self.clock.now(),
                client,
                user_id,
                current_session,
            )
            .detail(purpose);
            self.store.record(&event).await?;
            return Err(AuthError::Throttled { retry_after_secs });
        }
        let stored = self.store.password_credential(user_id).await?;
        let checked = before(stored.as_ref())?;
        // A password too long to have been stored cannot match, but it
        // still costs a verification.
        let candidate = Password::from_client(password);
        let matches = match &candidate {
            Some(candidate) => self
                .hashing
                .verify(candidate, stored.as_ref().map(|s| s.hash.as_str()))
                .await?
                .matched(),
            None => false,
        };
        if !matches {
            self.throttle.failed(&attempt, self.clock.now()).await;
            let event = AuditEvent::in_session(
                AuditKind::LoginFailed,
                self.clock.now(),
                client,
                user_id,
                current_session,
            )
            .detail(purpose);
            self.store.record(&event).await?;
            return Err(AuthError::WrongCurrentPassword);
        }
        Ok(checked)
    }

    /// Changes the password after checking the current one, and ends every
    /// other session in the same transaction. The new password must pass
    /// the policy, checked against the account's email too.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current_session: Uuid,
        current_password: SecretString,
        new_password: SecretString,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        // A weak new password is refused before the current one is checked.
        let new_password = self
            .reauthenticate(
                user_id,
                current_session,
                &current_password,
                &client,
                "password change",
                |stored| {
                    let personal = PersonalData {
                        email: stored.map(|stored| stored.email_lower.as_str()),
                        display_name: None,
                    };
                    self.policy
                        .check(&new_password, personal)
                        .map_err(|message| AuthError::InvalidField {
                            field: "new_password",
                            message,
                        })
                },
            )
            .await?;
        let new_hash = self.hashing.hash(&new_password).await?;
        let now = self.clock.now();
        let event = AuditEvent::in_session(
            AuditKind::PasswordChanged,
            now,
            &client,
            user_id,
            current_session,
        );
        if !self
            .store
            .change_password(user_id, &new_hash, current_session, now, &event)
            .await?
        {
            return Err(AuthError::WrongCurrentPassword);
        }
        tracing::info!(%user_id, "password changed; other sessions ended");
        Ok(())
    }
}

/// The scheduled purge of ended sessions (`Accounts::purge_ended_sessions`),
/// hourly on every replica: a session is deleted once.
pub struct SessionPurge {
    pub accounts: Accounts,
}

impl SessionPurge {
    /// How often it runs.
    pub const INTERVAL: std::time::Duration = PURGE_EVERY;
}

impl portico_common::jobs::Job for SessionPurge {
    const NAME: &'static str = "session_purge";

    async fn run(&self) -> anyhow::Result<portico_common::jobs::Ran> {
        let purged = self.accounts.purge_ended_sessions().await?;
        Ok(portico_common::jobs::Ran {
            handled: purged,
            more: false,
        })
    }
}
