//! The second factor: TOTP authenticators (sealed secrets), recovery codes
//! and the sign-in challenges waiting for a code. Every "use once" is a
//! conditional write, so two requests racing with one code get one yes.

use portico_common::{db::UnitOfWork, on_conn};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AuthStore;
use crate::domain::audit::AuditEvent;

/// A user's TOTP authenticator as stored.
#[derive(Debug, Clone)]
pub struct TotpFactor {
    pub sealed_secret: Vec<u8>,
    pub kek_id: String,
    /// Proven with a code: MFA is on.
    pub confirmed: bool,
    /// Unused recovery codes left.
    pub recovery_codes_left: i64,
}

impl AuthStore {
    /// Enrols (or re-enrols) an unconfirmed authenticator; false when the
    /// user's is confirmed already (MFA is on: disable it first).
    pub async fn enrol_totp(
        &self,
        user_id: Uuid,
        sealed_secret: &[u8],
        kek_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        let stored = on_conn!((self.db()).into(), exec => {
            sqlx::query(
                "INSERT INTO totp_factors (user_id, sealed_secret, kek_id, last_step, created_at) \
                 VALUES ($1, $2, $3, 0, $4) \
                 ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, \
                 kek_id = excluded.kek_id, last_step = 0, created_at = excluded.created_at \
                 WHERE totp_factors.confirmed_at IS NULL",
            )
            .bind(user_id)
            .bind(sealed_secret)
            .bind(kek_id)
            .bind(now)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        Ok(stored)
    }

    /// The user's authenticator, if one is enrolled.
    pub async fn totp_factor(&self, user_id: Uuid) -> Result<Option<TotpFactor>, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            let row = sqlx::query(
                "SELECT sealed_secret, kek_id, confirmed_at IS NOT NULL AS confirmed, \
                 (SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = $1 AND r.used_at IS NULL) AS left_codes \
                 FROM totp_factors WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(exec)
            .await?;
            row.map(|row| -> Result<TotpFactor, sqlx::Error> {
                Ok(TotpFactor {
                    sealed_secret: row.try_get("sealed_secret")?,
                    kek_id: row.try_get("kek_id")?,
                    confirmed: row.try_get("confirmed")?,
                    recovery_codes_left: row.try_get("left_codes")?,
                })
            })
            .transpose()
        })
    }

