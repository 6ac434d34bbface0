//! Tokens mailed to an account's address: email verification and password
//! reset. Stored as SHA-256 only, short-lived, used once (a conditional
//! write: of two requests racing with one token, one gets it).

use portico_common::{db::UnitOfWork, on_conn};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthStore, sessions};
use crate::domain::audit::{AuditEvent, AuditKind};

/// What a mailed token is for (`account_tokens.purpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    VerifyEmail,
    ResetPassword,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }
}

/// A token to store.
#[derive(Debug)]
pub struct MailedToken<'a> {
    pub hash: &'a [u8],
    pub user_id: Uuid,
    pub purpose: TokenPurpose,
    pub email_lower: &'a str,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl AuthStore {
    /// Stores a new token; the user's earlier unused ones for the same
    /// purpose stop working (only the latest mail's link counts).
    pub async fn store_mailed_token(&self, token: &MailedToken<'_>) -> Result<(), sqlx::Error> {
        let mut work = self.db().begin().await?;
        on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "UPDATE account_tokens SET used_at = $3 \
                 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
            )
            .bind(token.user_id)
            .bind(token.purpose.as_str())
            .bind(token.created_at)
            .execute(exec)
            .await
            .map(|_| ())
        })?;
        on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "INSERT INTO account_tokens (token_hash, user_id, purpose, email_lower, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(token.hash)
            .bind(token.user_id)
            .bind(token.purpose.as_str())
            .bind(token.email_lower)
            .bind(token.created_at)
            .bind(token.expires_at)
            .execute(exec)
            .await
            .map(|_| ())
        })?;
        work.commit().await
    }

    /// Verifies the email with a verification token: the token is used up
    /// and the credential marked verified — if the token is live and the
    /// account still has the address it was sent to. The user id, or
    /// `None` for a token unknown, expired, used, or for another address.
    pub async fn verify_email(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
        audit: &AuditEvent,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        let mut work = self.db().begin().await?;
        let Some((user_id, email_lower)) =
            use_token(&mut work, token_hash, TokenPurpose::VerifyEmail, now).await?
        else {
            return Ok(None);
        };
        match verify_address(&mut work, user_id, &email_lower, now).await? {
            None => return Ok(None),
            Some(Verification::New) => {
                self.commit_audited(work, &audit.clone().user(user_id))
                    .await?;
            }
            // Verified before (by a reset link): the token is used, and
            // nothing else changed to audit or announce.
            Some(Verification::Already) => work.commit().await?,
        }
        Ok(Some(user_id))
    }

    /// Resets the password with a reset token: the token is used up, the
    /// hash replaced, every session of the user revoked (the revocation
    /// feed carries it), and the email counts as verified (the reset link
    /// reached it) — one transaction. The user id, or `None` for a token
    /// unknown, expired or used.
    pub async fn reset_password(
        &self,
        token_hash: &[u8],
        new_hash: &str,
        now: OffsetDateTime,
        audit: &AuditEvent,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        let mut work = self.db().begin().await?;
        let Some((user_id, email_lower)) =
            use_token(&mut work, token_hash, TokenPurpose::ResetPassword, now).await?
        else {
            return Ok(None);
        };
        // The link reached the address: an unverified one is verified now
        // (its own audited fact and event).
        let newly_verified =
            verify_address(&mut work, user_id, &email_lower, now).await? == Some(Verification::New);
        let changed = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "UPDATE credentials SET password_hash = $3, updated_at = $4 \
                 WHERE user_id = $1 AND email_lower = $2 AND status = 'active'",
            )
            .bind(user_id)
            .bind(&email_lower)
            .bind(new_hash)
            .bind(now)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        if !changed {
            return Ok(None);
        }
        let ended = sessions::revoke_every_session(&mut work, user_id, now).await?;
        // Sign-ins waiting for their second factor started with the old
        // password: they end too.
        sessions::end_mfa_challenges(&mut work, user_id).await?;
        let audit = audit
            .clone()
            .user(user_id)
            .detail(format!("password reset; {ended} sessions ended"));
        if newly_verified {
            // Two facts, in this order (UUIDv7 ids and event versions).
            let mut verified = audit.clone().detail("by a password reset link");
            verified.id = Uuid::now_v7();
            verified.kind = AuditKind::EmailVerified;
            let mut reset = audit.clone();
            reset.id = Uuid::now_v7();
            self.commit_all_audited(work, &[&verified, &reset]).await?;
        } else {
            self.commit_audited(work, &audit).await?;
        }
        Ok(Some(user_id))
    }

    /// The user id of the active account with this email (a reset request).
    pub async fn active_account_by_email(
        &self,
        email_lower: &str,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            sqlx::query_scalar(
                "SELECT user_id FROM credentials WHERE email_lower = $1 AND status = 'active'",
            )
            .bind(email_lower)
            .fetch_optional(exec)
            .await
        })
    }

    /// The address and verification state of an active account.
    pub async fn account_email(
        &self,
        user_id: Uuid,
    ) -> Result<Option<(String, bool)>, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            let row = sqlx::query(
                "SELECT email_lower, email_verified_at IS NOT NULL AS verified FROM credentials \
                 WHERE user_id = $1 AND status = 'active'",
            )
            .bind(user_id)
            .fetch_optional(exec)
            .await?;
            row.map(|row| -> Result<(String, bool), sqlx::Error> {
                Ok((row.try_get("email_lower")?, row.try_get("verified")?))
            })
            .transpose()
        })
    }
}

