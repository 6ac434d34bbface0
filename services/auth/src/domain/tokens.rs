//! Access tokens (EdDSA JWTs), service tokens and opaque refresh tokens.

use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Header;
use portico_common::jwt::{ALGORITHM, Claims, RoleSet, ServiceIdentity};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::keys::SharedKeyring;

/// Bytes of randomness in a refresh token (256 bits).
const REFRESH_TOKEN_BYTES: usize = 32;

/// Token lifetimes and identity (config key `tokens`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// `iss` of every token; also the base of the discovery document.
    pub issuer: String,
    /// `aud` of user access tokens.
    pub audience: String,
    pub access_token_ttl_secs: i64,
    /// Absolute lifetime of a session.
    pub refresh_token_ttl_secs: i64,
    /// A session unused this long ends.
    pub refresh_idle_timeout_secs: i64,
    /// A rotated refresh token presented again this soon gets the same
    /// successor; later, it revokes the session.
    pub refresh_reuse_grace_secs: i64,
    pub service_token_ttl_secs: i64,
    /// Who this service is in the tokens it presents to other services.
    pub service_name: ServiceIdentity,
}

/// What an access token says about its user beyond the ids.
#[derive(Debug, Clone)]
pub struct TokenFacts {
    pub roles: RoleSet,
    /// The account's email was proven (the `email_verified` claim).
    pub email_verified: bool,
}

/// Signs tokens with the keyring's signing key.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    keyring: Arc<SharedKeyring>,
    settings: TokenSettings,
}

impl TokenIssuer {
    pub fn new(keyring: Arc<SharedKeyring>, settings: TokenSettings) -> Self {
        Self { keyring, settings }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub fn keyring(&self) -> &Arc<SharedKeyring> {
        &self.keyring
    }

    /// Signs with the key that signs at the token's issue time: the same
    /// claims always get the same key, and so (Ed25519) the same token.
    fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let issued_at = OffsetDateTime::from_unix_timestamp(claims.iat)
            .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidToken)?;
        let keyring = self.keyring.current();
        let (kid, key) = keyring.signing_key(issued_at);
        let header = Header {
            kid: Some(kid.to_owned()),
            ..Header::new(ALGORITHM)
        };
        jsonwebtoken::encode(&header, claims, key)
    }

    /// An access token for a user's session, with id `jti`. Ed25519
    /// signatures are deterministic: the same claims give the same token.
    pub fn access_token(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        facts: TokenFacts,
        now: OffsetDateTime,
        jti: Uuid,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.unix_timestamp();
        self.sign(&Claims {
            iss: self.settings.issuer.clone(),
            sub: user_id.to_string(),
            aud: self.settings.audience.clone(),
            exp: iat + self.settings.access_token_ttl_secs,
            iat,
            nbf: iat,
            jti: jti.to_string(),
            sid: Some(session_id.to_string()),
            roles: facts.roles,
            scope: None,
            email_verified: Some(facts.email_verified),
        })
    }

    /// A short-lived service token (OAuth 2.0 client credentials): subject
    /// `service:<client>`, the `service` role, for one `audience`, with
    /// `scope` (space-separated). What `POST /v1/auth/token` issues, and
    /// what auth mints for its own calls to the user service.
    pub fn client_token(
        &self,
        client: &ServiceIdentity,
        audience: &str,
        scope: &str,
        now: OffsetDateTime,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.unix_timestamp();
        self.sign(&Claims {
            iss: self.settings.issuer.clone(),
            sub: client.subject(),
            aud: audience.to_owned(),
            exp: iat + self.settings.service_token_ttl_secs,
            iat,
            nbf: iat,
            jti: Uuid::now_v7().to_string(),
            sid: None,
            roles: RoleSet::service(),
            scope: Some(scope.to_owned()),
            email_verified: None,
        })
    }
}

/// The key that derives a refresh token's successor (`token_secrets`,
/// shared by every replica). Never logged.
#[derive(Clone)]
pub struct RotationKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for RotationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RotationKey([REDACTED])")
    }
}

/// Bytes of a rotation key's secret.
pub const ROTATION_SECRET_BYTES: usize = 32;

impl RotationKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            secret,
        ))
    }

    /// A fresh secret for the first replica to start.
    pub fn generate_secret() -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        let mut secret = vec![0u8; ROTATION_SECRET_BYTES];
        SystemRandom::new().fill(&mut secret)?;
        Ok(secret)
    }

    fn derive(&self, purpose: &[u8], token: &RefreshToken) -> aws_lc_rs::hmac::Tag {
        let mut context = aws_lc_rs::hmac::Context::with_key(&self.0);
        context.update(purpose);
        context.update(token.expose().as_bytes());
        context.sign()
    }
}

/// What a refresh token rotates into: the next refresh token and the id of
/// the access token issued with it. Derived from the presented token under
/// the [`RotationKey`], so asking again gives the same tokens — and nobody
/// holding only an old token can compute its successor.
#[derive(Debug, Clone)]
pub struct Successor {
    pub refresh_token: RefreshToken,
    pub access_token_id: Uuid,
}

/// An opaque refresh token as handed to the client.
#[derive(Debug, Clone)]
pub struct RefreshToken(SecretString);

