//! Account deletion, as the user service announces it (`user.deleted`).

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
