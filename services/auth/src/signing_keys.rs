//! The signing-key lifecycle: the first key on an empty database, scheduled
//! and on-demand rotation, reloading what other replicas did, re-sealing
//! under a new key-encryption key, and deleting keys long retired.

use std::{sync::Arc, time::Duration as StdDuration};

use portico_common::clock::SharedClock;
use secrecy::SecretString;
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use crate::{
    domain::{
        audit::{AuditEvent, AuditKind, ClientInfo},
        keys::{KeyEncryption, Keyring, SharedKeyring, StoredKey, retention_after_superseded},
    },
    error::AuthError,
    storage::{AuthStore, SealedKey},
};

/// Config key `signing_keys`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeysConfig {
    /// A new key is made when the newest is this old.
    pub rotate_every_secs: i64,
    /// A new key is published this long before it signs: at least the
    /// verifiers' JWKS cache lifetime, so none meets a token whose key it
    /// has not fetched.
    pub publish_lead_secs: i64,
    /// How often a replica reloads keys (another replica's rotation) and
    /// checks whether a rotation is due.
    pub reload_interval_ms: u64,
    /// The key-encryption key (32 random bytes, base64). Required.
    pub encryption_key: Option<SecretString>,
    /// Earlier KEKs that may still have sealed keys; after one start with
    /// the new KEK every key is re-sealed and these can go.
    pub previous_encryption_keys: Vec<SecretString>,
}

/// How long a key retired for is kept before its row is deleted.
const DELETE_AFTER_RETIRED: Duration = Duration::days(1);

/// Loads, rotates and publishes signing keys.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    store: AuthStore,
    encryption: Arc<KeyEncryption>,
    keyring: Arc<SharedKeyring>,
    clock: SharedClock,
    rotate_every: Duration,
    publish_lead: Duration,
    reload_interval: StdDuration,
    retention: Duration,
}

/// A key made by a rotation.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub kid: String,
    pub signs_from: OffsetDateTime,
}

impl SigningKeys {
    /// The key-encryption keys, for other secrets sealed at rest (TOTP).
    pub fn encryption(&self) -> Arc<KeyEncryption> {
        self.encryption.clone()
    }

