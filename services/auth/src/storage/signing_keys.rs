//! Signing keys as stored: private halves sealed (the domain seals and
//! opens them, storage never sees a plaintext key), one row per generation.

use portico_common::{on_conn, on_db};
use sqlx::Row;
use time::OffsetDateTime;

use super::AuthStore;
use crate::domain::audit::AuditEvent;

/// A signing-key row.
#[derive(Clone)]
pub struct SealedKey {
    pub kid: String,
    pub generation: i64,
    pub created_at: OffsetDateTime,
    pub signs_from: OffsetDateTime,
    /// `nonce || ciphertext || tag` under the KEK `kek_id`; the plain
    /// PKCS#8 when `kek_id` is `None` (rows from before encryption).
    pub sealed_private: Vec<u8>,
    pub kek_id: Option<String>,
    pub public_key: Vec<u8>,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

impl AuthStore {
    /// Every signing key, by generation.
    pub async fn sealed_keys(&self) -> Result<Vec<SealedKey>, sqlx::Error> {
        on_db!(self.db(), pool => {
            let rows = sqlx::query(
                "SELECT kid, generation, created_at, signs_from, private_pkcs8, kek_id, public_key \
                 FROM signing_keys ORDER BY generation",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| -> Result<SealedKey, sqlx::Error> {
                    Ok(SealedKey {
                        kid: row.try_get("kid")?,
                        generation: row.try_get("generation")?,
                        created_at: row.try_get("created_at")?,
                        signs_from: row.try_get("signs_from")?,
                        sealed_private: row.try_get("private_pkcs8")?,
                        kek_id: row.try_get("kek_id")?,
                        public_key: row.try_get("public_key")?,
                    })
                })
                .collect()
        })
    }

    /// Inserts `key` unless its generation exists (another replica
    /// rotated first), recording `event` with it; whether it was inserted.
    pub async fn insert_key(
        &self,
        key: &SealedKey,
        event: Option<&AuditEvent>,
    ) -> Result<bool, sqlx::Error> {
        let mut work = self.db().begin().await?;
        let inserted = on_conn!((&mut work).into(), exec => {
            sqlx::query(
                "INSERT INTO signing_keys \
                 (kid, generation, created_at, signs_from, private_pkcs8, kek_id, public_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (generation) DO NOTHING",
            )
            .bind(&key.kid)
            .bind(key.generation)
            .bind(key.created_at)
            .bind(key.signs_from)
            .bind(&key.sealed_private)
            .bind(key.kek_id.as_deref())
            .bind(&key.public_key)
            .execute(exec)
            .await?
            .rows_affected()
                == 1
        });
        match event {
            Some(event) if inserted => self.commit_audited(work, event).await?,
            _ if inserted => work.commit().await?,
            // Nothing written: the transaction just ends.
            _ => {}
        }
        Ok(inserted)
    }

    /// Re-seals a key (a KEK rotation, or a row from before encryption):
    /// a compare-and-swap on the KEK it was sealed under.
    pub async fn reseal_key(
        &self,
        kid: &str,
        old_kek: Option<&str>,
        sealed: &[u8],
        new_kek: &str,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        on_db!(self.db(), pool => {
            sqlx::query(
                "UPDATE signing_keys SET private_pkcs8 = $3, kek_id = $4 \
                 WHERE kid = $1 AND (kek_id = $2 OR (kek_id IS NULL AND $2 IS NULL))",
            )
            .bind(kid)
            .bind(old_kek)
            .bind(sealed)
            .bind(new_kek)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1)
        })
    }

    /// Deletes retired keys: their tokens have all expired.
    pub async fn delete_keys(&self, kids: &[String]) -> Result<u64, sqlx::Error> {
        let _turn = self.db().write_turn().await;
        let mut deleted = 0;
        for kid in kids {
            deleted += on_db!(self.db(), pool => {
                sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(kid)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        }
        Ok(deleted)
    }
}
