//! The account flows — register, log in, refresh, log out — orchestrating
//! hashing, storage, the user service and token issuing. Handlers parse
//! requests and call these; nothing here knows about HTTP. What a signed-in
//! user does with their own sessions and password is in [`own_sessions`].

mod admin;
mod deletion;
pub use deletion::Scrubber;
mod email;
pub use email::MailTokenSettings;
mod export;
pub use export::AccountExport;
mod mfa;
pub use mfa::{LoginOutcome, MfaState, SecondFactor, TotpEnrolment};
mod own_sessions;
mod reconciler;
pub use reconciler::Reconciler;
mod serial;

use admin::admin_role;
pub use admin::{MAX_AUDIT_PAGE, RoleAction};

pub use own_sessions::{SessionPurge, SessionView};

pub use crate::domain::audit::ClientInfo;

use std::sync::Arc;

use portico_common::{
    clock::SharedClock,
    jwt::RoleSet,
    types::{DisplayName, Email},
};
use secrecy::SecretString;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{
    domain::{
        audit::{AuditEvent, AuditKind},
        keys::KeyEncryption,
        password::{Password, PasswordHashing, PasswordMatch},
        password_policy::PasswordPolicy,
        throttle::Attempt,
        tokens::{RefreshToken, RotationKey, Successor, TokenFacts, TokenIssuer},
    },
    error::AuthError,
    mailer::Mailer,
    storage::{AuthStore, CredentialState, NewSession, SessionRef},
    throttle_store::ThrottleStore,
    user_directory::{DirectoryError, UserDirectory},
};

/// The address as the throttle counts it: IPv6 clients by /64 (one
/// subscriber's whole prefix), IPv4 as is.
fn throttle_address(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let segments = v6.segments();
            format!(
                "{:x}:{:x}:{:x}:{:x}::/64",
                segments[0], segments[1], segments[2], segments[3]
            )
        }
        _ => ip.to_owned(),
    }
}

/// Longest account text a throttle key keeps (a non-email login name).
const MAX_THROTTLE_KEY_CHARS: usize = 320;

/// Tokens handed to a client after register, login or refresh.
pub struct IssuedTokens {
    pub user_id: Uuid,
    pub access_token: String,
    pub refresh_token: RefreshToken,
    pub expires_in: i64,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("user_id", &self.user_id)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// A registration whose fields have been validated.
#[derive(Debug)]
pub struct Registration {
    pub email: Email,
    pub password: Password,
    pub display_name: DisplayName,
}

#[derive(Debug, Clone)]
pub struct Accounts {
    store: AuthStore,
    hashing: PasswordHashing,
    /// What a new password must satisfy.
    policy: Arc<PasswordPolicy>,
    issuer: TokenIssuer,
    directory: UserDirectory,
    clock: SharedClock,
    /// Derives refresh-token successors (shared by every replica).
    rotation: RotationKey,
    /// Counts failed sign-ins and password checks.
    throttle: Arc<ThrottleStore>,
    /// One password check at a time per account (see `serial`).
    checks: Arc<serial::PerKey>,
    /// The lower-cased email of the account that is made an admin.
    bootstrap_admin: Option<String>,
    /// A registration pending this long died half-way
    /// (`registration.pending_timeout_secs`).
    pending_timeout: Duration,
    /// Seals TOTP secrets at rest (the signing keys' KEKs).
    sealing: Arc<KeyEncryption>,
    /// The issuer an authenticator app shows (`mfa.issuer`).
    mfa_issuer: String,
    /// How long a sign-in waits for its code (`mfa.challenge_ttl_secs`).
    mfa_challenge_ttl: Duration,
    /// Sends verification and reset links.
    mailer: Arc<Mailer>,
    /// Counts mails asked for, per address and client.
    mail_throttle: Arc<ThrottleStore>,
    /// Counts wrong second-factor codes (`mfa_throttle`).
    mfa_throttle: Arc<ThrottleStore>,
    /// `email_verification` and `password_reset` settings.
    mail_tokens: MailTokenSettings,
    /// Unverified accounts cannot sign in (`email_verification.required`).
    require_verified_email: bool,
}

/// What the account flows are made of, named (the app assembles it).
#[derive(Debug)]
pub struct AccountsParts {
    pub store: AuthStore,
    pub hashing: PasswordHashing,
    pub policy: PasswordPolicy,
    pub issuer: TokenIssuer,
    pub directory: UserDirectory,
    pub clock: SharedClock,
    pub rotation: RotationKey,
    pub throttle: ThrottleStore,
    /// The account with this email is an admin (`admin.bootstrap_email`).
    pub bootstrap_admin: Option<Email>,
    /// `registration.pending_timeout_secs`.
    pub pending_timeout: Duration,
    /// Seals TOTP secrets (built from `signing_keys.encryption_key`).
    pub sealing: Arc<KeyEncryption>,
    /// `mfa.issuer`.
    pub mfa_issuer: String,
    /// `mfa.challenge_ttl_secs`.
    pub mfa_challenge_ttl: Duration,
    pub mailer: Mailer,
    /// Limits mails asked for (`mail_throttle`).
    pub mail_throttle: ThrottleStore,
    /// Limits wrong second-factor codes (`mfa_throttle`).
    pub mfa_throttle: ThrottleStore,
    pub mail_tokens: MailTokenSettings,
    /// `email_verification.required`.
    pub require_verified_email: bool,
}

impl Accounts {
    pub fn new(parts: AccountsParts) -> Self {
        Self {
            store: parts.store,
            hashing: parts.hashing,
            policy: Arc::new(parts.policy),
            issuer: parts.issuer,
            directory: parts.directory,
            clock: parts.clock,
            rotation: parts.rotation,
            throttle: Arc::new(parts.throttle),
            checks: Arc::default(),
            bootstrap_admin: parts.bootstrap_admin.as_ref().map(Email::normalized),
            pending_timeout: parts.pending_timeout,
            sealing: parts.sealing,
            mfa_issuer: parts.mfa_issuer,
            mfa_challenge_ttl: parts.mfa_challenge_ttl,
            mailer: Arc::new(parts.mailer),
            mail_throttle: Arc::new(parts.mail_throttle),
            mfa_throttle: Arc::new(parts.mfa_throttle),
            mail_tokens: parts.mail_tokens,
            require_verified_email: parts.require_verified_email,
        }
    }

