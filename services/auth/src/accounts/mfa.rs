//! The second factor: a TOTP authenticator enrolled with the password,
//! confirmed with a code (MFA turns on, ten recovery codes handed out
//! once), disabled with a code or a recovery code; and the sign-in that,
//! with MFA on, stops after the password at a short-lived challenge that a
//! code completes. Codes are single-use within their window, and wrong
//! ones are throttled like passwords, under stricter limits of their own.

use secrecy::SecretString;
use uuid::Uuid;

use super::{Accounts, ClientInfo, IssuedTokens};
use crate::{
    domain::{
        audit::{AuditEvent, AuditKind},
        keys::SealError,
        throttle::Attempt,
        tokens::RefreshToken,
        totp::{self, TotpSecret},
    },
    error::AuthError,
    storage::TotpFactor,
};

/// Wrong codes one challenge tolerates before the sign-in starts over.
pub const MAX_CHALLENGE_FAILURES: i32 = 5;

/// What enrolling shows the user, once: the secret for the app.
pub struct TotpEnrolment {
    /// Base32, for typing into an app.
    pub secret: String,
    /// `otpauth://totp/…`, for a QR code.
    pub uri: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolment(…)")
    }
}

/// Where a user's second factor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaState {
    Off,
    /// Enrolled, not yet confirmed with a code.
    Pending,
    On {
        recovery_codes_left: i64,
    },
}

/// What a sign-in's password step gives.
pub enum LoginOutcome {
    Tokens(IssuedTokens),
    /// MFA is on: complete with a code at `POST /v1/auth/login/mfa`.
    MfaRequired {
        mfa_token: String,
        expires_in: i64,
    },
}

impl std::fmt::Debug for LoginOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tokens(tokens) => tokens.fmt(f),
            Self::MfaRequired { expires_in, .. } => f
                .debug_struct("MfaRequired")
                .field("expires_in", expires_in)
                .finish_non_exhaustive(),
        }
    }
}

/// The proof a second-factor step takes.
pub enum SecondFactor {
    /// A six-digit code from the authenticator.
    Code(String),
    /// One of the recovery codes (used up).
    RecoveryCode(SecretString),
}

impl SecondFactor {
    fn method(&self) -> &'static str {
        match self {
            Self::Code(_) => "totp",
            Self::RecoveryCode(_) => crate::domain::events::RECOVERY_CODE_PROOF,
        }
    }
}

/// The associated data a user's sealed secret is bound to: copied onto
/// another user's row it does not open.
fn sealing_context(user_id: Uuid) -> String {
    format!("totp:{user_id}")
}

fn sealing_failed(err: SealError) -> AuthError {
    AuthError::Internal(format!("totp secret: {err}"))
}

impl Accounts {
    pub async fn mfa_state(&self, user_id: Uuid) -> Result<MfaState, AuthError> {
        Ok(match self.store.totp_factor(user_id).await? {
            None => MfaState::Off,
            Some(factor) if !factor.confirmed => MfaState::Pending,
            Some(factor) => MfaState::On {
                recovery_codes_left: factor.recovery_codes_left,
            },
        })
    }

    /// Enrols a new authenticator (replacing an unconfirmed one) after the
    /// password is checked again; MFA is not on until it is confirmed.
    pub async fn enrol_totp(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        password: SecretString,
        client: ClientInfo,
    ) -> Result<TotpEnrolment, AuthError> {
        let email = self
            .reauthenticate(
                user_id,
                session_id,
                &password,
                &client,
                "mfa enrolment",
                |stored| {
                    stored
                        .map(|stored| stored.email_lower.clone())
                        .ok_or(AuthError::WrongCurrentPassword)
                },
            )
            .await?;
        let secret = TotpSecret::generate()
            .map_err(|_| AuthError::Internal("randomness unavailable".into()))?;
        let sealed = self
            .sealing
            .seal(&sealing_context(user_id), secret.bytes())
            .map_err(sealing_failed)?;
        if !self
            .store
            .enrol_totp(
                user_id,
                &sealed,
                self.sealing.current_id(),
                self.clock.now(),
            )
            .await?
        {
            return Err(AuthError::MfaAlreadyOn);
        }
        tracing::info!(%user_id, "totp authenticator enrolled; awaiting confirmation");
        Ok(TotpEnrolment {
            secret: secret.base32(),
            uri: secret.uri(&self.mfa_issuer, &email),
        })
    }

