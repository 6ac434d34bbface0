//! Registrations in flight: a credential is `pending` from the moment it
//! is stored until the user service has its profile and the credential is
//! activated. A registration that died half-way (a crash, a lost answer)
//! stays pending until it is resumed by a retry, taken over by a new
//! registration once stale, or finished or abandoned by the reconciler.

use portico_common::{jwt::RoleSet, on_conn};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AuthStore;
use crate::domain::audit::AuditEvent;

/// A pending credential, as a registration retry checks it.
#[derive(Debug, Clone)]
pub struct PendingCredential {
    pub user_id: Uuid,
    pub email_lower: String,
    pub password_hash: String,
}

impl AuthStore {
    /// The pending credential holding this email, if there is one.
    pub async fn pending_credential(
        &self,
        email_lower: &str,
    ) -> Result<Option<PendingCredential>, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            sqlx::query(
                "SELECT user_id, email_lower, password_hash FROM credentials \
                 WHERE email_lower = $1 AND status = 'pending'",
            )
            .bind(email_lower)
            .fetch_optional(exec)
            .await?
            .map(|row| pending_from_row(&row))
            .transpose()
        })
    }

    /// Marks a pending registration as alive at `now`, if it is still
    /// pending with `password_hash` (not taken over); whether it was.
    pub async fn touch_pending(
        &self,
        user_id: Uuid,
        password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        let touched = on_conn!((self.db()).into(), exec => {
            sqlx::query(
                "UPDATE credentials SET updated_at = $3 \
                 WHERE user_id = $1 AND status = 'pending' AND password_hash = $2",
            )
            .bind(user_id)
            .bind(password_hash)
            .bind(now)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        Ok(touched)
    }

    /// Pending credentials last touched before `stale_before`, oldest
    /// first: registrations that died half-way.
    pub async fn stale_pending(
        &self,
        stale_before: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<PendingCredential>, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            sqlx::query(
                "SELECT user_id, email_lower, password_hash FROM credentials \
                 WHERE status = 'pending' AND updated_at < $1 ORDER BY updated_at LIMIT $2",
            )
            .bind(stale_before)
            .bind(limit)
            .fetch_all(exec)
            .await?
            .iter()
            .map(pending_from_row)
            .collect()
        })
    }

    /// Activates a stale pending credential with `roles` (no session: the
    /// user signs in), recording `audit`; false when it is no longer pending
    /// or was touched since `stale_before` (a registration took it over).
    pub async fn finish_pending(
        &self,
        user_id: Uuid,
        stale_before: OffsetDateTime,
        roles: &RoleSet,
        now: OffsetDateTime,
        audit: &AuditEvent,
    ) -> Result<bool, sqlx::Error> {
        let mut work = self.db().begin().await?;
        let finished = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "UPDATE credentials SET status = 'active', roles = $3, updated_at = $4 \
                 WHERE user_id = $1 AND status = 'pending' AND updated_at < $2",
            )
            .bind(user_id)
            .bind(stale_before)
            .bind(roles.to_stored())
            .bind(now)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        if !finished {
            return Ok(false);
        }
        self.commit_audited(work, audit).await?;
        Ok(true)
    }

    /// Removes a stale pending credential whose profile was never made,
    /// recording `audit`; false when it is no longer pending or was touched
    /// since `stale_before`.
    pub async fn abandon_pending(
        &self,
        user_id: Uuid,
        stale_before: OffsetDateTime,
        audit: &AuditEvent,
    ) -> Result<bool, sqlx::Error> {
        let mut work = self.db().begin().await?;
        let removed = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "DELETE FROM credentials WHERE user_id = $1 AND status = 'pending' AND updated_at < $2",
            )
            .bind(user_id)
            .bind(stale_before)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        if !removed {
            return Ok(false);
        }
        self.commit_audited(work, audit).await?;
        Ok(true)
    }
}

fn pending_from_row<R>(row: &R) -> Result<PendingCredential, sqlx::Error>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PendingCredential {
        user_id: row.try_get("user_id")?,
        email_lower: row.try_get("email_lower")?,
        password_hash: row.try_get("password_hash")?,
    })
}
