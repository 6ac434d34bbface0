//! Roles: granted and revoked by admins, given to the bootstrap admin.

use portico_common::{identity::RoleSet, on_conn, on_db};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthStore, roles_from_stored};
use crate::domain::audit::AuditEvent;

/// What a role change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// The roles changed; every session of the user was revoked.
    Changed,
    /// The user already had (or lacked) the role: nothing written.
    Unchanged,
    /// No active account has this id.
    NoSuchUser,
    /// Other changes to the same account's roles kept landing first:
    /// nothing written; retrying soon will likely work.
    Contended,
}

/// Tries a compare-and-swap this many times before giving up: each retry
/// means another admin changed the same account's roles meanwhile.
const MAX_ROLE_CAS_ATTEMPTS: usize = 5;

impl AuthStore {
    /// Applies `change` to the user's roles. When they differ, stores them
    /// and revokes every session of the user (their tokens carry the old
    /// roles), recording `event` — one transaction. A compare-and-swap on
    /// the stored roles: two admins changing one account at once both land.
    pub async fn change_roles(
        &self,
        user_id: Uuid,
        change: impl Fn(&RoleSet) -> RoleSet,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<RoleChange, sqlx::Error> {
        for _ in 0..MAX_ROLE_CAS_ATTEMPTS {
            let Some(stored) = self.stored_roles(user_id).await? else {
                return Ok(RoleChange::NoSuchUser);
            };
            let current = roles_from_stored(&stored)?;
            let wanted = change(&current);
            if wanted == current {
                return Ok(RoleChange::Unchanged);
            }
            let mut work = self.db().begin().await?;
            let swapped = on_conn!((&mut work).into(), exec => {
                sqlx::query(
                    "UPDATE credentials SET roles = $3, updated_at = $4 \
                     WHERE user_id = $1 AND roles = $2 AND status = 'active'",
                )
                .bind(user_id)
                .bind(&stored)
                .bind(wanted.to_stored())
                .bind(now)
                .execute(exec)
                .await?
                .rows_affected()
                    == 1
            });
            if swapped {
                super::sessions::revoke_every_session(&mut work, user_id, now).await?;
                self.commit_audited(work, event).await?;
                return Ok(RoleChange::Changed);
            }
        }
        Ok(RoleChange::Contended)
    }

    /// The user id of the active account with this email, if any.
    pub async fn user_id_by_email(&self, email_lower: &str) -> Result<Option<Uuid>, sqlx::Error> {
        on_db!(self.db(), pool => {
            sqlx::query("SELECT user_id FROM credentials WHERE email_lower = $1 AND status = 'active'")
                .bind(email_lower)
                .fetch_optional(pool)
                .await?
                .map(|row| row.try_get::<Uuid, _>("user_id"))
                .transpose()
        })
    }

    async fn stored_roles(&self, user_id: Uuid) -> Result<Option<String>, sqlx::Error> {
        on_db!(self.db(), pool => {
            sqlx::query("SELECT roles FROM credentials WHERE user_id = $1 AND status = 'active'")
                .bind(user_id)
                .fetch_optional(pool)
                .await?
                .map(|row| row.try_get::<String, _>("roles"))
                .transpose()
        })
    }
}
