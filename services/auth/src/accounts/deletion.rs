//! Account deletion, as the user service announces it (`user.deleted`),
//! and the scrubber that removes the disabled credential after the grace
//! period.

use std::time::Duration;

use portico_common::jobs::{Job, Ran};
use uuid::Uuid;

use super::Accounts;
use crate::{
    domain::audit::{AuditEvent, AuditKind, ClientInfo},
    error::AuthError,
    storage::inbox::Applied,
};

impl Accounts {
    /// Ends every session of the deleted user and disables the credential,
    /// once per event id (a redelivery changes nothing).
    pub async fn account_deleted(
        &self,
        event_id: &str,
        user_id: Uuid,
        client: ClientInfo,
    ) -> Result<Applied, AuthError> {
        let now = self.clock.now();
        let audit = AuditEvent::new(AuditKind::AccountDeleted, now, &client)
            .user(user_id)
            .actor("service:user".to_owned());
        let applied = self
            .store
            .delete_account(event_id, "user.deleted", user_id, now, &audit)
            .await?;
        match applied {
            Applied::Now { sessions_ended } => {
                tracing::info!(%user_id, event_id, sessions_ended, "account deleted");
            }
            Applied::Before => {
                tracing::info!(%user_id, event_id, "account deletion delivered again; already applied");
            }
        }
        Ok(applied)
    }
}

/// Credentials scrubbed per run.
const SCRUB_BATCH: i64 = 100;

/// The scrubber job: deleted credentials older than the grace period are
/// removed (the email is free again). The grace is at least an access token's lifetime (config
/// validation), so every token of the account has expired by then and
/// forgetting its sessions' revocations is safe. Replicas may run it at
/// once: a credential is removed once.
pub struct Scrubber {
    pub accounts: Accounts,
    pub grace: Duration,
}

impl Job for Scrubber {
    const NAME: &'static str = "credential_scrubber";

    async fn run(&self) -> anyhow::Result<Ran> {
        let now = self.accounts.clock.now();
        // A grace reaching before the epoch removes nothing.
        let Some(deleted_before) = time::Duration::try_from(self.grace)
            .ok()
            .and_then(|grace| now.checked_sub(grace))
        else {
            return Ok(Ran::default());
        };
        let due = self
            .accounts
            .store
            .deleted_credentials(deleted_before, SCRUB_BATCH)
            .await?;
        let mut handled = 0;
        for user_id in &due {
            if self.accounts.store.scrub_credential(*user_id).await? {
                handled += 1;
            }
        }
        Ok(Ran {
            handled,
            more: due.len() as i64 == SCRUB_BATCH,
        })
    }
}
