//! Events received from other services: each applied once, in the
//! transaction that records its id (`received_events`), however often it
//! is delivered.

use portico_common::on_conn;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AuthStore;
use crate::domain::audit::AuditEvent;

/// What applying a received event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied now; for a deletion, how many sessions it ended.
    Now { sessions_ended: u64 },
    /// This event id was applied before (a redelivery): nothing done.
    Before,
}

impl AuthStore {
    /// Applies `user.deleted` (event `event_id`): every live session of the
    /// user ends (the revocation feed announces it), the credential turns
    /// `deleted` (no sign-in, no password) and `audit` is
    /// recorded — all in one transaction with the event's id, or none.
    pub async fn delete_account(
        &self,
        event_id: &str,
        event_type: &str,
        user_id: Uuid,
        now: OffsetDateTime,
        audit: &AuditEvent,
    ) -> Result<Applied, sqlx::Error> {
        let mut work = self.db().begin().await?;
        let first_time = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "INSERT INTO received_events (id, type, received_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(event_id)
            .bind(event_type)
            .bind(now)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        if !first_time {
            return Ok(Applied::Before);
        }
        // The credential first: its row lock orders this against a sign-in
        // (see `create_session`), so no session opened meanwhile escapes.
        let had_credential = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "UPDATE credentials SET status = 'deleted', password_hash = '', \
                 updated_at = $2 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(now)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        let sessions_ended = super::sessions::revoke_every_session(&mut work, user_id, now).await?;
        if !had_credential {
            // Nothing of an account here (a registration abandoned before
            // its profile's deletion): audited, not announced.
            let audit = audit.clone().detail("no credential");
            self.commit_unannounced(work, &audit).await?;
            return Ok(Applied::Now { sessions_ended });
        }
        let audit = audit.clone().detail(format!("{sessions_ended} sessions"));
        self.commit_audited(work, &audit).await?;
        Ok(Applied::Now { sessions_ended })
    }
}

impl AuthStore {
    /// Credentials deleted before `deleted_before`, oldest first.
    pub async fn deleted_credentials(
        &self,
        deleted_before: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            sqlx::query_scalar(
                "SELECT user_id FROM credentials WHERE status = 'deleted' AND updated_at < $1 \
                 ORDER BY updated_at LIMIT $2",
            )
            .bind(deleted_before)
            .bind(limit)
            .fetch_all(exec)
            .await
        })
    }

    /// Removes a deleted account's credential (its sessions and spent
    /// refresh tokens go with it); whether it was there. Its audit events
    /// stay: the log is append-only (a security record, kept for its own
    /// retention).
    pub async fn scrub_credential(&self, user_id: Uuid) -> Result<bool, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        let removed = on_conn!((self.db()).into(), exec => {
            sqlx::query("DELETE FROM credentials WHERE user_id = $1 AND status = 'deleted'")
                .bind(user_id)
                .execute(exec)
                .await?
                .rows_affected()
        });
        Ok(removed == 1)
    }
}
