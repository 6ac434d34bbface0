//! Bearer JWT verification against a cached JWKS, and the claims Portico's
//! tokens carry. (The auth *service* issues tokens; this module only checks
//! them.)
//!
//! The gateway and every service verify tokens themselves (zero trust): no
//! call to the auth service per request, only a JWKS fetch when the cache is
//! stale or a token names a key id it has not seen.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::{
    admin::{CheckFuture, ReadinessCheck},
    clock::SharedClock,
    error::Problem,
    http::client::HttpClient,
};

pub use crate::{
    identity::{Role, RoleSet, ServiceIdentity},
    revocations::{
        RevocationFeed, RevocationStatus, Revocations, RevocationsConfig, RevokedSession,
    },
};

/// The only signing algorithm Portico issues and accepts.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;

/// Claims of a Portico access token (and of service tokens, which have no
/// session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// User id (UUIDv7) or `service:<name>` (see [`ServiceIdentity`]).
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// Session id; absent on service tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default)]
    pub roles: RoleSet,
    /// OAuth 2.0 scopes, space-separated: what a service client's token
    /// (client credentials grant) may do; absent on user tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Whether the user proved their email address (OpenID Connect's
    /// `email_verified`); absent on service tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

impl Claims {
    /// The user id, when the subject is a user (service tokens have
    /// `service:<name>` subjects).
    pub fn user_id(&self) -> Option<uuid::Uuid> {
        uuid::Uuid::parse_str(&self.sub).ok()
    }

    /// The session id of a user's access token.
    pub fn session_id(&self) -> Option<uuid::Uuid> {
        self.sid
            .as_deref()
            .and_then(|sid| uuid::Uuid::parse_str(sid).ok())
    }

    /// Whether the token was granted `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|granted| granted.split(' ').any(|held| held == scope))
    }

    /// The calling service, when this is a service token: a
    /// `service:<name>` subject carrying the service role.
    pub fn service(&self) -> Option<ServiceIdentity> {
        ServiceIdentity::from_subject(&self.sub).filter(|_| self.roles.contains(Role::SERVICE))
    }
}

/// Why a token was refused. All but [`VerifyError::KeysUnavailable`] are the
/// client's fault (401); that one means we could not check (503).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
    #[error("the token's session was revoked")]
    Revoked,
    #[error("not caught up with session revocations yet")]
    RevocationsUnknown,
}

impl VerifyError {
    /// What the client sees; the reason rides along for the log line.
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::Missing => Problem::unauthorized("a bearer token is required"),
            Self::KeysUnavailable(_) | Self::RevocationsUnknown => {
                Problem::service_unavailable("tokens cannot be verified right now; retry shortly")
                    .retry_after(1)
            }
            _ => Problem::unauthorized("the bearer token is invalid or expired"),
        }
        .with_cause(self)
    }
}

/// The token in `Authorization: Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, VerifyError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(VerifyError::Missing)?
        .to_str()
        .map_err(|_| VerifyError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(VerifyError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(VerifyError::Malformed);
    }
    Ok(token.trim())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// Where the auth service publishes its keys.
    pub url: String,
    /// Keys are refetched after this many seconds.
    pub cache_ttl_secs: u64,
    /// A token with an unknown `kid` triggers a refetch at most this often.
    pub min_refresh_interval_secs: u64,
}

/// With no keys at all, nothing can be verified: readiness asks again this
/// often (the per-token refetch bound does not apply; the prober bounds it).
const NO_KEYS_RETRY_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct CachedKeys {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// Public keys fetched from a JWKS URL, kept across fetch failures.
pub struct JwksCache {
    config: JwksConfig,
    client: HttpClient,
    cached: RwLock<CachedKeys>,
    /// One fetch at a time; the others wait for its result.
    refreshing: Mutex<()>,
    /// A background refresh of stale keys is under way.
    refreshing_in_background: AtomicBool,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.config.url)
            .finish()
    }
}

