//! Configuration of the auth service (env prefix `PORTICO_AUTH_`). The
//! defaults are `config/defaults.toml`, the one source of default values.

use portico_common::types::Email;
use portico_common::{
    config::{ConfigError, ConnectionsConfig, ListenConfig, ServiceConfig, ShutdownConfig},
    db::DatabaseConfig,
    redis::RedisConfig,
    telemetry::TelemetryConfig,
};
use serde::Deserialize;

use crate::{
    domain::{
        clients::ClientConfig, password::HashingConfig, password_policy::PolicyConfig,
        throttle::ThrottleConfig, tokens::TokenSettings,
    },
    user_directory::UserServiceConfig,
};

pub const ENV_PREFIX: &str = "PORTICO_AUTH_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: ListenConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub tokens: TokenSettings,
    pub password_hashing: HashingConfig,
    pub password_policy: PolicyConfig,
    pub login_throttle: ThrottleConfig,
    /// Where clients' addresses come from.
    pub clients: ClientsConfig,
    pub admin: AdminConfig,
    pub signing_keys: crate::signing_keys::SigningKeysConfig,
    /// Clients of the client credentials grant, by id.
    pub service_clients: std::collections::BTreeMap<String, ClientConfig>,
    pub user_service: UserServiceConfig,
    pub telemetry: TelemetryConfig,
    pub shutdown: ShutdownConfig,
    pub connections: ConnectionsConfig,
    /// Events other services send here (`POST /internal/events`).
    pub events: EventsInboxConfig,
    /// Events this service sends: the outbox relay and its webhook
    /// subscribers.
    pub outbox: portico_common::outbox::OutboxConfig,
    /// Removing deleted accounts' credentials.
    pub scrubber: ScrubberConfig,
    /// Registrations that died half-way.
    pub registration: RegistrationConfig,
    /// The second factor.
    pub mfa: MfaConfig,
    /// Outgoing mail (verification and reset links).
    pub mail: crate::mailer::MailConfig,
    /// Mails asked for, per address and client (same shape as
    /// `login_throttle`; each mail asked for counts as one).
    pub mail_throttle: ThrottleConfig,
    /// Wrong second-factor codes (same shape as `login_throttle`, its own
    /// counters, stricter: a six-digit code is guessed far sooner than a
    /// password).
    pub mfa_throttle: ThrottleConfig,
    pub email_verification: EmailVerificationConfig,
    pub password_reset: PasswordResetConfig,
}

/// Email verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailVerificationConfig {
    /// Unverified accounts cannot sign in.
    pub required: bool,
    /// How long a verification link works.
    pub token_ttl_secs: u64,
}

/// Password reset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfig {
    /// How long a reset link works.
    pub token_ttl_secs: u64,
}

/// Multi-factor sign-in (TOTP).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaConfig {
    /// The issuer authenticator apps show next to the account.
    pub issuer: String,
    /// How long a sign-in whose password was right waits for its code.
    pub challenge_ttl_secs: u64,
}

/// Registrations in flight and their reconciler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// A registration still pending after this long died half-way: the
    /// reconciler finishes it (the profile exists) or abandons it (it does
    /// not), and a new registration for the email may take it over. Longer
    /// than a profile creation call can take (`user_service.timeout_ms`),
    /// so no call still in flight can create a profile after it.
    pub pending_timeout_secs: u64,
    /// How often the reconciler looks for them.
    pub reconcile_interval_ms: u64,
}

/// The credential scrubber.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubberConfig {
    /// How long a deleted account's disabled credential is kept (its email
    /// stays taken): at least an access token's lifetime plus a minute.
    pub grace_secs: u64,
    /// How often the scrubber looks.
    pub interval_ms: u64,
}

/// The webhook inbox: which deliveries are believed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsInboxConfig {
    /// Standard Webhooks secrets (`whsec_…`) a delivery may be signed
    /// with: the user service's `events.subscribers` secret for auth
    /// (several while one is being rotated). Empty: every delivery is
    /// refused.
    pub secrets: Vec<secrecy::SecretString>,
    /// How far a delivery's `webhook-timestamp` may be from now, either
    /// way: a captured delivery replayed later is refused.
    pub tolerance_secs: i64,
}

/// `clients`: how the client's address is learnt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsConfig {
    /// Peers (the gateways) whose `x-forwarded-for` is believed; from any
    /// other peer the header is ignored and the peer's address is the
    /// client's — so nobody reaching auth directly can pose as many
    /// addresses to the sign-in throttle.
    pub trusted_proxies: Vec<crate::http::Cidr>,
}

/// `admin`: who administers the deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The account with this email is made an admin — at startup if it
    /// exists, at registration otherwise. Unset: no bootstrap admin.
    pub bootstrap_email: Option<Email>,
}

