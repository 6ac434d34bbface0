//! The events the auth service emits to its webhook subscribers: the
//! account changes a customer's systems act on (a verified address, a new
//! password, a second factor on or off, a role, a deletion carried out).
//! Each is the public face of an audited change and is written to the
//! outbox with the audit row, in the change's transaction. Sign-ins and
//! sessions stay in the audit log (`GET /v1/auth/admin/audit`): they are
//! many, and no other service acts on them.

use serde_json::{Value, json};
use uuid::Uuid;

use super::audit::{AuditEvent, AuditKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEventType {
    /// The user proved the address by a mailed link (or a reset link).
    EmailVerified,
    /// A new password: changed by the user or set with a reset link.
    PasswordChanged,
    /// A TOTP authenticator was confirmed.
    MfaEnabled,
    /// The authenticator was removed (with a code or a recovery code).
    MfaDisabled,
    RoleGranted,
    RoleRevoked,
    /// The user service's `user.deleted` was applied: every session ended
    /// and the credential is disabled.
    AccountDeleted,
}

impl AuthEventType {
    pub const ALL: [Self; 7] = [
        Self::EmailVerified,
        Self::PasswordChanged,
        Self::MfaEnabled,
        Self::MfaDisabled,
        Self::RoleGranted,
        Self::RoleRevoked,
        Self::AccountDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            // About the user's address, whoever checked it.
            Self::EmailVerified => "user.email_verified",
            Self::PasswordChanged => "auth.password_changed",
            Self::MfaEnabled => "auth.mfa_enabled",
            Self::MfaDisabled => "auth.mfa_disabled",
            Self::RoleGranted => "auth.role_granted",
            Self::RoleRevoked => "auth.role_revoked",
            Self::AccountDeleted => "auth.account_deleted",
        }
    }

    /// The names of every type (what subscribers' `types` may hold).
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|t| t.as_str()).collect()
    }
}

/// What subscribers hear of an audited change: its type, the user it is
/// about and its data; `None` for what is only audited. No personal data
/// and never a secret: the user id says who.
pub fn announcement(audit: &AuditEvent) -> Option<(AuthEventType, Uuid, Value)> {
    let user_id = audit.user_id?;
    let detail = audit.detail.as_deref();
    let (event_type, data) = match audit.kind {
        AuditKind::EmailVerified => (AuthEventType::EmailVerified, json!({ "user_id": user_id })),
        AuditKind::PasswordChanged => (
            AuthEventType::PasswordChanged,
            json!({ "user_id": user_id, "method": "change" }),
        ),
        AuditKind::PasswordReset => (
            AuthEventType::PasswordChanged,
            json!({ "user_id": user_id, "method": "reset" }),
        ),
        AuditKind::MfaEnabled => (
            AuthEventType::MfaEnabled,
            json!({ "user_id": user_id, "factor": "totp" }),
        ),
        AuditKind::MfaDisabled => (
            AuthEventType::MfaDisabled,
            json!({ "user_id": user_id, "factor": "totp", "proof": detail }),
        ),
        AuditKind::RoleGranted => (
            AuthEventType::RoleGranted,
            json!({ "user_id": user_id, "role": detail, "by": audit.actor }),
        ),
        AuditKind::RoleRevoked => (
            AuthEventType::RoleRevoked,
            json!({ "user_id": user_id, "role": detail, "by": audit.actor }),
        ),
        AuditKind::AccountDeleted => (AuthEventType::AccountDeleted, json!({ "user_id": user_id })),
        AuditKind::Registered
        | AuditKind::LoginSucceeded
        | AuditKind::LoginFailed
        | AuditKind::LoginThrottled
        | AuditKind::RefreshReused
        | AuditKind::Logout
        | AuditKind::SessionRevoked
        | AuditKind::KeyRotated
        | AuditKind::ClientTokenIssued
        | AuditKind::ClientAuthFailed
        | AuditKind::RegistrationAbandoned
        | AuditKind::MfaFailed
        | AuditKind::RecoveryCodeUsed
        | AuditKind::PasswordResetRequested => return None,
    };
    Some((event_type, user_id, data))
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::audit::ClientInfo;

    #[test]
    fn types_have_distinct_names() {
        let mut names = AuthEventType::names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AuthEventType::ALL.len());
    }

    #[test]
    fn a_reset_is_a_password_change_by_reset_and_a_sign_in_is_not_announced() {
        let user = Uuid::now_v7();
        let at = OffsetDateTime::UNIX_EPOCH;
        let reset = AuditEvent::new(AuditKind::PasswordReset, at, &ClientInfo::default())
            .user(user)
            .detail("password reset; 2 sessions ended");
        let (event_type, subject, data) = announcement(&reset).unwrap();
        assert_eq!(event_type, AuthEventType::PasswordChanged);
        assert_eq!(subject, user);
        assert_eq!(data, json!({ "user_id": user, "method": "reset" }));
        let sign_in =
            AuditEvent::new(AuditKind::LoginSucceeded, at, &ClientInfo::default()).user(user);
        assert!(announcement(&sign_in).is_none());
        let granted = AuditEvent::new(AuditKind::RoleGranted, at, &ClientInfo::default())
            .user(user)
            .actor("user:someone".to_owned())
            .detail("admin");
        let (_, _, data) = announcement(&granted).unwrap();
        assert_eq!(data["role"], "admin");
        assert_eq!(data["by"], "user:someone");
    }
}
