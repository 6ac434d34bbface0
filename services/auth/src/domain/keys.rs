//! Ed25519 signing keys: their schedule (published ahead, signing, retired
//! once their tokens have expired), their encryption at rest, and the JWKS
//! that publishes their public halves.

use std::sync::{Arc, RwLock};

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
    signature::{Ed25519KeyPair, KeyPair},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{DecodingKey, EncodingKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

/// A signing key as the service holds it: the private half is PKCS#8 DER,
/// in memory only (storage keeps it sealed, see [`KeyEncryption`]).
#[derive(Clone)]
pub struct StoredKey {
    pub kid: String,
    /// 1 for the first key, one more for each rotation: replicas racing to
    /// rotate collide on it, so exactly one new key is made.
    pub generation: i64,
    pub created_at: OffsetDateTime,
    /// When it starts signing; until then it is only published, so every
    /// verifier's cached JWKS knows it before the first token it signs.
    pub signs_from: OffsetDateTime,
    pub private_pkcs8: Vec<u8>,
    pub public_key: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("signs_from", &self.signs_from)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// A fresh Ed25519 key with a random key id.
    pub fn generate(
        generation: i64,
        created_at: OffsetDateTime,
        signs_from: OffsetDateTime,
    ) -> anyhow::Result<Self> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|err| anyhow::anyhow!("generated key rejected: {err}"))?;
        Ok(Self {
            kid: uuid::Uuid::now_v7().simple().to_string(),
            generation,
            created_at,
            signs_from,
            private_pkcs8: pkcs8.as_ref().to_vec(),
            public_key: pair.public_key().as_ref().to_vec(),
        })
    }
}

/// Bytes of a key-encryption key (AES-256).
pub const KEK_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// One key-encryption key and its public id.
struct Kek {
    /// The first 8 bytes of its SHA-256, in hex: names which KEK sealed a
    /// row without revealing anything about it.
    id: String,
    key: LessSafeKey,
}

/// Seals signing keys' private halves at rest: AES-256-GCM under a
/// key-encryption key from config, the `kid` as associated data (a sealed
/// key copied onto another row does not open). Older KEKs still open what
/// they sealed, so the KEK can be rotated: storage re-seals such rows
/// under the current KEK when it loads them.
pub struct KeyEncryption {
    current: Kek,
    previous: Vec<Kek>,
}

impl std::fmt::Debug for KeyEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEncryption")
            .field("current", &self.current.id)
            .finish_non_exhaustive()
    }
}

/// Why a sealed key could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("no configured key-encryption key has id `{0}`")]
    UnknownKek(String),
    #[error("the sealed key does not open (wrong KEK, another key's row, or tampered)")]
    Corrupt,
    #[error("randomness unavailable")]
    Randomness,
}

impl Kek {
    fn from_secret(secret: &SecretString) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(secret.expose_secret().trim())
            .map_err(|_| "must be base64 (`openssl rand -base64 32`)".to_owned())?;
        if bytes.len() != KEK_BYTES {
            return Err(format!("must be {KEK_BYTES} bytes once base64-decoded"));
        }
        let digest = Sha256::digest(&bytes);
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| "not a usable AES-256 key".to_owned())?;
        Ok(Self {
            id,
            key: LessSafeKey::new(key),
        })
    }
}