impl AuthStore {
    /// The user and address of a live token of `purpose`, without using it
    /// (a reset checks the new password against the account first).
    pub async fn peek_mailed_token(
        &self,
        token_hash: &[u8],
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<(Uuid, String)>, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            sqlx::query_as(
                "SELECT user_id, email_lower FROM account_tokens \
                 WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
            )
            .bind(token_hash)
            .bind(purpose.as_str())
            .bind(now)
            .fetch_optional(exec)
            .await
        })
    }
}

/// Uses up a live token of `purpose`: its user and the address it was
/// sent to, once.
async fn use_token(
    work: &mut UnitOfWork,
    token_hash: &[u8],
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    on_conn!(work.into(), exec => {
        sqlx::query_as(
            "UPDATE account_tokens SET used_at = $3 \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING user_id, email_lower",
        )
        .bind(token_hash)
        .bind(purpose.as_str())
        .bind(now)
        .fetch_optional(exec)
        .await
    })
}

/// What marking an address verified did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verification {
    /// It was unverified until now.
    New,
    /// It was verified before.
    Already,
}

/// Marks the address of the active credential `user_id` verified at `now`
/// unless it was; `None` when no active credential has that address.
async fn verify_address(
    work: &mut UnitOfWork,
    user_id: Uuid,
    email_lower: &str,
    now: OffsetDateTime,
) -> Result<Option<Verification>, sqlx::Error> {
    let newly = on_conn!(work.into(), exec => {
        sqlx::query(
            "UPDATE credentials SET email_verified_at = $3 \
             WHERE user_id = $1 AND email_lower = $2 AND status = 'active' \
             AND email_verified_at IS NULL",
        )
        .bind(user_id)
        .bind(email_lower)
        .bind(now)
        .execute(exec)
        .await?
        .rows_affected()
            == 1
    });
    if newly {
        return Ok(Some(Verification::New));
    }
    let active: Option<i32> = on_conn!(work.into(), exec => {
        sqlx::query_scalar(
            "SELECT 1 FROM credentials WHERE user_id = $1 AND email_lower = $2 AND status = 'active'",
        )
        .bind(user_id)
        .bind(email_lower)
        .fetch_optional(exec)
        .await?
    });
    Ok(active.map(|_| Verification::Already))
}