impl JwksCache {
    pub fn new(config: JwksConfig, client: HttpClient) -> Self {
        Self {
            config,
            client,
            cached: RwLock::new(CachedKeys::default()),
            refreshing: Mutex::new(()),
            refreshing_in_background: AtomicBool::new(false),
        }
    }

    fn is_fresh(&self, cached: &CachedKeys) -> bool {
        cached
            .fetched_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(self.config.cache_ttl_secs))
    }

    fn tried_recently(&self, cached: &CachedKeys) -> bool {
        cached.last_attempt.is_some_and(|at| {
            at.elapsed() < Duration::from_secs(self.config.min_refresh_interval_secs)
        })
    }

    /// The key with id `kid`. A known key is answered at once, even when the
    /// set is stale (it is then refreshed in the background, so a slow auth
    /// service never stalls verified traffic); an unknown `kid` waits for a
    /// refetch, at most one every `min_refresh_interval_secs`.
    pub async fn key(self: &Arc<Self>, kid: &str) -> Result<DecodingKey, VerifyError> {
        {
            let cached = self.cached.read().await;
            if let Some(key) = cached.keys.get(kid) {
                if !self.is_fresh(&cached) && !self.tried_recently(&cached) {
                    self.refresh_in_background();
                }
                return Ok(key.clone());
            }
        }
        let _guard = self.refreshing.lock().await;
        {
            // Another task may have refreshed while we waited.
            let cached = self.cached.read().await;
            if let Some(key) = cached.keys.get(kid) {
                return Ok(key.clone());
            }
            if self.tried_recently(&cached) {
                return if cached.fetched_at.is_some() {
                    Err(VerifyError::UnknownKey)
                } else {
                    Err(VerifyError::KeysUnavailable(
                        "JWKS fetch failed recently".into(),
                    ))
                };
            }
        }
        if let Err(err) = self.refresh().await
            && self.cached.read().await.keys.is_empty()
        {
            return Err(VerifyError::KeysUnavailable(err));
        }
        self.cached
            .read()
            .await
            .keys
            .get(kid)
            .cloned()
            .ok_or(VerifyError::UnknownKey)
    }

    /// Makes sure some keys are loaded, fetching them if none are (at most
    /// one fetch every [`NO_KEYS_RETRY_INTERVAL`]). Until then, no token
    /// can be verified and a service that verifies tokens is not ready.
    pub async fn ensure_loaded(&self) -> Result<(), String> {
        if !self.cached.read().await.keys.is_empty() {
            return Ok(());
        }
        let _guard = self.refreshing.lock().await;
        {
            let cached = self.cached.read().await;
            if !cached.keys.is_empty() {
                return Ok(());
            }
            let retry_due = cached
                .last_attempt
                .is_none_or(|at| at.elapsed() >= NO_KEYS_RETRY_INTERVAL);
            if !retry_due {
                return Err("no verification keys yet; the last fetch failed".to_owned());
            }
        }
        self.refresh().await?;
        if self.cached.read().await.keys.is_empty() {
            Err("the key set is empty".to_owned())
        } else {
            Ok(())
        }
    }

    /// The `keys` readiness check: a service that cannot verify tokens
    /// cannot serve its routes.
    pub fn readiness_check(self: &Arc<Self>) -> KeysCheck {
        KeysCheck(Arc::clone(self))
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing_in_background.swap(true, Ordering::SeqCst) {
            return;
        }
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let _guard = cache.refreshing.lock().await;
            let due = {
                let cached = cache.cached.read().await;
                !cache.is_fresh(&cached) && !cache.tried_recently(&cached)
            };
            if due {
                // A failure is logged by refresh; the stale keys stay.
                let _ = cache.refresh().await;
            }
            cache
                .refreshing_in_background
                .store(false, Ordering::SeqCst);
        });
    }

    /// Fetches the set; on failure keeps the keys it had.
    async fn refresh(&self) -> Result<(), String> {
        let fetched = self.fetch().await;
        let mut cached = self.cached.write().await;
        cached.last_attempt = Some(Instant::now());
        let outcome = if fetched.is_ok() { "ok" } else { "error" };
        metrics::counter!("token_jwks_refreshes_total", "outcome" => outcome).increment(1);
        match fetched {
            Ok(keys) => {
                cached.keys = keys;
                cached.fetched_at = Some(Instant::now());
                Ok(())
            }
            Err(err) => {
                tracing::warn!(url = %self.config.url, %err, "JWKS fetch failed; keeping cached keys");
                Err(err)
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let response = self
            .client
            .get(&self.config.url)
            .send()
            .await
            .map_err(|err| err.to_string())?;
        if !response.status().is_success() {
            return Err(format!("JWKS endpoint answered {}", response.status()));
        }
        let set: JwkSet = crate::http::client::json_within(response, MAX_JWKS_BYTES).await?;
        Ok(decoding_keys(&set))
    }
}

/// `keys`: ready once verification keys are loaded.
#[derive(Debug, Clone)]
pub struct KeysCheck(Arc<JwksCache>);

impl ReadinessCheck for KeysCheck {
    fn name(&self) -> &'static str {
        "keys"
    }

    fn check(&self) -> CheckFuture {
        let cache = Arc::clone(&self.0);
        Box::pin(async move { cache.ensure_loaded().await })
    }
}