impl RefreshToken {
    pub fn generate() -> Result<Self, aws_lc_rs::error::Unspecified> {
        let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
        SystemRandom::new().fill(&mut bytes)?;
        Ok(Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes))))
    }

    pub fn from_client(raw: SecretString) -> Self {
        Self(raw)
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The token this one rotates into (see [`Successor`]).
    pub fn successor(&self, key: &RotationKey) -> Successor {
        let next = key.derive(b"portico refresh successor\0", self);
        let jti = key.derive(b"portico access token id\0", self);
        let mut id = [0u8; 16];
        id.copy_from_slice(&jti.as_ref()[..16]);
        Successor {
            refresh_token: Self(SecretString::from(URL_SAFE_NO_PAD.encode(next.as_ref()))),
            access_token_id: uuid::Builder::from_random_bytes(id).into_uuid(),
        }
    }

    /// What is stored: SHA-256 of the token. A plain (unsalted) hash is
    /// enough because the token itself has 256 bits of entropy.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.expose_secret().as_bytes()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_facts() -> TokenFacts {
        TokenFacts {
            roles: RoleSet::new_user(),
            email_verified: false,
        }
    }
    use crate::domain::keys::{Keyring, StoredKey, retention_after_superseded};
    use portico_common::{
        config::ServiceConfig as _,
        jwt::{KeySource, Role, TokenVerifier},
    };

    fn issuer() -> TokenIssuer {
        let now = OffsetDateTime::now_utc();
        let key = StoredKey::generate(1, now, now).unwrap();
        let keyring = Keyring::new(&[key], retention_after_superseded(900)).unwrap();
        TokenIssuer::new(
            Arc::new(SharedKeyring::new(keyring)),
            crate::Config::built_in().tokens,
        )
    }

    fn verifier(issuer: &TokenIssuer, audience: &str) -> TokenVerifier {
        let keyring = issuer.keyring().clone();
        TokenVerifier::new(
            KeySource::Local(Arc::new(move |kid| {
                keyring.current().public_key(kid, OffsetDateTime::now_utc())
            })),
            &issuer.settings().issuer,
            audience,
            Arc::new(portico_common::clock::SystemClock),
        )
    }

    #[tokio::test]
    async fn access_token_carries_the_documented_claims() {
        let issuer = issuer();
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        let now = OffsetDateTime::now_utc();
        let token = issuer
            .access_token(user, session, user_facts(), now, Uuid::now_v7())
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, ALGORITHM);
        assert_eq!(
            header.kid.as_deref(),
            Some(issuer.keyring().current().signing_key(now).0)
        );
        let claims = verifier(&issuer, &issuer.settings().audience)
            .verify(&token)
            .await
            .unwrap();
        assert_eq!(claims.sub, user.to_string());
        assert_eq!(claims.sid, Some(session.to_string()));
        assert_eq!(claims.exp - claims.iat, 15 * 60);
        assert_eq!(claims.roles, RoleSet::new_user());
    }

    #[tokio::test]
    async fn a_client_token_is_not_a_user_token() {
        let issuer = issuer();
        let auth = ServiceIdentity::parse("auth").unwrap();
        let token = issuer
            .client_token(
                &auth,
                "portico-user",
                "users:write",
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        assert!(
            verifier(&issuer, &issuer.settings().audience)
                .verify(&token)
                .await
                .is_err()
        );
        let claims = verifier(&issuer, "portico-user")
            .verify(&token)
            .await
            .unwrap();
        assert!(claims.roles.contains(Role::SERVICE));
        assert!(claims.has_scope("users:write") && !claims.has_scope("users"));
        assert_eq!(claims.sub, "service:auth");
        assert_eq!(claims.sid, None);
        assert_eq!(
            claims.service().map(|s| s.name().to_owned()).as_deref(),
            Some("auth")
        );
    }

    #[test]
    fn a_successor_is_the_same_every_time_and_depends_on_the_key() {
        let token = RefreshToken::generate().unwrap();
        let key = RotationKey::new(&RotationKey::generate_secret().unwrap());
        let (a, b) = (token.successor(&key), token.successor(&key));
        assert_eq!(a.refresh_token.expose(), b.refresh_token.expose());
        assert_eq!(a.access_token_id, b.access_token_id);
        assert_ne!(a.refresh_token.expose(), token.expose());
        let other_key = RotationKey::new(&RotationKey::generate_secret().unwrap());
        assert_ne!(
            token.successor(&other_key).refresh_token.expose(),
            a.refresh_token.expose()
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(a.refresh_token.expose())
                .unwrap()
                .len(),
            32
        );
    }

    #[tokio::test]
    async fn the_same_claims_sign_to_the_same_access_token() {
        let issuer = issuer();
        let (user, session, jti) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let now = OffsetDateTime::now_utc();
        let a = issuer
            .access_token(user, session, user_facts(), now, jti)
            .unwrap();
        let b = issuer
            .access_token(user, session, user_facts(), now, jti)
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let a = RefreshToken::generate().unwrap();
        let b = RefreshToken::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert_eq!(a.hash(), Sha256::digest(a.expose().as_bytes()).to_vec());
        assert_eq!(
            a.hash(),
            RefreshToken::from_client(SecretString::from(a.expose().to_owned())).hash()
        );
    }
}
