//! Security events: what happened to an account, who did it, from where.
//! Storage writes each in the same transaction as the change it records.

use time::OffsetDateTime;
use uuid::Uuid;

/// Every kind of security event, as stored in `audit_events.type` and
/// filtered by the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Registered,
    LoginSucceeded,
    LoginFailed,
    /// A sign-in or password check refused by the throttle.
    LoginThrottled,
    /// A spent refresh token came back after the grace window: the session
    /// was revoked.
    RefreshReused,
    Logout,
    /// A session ended by its owner or by an admin.
    SessionRevoked,
    PasswordChanged,
    RoleGranted,
    RoleRevoked,
    KeyRotated,
    ClientTokenIssued,
    /// A token request whose client id or secret was wrong.
    ClientAuthFailed,
    /// The account was deleted (the user service's `user.deleted`): its
    /// sessions ended and its credential was disabled.
    AccountDeleted,
    /// A registration that died half-way without a profile was removed by
    /// the reconciler (its email is free again).
    RegistrationAbandoned,
    /// A TOTP authenticator was confirmed: MFA on.
    MfaEnabled,
    MfaDisabled,
    /// A wrong (or reused) second-factor code.
    MfaFailed,
    /// A recovery code stood in for the authenticator (and is used up).
    RecoveryCodeUsed,
    EmailVerified,
    /// A reset link was asked for an existing account (and mailed).
    PasswordResetRequested,
    /// The password was set with a reset link; every session ended.
    PasswordReset,
}

impl AuditKind {
    pub const ALL: [Self; 22] = [
        Self::Registered,
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::LoginThrottled,
        Self::RefreshReused,
        Self::Logout,
        Self::SessionRevoked,
        Self::PasswordChanged,
        Self::RoleGranted,
        Self::RoleRevoked,
        Self::KeyRotated,
        Self::ClientTokenIssued,
        Self::ClientAuthFailed,
        Self::AccountDeleted,
        Self::RegistrationAbandoned,
        Self::MfaEnabled,
        Self::MfaDisabled,
        Self::MfaFailed,
        Self::RecoveryCodeUsed,
        Self::EmailVerified,
        Self::PasswordResetRequested,
        Self::PasswordReset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::LoginThrottled => "login_throttled",
            Self::RefreshReused => "refresh_reused",
            Self::Logout => "logout",
            Self::SessionRevoked => "session_revoked",
            Self::PasswordChanged => "password_changed",
            Self::RoleGranted => "role_granted",
            Self::RoleRevoked => "role_revoked",
            Self::KeyRotated => "key_rotated",
            Self::ClientTokenIssued => "client_token_issued",
            Self::ClientAuthFailed => "client_auth_failed",
            Self::AccountDeleted => "account_deleted",
            Self::RegistrationAbandoned => "registration_abandoned",
            Self::MfaEnabled => "mfa_enabled",
            Self::MfaDisabled => "mfa_disabled",
            Self::MfaFailed => "mfa_failed",
            Self::RecoveryCodeUsed => "recovery_code_used",
            Self::EmailVerified => "email_verified",
            Self::PasswordResetRequested => "password_reset_requested",
            Self::PasswordReset => "password_reset",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Where a request came from, as a session keeps it and the audit log
/// records it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The client's address as the gateway reported it.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The request's `x-request-id`, to find its logs.
    pub request_id: Option<String>,
}

/// One security event.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: Uuid,
    pub occurred_at: OffsetDateTime,
    pub kind: AuditKind,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// Who acted, when not the user: `user:<id>` or `client:<id>`.
    pub actor: Option<String>,
    pub client: ClientInfo,
    /// A short fact (a role, a kid, a count); never a secret.
    pub detail: Option<String>,
}

impl AuditEvent {
    /// Counts the event in `auth_audit_events_total{kind}` once the row is
    /// committed: what the security-event alerts and dashboard read.
    pub fn recorded(&self) {
        metrics::counter!("auth_audit_events_total", "kind" => self.kind.as_str()).increment(1);
    }

    pub fn new(kind: AuditKind, occurred_at: OffsetDateTime, client: &ClientInfo) -> Self {
        Self {
            id: Uuid::now_v7(),
            occurred_at,
            kind,
            user_id: None,
            session_id: None,
            actor: None,
            client: client.clone(),
            detail: None,
        }
    }

    /// An event about one session of a user (most of them).
    pub fn in_session(
        kind: AuditKind,
        occurred_at: OffsetDateTime,
        client: &ClientInfo,
        user_id: Uuid,
        session_id: Uuid,
    ) -> Self {
        Self::new(kind, occurred_at, client)
            .user(user_id)
            .session(session_id)
    }

    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn session(mut self, session_id: Uuid) -> Self {
        self.session_id = Some(session_id);
        self
    }

    pub fn actor(mut self, actor: String) -> Self {
        self.actor = Some(actor);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(AuditKind::parse("login"), None);
    }
}