/// Usable keys of a JWKS: those with a `kid` that parse as keys.
pub fn decoding_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
        })
        .collect()
}

/// What a service needs to verify user access tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim of user access tokens.
    pub audience: String,
    /// Where the public keys come from.
    pub jwks: JwksConfig,
    /// Where revoked sessions come from.
    pub revocations: RevocationsConfig,
    /// Tokens whose signature was verified lately, kept by their exact
    /// text (at most 30 s, never past `exp`) so the same token sent again
    /// costs a lookup rather than a signature check; expiry and revocation
    /// are still checked on every request. 0: every request verified in
    /// full.
    pub verified_cache_entries: usize,
}

impl TokenConfig {
    /// A verifier of user access tokens by these settings, keys from `keys`.
    pub fn verifier(&self, keys: KeySource, clock: SharedClock) -> TokenVerifier {
        let verifier = TokenVerifier::new(keys, &self.issuer, &self.audience, clock);
        if self.verified_cache_entries > 0 {
            verifier.with_verified_cache(self.verified_cache_entries)
        } else {
            verifier
        }
    }
}

/// Looks up an in-process public key by key id.
pub type KeyLookup = Arc<dyn Fn(&str) -> Option<DecodingKey> + Send + Sync>;

/// Where a verifier gets public keys.
#[derive(Clone)]
pub enum KeySource {
    /// A remote JWKS (gateway, user service).
    Remote(Arc<JwksCache>),
    /// Keys held in-process (the auth service verifying its own tokens).
    Local(KeyLookup),
}

/// The most of a JWKS answer read: a few keys take a few KiB, so a larger
/// answer is a fault (or a hostile endpoint), not keys.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 30;

/// Verifies tokens for one issuer and audience.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: KeySource,
    validation: Validation,
    /// `exp` and `nbf` are checked against this clock, not the library's.
    clock: SharedClock,
    /// Revoked sessions; `None` where revocation is not followed.
    revocations: Option<Arc<Revocations>>,
    /// Tokens whose signature was verified lately; `None`: none kept.
    verified: Option<Arc<VerifiedTokens>>,
}

/// Tokens whose signature and claims were checked lately, so a client
/// sending the same token again costs a lookup instead of a signature
/// check. Keyed by the whole token text, so only that exact token hits: a
/// token altered in any byte is verified from scratch (and never kept if it
/// fails). An entry lasts at most [`VerifiedTokens::TTL`] (a key withdrawn
/// from the JWKS stops covering its tokens after that long at most) and
/// never past the token's `exp`; revocation and expiry are checked on every
/// request, hit or not.
#[derive(Debug)]
struct VerifiedTokens {
    entries: std::sync::RwLock<VerifiedEntries>,
    max_entries: usize,
}