    fn is_bootstrap_admin(&self, email_lower: &str) -> bool {
        self.bootstrap_admin.as_deref() == Some(email_lower)
    }

    /// The rules for new passwords (registration checks them with the
    /// fields it was given).
    pub fn password_policy(&self) -> &PasswordPolicy {
        &self.policy
    }

    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    pub fn store(&self) -> &AuthStore {
        &self.store
    }

    /// The current time, by the service's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Registration, a saga in three steps: a pending credential; the
    /// profile in the user service (idempotent by id); the credential
    /// activated with a first session. A profile refused (the email is
    /// another profile's) removes the credential again. A profile whose
    /// creation is uncertain (the user service unreachable, or its answer
    /// lost) leaves the credential pending and answers 503: the same
    /// registration retried resumes it, and the reconciler settles it if
    /// nobody does. No step leaves a half-made account that can sign in.
    pub async fn register(
        &self,
        registration: Registration,
        client: ClientInfo,
    ) -> Result<IssuedTokens, AuthError> {
        let email_lower = registration.email.normalized();
        let user_id = self
            .claim_registration(&email_lower, &registration.password, &client)
            .await?;

        let created = self
            .directory
            .create_profile(
                user_id,
                registration.email.as_str(),
                registration.display_name.as_str(),
            )
            .await;
        match created {
            Ok(()) => {}
            Err(DirectoryError::EmailTaken) => {
                // Certainly not made: compensate at once.
                if let Err(cleanup) = self.store.delete_pending(user_id).await {
                    // Stays pending: the reconciler abandons it later.
                    tracing::error!(%user_id, error = %cleanup, "could not remove pending credential");
                }
                return Err(AuthError::EmailTaken);
            }
            Err(DirectoryError::Unavailable(cause)) => {
                tracing::warn!(%user_id, %cause, "profile creation uncertain; registration left pending");
                return Err(AuthError::ProfileUnavailable(cause));
            }
        }

        let session_id = Uuid::now_v7();
        let refresh = RefreshToken::generate()
            .map_err(|_| AuthError::Internal("randomness unavailable".into()))?;
        let now = self.clock.now();
        let mut roles = RoleSet::new_user();
        let mut event =
            AuditEvent::in_session(AuditKind::Registered, now, &client, user_id, session_id);
        if self.is_bootstrap_admin(&email_lower) {
            roles = roles.with(&admin_role());
            event = event.detail("bootstrap admin");
        }
        let refresh_hash = refresh.hash();
        let session = self.new_session(session_id, user_id, &refresh_hash, now, &client);
        if self
            .store
            .activate_with_session(&session, &roles, &event)
            .await?
        {
            tracing::info!(%user_id, "account registered");
            self.send_verification_in_background(user_id, email_lower);
            let facts = TokenFacts {
                roles,
                email_verified: false,
            };
            return self.tokens(user_id, session_id, facts, refresh, now, Uuid::now_v7());
        }
        // A concurrent retry of this registration (the same password) or
        // the reconciler activated it first: the account exists and this
        // caller proved its password, so it gets a session of its own —
        // unless a second factor was turned on meanwhile, which a
        // registration never answers for.
        if self.store.mfa_enabled(user_id).await? {
            return Err(AuthError::EmailTaken);
        }
        let event =
            AuditEvent::in_session(AuditKind::LoginSucceeded, now, &client, user_id, session_id);
        if !self.store.create_session(&session, &event).await? {
            return Err(AuthError::ProfileUnavailable(
                "the registration was settled elsewhere; try again".into(),
            ));
        }
        let facts = self
            .store
            .token_facts(user_id)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        self.tokens(user_id, session_id, facts, refresh, now, Uuid::now_v7())
    }

