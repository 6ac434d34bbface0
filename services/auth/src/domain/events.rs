//! The events the auth service emits to its webhook subscribers: the
//! account changes a customer's systems act on (a verified address, a new
//! password, a second factor on or off, a role, a deletion carried out).
//! Each is the public face of an audited change and is written to the
//! outbox with the audit row, in the change's transaction. Sign-ins and
//! sessions stay in the audit log (`GET /v1/auth/admin/audit`): they are
//! many, and no other service acts on them.

use portico_common::outbox::document::DocumentedEvent;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
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

/// The data of `user.email_verified` and `auth.account_deleted`: who.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserRef {
    pub user_id: Uuid,
}

/// How a new password was set.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PasswordMethod {
    /// By the user, with the current password (other sessions ended).
    Change,
    /// With a mailed reset link (every session ended).
    Reset,
}

/// `auth.password_changed`'s data.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChangedData {
    pub user_id: Uuid,
    pub method: PasswordMethod,
}

/// A second factor's kind.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    Totp,
}

/// What proved the user when the second factor was turned off.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FactorProof {
    /// A code from the authenticator.
    Totp,
    /// One of the recovery codes (used up).
    RecoveryCode,
}

/// `auth.mfa_enabled`'s data.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaEnabledData {
    pub user_id: Uuid,
    pub factor: Factor,
}

/// `auth.mfa_disabled`'s data.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaDisabledData {
    pub user_id: Uuid,
    pub factor: Factor,
    pub proof: FactorProof,
}

/// `auth.role_granted` and `auth.role_revoked`'s data.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleChangedData {
    pub user_id: Uuid,
    /// The role granted or revoked.
    #[schema(example = "admin")]
    pub role: String,
    /// Who changed it: `user:<id>` of the admin.
    #[schema(example = "user:0195f3c2-8f1e-7c2a-9d1b-4b7c1f3e2a10")]
    pub by: Option<String>,
}

/// Every event type as the OpenAPI document's `webhooks` describe it.
pub fn documented() -> Vec<DocumentedEvent> {
    use AuthEventType as T;
    vec![
        DocumentedEvent::of::<UserRef>(
            T::EmailVerified.as_str(),
            "The user confirmed the address with a mailed link (a password reset link counts too).",
        ),
        DocumentedEvent::of::<PasswordChangedData>(
            T::PasswordChanged.as_str(),
            "A new password: changed by the user, or set with a reset link.",
        ),
        DocumentedEvent::of::<MfaEnabledData>(
            T::MfaEnabled.as_str(),
            "A TOTP authenticator was confirmed: sign-ins need its codes.",
        ),
        DocumentedEvent::of::<MfaDisabledData>(
            T::MfaDisabled.as_str(),
            "The authenticator and recovery codes were removed.",
        ),
        DocumentedEvent::of::<RoleChangedData>(
            T::RoleGranted.as_str(),
            "An admin granted a role; the user's sessions ended.",
        ),
        DocumentedEvent::of::<RoleChangedData>(
            T::RoleRevoked.as_str(),
            "An admin revoked a role; the user's sessions ended.",
        ),
        DocumentedEvent::of::<UserRef>(
            T::AccountDeleted.as_str(),
            "The user service's `user.deleted` was applied: every session ended, the credential is disabled.",
        ),
    ]
}

/// What subscribers hear of an audited change: its type, the user it is
/// about and its data; `None` for what is only audited. No personal data
/// and never a secret: the user id says who.
pub fn announcement(audit: &AuditEvent) -> Option<(AuthEventType, Uuid, Value)> {
    let user_id = audit.user_id?;
    let role = || RoleChangedData {
        user_id,
        role: audit.detail.clone().unwrap_or_default(),
        by: audit.actor.clone(),
    };
    let (event_type, data) = match audit.kind {
        AuditKind::EmailVerified => (AuthEventType::EmailVerified, to_value(UserRef { user_id })),
        AuditKind::PasswordChanged => (
            AuthEventType::PasswordChanged,
            to_value(PasswordChangedData {
                user_id,
                method: PasswordMethod::Change,
            }),
        ),
        AuditKind::PasswordReset => (
            AuthEventType::PasswordChanged,
            to_value(PasswordChangedData {
                user_id,
                method: PasswordMethod::Reset,
            }),
        ),
        AuditKind::MfaEnabled => (
            AuthEventType::MfaEnabled,
            to_value(MfaEnabledData {
                user_id,
                factor: Factor::Totp,
            }),
        ),
        AuditKind::MfaDisabled => (
            AuthEventType::MfaDisabled,
            to_value(MfaDisabledData {
                user_id,
                factor: Factor::Totp,
                proof: match audit.detail.as_deref() {
                    Some(RECOVERY_CODE_PROOF) => FactorProof::RecoveryCode,
                    _ => FactorProof::Totp,
                },
            }),
        ),
        AuditKind::RoleGranted => (AuthEventType::RoleGranted, to_value(role())),
        AuditKind::RoleRevoked => (AuthEventType::RoleRevoked, to_value(role())),
        AuditKind::AccountDeleted => (AuthEventType::AccountDeleted, to_value(UserRef { user_id })),
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

/// The audit detail of an MFA change proved with a recovery code.
pub const RECOVERY_CODE_PROOF: &str = "recovery_code";

fn to_value(data: impl Serialize) -> Value {
    // Plain structs of strings and ids: serialising cannot fail.
    serde_json::to_value(data).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
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