/// Claims by token text, with when the token was verified.
type VerifiedEntries = HashMap<Box<str>, (Arc<Claims>, Instant), SignatureTail>;

/// Hashes a token by its last bytes — part of its signature — instead of
/// the whole text (several hundred bytes of SipHash per request). Lookups
/// still compare whole tokens. A forged token made to share a cached
/// token's tail only lands in that entry's bucket: the map holds verified
/// tokens only, and no two of them share a signature, so crafted tails
/// cannot pile entries into one bucket.
#[derive(Debug, Default)]
struct SignatureTail(std::hash::RandomState);

impl SignatureTail {
    const HASHED_BYTES: usize = 32;
}

impl std::hash::BuildHasher for SignatureTail {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher(std::hash::DefaultHasher);

impl std::hash::Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = bytes.len().saturating_sub(SignatureTail::HASHED_BYTES);
        self.0.write(&bytes[tail..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

impl VerifiedTokens {
    const TTL: Duration = Duration::from_secs(30);

    fn get(&self, token: &str) -> Option<Arc<Claims>> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (claims, verified_at) = entries.get(token)?;
        (verified_at.elapsed() < Self::TTL).then(|| claims.clone())
    }

    fn put(&self, token: &str, claims: &Arc<Claims>) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.max_entries {
            // Bounded, simply: only verified tokens get here, so filling
            // it takes that many live tokens in one TTL.
            entries.retain(|_, (_, verified_at)| verified_at.elapsed() < Self::TTL);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(token.into(), (claims.clone(), Instant::now()));
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("aud", &self.validation.aud)
            .finish()
    }
}

impl TokenVerifier {
    pub fn new(keys: KeySource, issuer: &str, audience: &str, clock: SharedClock) -> Self {
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        // Time claims are checked in `verify` against our clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self {
            keys,
            validation,
            clock,
            revocations: None,
            verified: None,
        }
    }

    /// Keeps up to `max_entries` verified tokens for a short while, so a
    /// token sent again is not verified again (see [`VerifiedTokens`]).
    #[must_use]
    pub fn with_verified_cache(mut self, max_entries: usize) -> Self {
        self.verified = Some(Arc::new(VerifiedTokens {
            entries: std::sync::RwLock::new(HashMap::default()),
            max_entries: max_entries.max(1),
        }));
        self
    }

    /// Also refuses tokens of revoked sessions.
    #[must_use]
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Checks signature, algorithm, issuer, audience and time claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.verify_shared(token).await.map(Arc::unwrap_or_clone)
    }

    /// [`Self::verify`], the claims shared with the verified-token cache
    /// rather than copied (a copy is several allocations, per request).
    pub async fn verify_shared(&self, token: &str) -> Result<Arc<Claims>, VerifyError> {
        let cached = self
            .verified
            .as_ref()
            .and_then(|verified| verified.get(token));
        let claims = match cached {
            Some(claims) => claims,
            None => {
                // Boxed: fetching keys makes this future large, and it
                // would otherwise be part of every caller's future (the
                // gateway's per request) even when the cache answers.
                let claims = Arc::new(Box::pin(self.verify_signature(token)).await?);
                if let Some(verified) = &self.verified {
                    verified.put(token, &claims);
                }
                claims
            }
        };
        self.check_current(claims)
    }