    /// The user id a registration works under: a new pending credential; a
    /// stale one (its registration died) taken over; or, for the same
    /// password again while one is pending, the one being retried.
    async fn claim_registration(
        &self,
        email_lower: &str,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<Uuid, AuthError> {
        let now = self.clock.now();
        let stale_before = now - self.pending_timeout;
        // Cheap check first so a duplicate does not cost a password hash;
        // the unique constraint still decides races.
        match self.store.credential_state(email_lower).await? {
            None => {}
            Some(CredentialState::Pending { since }) if since < stale_before => {
                let hash = self.hashing.hash(password).await?;
                return self
                    .store
                    .take_over_stale_pending(email_lower, &hash, stale_before, self.clock.now())
                    .await?
                    .ok_or(AuthError::EmailTaken);
            }
            Some(CredentialState::Pending { .. }) => {
                return self
                    .resume_registration(email_lower, password, client)
                    .await;
            }
            Some(_) => return Err(AuthError::EmailTaken),
        }
        let hash = self.hashing.hash(password).await?;
        let user_id = Uuid::now_v7();
        self.store
            .insert_pending(user_id, email_lower, &hash, self.clock.now())
            .await?;
        Ok(user_id)
    }

    /// A registration retried while its first attempt is pending: resumed
    /// under the same user id when the password is the one it was started
    /// with, else the email is taken. A wrong password counts against the
    /// sign-in throttle: resuming opens a session, so it is guarded like
    /// one.
    async fn resume_registration(
        &self,
        email_lower: &str,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<Uuid, AuthError> {
        let address = client.ip.as_deref().map(throttle_address);
        let attempt = Attempt {
            account: email_lower,
            address: address.as_deref(),
        };
        let _turn = self.checks.turn(email_lower).await;
        if let Err(retry_after_secs) = self.throttle.check(&attempt, self.clock.now()).await {
            return Err(AuthError::Throttled { retry_after_secs });
        }
        let Some(pending) = self.store.pending_credential(email_lower).await? else {
            // Settled meanwhile, one way or the other.
            return Err(AuthError::EmailTaken);
        };
        let outcome = self
            .hashing
            .verify(password, Some(&pending.password_hash))
            .await?;
        if !outcome.matched() {
            self.throttle.failed(&attempt, self.clock.now()).await;
            return Err(AuthError::EmailTaken);
        }
        self.throttle.succeeded(&attempt).await;
        // Touched, so the reconciler leaves it alone for another pending
        // timeout (longer than the rest of this request can take); a
        // take-over since the read (another password) refuses the resume.
        if !self
            .store
            .touch_pending(pending.user_id, &pending.password_hash, self.clock.now())
            .await?
        {
            return Err(AuthError::EmailTaken);
        }
        tracing::info!(user_id = %pending.user_id, "registration retried; resuming it");
        Ok(pending.user_id)
    }

    /// Opens a session for a correct email and password — or, with MFA on,
    /// a challenge its code completes. Unknown email and wrong password take
    /// the same time and give the same error.
    pub async fn login(
        &self,
        email: &str,
        password: SecretString,
        client: ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        // Throttled by the address as typed (normalised when it is one),
        // whether or not it is registered: the answer says nothing.
        let parsed = Email::parse(email).ok();
        let account = parsed.as_ref().map_or_else(
            || email.chars().take(MAX_THROTTLE_KEY_CHARS).collect(),
            Email::normalized,
        );
        let address = client.ip.as_deref().map(throttle_address);
        let attempt = Attempt {
            account: &account,
            address: address.as_deref(),
        };
        let _turn = self.checks.turn(&account).await;
        if let Err(retry_after_secs) = self.throttle.check(&attempt, self.clock.now()).await {
            tracing::info!(
                event = "login_throttled",
                retry_after_secs,
                "sign-in refused: throttled"
            );
            let user_id = match &parsed {
                Some(email) => self.store.user_id_by_email(&email.normalized()).await?,
                None => None,
            };
            let mut event = AuditEvent::new(AuditKind::LoginThrottled, self.clock.now(), &client);
            event.user_id = user_id;
            self.store.record(&event).await?;
            return Err(AuthError::Throttled { retry_after_secs });
        }
        // An address that could never have registered is an unknown email:
        // it costs the same verification and gets the same answer.
        let credential = match &parsed {
            Some(email) => self.store.active_credential(&email.normalized()).await?,
            None => None,
        };
        // A password too long to have been stored still costs a
        // verification (against the decoy), so timing says nothing.
        let password = Password::from_client(&password);
        let decoy = Password::from_client(&SecretString::from("decoy-password"));
        let Some(candidate) = password.as_ref().or(decoy.as_ref()) else {
            return Err(AuthError::Internal("decoy password rejected".into()));
        };
        let outcome = self
            .hashing
            .verify(
                candidate,
                credential.as_ref().map(|c| c.password_hash.as_str()),
            )
            .await?;
        let credential = match credential {
            Some(credential) if outcome.matched() && password.is_some() => credential,
            _ => {
                // A hash cheaper than the configured cost fails faster than
                // the decoy would: pad it, so timing does not tell which
                // emails have (old) accounts.
                if credential
                    .as_ref()
                    .is_some_and(|c| self.hashing.needs_rehash(&c.password_hash))
                {
                    let _ = self.hashing.verify(candidate, None).await;
                }
                self.throttle.failed(&attempt, self.clock.now()).await;
                let mut event = AuditEvent::new(AuditKind::LoginFailed, self.clock.now(), &client);
                event.user_id = credential.as_ref().map(|c| c.user_id);
                self.store.record(&event).await?;
                return Err(AuthError::InvalidCredentials);
            }
        };
        self.throttle.succeeded(&attempt).await;
        // Re-made when the cost was raised, or when the hash is of the
        // password as typed rather than normalised.
        if let Some(password) = &password
            && (outcome == PasswordMatch::AsTyped
                || self.hashing.needs_rehash(&credential.password_hash))
        {
            self.rehash(credential.user_id, &credential.password_hash, password)
                .await;
        }
        if self.require_verified_email && !credential.facts.email_verified {
            return Err(AuthError::EmailNotVerified);
        }
        if credential.mfa_enabled {
            tracing::info!(user_id = %credential.user_id, "password right; waiting for the second factor");
            return self.mfa_challenge(credential.user_id).await;
        }
        let session_id = Uuid::now_v7();
        let refresh = RefreshToken::generate()
            .map_err(|_| AuthError::Internal("randomness unavailable".into()))?;
        let now = self.clock.now();
        let event = AuditEvent::in_session(
            AuditKind::LoginSucceeded,
            now,
            &client,
            credential.user_id,
            session_id,
        );
        let opened = self
            .store
            .create_session(
                &self.new_session(
                    session_id,
                    credential.user_id,
                    &refresh.hash(),
                    now,
                    &client,
                ),
                &event,
            )
            .await?;
        if !opened {
            // Deleted between the password check and now.
            return Err(AuthError::InvalidCredentials);
        }
        tracing::info!(user_id = %credential.user_id, %session_id, "logged in");
        self.tokens(
            credential.user_id,
            session_id,
            credential.facts,
            refresh,
            now,
            Uuid::now_v7(),
        )
        .map(LoginOutcome::Tokens)
    }

    /// Rotates a refresh token into its successor; the presented one is
    /// spent. Presented again within the grace window (a retry after a lost
    /// answer, two tabs racing) it gets the *same* successor tokens; after
    /// the window, it revokes the whole session — a spent token coming back
    /// late means someone else has a copy.
    pub async fn refresh(
        &self,
        presented: RefreshToken,
        client: ClientInfo,
    ) -> Result<IssuedTokens, AuthError> {
        let now = self.clock.now();
        let settings = self.issuer.settings();
        let idle_since = self.idle_since(now);
        let successor = presented.successor(&self.rotation);
        let (spent_hash, next_hash) = (presented.hash(), successor.refresh_token.hash());
        if let Some(session) = self
            .store
            .rotate_refresh(&spent_hash, &next_hash, now, idle_since)
            .await?
        {
            return self.successor_tokens(session, successor, now).await;
        }
        let Some(spent) = self
            .store
            .spent_refresh(&spent_hash, &next_hash, now, idle_since)
            .await?
            .filter(|spent| spent.session_is_live)
        else {
            // Never issued, or its session is over: nothing to protect.
            return Err(AuthError::InvalidRefreshToken);
        };
        let grace = Duration::seconds(settings.refresh_reuse_grace_secs);
        if now - spent.spent_at <= grace {
            if spent.successor_is_current {
                // Issued at the rotation's time, so byte for byte the same.
                return self
                    .successor_tokens(spent.session, successor, spent.spent_at)
                    .await;
            }
            // Its successor was itself rotated within the window: refused,
            // but not treated as theft.
            return Err(AuthError::InvalidRefreshToken);
        }
        let SessionRef {
            session_id,
            user_id,
        } = spent.session;
        let event =
            AuditEvent::in_session(AuditKind::RefreshReused, now, &client, user_id, session_id);
        self.store
            .revoke_session(session_id, user_id, now, &event)
            .await?;
        tracing::warn!(
            event = "refresh_token_reused",
            %user_id,
            %session_id,
            "a spent refresh token came back after the grace window; session revoked"
        );
        Err(AuthError::InvalidRefreshToken)
    }

    /// The tokens a rotation hands out, issued at `issued_at`.
    async fn successor_tokens(
        &self,
        session: SessionRef,
        successor: Successor,
        issued_at: OffsetDateTime,
    ) -> Result<IssuedTokens, AuthError> {
        let facts = self
            .store
            .token_facts(session.user_id)
            .await?
            .ok_or(AuthError::InvalidRefreshToken)?;
        self.tokens(
            session.user_id,
            session.session_id,
            facts,
            successor.refresh_token,
            issued_at,
            successor.access_token_id,
        )
    }

    /// Revokes the session the access token belongs to.
    pub async fn logout(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let event = AuditEvent::in_session(AuditKind::Logout, now, &client, user_id, session_id);
        let revoked = self
            .store
            .revoke_session(session_id, user_id, now, &event)
            .await?;
        tracing::info!(%user_id, %session_id, revoked, "logged out");
        Ok(())
    }

    /// Re-makes a password hash with the configured parameters. Best
    /// effort: a failure leaves the old hash, which still verifies.
    async fn rehash(&self, user_id: Uuid, old: &str, password: &Password) {
        let outcome = match self.hashing.hash(password).await {
            Ok(new) => self
                .store
                .rehash_password(user_id, old, &new)
                .await
                .map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match outcome {
            Ok(true) => tracing::info!(%user_id, "password hash upgraded to the configured cost"),
            Ok(false) => {}
            Err(err) => tracing::warn!(%user_id, %err, "password hash upgrade failed"),
        }
    }

    /// A session opened `now` from `client`, lasting the configured lifetime.
    fn new_session<'a>(
        &self,
        id: Uuid,
        user_id: Uuid,
        refresh_hash: &'a [u8],
        now: OffsetDateTime,
        client: &'a ClientInfo,
    ) -> NewSession<'a> {
        NewSession {
            id,
            user_id,
            refresh_hash,
            created_at: now,
            expires_at: self.refresh_expiry(now),
            ip: client.ip.as_deref(),
            user_agent: client.user_agent.as_deref(),
        }
    }

    /// Sessions unused since this moment have ended.
    fn idle_since(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - Duration::seconds(self.issuer.settings().refresh_idle_timeout_secs)
    }

    fn refresh_expiry(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + Duration::seconds(self.issuer.settings().refresh_token_ttl_secs)
    }

    fn tokens(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        facts: TokenFacts,
        refresh_token: RefreshToken,
        now: OffsetDateTime,
        access_token_id: Uuid,
    ) -> Result<IssuedTokens, AuthError> {
        Ok(IssuedTokens {
            user_id,
            access_token: self.issuer.access_token(
                user_id,
                session_id,
                facts,
                now,
                access_token_id,
            )?,
            refresh_token,
            expires_in: self.issuer.settings().access_token_ttl_secs,
        })
    }
}