impl Config {
    /// A usable KEK, and a schedule that publishes keys before they sign.
    fn validate_signing_keys(&self) -> Result<(), ConfigError> {
        let keys = &self.signing_keys;
        let Some(secret) = &keys.encryption_key else {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "signing_keys.encryption_key",
                "required: 32 random bytes, base64 (`openssl rand -base64 32`); it seals the signing keys at rest",
            ));
        };
        if let Err((key, message)) =
            crate::domain::keys::KeyEncryption::new(secret, &keys.previous_encryption_keys)
        {
            return Err(ConfigError::key(ENV_PREFIX, &key, message));
        }
        if keys.publish_lead_secs <= 0 {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "signing_keys.publish_lead_secs",
                "must be positive",
            ));
        }
        if keys.rotate_every_secs <= keys.publish_lead_secs {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "signing_keys.rotate_every_secs",
                "must be longer than signing_keys.publish_lead_secs",
            ));
        }
        if keys.reload_interval_ms == 0 {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "signing_keys.reload_interval_ms",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// The built-in defaults, also the reference for every key.
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

impl ServiceConfig for Config {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const DEFAULTS: &'static str = DEFAULTS;

    portico_common::standard_sections!();

    /// Rules serde cannot express: hashing costs and positive lifetimes.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err((key, message)) = self
            .password_hashing
            .check()
            .and_then(|()| self.password_policy.check())
        {
            return Err(ConfigError::key(ENV_PREFIX, key, message));
        }
        self.validate_signing_keys()?;
        let least_grace = self.tokens.access_token_ttl_secs.saturating_add(60);
        if i64::try_from(self.scrubber.grace_secs).unwrap_or(i64::MAX) < least_grace {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "scrubber.grace_secs",
                format!(
                    "must be at least {least_grace} (the access-token lifetime plus a minute): a deleted account's revoked sessions must outlive its tokens"
                ),
            ));
        }
        if self.registration.pending_timeout_secs.saturating_mul(1000)
            <= self.user_service.timeout_ms
        {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "registration.pending_timeout_secs",
                format!(
                    "must be longer than user_service.timeout_ms ({} ms): a profile creation still in flight must not land after its registration is abandoned",
                    self.user_service.timeout_ms
                ),
            ));
        }
        if let Err((key, message)) = crate::mailer::Mailer::from_config(&self.mail) {
            return Err(ConfigError::key(ENV_PREFIX, &key, message));
        }
        if let Err((key, message)) = portico_common::outbox::Subscribers::from_config(
            &self.outbox,
            "outbox",
            &crate::domain::events::AuthEventType::names(),
        ) {
            return Err(ConfigError::key(ENV_PREFIX, &key, message));
        }
        for (key, value, most) in [
            (
                "email_verification.token_ttl_secs",
                self.email_verification.token_ttl_secs,
                7 * 86_400,
            ),
            (
                "password_reset.token_ttl_secs",
                self.password_reset.token_ttl_secs,
                86_400,
            ),
        ] {
            if !(60..=most).contains(&value) {
                return Err(ConfigError::key(
                    ENV_PREFIX,
                    key,
                    format!("must be between 60 and {most} seconds"),
                ));
            }
        }
        if !(30..=1800).contains(&self.mfa.challenge_ttl_secs) {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "mfa.challenge_ttl_secs",
                "must be between 30 and 1800 seconds",
            ));
        }
        if self.mfa.issuer.trim().is_empty() || self.mfa.issuer.contains(':') {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "mfa.issuer",
                "must be a non-empty name without `:` (it labels the account in authenticator apps)",
            ));
        }
        if self.registration.reconcile_interval_ms == 0 {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "registration.reconcile_interval_ms",
                "must be positive",
            ));
        }
        if let Err(message) = crate::http::events::Inbox::check(&self.events) {
            return Err(ConfigError::key(ENV_PREFIX, &message.0, message.1));
        }
        if let Err((key, message)) = self.user_service.check() {
            return Err(ConfigError::key(
                ENV_PREFIX,
                &format!("user_service.{key}"),
                message,
            ));
        }
        if let Err((key, message)) =
            crate::domain::clients::ServiceClients::from_config(&self.service_clients)
        {
            return Err(ConfigError::key(ENV_PREFIX, &key, message));
        }
        for (key, value) in [
            (
                "tokens.access_token_ttl_secs",
                self.tokens.access_token_ttl_secs,
            ),
            (
                "tokens.refresh_token_ttl_secs",
                self.tokens.refresh_token_ttl_secs,
            ),
            (
                "tokens.refresh_idle_timeout_secs",
                self.tokens.refresh_idle_timeout_secs,
            ),
            (
                "tokens.service_token_ttl_secs",
                self.tokens.service_token_ttl_secs,
            ),
        ] {
            if value <= 0 {
                return Err(ConfigError::key(ENV_PREFIX, key, "must be positive"));
            }
        }
        if !(0..=60).contains(&self.tokens.refresh_reuse_grace_secs) {
            return Err(ConfigError::key(
                ENV_PREFIX,
                "tokens.refresh_reuse_grace_secs",
                "must be between 0 and 60 seconds",
            ));
        }
        Ok(())
    }
}
