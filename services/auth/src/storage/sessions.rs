//! A user's own sessions: opening them with where they came from, listing
//! the live ones, ending one or all others, and changing the password
//! (which ends all others) — each change in one statement or transaction.

use portico_common::{db::UnitOfWork, on_conn, on_db};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AuthStore;
use crate::domain::audit::AuditEvent;

/// An account's password hash and the email it belongs to.
pub struct StoredPassword {
    pub hash: String,
    pub email_lower: String,
}

/// A session to open.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    /// SHA-256 of its first refresh token.
    pub refresh_hash: &'a [u8],
    pub created_at: OffsetDateTime,
    /// The absolute end of the session.
    pub expires_at: OffsetDateTime,
    /// The client's address, as the gateway reported it.
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The insert of a [`NewSession`], for a pool or a transaction.
macro_rules! insert_session {
    ($session:expr) => {
        sqlx::query(
            "INSERT INTO sessions \
             (id, user_id, refresh_hash, created_at, last_used_at, expires_at, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
        )
        .bind($session.id)
        .bind($session.user_id)
        .bind($session.refresh_hash)
        .bind($session.created_at)
        .bind($session.expires_at)
        .bind($session.ip)
        .bind($session.user_agent)
    };
}
pub(crate) use insert_session;

/// Revokes every live session of user `$1` but `$2`, at `$3`.
const REVOKE_OTHERS: &str = "UPDATE sessions SET revoked_at = $3 \
     WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL";

/// A live session as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl AuthStore {
    /// The user's sessions that are neither revoked, expired nor idle since
    /// `idle_since`, newest first.
    pub async fn live_sessions(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
        idle_since: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, sqlx::Error> {
        on_db!(self.db(), pool => {
            let rows = sqlx::query(
                "SELECT id, created_at, last_used_at, expires_at, ip, user_agent FROM sessions \
                 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_used_at > $3 \
                 ORDER BY created_at DESC, id DESC",
            )
            .bind(user_id)
            .bind(now)
            .bind(idle_since)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| -> Result<SessionRecord, sqlx::Error> {
                    Ok(SessionRecord {
                        id: row.try_get("id")?,
                        created_at: row.try_get("created_at")?,
                        last_used_at: row.try_get("last_used_at")?,
                        expires_at: row.try_get("expires_at")?,
                        ip: row.try_get("ip")?,
                        user_agent: row.try_get("user_agent")?,
                    })
                })
                .collect()
        })
    }

    /// Whether the user's session is neither revoked, expired nor idle
    /// since `idle_since`.
    pub async fn session_is_live(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: OffsetDateTime,
        idle_since: OffsetDateTime,
    ) -> Result<bool, sqlx::Error> {
        on_db!(self.db(), pool => {
            sqlx::query(
                "SELECT 1 AS live FROM sessions WHERE id = $1 AND user_id = $2 \
                 AND revoked_at IS NULL AND expires_at > $3 AND last_used_at > $4",
            )
            .bind(session_id)
            .bind(user_id)
            .bind(now)
            .bind(idle_since)
            .fetch_optional(pool)
            .await
            .map(|row| row.is_some())
        })
    }

    /// Revokes every live session of the user except `keep`, recording
    /// `event` (its detail: how many) when any ended; how many.
    pub async fn revoke_other_sessions(
        &self,
        user_id: Uuid,
        keep: Uuid,
        now: OffsetDateTime,
        event: AuditEvent,
    ) -> Result<u64, sqlx::Error> {
        let mut work = self.db().begin().await?;
        let ended = on_conn!((&mut work).into(), exec => {
            sqlx::query(REVOKE_OTHERS)
                .bind(user_id)
                .bind(keep)
                .bind(now)
                .execute(exec)
                .await?
                .rows_affected()
        });
        if ended > 0 {
            let event = event.clone().detail(format!("{ended} sessions"));
            self.commit_audited(work, &event).await?;
        }
        Ok(ended)
    }

    /// The password hash of an active credential.
    pub async fn password_credential(
        &self,
        user_id: Uuid,
    ) -> Result<Option<StoredPassword>, sqlx::Error> {
        on_db!(self.db(), pool => {
            let row = sqlx::query(
                "SELECT password_hash, email_lower FROM credentials \
                 WHERE user_id = $1 AND status = 'active'",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| -> Result<StoredPassword, sqlx::Error> {
                Ok(StoredPassword {
                    hash: row.try_get("password_hash")?,
                    email_lower: row.try_get("email_lower")?,
                })
            })
            .transpose()
        })
    }

    /// Replaces the password hash `old` (a compare-and-swap: a password
    /// changed meanwhile is not overwritten); false when it was not current.
    pub async fn rehash_password(
        &self,
        user_id: Uuid,
        old: &str,
        new: &str,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        on_db!(self.db(), pool => {
            sqlx::query(
                "UPDATE credentials SET password_hash = $3 WHERE user_id = $1 AND password_hash = $2",
            )
            .bind(user_id)
            .bind(old)
            .bind(new)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1)
        })
    }

    /// Sets a new password hash and revokes every other session of the
    /// user, atomically: a password change that leaves a stolen session
    /// alive would not be one. False when the credential is gone.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        new_hash: &str,
        keep_session: Uuid,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<bool, sqlx::Error> {
        let mut work = self.db().begin().await?;
        let changed = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "UPDATE credentials SET password_hash = $2, updated_at = $3 \
                 WHERE user_id = $1 AND status = 'active'",
            )
            .bind(user_id)
            .bind(new_hash)
            .bind(now)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        if !changed {
            return Ok(false);
        }
        on_conn!((&mut work).into(), exec => {
            sqlx::query(REVOKE_OTHERS)
                .bind(user_id)
                .bind(keep_session)
                .bind(now)
                .execute(exec)
                .await
                .map(|_| ())
        })?;
        // Sign-ins waiting for their second factor began with the old
        // password: they end with it.
        end_mfa_challenges(&mut work, user_id).await?;
        self.commit_audited(work, event).await?;
        Ok(true)
    }
}

