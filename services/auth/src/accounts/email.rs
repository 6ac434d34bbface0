//! Email verification and password reset: single-use, short-lived tokens
//! (only their SHA-256 is stored) mailed to the account's address.
//! Asking for a reset answers the same whether or not the address has an
//! account — the lookup and the mail happen after the answer — and both
//! kinds of request are limited per address and per client.

use secrecy::SecretString;
use time::Duration;
use uuid::Uuid;

use super::{Accounts, ClientInfo};
use crate::{
    domain::{
        audit::{AuditEvent, AuditKind},
        password_policy::PersonalData,
        throttle::Attempt,
        tokens::RefreshToken,
    },
    error::AuthError,
    mailer::Mail,
    storage::{MailedToken, TokenPurpose},
};

/// How long mailed tokens live.
#[derive(Debug, Clone, Copy)]
pub struct MailTokenSettings {
    /// `email_verification.token_ttl_secs`.
    pub verification_ttl: Duration,
    /// `password_reset.token_ttl_secs`.
    pub reset_ttl: Duration,
}

impl Accounts {
    /// Mails a fresh verification link to the caller's address (earlier
    /// links stop working).
    pub async fn request_email_verification(
        &self,
        user_id: Uuid,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let (email, verified) = self
            .store
            .account_email(user_id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        if verified {
            return Err(AuthError::EmailAlreadyVerified);
        }
        self.count_mail_request(&email, &client).await?;
        self.mail_token(user_id, &email, TokenPurpose::VerifyEmail)
            .await
    }

    /// Mails a verification link to `email_lower` if it has an unverified
    /// account — asked without being signed in (an account that cannot
    /// sign in until verified). Answers the same whatever the address.
    pub async fn request_verification_by_address(
        &self,
        email_lower: String,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        self.mail_by_address(email_lower, TokenPurpose::VerifyEmail, client)
            .await
    }

    /// After a registration: the first verification mail, sent without
    /// holding up the answer (a failure is logged; the user can ask again).
    pub(super) fn send_verification_in_background(&self, user_id: Uuid, email_lower: String) {
        let accounts = self.clone();
        tokio::spawn(async move {
            if let Err(err) = accounts
                .mail_token(user_id, &email_lower, TokenPurpose::VerifyEmail)
                .await
            {
                tracing::warn!(%user_id, error = %err, "verification mail not sent");
            }
        });
    }

    /// Marks the address verified with a token from its mail.
    pub async fn confirm_email_verification(
        &self,
        token: SecretString,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let hash = RefreshToken::from_client(token).hash();
        let now = self.clock.now();
        let audit = AuditEvent::new(AuditKind::EmailVerified, now, &client);
        let user_id = self
            .store
            .verify_email(&hash, now, &audit)
            .await?
            .ok_or(AuthError::InvalidMailToken)?;
        tracing::info!(%user_id, "email verified");
        Ok(())
    }

    /// Asks for a password reset link for `email`. The answer is the same
    /// whatever the address: only the throttle can refuse, and it counts
    /// every address alike; the account is looked up and mailed afterwards.
    pub async fn request_password_reset(
        &self,
        email_lower: String,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        self.mail_by_address(email_lower, TokenPurpose::ResetPassword, client)
            .await
    }

    /// Counts the request against `mail_throttle` (every address alike),
    /// then — after the answer, so nothing in it depends on the address —
    /// mails a `purpose` link if the address has an account that wants one.
    async fn mail_by_address(
        &self,
        email_lower: String,
        purpose: TokenPurpose,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        self.count_mail_request(&email_lower, &client).await?;
        let accounts = self.clone();
        tokio::spawn(async move {
            let purpose_name = purpose.as_str();
            match accounts
                .mail_if_account(&email_lower, purpose, &client)
                .await
            {
                Ok(Some(user_id)) => {
                    tracing::info!(%user_id, purpose = purpose_name, "link mailed")
                }
                Ok(None) => {
                    count_link(purpose, "not_wanted");
                    tracing::info!(
                        purpose = purpose_name,
                        "link asked for; no account wants one"
                    );
                }
                Err(err) => tracing::warn!(purpose = purpose_name, error = %err, "link not sent"),
            }
        });
        Ok(())
    }

    /// The user mailed, if the address has an active account that wants a
    /// `purpose` link (a verification only while unverified); a reset
    /// request is audited.
    async fn mail_if_account(
        &self,
        email_lower: &str,
        purpose: TokenPurpose,
        client: &ClientInfo,
    ) -> Result<Option<Uuid>, AuthError> {
        let Some(user_id) = self.store.active_account_by_email(email_lower).await? else {
            return Ok(None);
        };
        match purpose {
            TokenPurpose::VerifyEmail => {
                if matches!(self.store.account_email(user_id).await?, Some((_, true))) {
                    return Ok(None);
                }
            }
            TokenPurpose::ResetPassword => {
                let event =
                    AuditEvent::new(AuditKind::PasswordResetRequested, self.clock.now(), client)
                        .user(user_id);
                self.store.record(&event).await?;
            }
        }
        self.mail_token(user_id, email_lower, purpose).await?;
        Ok(Some(user_id))
    }

    /// Sets a new password with a reset token: every session ends, and the
    /// address counts as verified (the link reached it). The new password
    /// must pass the policy, checked against the account's email.
    pub async fn confirm_password_reset(
        &self,
        token: SecretString,
        new_password: SecretString,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let hash = RefreshToken::from_client(token).hash();
        let now = self.clock.now();
        let (_, email_lower) = self
            .store
            .peek_mailed_token(&hash, TokenPurpose::ResetPassword, now)
            .await?
            .ok_or(AuthError::InvalidMailToken)?;
        let personal = PersonalData {
            email: Some(&email_lower),
            display_name: None,
        };
        let new_password = self
            .policy
            .check(&new_password, personal)
            .map_err(|message| AuthError::InvalidField {
                field: "new_password",
                message,
            })?;
        let new_hash = self.hashing.hash(&new_password).await?;
        let now = self.clock.now();
        let audit = AuditEvent::new(AuditKind::PasswordReset, now, &client);
        let user_id = self
            .store
            .reset_password(&hash, &new_hash, now, &audit)
            .await?
            .ok_or(AuthError::InvalidMailToken)?;
        tracing::info!(%user_id, "password reset; every session ended");
        Ok(())
    }

    /// Counts one mail asked for, per address and per client; refused past
    /// the limits (`mail_throttle`).
    async fn count_mail_request(
        &self,
        email_lower: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let address = client.ip.as_deref().map(super::throttle_address);
        let attempt = Attempt {
            account: email_lower,
            address: address.as_deref(),
        };
        self.mail_throttle
            .take(&attempt, self.clock.now())
            .await
            .map_err(|retry_after_secs| AuthError::Throttled { retry_after_secs })
    }

    /// Stores a fresh token of `purpose` and mails its link.
    async fn mail_token(
        &self,
        user_id: Uuid,
        email_lower: &str,
        purpose: TokenPurpose,
    ) -> Result<(), AuthError> {
        let token = RefreshToken::generate()
            .map_err(|_| AuthError::Internal("randomness unavailable".into()))?;
        let now = self.clock.now();
        let ttl = match purpose {
            TokenPurpose::VerifyEmail => self.mail_tokens.verification_ttl,
            TokenPurpose::ResetPassword => self.mail_tokens.reset_ttl,
        };
        let hash = token.hash();
        self.store
            .store_mailed_token(&MailedToken {
                hash: &hash,
                user_id,
                purpose,
                email_lower,
                created_at: now,
                expires_at: now + ttl,
            })
            .await?;
        let mail = match purpose {
            TokenPurpose::VerifyEmail => Mail::VerifyEmail {
                token: token.expose(),
            },
            TokenPurpose::ResetPassword => Mail::ResetPassword {
                token: token.expose(),
            },
        };
        let sent = self.mailer.send(email_lower, mail).await;
        count_link(purpose, if sent.is_ok() { "sent" } else { "failed" });
        sent.map_err(|err| AuthError::MailUnavailable(err.to_string()))
    }
}

/// `auth_mail_links_total{purpose, outcome}`: links mailed (`sent`), not
/// sent (`failed`), and asked for by an address with no account wanting
/// one (`not_wanted`).
fn count_link(purpose: TokenPurpose, outcome: &'static str) {
    metrics::counter!("auth_mail_links_total", "purpose" => purpose.as_str(), "outcome" => outcome)
        .increment(1);
}