    /// Authenticators sealed under a KEK other than `current_kek`:
    /// `(user_id, sealed_secret, kek_id)`.
    pub async fn totp_secrets_not_under(
        &self,
        current_kek: &str,
    ) -> Result<Vec<(Uuid, Vec<u8>, String)>, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            sqlx::query("SELECT user_id, sealed_secret, kek_id FROM totp_factors WHERE kek_id <> $1")
                .bind(current_kek)
                .fetch_all(exec)
                .await?
                .iter()
                .map(|row| Ok((row.try_get("user_id")?, row.try_get("sealed_secret")?, row.try_get("kek_id")?)))
                .collect()
        })
    }

    /// Replaces a secret sealed under `old_kek` by its re-sealing under
    /// `new_kek`; false when another replica did it first (or it changed).
    pub async fn reseal_totp(
        &self,
        user_id: Uuid,
        old_kek: &str,
        sealed_secret: &[u8],
        new_kek: &str,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        let updated = on_conn!((self.db()).into(), exec => {
            sqlx::query(
                "UPDATE totp_factors SET sealed_secret = $3, kek_id = $4 WHERE user_id = $1 AND kek_id = $2",
            )
            .bind(user_id)
            .bind(old_kek)
            .bind(sealed_secret)
            .bind(new_kek)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        Ok(updated)
    }

    /// Whether MFA is on for the user.
    pub async fn mfa_enabled(&self, user_id: Uuid) -> Result<bool, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
            )
            .bind(user_id)
            .fetch_one(exec)
            .await
        })
    }

    /// Turns MFA on: the enrolled authenticator (still `sealed_secret`) is
    /// confirmed by a code of time step `step` (used up), its recovery
    /// codes replace any others, `audit` is recorded. False when there is
    /// no such unconfirmed enrolment or the step was used.
    pub async fn confirm_totp(
        &self,
        user_id: Uuid,
        sealed_secret: &[u8],
        step: i64,
        recovery_code_hashes: &[Vec<u8>],
        now: OffsetDateTime,
        audit: &AuditEvent,
    ) -> Result<bool, sqlx::Error> {
        let mut work = self.db().begin().await?;
        // Only the secret the code was checked against: an enrolment
        // replaced meanwhile (another tab) is not turned on unproven.
        let confirmed = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "UPDATE totp_factors SET confirmed_at = $3, last_step = $2 \
                 WHERE user_id = $1 AND confirmed_at IS NULL AND last_step < $2 AND sealed_secret = $4",
            )
            .bind(user_id)
            .bind(step)
            .bind(now)
            .bind(sealed_secret)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        if !confirmed {
            return Ok(false);
        }
        delete_recovery_codes(&mut work, user_id).await?;
        for hash in recovery_code_hashes {
            on_conn!((&mut work).into(), exec => {
                sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                    .bind(user_id)
                    .bind(hash)
                    .execute(exec)
                    .await
                    .map(|_| ())
            })?;
        }
        self.commit_audited(work, audit).await?;
        Ok(true)
    }

    /// Uses time step `step` of the user's confirmed authenticator: true
    /// once, false for a step at or before one used already.
    pub async fn use_totp_step(&self, user_id: Uuid, step: i64) -> Result<bool, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        let used = on_conn!((self.db()).into(), exec => {
            sqlx::query(
                "UPDATE totp_factors SET last_step = $2 \
                 WHERE user_id = $1 AND confirmed_at IS NOT NULL AND last_step < $2",
            )
            .bind(user_id)
            .bind(step)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        Ok(used)
    }

    /// Uses one of the user's recovery codes (by hash): true once.
    pub async fn use_recovery_code(
        &self,
        user_id: Uuid,
        code_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        let used = on_conn!((self.db()).into(), exec => {
            sqlx::query(
                "UPDATE recovery_codes SET used_at = $3 \
                 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
            )
            .bind(user_id)
            .bind(code_hash)
            .bind(now)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        Ok(used)
    }

    /// Turns MFA off: the authenticator, its recovery codes and any
    /// pending challenges go, `audit` is recorded.
    pub async fn disable_totp(
        &self,
        user_id: Uuid,
        audit: &AuditEvent,
    ) -> Result<bool, sqlx::Error> {
        let mut work = self.db().begin().await?;
        // The credential's lock first, as every change that ends in an
        // event takes it (a password change holds it while it clears the
        // challenges this clears too): no lock-order deadlock.
        on_conn!((&mut work).into(), exec => {
            sqlx::query("UPDATE credentials SET event_version = event_version WHERE user_id = $1")
                .bind(user_id)
                .execute(exec)
                .await
                .map(|_| ())
        })?;
        // Only a confirmed authenticator: a second request racing a new
        // enrolment must not take the new one away (nor announce twice).
        let removed = on_conn!((&mut work).into(), exec => {
            sqlx::query("DELETE FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL")
                .bind(user_id)
                .execute(exec)
                .await?
                .rows_affected()
                == 1
        });
        // Its recovery codes and waiting sign-ins go with it.
        delete_recovery_codes(&mut work, user_id).await?;
        super::sessions::end_mfa_challenges(&mut work, user_id).await?;
        if removed {
            self.commit_audited(work, audit).await?;
        } else {
            work.commit().await?;
        }
        Ok(removed)
    }

    /// Stores a sign-in challenge (the token's hash) until `expires_at`,
    /// dropping the user's expired ones.
    pub async fn create_mfa_challenge(
        &self,
        token_hash: &[u8],
        user_id: Uuid,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), sqlx::Error> {
        let mut work = self.db().begin().await?;
        on_conn!((&mut work).into(), exec => {
            sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1 AND expires_at <= $2")
                .bind(user_id)
                .bind(now)
                .execute(exec)
                .await
                .map(|_| ())
        })?;
        on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "INSERT INTO mfa_challenges (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
            )
            .bind(token_hash)
            .bind(user_id)
            .bind(expires_at)
            .execute(exec)
            .await
            .map(|_| ())
        })?;
        work.commit().await
    }

    /// The user of the live challenge with this token hash.
    pub async fn mfa_challenge(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        on_conn!((self.db()).into(), exec => {
            sqlx::query_scalar(
                "SELECT user_id FROM mfa_challenges WHERE token_hash = $1 AND expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(exec)
            .await
        })
    }

    /// Counts a wrong code against the challenge; at `max_failures` it is
    /// dropped (the sign-in starts over, password first).
    pub async fn fail_mfa_challenge(
        &self,
        token_hash: &[u8],
        max_failures: i32,
    ) -> Result<(), sqlx::Error> {
        let mut work = self.db().begin().await?;
        on_conn!((&mut work).into(), exec => {
            sqlx::query("UPDATE mfa_challenges SET failures = failures + 1 WHERE token_hash = $1")
                .bind(token_hash)
                .execute(exec)
                .await
                .map(|_| ())
        })?;
        on_conn!((&mut work).into(), exec => {
            sqlx::query("DELETE FROM mfa_challenges WHERE token_hash = $1 AND failures >= $2")
                .bind(token_hash)
                .bind(max_failures)
                .execute(exec)
                .await
                .map(|_| ())
        })?;
        work.commit().await
    }

    /// Uses the challenge up: true once.
    pub async fn consume_mfa_challenge(&self, token_hash: &[u8]) -> Result<bool, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        let consumed = on_conn!((self.db()).into(), exec => {
            sqlx::query("DELETE FROM mfa_challenges WHERE token_hash = $1")
                .bind(token_hash)
                .execute(exec)
                .await?
                .rows_affected()
                == 1
        });
        Ok(consumed)
    }
}

/// The user's recovery codes, all of them (a new set replaces them; turning
/// MFA off ends them).
async fn delete_recovery_codes(work: &mut UnitOfWork, user_id: Uuid) -> Result<(), sqlx::Error> {
    on_conn!(work.into(), exec => {
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(exec)
            .await
            .map(|_| ())
    })
}