    /// Loads the keys (making the first on an empty database) and re-seals
    /// any not under the current KEK.
    pub async fn load(
        store: AuthStore,
        config: &SigningKeysConfig,
        access_token_ttl_secs: i64,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let secret = config
            .encryption_key
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("signing_keys.encryption_key is required"))?;
        let encryption = KeyEncryption::new(secret, &config.previous_encryption_keys)
            .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))?;
        let retention = retention_after_superseded(access_token_ttl_secs);
        if store.sealed_keys().await?.is_empty() {
            // The first key signs at once: nobody has cached a JWKS yet.
            // Replicas starting together collide on generation 1.
            let now = clock.now();
            if insert_sealed(&store, &encryption, StoredKey::generate(1, now, now)?, None).await? {
                tracing::info!("generated the first signing key");
            }
        }
        let keyring = read_keyring(&store, &encryption, retention).await?;
        Ok(Self {
            store,
            encryption: Arc::new(encryption),
            keyring: Arc::new(SharedKeyring::new(keyring)),
            clock,
            rotate_every: Duration::seconds(config.rotate_every_secs),
            publish_lead: Duration::seconds(config.publish_lead_secs),
            reload_interval: StdDuration::from_millis(config.reload_interval_ms),
            retention,
        })
    }

    /// The keyring the issuer signs with and the JWKS shows.
    pub fn keyring(&self) -> &Arc<SharedKeyring> {
        &self.keyring
    }

    /// Reloads the keys from the database and deletes those retired for a
    /// day.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let keyring = read_keyring(&self.store, &self.encryption, self.retention).await?;
        let gone = keyring.retired(self.clock.now() - DELETE_AFTER_RETIRED);
        self.keyring.replace(keyring);
        if !gone.is_empty() {
            let deleted = self.store.delete_keys(&gone).await?;
            tracing::info!(deleted, "retired signing keys deleted");
        }
        Ok(())
    }

    /// Makes the next key, published now and signing after the lead time,
    /// unless one is already waiting to sign (then that one is the answer).
    /// `actor` says who asked (an admin) — the schedule otherwise.
    pub async fn rotate(&self, actor: Option<(String, ClientInfo)>) -> Result<Rotation, AuthError> {
        let internal = |err: anyhow::Error| AuthError::Internal(format!("key rotation: {err:#}"));
        let now = self.clock.now();
        let rows = self.store.sealed_keys().await?;
        if let Some(waiting) = rows.iter().rev().find(|row| row.signs_from > now) {
            return Ok(Rotation {
                kid: waiting.kid.clone(),
                signs_from: waiting.signs_from,
            });
        }
        let generation = rows.last().map_or(1, |row| row.generation + 1);
        let key =
            StoredKey::generate(generation, now, now + self.publish_lead).map_err(internal)?;
        let rotation = Rotation {
            kid: key.kid.clone(),
            signs_from: key.signs_from,
        };
        let (actor, client) =
            actor.unwrap_or_else(|| ("schedule".to_owned(), ClientInfo::default()));
        let event = AuditEvent::new(AuditKind::KeyRotated, now, &client)
            .actor(actor)
            .detail(format!(
                "kid={} signs_from={}",
                rotation.kid, rotation.signs_from
            ));
        if !insert_sealed(&self.store, &self.encryption, key, Some(&event))
            .await
            .map_err(internal)?
        {
            // Another replica made this generation first: that one is next.
            return Box::pin(self.rotate(None)).await;
        }
        tracing::info!(kid = %rotation.kid, signs_from = %rotation.signs_from, "signing key rotated");
        self.reload().await.map_err(internal)?;
        Ok(rotation)
    }

    /// Rotates when the newest key is `rotate_every` old.
    /// Rotates when the newest key is `rotate_every` old; whether it did.
    async fn rotate_if_due(&self) -> Result<bool, AuthError> {
        let newest = self.store.sealed_keys().await?.into_iter().last();
        if newest.is_some_and(|key| key.created_at + self.rotate_every <= self.clock.now()) {
            self.rotate(None).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The scheduled job that keeps the keys current: every
    /// `reload_interval`, rotate when due, then reload (replicas race to
    /// rotate; one generation wins, see [`AuthStore::insert_key`]).
    pub fn maintenance(&self) -> (KeyMaintenance, StdDuration) {
        (KeyMaintenance(self.clone()), self.reload_interval)
    }
}

/// [`SigningKeys::maintenance`], as a `portico_common::jobs::Job`.
pub struct KeyMaintenance(SigningKeys);

impl portico_common::jobs::Job for KeyMaintenance {
    const NAME: &'static str = "signing_key_maintenance";

    async fn run(&self) -> anyhow::Result<portico_common::jobs::Ran> {
        // A failed rotation still lets the reload pick up another
        // replica's keys; the run counts as failed either way.
        let rotated = self.0.rotate_if_due().await;
        let reloaded = self.0.reload().await;
        let rotated = rotated.map_err(|err| anyhow::anyhow!("scheduled key rotation: {err}"))?;
        reloaded.map_err(|err| {
            anyhow::anyhow!("reloading signing keys (the last ones stay): {err:#}")
        })?;
        Ok(portico_common::jobs::Ran {
            handled: u64::from(rotated),
            more: false,
        })
    }
}

/// Seals `key` under the current KEK and inserts it (see
/// [`AuthStore::insert_key`]).
async fn insert_sealed(
    store: &AuthStore,
    encryption: &KeyEncryption,
    key: StoredKey,
    event: Option<&AuditEvent>,
) -> anyhow::Result<bool> {
    let sealed = SealedKey {
        sealed_private: encryption.seal(&key.kid, &key.private_pkcs8)?,
        kek_id: Some(encryption.current_id().to_owned()),
        kid: key.kid,
        generation: key.generation,
        created_at: key.created_at,
        signs_from: key.signs_from,
        public_key: key.public_key,
    };
    Ok(store.insert_key(&sealed, event).await?)
}

/// Reads and opens every key, re-sealing those under an older KEK (or
/// none), and builds the keyring.
async fn read_keyring(
    store: &AuthStore,
    encryption: &KeyEncryption,
    retention: Duration,
) -> anyhow::Result<Keyring> {
    let mut keys = Vec::new();
    for row in store.sealed_keys().await? {
        let private_pkcs8 = match row.kek_id.as_deref() {
            Some(kek_id) => match encryption.open(kek_id, &row.kid, &row.sealed_private) {
                Ok(private) => private,
                // A row this replica cannot open (sealed under a KEK it was
                // not given — a rolling KEK change — or damaged) is left
                // out, not fatal: the others still sign and verify.
                Err(err) => {
                    tracing::warn!(kid = %row.kid, %err, "signing key left out: it does not open");
                    continue;
                }
            },
            // Plain rows predate encryption, when only the first key could
            // exist; a plain row of any later generation is refused.
            None if row.generation == 1 => row.sealed_private.clone(),
            None => {
                tracing::warn!(kid = %row.kid, "signing key left out: not sealed");
                continue;
            }
        };
        if row.kek_id.as_deref() != Some(encryption.current_id()) {
            let sealed = encryption.seal(&row.kid, &private_pkcs8)?;
            if store
                .reseal_key(
                    &row.kid,
                    row.kek_id.as_deref(),
                    &sealed,
                    encryption.current_id(),
                )
                .await?
            {
                tracing::info!(kid = %row.kid, "signing key re-sealed under the current key-encryption key");
            }
        }
        keys.push(StoredKey {
            kid: row.kid,
            generation: row.generation,
            created_at: row.created_at,
            signs_from: row.signs_from,
            private_pkcs8,
            public_key: row.public_key,
        });
    }
    Keyring::new(&keys, retention)
}