    /// What changes with time and revocations: checked on every request.
    fn check_current(&self, claims: Arc<Claims>) -> Result<Arc<Claims>, VerifyError> {
        let now = self.clock.now().unix_timestamp();
        if claims.exp.saturating_add(LEEWAY_SECS) <= now {
            return Err(VerifyError::Rejected("expired".to_owned()));
        }
        if claims.nbf.saturating_sub(LEEWAY_SECS) > now {
            return Err(VerifyError::Rejected("not yet valid".to_owned()));
        }
        if let Some(revocations) = &self.revocations {
            match revocations.status(claims.session_id()) {
                RevocationStatus::Live => {}
                RevocationStatus::Revoked => return Err(VerifyError::Revoked),
                RevocationStatus::Unknown => return Err(VerifyError::RevocationsUnknown),
            }
        }
        Ok(claims)
    }

    /// Header, key, signature, issuer and audience.
    async fn verify_signature(&self, token: &str) -> Result<Claims, VerifyError> {
        // `alg: none` and unknown algorithms fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(VerifyError::UnsupportedAlgorithm);
        }
        let kid = header.kid.ok_or(VerifyError::Malformed)?;
        let key = match &self.keys {
            KeySource::Remote(cache) => cache.key(&kid).await?,
            KeySource::Local(lookup) => lookup(&kid).ok_or(VerifyError::UnknownKey)?,
        };
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| VerifyError::Rejected(err.to_string()))
    }

    /// Verifies the bearer token of a request.
    pub async fn verify_headers(&self, headers: &HeaderMap) -> Result<Arc<Claims>, VerifyError> {
        self.verify_shared(bearer_token(headers)?).await
    }

    /// Like [`Self::verify_headers`], answering with the problem a client
    /// should see (the reason attached for the log line).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Claims, Problem> {
        self.verify_headers(headers)
            .await
            .map(Arc::unwrap_or_clone)
            .map_err(|err| err.to_problem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_requires_the_bearer_scheme() {
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer_token(&headers), Err(VerifyError::Missing)));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(matches!(
            bearer_token(&headers),
            Err(VerifyError::Malformed)
        ));
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers).unwrap(), "abc");
    }

    #[tokio::test]
    async fn a_known_key_answers_at_once_while_a_stale_set_refreshes_in_the_background() {
        use axum::{Json, Router, routing::get};
        use portico_testkit::issuer::{AUDIENCE, ISSUER, TestIssuer};
        use std::sync::atomic::AtomicUsize;

        let issuer = TestIssuer::start().await;
        let jwks: serde_json::Value = reqwest::get(&issuer.jwks_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // A JWKS endpoint that answers once, then never again (a hung auth).
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = Router::new().route(
            "/jwks",
            get(move || {
                let (jwks, counter) = (jwks.clone(), counter.clone());
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) > 0 {
                        std::future::pending::<()>().await;
                    }
                    Json(jwks)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config = JwksConfig {
            url,
            cache_ttl_secs: 0, // always stale
            min_refresh_interval_secs: 0,
        };
        let client = HttpClient::new(&crate::http::client::HttpClientConfig {
            connect_timeout_ms: 1_000,
            request_timeout_ms: 5_000,
        })
        .unwrap();
        let verifier = TokenVerifier::new(
            KeySource::Remote(Arc::new(JwksCache::new(config, client))),
            ISSUER,
            AUDIENCE,
            Arc::new(crate::clock::SystemClock),
        );
        let token = issuer.user_token(uuid::Uuid::now_v7());
        verifier.verify(&token).await.unwrap();

        for _ in 0..3 {
            let answer =
                tokio::time::timeout(Duration::from_secs(2), verifier.verify(&token)).await;
            assert!(
                answer
                    .expect("verification waited for the hung JWKS fetch")
                    .is_ok()
            );
        }
        portico_testkit::eventually(Duration::from_secs(5), "a background refresh", || {
            let seen = calls.load(Ordering::SeqCst);
            async move { (seen >= 2).then_some(()) }
        })
        .await;
    }

    /// A verifier that knows one Ed25519 key, `k`, and a token signer with it.
    fn known_key() -> (TokenVerifier, jsonwebtoken::EncodingKey) {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            pair.public_key().as_ref(),
        );
        let public = DecodingKey::from_ed_components(&x).unwrap();
        let verifier = TokenVerifier::new(
            KeySource::Local(Arc::new(move |kid| (kid == "k").then(|| public.clone()))),
            "iss",
            "aud",
            Arc::new(crate::clock::SystemClock),
        );
        (
            verifier,
            jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
        )
    }

    fn claims() -> serde_json::Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        serde_json::json!({"iss": "iss", "sub": "x", "aud": "aud", "exp": now + 60,
            "iat": now, "nbf": now, "jti": "j", "roles": ["user"]})
    }

    fn encode_part(value: &serde_json::Value) -> String {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            value.to_string(),
        )
    }

    /// A JWKS answer past the bound is refused whole (the keys in it are
    /// not believed) rather than read into memory without end.
    #[tokio::test]
    async fn a_jwks_answer_past_its_bound_is_refused() {
        use axum::{Router, routing::get};
        use portico_testkit::issuer::TestIssuer;

        let issuer = TestIssuer::start().await;
        let jwks = reqwest::get(&issuer.jwks_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // The real keys, then padding the JSON allows (whitespace).
        let oversized = format!("{jwks}{}", " ".repeat(MAX_JWKS_BYTES));
        let app = Router::new().route("/jwks", get(move || async move { oversized }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = HttpClient::new(&crate::http::client::HttpClientConfig {
            connect_timeout_ms: 1_000,
            request_timeout_ms: 5_000,
        })
        .unwrap();
        let cache = JwksCache::new(
            JwksConfig {
                url,
                cache_ttl_secs: 60,
                min_refresh_interval_secs: 0,
            },
            client,
        );

        let loaded = cache.ensure_loaded().await;

        let err = loaded.unwrap_err();
        assert!(err.contains("longer than"), "{err}");
    }

    #[tokio::test]
    async fn a_token_signed_with_the_known_key_is_accepted() {
        let (verifier, signing) = known_key();
        let header = jsonwebtoken::Header {
            kid: Some("k".into()),
            ..jsonwebtoken::Header::new(ALGORITHM)
        };
        let token = jsonwebtoken::encode(&header, &claims(), &signing).unwrap();
        assert_eq!(verifier.verify(&token).await.unwrap().sub, "x");
    }

    #[tokio::test]
    async fn expiry_is_judged_by_the_verifiers_clock() {
        use crate::clock::ManualClock;
        let (verifier, signing) = known_key();
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let verifier = TokenVerifier {
            clock: clock.clone(),
            ..verifier
        };
        let header = jsonwebtoken::Header {
            kid: Some("k".into()),
            ..jsonwebtoken::Header::new(ALGORITHM)
        };
        let token = jsonwebtoken::encode(&header, &claims(), &signing).unwrap();
        assert!(verifier.verify(&token).await.is_ok());
        clock.advance(time::Duration::seconds(60 + LEEWAY_SECS));
        assert!(matches!(
            verifier.verify(&token).await,
            Err(VerifyError::Rejected(reason)) if reason == "expired"
        ));
    }

    fn signed(signing: &jsonwebtoken::EncodingKey) -> String {
        let header = jsonwebtoken::Header {
            kid: Some("k".into()),
            ..jsonwebtoken::Header::new(ALGORITHM)
        };
        jsonwebtoken::encode(&header, &claims(), signing).unwrap()
    }

    #[tokio::test]
    async fn with_the_cache_a_token_altered_in_any_byte_is_still_refused() {
        let (verifier, signing) = known_key();
        let verifier = verifier.with_verified_cache(100);
        let token = signed(&signing);
        assert!(verifier.verify(&token).await.is_ok());
        assert!(verifier.verify(&token).await.is_ok(), "a hit");

        // The same claims with another subject, re-encoded with the old
        // signature; and the signature's last character changed.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut forged_claims = claims();
        forged_claims["sub"] = "admin".into();
        parts[1] = encode_part(&forged_claims);
        let resigned = parts.join(".");
        let mut flipped = token.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });

        for forged in [resigned, flipped] {
            assert!(
                matches!(
                    verifier.verify(&forged).await,
                    Err(VerifyError::Rejected(_))
                ),
                "{forged}"
            );
            // Refused again: a failure is never kept.
            assert!(verifier.verify(&forged).await.is_err());
        }
    }

    #[tokio::test]
    async fn with_the_cache_expiry_is_still_judged_on_every_request() {
        use crate::clock::ManualClock;
        let (verifier, signing) = known_key();
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let verifier = TokenVerifier {
            clock: clock.clone(),
            ..verifier
        }
        .with_verified_cache(100);
        let token = signed(&signing);
        assert!(verifier.verify(&token).await.is_ok());

        clock.advance(time::Duration::seconds(60 + LEEWAY_SECS));

        assert!(matches!(
            verifier.verify(&token).await,
            Err(VerifyError::Rejected(reason)) if reason == "expired"
        ));
    }

    #[test]
    fn the_configured_verifier_keeps_verified_tokens_unless_told_not_to() {
        let config = |entries: usize| -> TokenConfig {
            serde_json::from_value(serde_json::json!({
                "issuer": "iss",
                "audience": "aud",
                "jwks": {"url": "http://127.0.0.1:1/jwks", "cache_ttl_secs": 300,
                         "min_refresh_interval_secs": 5},
                "revocations": {"poll_interval_ms": 250, "retain_secs": 960},
                "verified_cache_entries": entries,
            }))
            .unwrap()
        };
        let keys = || KeySource::Local(Arc::new(|_: &str| None));
        let clock = || -> SharedClock { Arc::new(crate::clock::SystemClock) };
        let kept = config(5).verifier(keys(), clock());
        assert_eq!(
            kept.verified.as_ref().map(|cache| cache.max_entries),
            Some(5)
        );
        assert!(config(0).verifier(keys(), clock()).verified.is_none());
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bound() {
        let (verifier, signing) = known_key();
        let verifier = verifier.with_verified_cache(3);
        for i in 0..10 {
            let mut body = claims();
            body["jti"] = format!("j{i}").into();
            let header = jsonwebtoken::Header {
                kid: Some("k".into()),
                ..jsonwebtoken::Header::new(ALGORITHM)
            };
            let token = jsonwebtoken::encode(&header, &body, &signing).unwrap();
            assert!(verifier.verify(&token).await.is_ok());
        }
        let held = verifier
            .verified
            .as_ref()
            .unwrap()
            .entries
            .read()
            .unwrap()
            .len();
        assert!(held <= 3, "{held} entries");
    }

    #[tokio::test]
    async fn alg_none_token_naming_a_known_key_is_refused_as_malformed() {
        // The key is known and the claims are valid: only `alg` is wrong.
        let (verifier, _) = known_key();
        let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": "k"});
        let token = format!("{}.{}.", encode_part(&header), encode_part(&claims()));
        assert!(matches!(
            verifier.verify(&token).await,
            Err(VerifyError::Malformed)
        ));
    }

    #[tokio::test]
    async fn eddsa_header_with_an_empty_signature_is_rejected() {
        let (verifier, _) = known_key();
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "k"});
        let token = format!("{}.{}.", encode_part(&header), encode_part(&claims()));
        assert!(matches!(
            verifier.verify(&token).await,
            Err(VerifyError::Rejected(_))
        ));
    }

    #[tokio::test]
    async fn hs256_token_naming_a_known_key_is_refused() {
        let (verifier, _) = known_key();
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header {
                kid: Some("k".into()),
                ..jsonwebtoken::Header::new(Algorithm::HS256)
            },
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&token).await,
            Err(VerifyError::UnsupportedAlgorithm)
        ));
    }
}