    /// Turns MFA on with a code from the enrolled authenticator: the
    /// recovery codes are returned, this once.
    pub async fn confirm_totp(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        code: String,
        client: ClientInfo,
    ) -> Result<Vec<String>, AuthError> {
        let factor = match self.store.totp_factor(user_id).await? {
            None => return Err(AuthError::NoTotpEnrolment),
            Some(factor) if factor.confirmed => return Err(AuthError::MfaAlreadyOn),
            Some(factor) => factor,
        };
        let (attempt_key, address) = mfa_attempt_keys(user_id, &client);
        let attempt = Attempt {
            account: &attempt_key,
            address: address.as_deref(),
        };
        let _turn = self.checks.turn(&attempt_key).await;
        self.throttled(&attempt, user_id, &client).await?;
        let secret = self.open_secret(user_id, &factor)?;
        let now = self.clock.now();
        let Some(step) = secret.matching_step(&code, now) else {
            self.second_factor_failed(
                &attempt,
                user_id,
                Some(session_id),
                &client,
                "totp confirmation",
            )
            .await?;
            return Err(AuthError::WrongMfaCode);
        };
        let codes = totp::recovery_codes()
            .map_err(|_| AuthError::Internal("randomness unavailable".into()))?;
        let hashes: Vec<Vec<u8>> = codes.iter().map(|c| totp::recovery_code_hash(c)).collect();
        let audit =
            AuditEvent::in_session(AuditKind::MfaEnabled, now, &client, user_id, session_id)
                .detail("totp");
        if !self
            .store
            .confirm_totp(user_id, &factor.sealed_secret, step, &hashes, now, &audit)
            .await?
        {
            // Re-enrolled or confirmed meanwhile, or the step was used.
            return Err(AuthError::WrongMfaCode);
        }
        self.mfa_throttle.succeeded(&attempt).await;
        tracing::info!(%user_id, "mfa on");
        Ok(codes)
    }

    /// Turns MFA off, proven with a code or a recovery code.
    pub async fn disable_totp(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        proof: SecondFactor,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let factor = match self.store.totp_factor(user_id).await? {
            Some(factor) if factor.confirmed => factor,
            _ => return Err(AuthError::MfaOff),
        };
        self.check_second_factor(user_id, Some(session_id), &factor, &proof, &client)
            .await
            .map_err(|err| match err {
                AuthError::InvalidMfaCode => AuthError::WrongMfaCode,
                other => other,
            })?;
        let audit = AuditEvent::in_session(
            AuditKind::MfaDisabled,
            self.clock.now(),
            &client,
            user_id,
            session_id,
        )
        .detail(proof.method());
        self.store.disable_totp(user_id, &audit).await?;
        tracing::info!(%user_id, "mfa off");
        Ok(())
    }

    /// The password step of a sign-in with MFA on: a challenge for the
    /// code, as a short-lived single-use token (only its hash is kept).
    pub(super) async fn mfa_challenge(&self, user_id: Uuid) -> Result<LoginOutcome, AuthError> {
        let token = RefreshToken::generate()
            .map_err(|_| AuthError::Internal("randomness unavailable".into()))?;
        let now = self.clock.now();
        self.store
            .create_mfa_challenge(&token.hash(), user_id, now, now + self.mfa_challenge_ttl)
            .await?;
        Ok(LoginOutcome::MfaRequired {
            mfa_token: token.expose().to_owned(),
            expires_in: self.mfa_challenge_ttl.whole_seconds(),
        })
    }

    /// Completes a sign-in with MFA on: the challenge's token and a code
    /// (or a recovery code) open the session. A wrong code counts against
    /// the challenge (five and it is gone) and the throttle.
    pub async fn complete_mfa_login(
        &self,
        mfa_token: SecretString,
        proof: SecondFactor,
        client: ClientInfo,
    ) -> Result<IssuedTokens, AuthError> {
        let token_hash = RefreshToken::from_client(mfa_token).hash();
        let user_id = self
            .store
            .mfa_challenge(&token_hash, self.clock.now())
            .await?
            .ok_or(AuthError::InvalidMfaToken)?;
        let factor = match self.store.totp_factor(user_id).await? {
            Some(factor) if factor.confirmed => factor,
            _ => return Err(AuthError::InvalidMfaToken),
        };
        if let Err(err) = self
            .check_second_factor(user_id, None, &factor, &proof, &client)
            .await
        {
            if matches!(err, AuthError::InvalidMfaCode) {
                self.store
                    .fail_mfa_challenge(&token_hash, MAX_CHALLENGE_FAILURES)
                    .await?;
            }
            return Err(err);
        }
        if !self.store.consume_mfa_challenge(&token_hash).await? {
            return Err(AuthError::InvalidMfaToken);
        }
        let facts = self
            .store
            .token_facts(user_id)
            .await?
            .ok_or(AuthError::InvalidMfaToken)?;
        let session_id = Uuid::now_v7();
        let refresh = RefreshToken::generate()
            .map_err(|_| AuthError::Internal("randomness unavailable".into()))?;
        let now = self.clock.now();
        let event =
            AuditEvent::in_session(AuditKind::LoginSucceeded, now, &client, user_id, session_id)
                .detail(proof.method());
        let refresh_hash = refresh.hash();
        let session = self.new_session(session_id, user_id, &refresh_hash, now, &client);
        if !self.store.create_session(&session, &event).await? {
            return Err(AuthError::InvalidMfaToken);
        }
        tracing::info!(%user_id, %session_id, method = proof.method(), "logged in with a second factor");
        self.tokens(user_id, session_id, facts, refresh, now, Uuid::now_v7())
    }

