//! The registration reconciler: registrations that died half-way (auth
//! crashed between its steps, or the profile's creation was uncertain and
//! nobody retried) are settled once they have been pending longer than
//! `registration.pending_timeout_secs` — finished when the user service
//! has the profile, abandoned when it has not. Either way no half-made
//! account is left: the user can sign in, or register again.

use portico_common::jobs::{Job, Ran};
use portico_common::jwt::RoleSet;

use super::{Accounts, admin::admin_role};
use crate::{
    domain::audit::{AuditEvent, AuditKind, ClientInfo},
    error::AuthError,
    storage::PendingCredential,
    user_directory::ProfileState,
};

/// Registrations settled per run.
const BATCH: i64 = 50;

/// How a pending registration was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The profile exists: the credential is active (no session: the user
    /// signs in).
    Completed,
    /// No profile (or a deleted one): the credential is gone and the email
    /// free.
    Abandoned,
    /// A registration took it over, or another replica settled it, first.
    Elsewhere,
}

impl Settled {
    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Abandoned => "abandoned",
            Self::Elsewhere => "elsewhere",
        }
    }
}

impl Accounts {
    /// Settles one stale pending registration by asking the user service
    /// for its profile. An unclear answer settles nothing (an error): the
    /// next run asks again, since guessing either way could lose an
    /// account or leave an orphan profile.
    pub async fn settle_registration(
        &self,
        pending: &PendingCredential,
    ) -> Result<Settled, AuthError> {
        let user_id = pending.user_id;
        let profile = self
            .directory
            .profile(user_id)
            .await
            .map_err(|err| AuthError::ProfileUnavailable(err.to_string()))?;
        let now = self.clock.now();
        // Judged again at the write: a registration that took the
        // credential over meanwhile has touched it since.
        let stale_before = now - self.pending_timeout;
        let audit = AuditEvent::new(AuditKind::Registered, now, &ClientInfo::default())
            .user(user_id)
            .actor("service:auth".to_owned());
        let settled = if profile == Some(ProfileState::Active) {
            let mut roles = RoleSet::new_user();
            let mut audit = audit.detail("completed by the reconciler");
            if self.is_bootstrap_admin(&pending.email_lower) {
                roles = roles.with(&admin_role());
                audit = audit.detail("completed by the reconciler; bootstrap admin");
            }
            let finished = self
                .store
                .finish_pending(user_id, stale_before, &roles, now, &audit)
                .await?;
            if finished {
                // The mail registration would have sent.
                self.send_verification_in_background(user_id, pending.email_lower.clone());
            }
            finished.then_some(Settled::Completed)
        } else {
            let mut audit = audit;
            audit.kind = AuditKind::RegistrationAbandoned;
            let audit = audit.detail(if profile.is_some() {
                "profile no longer active"
            } else {
                "no profile"
            });
            self.store
                .abandon_pending(user_id, stale_before, &audit)
                .await?
                .then_some(Settled::Abandoned)
        };
        let settled = settled.unwrap_or(Settled::Elsewhere);
        tracing::info!(%user_id, outcome = settled.as_str(), "pending registration settled");
        Ok(settled)
    }
}

/// The reconciler job. Every replica may run it: each settlement is a
/// conditional write, so a registration is settled once.
pub struct Reconciler {
    pub accounts: Accounts,
}

impl Job for Reconciler {
    const NAME: &'static str = "registration_reconciler";

    async fn run(&self) -> anyhow::Result<Ran> {
        let now = self.accounts.clock.now();
        let stale_before = now - self.accounts.pending_timeout;
        let due = self
            .accounts
            .store
            .stale_pending(stale_before, BATCH)
            .await?;
        let mut handled = 0;
        let mut unsettled = 0;
        for pending in &due {
            match self.accounts.settle_registration(pending).await {
                Ok(settled) => {
                    metrics::counter!("auth_registrations_reconciled_total", "outcome" => settled.as_str())
                        .increment(1);
                    handled += 1;
                }
                Err(err) => {
                    unsettled += 1;
                    tracing::warn!(user_id = %pending.user_id, error = %err, "pending registration not settled; asking again next run");
                }
            }
        }
        if unsettled > 0 && handled == 0 {
            anyhow::bail!("{unsettled} pending registrations could not be settled");
        }
        Ok(Ran {
            handled,
            // With some unsettled, another run now would ask the same.
            more: due.len() as i64 == BATCH && unsettled == 0,
        })
    }
}