impl AuthStore {
    /// Sessions revoked after `(since, after)` in `(revoked_at, id)` order
    /// (`after` absent: at or after `since`), oldest first, at most
    /// `limit`: the feed gateways and services follow to refuse their
    /// access tokens. Paging on the pair never repeats a page, however many
    /// sessions share one timestamp.
    pub async fn revocations_since(
        &self,
        since: OffsetDateTime,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<(Uuid, OffsetDateTime)>, sqlx::Error> {
        on_db!(self.db(), pool => {
            let rows = match after {
                None => sqlx::query(
                    "SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1 \
                     ORDER BY revoked_at, id LIMIT $2",
                )
                .bind(since)
                .bind(limit)
                .fetch_all(pool)
                .await?,
                Some(after) => sqlx::query(
                    "SELECT id, revoked_at FROM sessions \
                     WHERE revoked_at > $1 OR (revoked_at = $1 AND id > $2) \
                     ORDER BY revoked_at, id LIMIT $3",
                )
                .bind(since)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?,
            };
            rows.iter()
                .map(|row| Ok((row.try_get("id")?, row.try_get("revoked_at")?)))
                .collect()
        })
    }
}

impl AuthStore {
    /// Deletes sessions that ended before `ended_before` — expired, idle
    /// since `idle_before`, or revoked — with their spent refresh tokens
    /// (by cascade). Returns how many. Their tokens are long dead; keeping
    /// them would only grow the tables the hot paths read.
    pub async fn purge_ended_sessions(
        &self,
        ended_before: OffsetDateTime,
        idle_before: OffsetDateTime,
    ) -> Result<u64, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        on_db!(self.db(), pool => {
            sqlx::query(
                "DELETE FROM sessions WHERE expires_at < $1 OR last_used_at < $2 \
                 OR (revoked_at IS NOT NULL AND revoked_at < $1)",
            )
            .bind(ended_before)
            .bind(idle_before)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
    }
}

/// Ends every live session of `user_id` in `work` (the revocation feed
/// carries them); how many.
pub(super) async fn revoke_every_session(
    work: &mut UnitOfWork,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    on_conn!(work.into(), exec => {
        sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .bind(now)
            .execute(exec)
            .await
            .map(|done| done.rows_affected())
    })
}

/// Ends `user_id`'s sign-ins waiting for their second factor: they began
/// with credentials or a factor that are changing.
pub(super) async fn end_mfa_challenges(
    work: &mut UnitOfWork,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    on_conn!(work.into(), exec => {
        sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1")
            .bind(user_id)
            .execute(exec)
            .await
            .map(|_| ())
    })
}
