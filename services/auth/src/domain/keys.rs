//! Ed25519 signing keys and the JWKS that publishes their public halves.

use std::collections::HashMap;

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::Serialize;
use utoipa::ToSchema;

/// A signing key as stored: the private half is PKCS#8 DER.
#[derive(Clone)]
pub struct StoredKey {
    pub kid: String,
    pub private_pkcs8: Vec<u8>,
    pub public_key: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// A fresh Ed25519 key with a random key id.
    pub fn generate() -> anyhow::Result<Self> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|err| anyhow::anyhow!("generated key rejected: {err}"))?;
        Ok(Self {
            kid: uuid::Uuid::now_v7().simple().to_string(),
            private_pkcs8: pkcs8.as_ref().to_vec(),
            public_key: pair.public_key().as_ref().to_vec(),
        })
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

/// The keys this replica signs and verifies with.
#[derive(Clone)]
pub struct Keyring {
    signing_kid: String,
    signing_key: EncodingKey,
    public: HashMap<String, DecodingKey>,
    jwks: Jwks,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("signing_kid", &self.signing_kid)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// `keys` are the active keys, oldest first; the oldest signs.
    pub fn new(keys: &[StoredKey]) -> anyhow::Result<Self> {
        let signing = keys
            .first()
            .ok_or_else(|| anyhow::anyhow!("no signing key"))?;
        let mut public = HashMap::new();
        let mut jwks = Vec::new();
        for key in keys {
            let x = URL_SAFE_NO_PAD.encode(&key.public_key);
            public.insert(key.kid.clone(), DecodingKey::from_ed_components(&x)?);
            jwks.push(Jwk {
                kty: "OKP",
                crv: "Ed25519",
                x,
                kid: key.kid.clone(),
                alg: "EdDSA",
                use_: "sig",
            });
        }
        Ok(Self {
            signing_kid: signing.kid.clone(),
            signing_key: EncodingKey::from_ed_der(&signing.private_pkcs8),
            public,
            jwks: Jwks { keys: jwks },
        })
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    pub fn signing_key(&self) -> &EncodingKey {
        &self.signing_key
    }

    pub fn public_key(&self, kid: &str) -> Option<DecodingKey> {
        self.public.get(kid).cloned()
    }

    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }
}
