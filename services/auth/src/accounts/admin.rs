//! What admins do: grant and revoke roles, read the audit log; and the
//! bootstrap admin named in config.

use portico_common::identity::Role;
use uuid::Uuid;

use super::{Accounts, ClientInfo};
use crate::{
    domain::audit::{AuditEvent, AuditKind},
    error::AuthError,
    storage::{AuditQuery, RoleChange},
};

/// The role that may call the admin API.
pub fn admin_role() -> Role {
    Role::parse(Role::ADMIN).unwrap_or_else(|_| unreachable!("`admin` is a valid role name"))
}

/// Roles an admin may grant or revoke. `user` is every account's and
/// `service` only service tokens'; neither is granted by hand.
fn grantable(role: &str) -> Option<Role> {
    (role == Role::ADMIN).then(admin_role)
}

/// Whether a role is given or taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleAction {
    Grant,
    Revoke,
}

/// Most audit events one page holds.
pub const MAX_AUDIT_PAGE: i64 = 200;

impl Accounts {
    /// Grants or revokes a role (`action`). When it changes anything, every
    /// session of the user ends in the same transaction, so the next
    /// sign-in's tokens carry the new roles.
    pub async fn set_role(
        &self,
        admin: Uuid,
        user_id: Uuid,
        role: &str,
        action: RoleAction,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let role = grantable(role).ok_or(AuthError::UnknownRole)?;
        let kind = match action {
            RoleAction::Grant => AuditKind::RoleGranted,
            RoleAction::Revoke => AuditKind::RoleRevoked,
        };
        let now = self.clock.now();
        let event = AuditEvent::new(kind, now, &client)
            .user(user_id)
            .actor(format!("user:{admin}"))
            .detail(role.as_str());
        let change = self
            .store
            .change_roles(
                user_id,
                |roles| match action {
                    RoleAction::Grant => roles.with(&role),
                    RoleAction::Revoke => roles.without(&role),
                },
                now,
                &event,
            )
            .await?;
        match change {
            RoleChange::NoSuchUser => Err(AuthError::UserNotFound),
            RoleChange::Contended => Err(AuthError::RolesContended),
            RoleChange::Unchanged => Ok(()),
            RoleChange::Changed => {
                tracing::info!(%admin, %user_id, role = %role, ?action, "role changed; the user's sessions ended");
                Ok(())
            }
        }
    }

    /// Makes the bootstrap admin (if configured and registered) an admin;
    /// run at startup, so naming an existing account in config is enough.
    pub async fn ensure_bootstrap_admin(&self) -> Result<(), AuthError> {
        let Some(email) = &self.bootstrap_admin else {
            return Ok(());
        };
        let Some(user_id) = self.store.user_id_by_email(email).await? else {
            tracing::info!(
                "the bootstrap admin has not registered yet; they become admin when they do"
            );
            return Ok(());
        };
        let role = admin_role();
        let event = AuditEvent::new(
            AuditKind::RoleGranted,
            self.clock.now(),
            &ClientInfo::default(),
        )
        .user(user_id)
        .actor("config:admin.bootstrap_email".to_owned())
        .detail(role.as_str());
        let change = self
            .store
            .change_roles(user_id, |roles| roles.with(&role), self.clock.now(), &event)
            .await?;
        match change {
            RoleChange::Changed => {
                tracing::info!(%user_id, "bootstrap admin granted the admin role");
            }
            RoleChange::Contended => return Err(AuthError::RolesContended),
            RoleChange::Unchanged | RoleChange::NoSuchUser => {}
        }
        Ok(())
    }

    /// A page of the audit log, newest first, and the cursor of the next.
    pub async fn audit(
        &self,
        query: AuditQuery,
    ) -> Result<(Vec<AuditEvent>, Option<Uuid>), AuthError> {
        let limit = query.limit.clamp(1, MAX_AUDIT_PAGE);
        // One more than asked tells whether another page exists.
        let mut events = self
            .store
            .audit_events(&AuditQuery {
                limit: limit + 1,
                ..query
            })
            .await?;
        let more = events.len() as i64 > limit;
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = more.then(|| events.last().map(|event| event.id)).flatten();
        Ok((events, next))
    }

    /// The outbox (its dead letters, for admins).
    pub fn outbox(&self) -> &portico_common::outbox::Outbox {
        self.store.outbox()
    }
}