    /// Checks a code (its time step used up) or a recovery code (used up)
    /// of the user's confirmed authenticator, throttled like a password.
    async fn check_second_factor(
        &self,
        user_id: Uuid,
        session_id: Option<Uuid>,
        factor: &TotpFactor,
        proof: &SecondFactor,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let (attempt_key, address) = mfa_attempt_keys(user_id, client);
        let attempt = Attempt {
            account: &attempt_key,
            address: address.as_deref(),
        };
        let _turn = self.checks.turn(&attempt_key).await;
        self.throttled(&attempt, user_id, client).await?;
        let now = self.clock.now();
        let accepted = match proof {
            SecondFactor::Code(code) => {
                let secret = self.open_secret(user_id, factor)?;
                match secret.matching_step(code, now) {
                    Some(step) => self.store.use_totp_step(user_id, step).await?,
                    None => false,
                }
            }
            SecondFactor::RecoveryCode(code) => {
                use secrecy::ExposeSecret as _;
                let hash = totp::recovery_code_hash(code.expose_secret());
                self.store.use_recovery_code(user_id, &hash, now).await?
            }
        };
        if !accepted {
            self.second_factor_failed(&attempt, user_id, session_id, client, proof.method())
                .await?;
            return Err(AuthError::InvalidMfaCode);
        }
        self.mfa_throttle.succeeded(&attempt).await;
        if matches!(proof, SecondFactor::RecoveryCode(_)) {
            let mut event = AuditEvent::new(AuditKind::RecoveryCodeUsed, now, client).user(user_id);
            event.session_id = session_id;
            self.store.record(&event).await?;
        }
        Ok(())
    }

    /// Refuses (audited) while the throttle holds the attempt's keys.
    async fn throttled(
        &self,
        attempt: &Attempt<'_>,
        user_id: Uuid,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        if let Err(retry_after_secs) = self.mfa_throttle.check(attempt, self.clock.now()).await {
            let event = AuditEvent::new(AuditKind::LoginThrottled, self.clock.now(), client)
                .user(user_id)
                .detail("second factor");
            self.store.record(&event).await?;
            return Err(AuthError::Throttled { retry_after_secs });
        }
        Ok(())
    }

    async fn second_factor_failed(
        &self,
        attempt: &Attempt<'_>,
        user_id: Uuid,
        session_id: Option<Uuid>,
        client: &ClientInfo,
        what: &'static str,
    ) -> Result<(), AuthError> {
        self.mfa_throttle.failed(attempt, self.clock.now()).await;
        let mut event = AuditEvent::new(AuditKind::MfaFailed, self.clock.now(), client)
            .user(user_id)
            .detail(what);
        event.session_id = session_id;
        self.store.record(&event).await?;
        Ok(())
    }

    /// Re-seals every TOTP secret sealed under an older KEK with the
    /// current one (at startup, as the signing keys are), so the old KEK
    /// can be dropped; how many. One no configured KEK opens is left with
    /// a warning (its user signs in with a recovery code).
    pub async fn reseal_totp_secrets(&self) -> Result<u64, AuthError> {
        let current = self.sealing.current_id().to_owned();
        let mut resealed = 0;
        for (user_id, sealed, kek_id) in self.store.totp_secrets_not_under(&current).await? {
            let context = sealing_context(user_id);
            let secret = match self.sealing.open(&kek_id, &context, &sealed) {
                Ok(secret) => secret,
                Err(err) => {
                    tracing::warn!(%user_id, kek_id, error = %err, "a TOTP secret no configured KEK opens; left as is");
                    continue;
                }
            };
            let resealed_secret = self
                .sealing
                .seal(&context, &secret)
                .map_err(sealing_failed)?;
            if self
                .store
                .reseal_totp(user_id, &kek_id, &resealed_secret, &current)
                .await?
            {
                resealed += 1;
            }
        }
        if resealed > 0 {
            tracing::info!(
                resealed,
                kek_id = current,
                "TOTP secrets re-sealed under the current KEK"
            );
        }
        Ok(resealed)
    }

    fn open_secret(&self, user_id: Uuid, factor: &TotpFactor) -> Result<TotpSecret, AuthError> {
        self.sealing
            .open(
                &factor.kek_id,
                &sealing_context(user_id),
                &factor.sealed_secret,
            )
            .map(TotpSecret::from_bytes)
            .map_err(sealing_failed)
    }
}

/// The keys of a second-factor guess in `mfa_throttle` (its own counters
/// and stricter limits: a right password resets nothing there): the
/// account's, and the client's address as the sign-in throttle groups it.
fn mfa_attempt_keys(user_id: Uuid, client: &ClientInfo) -> (String, Option<String>) {
    (
        format!("mfa:{user_id}"),
        client.ip.as_deref().map(super::throttle_address),
    )
}