impl KeyEncryption {
    /// The current KEK and the previous ones (that may still have sealed
    /// rows). The error says what is wrong with which (by position).
    pub fn new(
        current: &SecretString,
        previous: &[SecretString],
    ) -> Result<Self, (String, String)> {
        let current = Kek::from_secret(current)
            .map_err(|err| ("signing_keys.encryption_key".to_owned(), err))?;
        let previous = previous
            .iter()
            .enumerate()
            .map(|(i, secret)| {
                Kek::from_secret(secret)
                    .map_err(|err| (format!("signing_keys.previous_encryption_keys[{i}]"), err))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { current, previous })
    }

    /// The id of the KEK new rows are sealed under.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// `nonce || ciphertext || tag` of `private_pkcs8`, bound to `kid`.
    pub fn seal(&self, kid: &str, private_pkcs8: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Randomness)?;
        let mut sealed = private_pkcs8.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SealError::Corrupt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a row sealed under the KEK with id `kek_id`.
    pub fn open(&self, kek_id: &str, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let kek = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|kek| kek.id == kek_id)
            .ok_or_else(|| SealError::UnknownKek(kek_id.to_owned()))?;
        if sealed.len() < NONCE_BYTES {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Corrupt)?;
        let mut buffer = ciphertext.to_vec();
        let plain = kek
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buffer)
            .map_err(|_| SealError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

/// One public key in JWK form (RFC 8037, OKP/Ed25519).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Jwk {
    #[schema(example = "OKP")]
    pub kty: &'static str,
    #[schema(example = "Ed25519")]
    pub crv: &'static str,
    /// Base64url public key.
    pub x: String,
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub alg: &'static str,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: &'static str,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// How long a key stays published after it stopped signing: every token
/// it signed has expired by then (the access-token lifetime), allowing for
/// verifiers' leeway (30 s) and clock skew between hosts.
pub fn retention_after_superseded(access_token_ttl_secs: i64) -> Duration {
    Duration::seconds(access_token_ttl_secs) + Duration::seconds(90)
}

/// One key with what verifying and signing need.
#[derive(Clone)]
struct LoadedKey {
    kid: String,
    signs_from: OffsetDateTime,
    signing_key: EncodingKey,
    decoding_key: DecodingKey,
    jwk: Jwk,
}

/// The keys this replica signs and verifies with, and the schedule that
/// says, for any moment, which one signs and which are published. Every
/// replica reads the same rows and so makes the same choice.
#[derive(Clone)]
pub struct Keyring {
    /// By `signs_from`, oldest first.
    keys: Vec<LoadedKey>,
    retention: Duration,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// `retention`: see [`retention_after_superseded`].
    pub fn new(keys: &[StoredKey], retention: Duration) -> anyhow::Result<Self> {
        if keys.is_empty() {
            anyhow::bail!("no signing key");
        }
        let mut loaded = keys
            .iter()
            .map(|key| -> anyhow::Result<LoadedKey> {
                let x = URL_SAFE_NO_PAD.encode(&key.public_key);
                Ok(LoadedKey {
                    kid: key.kid.clone(),
                    signs_from: key.signs_from,
                    signing_key: EncodingKey::from_ed_der(&key.private_pkcs8),
                    decoding_key: DecodingKey::from_ed_components(&x)?,
                    jwk: Jwk {
                        kty: "OKP",
                        crv: "Ed25519",
                        x,
                        kid: key.kid.clone(),
                        alg: "EdDSA",
                        use_: "sig",
                    },
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        loaded.sort_by(|a, b| (a.signs_from, &a.kid).cmp(&(b.signs_from, &b.kid)));
        Ok(Self {
            keys: loaded,
            retention,
        })
    }

    /// Index of the key that signs at `at`: the latest to have started
    /// signing (the oldest key if none has, which only a clock set before
    /// the first key's creation can cause).
    fn signing_index(&self, at: OffsetDateTime) -> usize {
        self.keys
            .iter()
            .rposition(|key| key.signs_from <= at)
            .unwrap_or(0)
    }

    /// The key id and key that sign tokens issued at `at`.
    pub fn signing_key(&self, at: OffsetDateTime) -> (&str, &EncodingKey) {
        let key = &self.keys[self.signing_index(at)];
        (&key.kid, &key.signing_key)
    }

    /// Whether the key `i` is published at `at`: it signs, will sign, or
    /// stopped signing (when its successor started) less than the
    /// retention ago.
    fn is_published(&self, i: usize, at: OffsetDateTime) -> bool {
        let signing = self.signing_index(at);
        i >= signing || self.keys[i + 1].signs_from + self.retention > at
    }

    /// Keys that verify at `at` (the published ones).
    pub fn public_key(&self, kid: &str, at: OffsetDateTime) -> Option<DecodingKey> {
        let i = self.keys.iter().position(|key| key.kid == kid)?;
        self.is_published(i, at)
            .then(|| self.keys[i].decoding_key.clone())
    }

    /// The JWKS at `at`: the signing key, the ones about to sign, and the
    /// retired ones whose tokens may still be valid.
    pub fn jwks(&self, at: OffsetDateTime) -> Jwks {
        Jwks {
            keys: (0..self.keys.len())
                .filter(|&i| self.is_published(i, at))
                .map(|i| self.keys[i].jwk.clone())
                .collect(),
        }
    }

    /// Kids no longer published at `at` (their rows may be deleted).
    pub fn retired(&self, at: OffsetDateTime) -> Vec<String> {
        (0..self.keys.len())
            .filter(|&i| !self.is_published(i, at))
            .map(|i| self.keys[i].kid.clone())
            .collect()
    }
}

/// The current keyring, swapped whole when keys are reloaded.
#[derive(Debug)]
pub struct SharedKeyring(RwLock<Arc<Keyring>>);

impl SharedKeyring {
    pub fn new(keyring: Keyring) -> Self {
        Self(RwLock::new(Arc::new(keyring)))
    }

    pub fn current(&self) -> Arc<Keyring> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, keyring: Keyring) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keyring);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: i64 = 900;

    fn at(minutes: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000) + Duration::minutes(minutes)
    }

    fn key(generation: i64, signs_from: OffsetDateTime) -> StoredKey {
        StoredKey::generate(generation, signs_from, signs_from).unwrap()
    }

    fn kids(jwks: &Jwks) -> Vec<&str> {
        jwks.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    #[test]
    fn a_new_key_is_published_first_signs_later_and_the_old_one_retires_after_the_ttl() {
        let old = key(1, at(0));
        // Made at minute 100, signing from minute 110 (ten minutes' lead).
        let new = key(2, at(110));
        let ring =
            Keyring::new(&[new.clone(), old.clone()], retention_after_superseded(TTL)).unwrap();

        // Before the switch: the old key signs, both are published.
        assert_eq!(ring.signing_key(at(109)).0, old.kid);
        assert_eq!(
            kids(&ring.jwks(at(109))),
            [old.kid.as_str(), new.kid.as_str()]
        );
        // From the switch the new key signs; the old one still verifies.
        assert_eq!(ring.signing_key(at(110)).0, new.kid);
        assert!(
            ring.public_key(&old.kid, at(110) + Duration::seconds(TTL))
                .is_some()
        );
        // Once every token the old key signed has expired, it is gone.
        let gone = at(110) + retention_after_superseded(TTL);
        assert!(ring.public_key(&old.kid, gone).is_none());
        assert_eq!(kids(&ring.jwks(gone)), [new.kid.as_str()]);
        assert_eq!(ring.retired(gone), std::slice::from_ref(&old.kid));
        assert!(ring.retired(gone - Duration::seconds(1)).is_empty());
    }

    #[test]
    fn unknown_kids_never_verify() {
        let ring = Keyring::new(&[key(1, at(0))], retention_after_superseded(TTL)).unwrap();
        assert!(ring.public_key("someone-elses", at(1)).is_none());
    }

    fn encryption(secret: &str, previous: &[&str]) -> KeyEncryption {
        let previous: Vec<SecretString> = previous.iter().map(|p| SecretString::from(*p)).collect();
        KeyEncryption::new(&SecretString::from(secret), &previous).unwrap()
    }

    const KEK_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEK_B: &str = "HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

    #[test]
    fn sealed_keys_open_only_under_their_kek_and_kid() {
        let kek = encryption(KEK_A, &[]);
        let key = key(1, at(0));
        let sealed = kek.seal(&key.kid, &key.private_pkcs8).unwrap();
        assert!(
            !sealed
                .windows(16)
                .any(|w| key.private_pkcs8.windows(16).any(|p| p == w))
        );
        assert_eq!(
            kek.open(kek.current_id(), &key.kid, &sealed).unwrap(),
            key.private_pkcs8
        );
        // Another row's kid, a flipped bit, an unknown KEK: refused.
        assert!(matches!(
            kek.open(kek.current_id(), "other", &sealed),
            Err(SealError::Corrupt)
        ));
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(matches!(
            kek.open(kek.current_id(), &key.kid, &tampered),
            Err(SealError::Corrupt)
        ));
        assert!(matches!(
            kek.open("0000000000000000", &key.kid, &sealed),
            Err(SealError::UnknownKek(_))
        ));
    }

    #[test]
    fn a_previous_kek_still_opens_what_it_sealed() {
        let old = encryption(KEK_A, &[]);
        let key = key(1, at(0));
        let sealed = old.seal(&key.kid, &key.private_pkcs8).unwrap();
        let rotated = encryption(KEK_B, &[KEK_A]);
        assert_ne!(rotated.current_id(), old.current_id());
        assert_eq!(
            rotated.open(old.current_id(), &key.kid, &sealed).unwrap(),
            key.private_pkcs8
        );
        let without = encryption(KEK_B, &[]);
        assert!(without.open(old.current_id(), &key.kid, &sealed).is_err());
    }

    #[test]
    fn keks_must_be_32_bytes_of_base64() {
        for bad in ["", "not base64!", "AAECAwQ="] {
            let err = KeyEncryption::new(&SecretString::from(bad), &[]).unwrap_err();
            assert_eq!(err.0, "signing_keys.encryption_key");
        }
        let err =
            KeyEncryption::new(&SecretString::from(KEK_A), &[SecretString::from("x")]).unwrap_err();
        assert_eq!(err.0, "signing_keys.previous_encryption_keys[0]");
    }
}
