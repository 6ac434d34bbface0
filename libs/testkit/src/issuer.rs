//! A token issuer for tests of token *consumers* (gateway, user service):
//! an Ed25519 key whose JWKS is served over real HTTP on a free port, and
//! tokens with any claims — including expired, wrong-audience or tampered
//! ones that the real auth service would never mint.

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use axum::{Json, Router, response::IntoResponse, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "http://portico.test";
pub const AUDIENCE: &str = "portico-api";
/// The user service's internal API audience and the scope that creates
/// profiles (its `internal_api` defaults).
pub const INTERNAL_AUDIENCE: &str = "portico-user";
pub const USERS_WRITE_SCOPE: &str = "users:write";

#[derive(Debug)]
pub struct TestIssuer {
    kid: String,
    key: EncodingKey,
    /// The raw Ed25519 public key, as published (`x`, decoded).
    public_key: Vec<u8>,
    /// URL of the served JWKS.
    pub jwks_url: String,
    /// URL of the served revocation feed (auth's `/internal/revocations`).
    pub revocations_url: String,
    /// Sessions revoked so far: `(sid, revoked_at)`.
    revoked: std::sync::Arc<std::sync::Mutex<Vec<(uuid::Uuid, String)>>>,
    /// While false the JWKS endpoint answers 503 (auth down).
    available: std::sync::Arc<std::sync::atomic::AtomicBool>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format time")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl TestIssuer {
    pub async fn start() -> Self {
        let issuer = Self::start_unavailable().await;
        issuer.set_available(true);
        issuer
    }

    /// An issuer whose JWKS endpoint answers 503 until
    /// [`Self::set_available`] (an auth service that is down).
    pub async fn start_unavailable() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let kid = format!("test-{}", uuid::Uuid::new_v4().simple());
        let jwks = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }]});
        let available = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let serving = available.clone();
        let revoked: std::sync::Arc<std::sync::Mutex<Vec<(uuid::Uuid, String)>>> =
            std::sync::Arc::default();
        let feed = revoked.clone();
        let feed_up = available.clone();
        let app = Router::new()
            .route(
                "/internal/revocations",
                get(move || {
                    // The whole list every time: followers merge it.
                    let items: Vec<Value> = feed
                        .lock()
                        .expect("revocations")
                        .iter()
                        .map(|(sid, at)| json!({"sid": sid, "revoked_at": at}))
                        .collect();
                    let up = feed_up.load(std::sync::atomic::Ordering::SeqCst);
                    async move {
                        if up {
                            Json(json!({"items": items, "now": rfc3339_now(), "complete": true}))
                                .into_response()
                        } else {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                        }
                    }
                }),
            )
            .route(
                "/.well-known/jwks.json",
                get(move || {
                    let jwks = jwks.clone();
                    let up = serving.load(std::sync::atomic::Ordering::SeqCst);
                    async move {
                        if up {
                            Json(jwks).into_response()
                        } else {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            kid,
            key: EncodingKey::from_ed_der(pkcs8.as_ref()),
            public_key: pair.public_key().as_ref().to_vec(),
            jwks_url: format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
            revocations_url: format!("http://127.0.0.1:{port}/internal/revocations"),
            revoked,
            available,
            server,
        }
    }

    /// Revokes session `sid`: the feed lists it from now on.
    pub fn revoke(&self, sid: uuid::Uuid) {
        self.revoked
            .lock()
            .expect("revocations")
            .push((sid, rfc3339_now()));
    }

    /// Turns the JWKS endpoint (and the revocation feed) on or off.
    pub fn set_available(&self, available: bool) {
        self.available
            .store(available, std::sync::atomic::Ordering::SeqCst);
    }

    /// Valid claims for a user's access token (15 minutes).
    pub fn user_claims(&self, user_id: uuid::Uuid) -> Value {
        let now = now();
        json!({
            "iss": ISSUER, "sub": user_id.to_string(), "aud": AUDIENCE,
            "iat": now, "nbf": now, "exp": now + 900,
            "jti": uuid::Uuid::new_v4().to_string(),
            "sid": uuid::Uuid::new_v4().to_string(),
            "roles": ["user"],
        })
    }

    /// Valid claims for a service token.
    pub fn service_claims(&self) -> Value {
        let now = now();
        json!({
            "iss": ISSUER, "sub": "service:auth", "aud": INTERNAL_AUDIENCE,
            "iat": now, "nbf": now, "exp": now + 60,
            "jti": uuid::Uuid::new_v4().to_string(),
            "roles": ["service"],
            "scope": USERS_WRITE_SCOPE,
        })
    }

    /// Id of the served key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` with the served key.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signs `claims` with this issuer's key but names key `kid` in the
    /// header: another issuer's key id on a forged signature.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let header = Header {
            kid: Some(kid.to_owned()),
            ..Header::new(Algorithm::EdDSA)
        };
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }

    /// An unsigned `alg: none` token naming the served key, with valid
    /// claims for `user_id`: only the algorithm is wrong.
    pub fn alg_none_token(&self, user_id: uuid::Uuid) -> String {
        alg_none_token(&self.kid, &self.user_claims(user_id))
    }

    /// Algorithm confusion: valid claims for `user_id`, HS256-signed with
    /// the *public* key as the HMAC secret — once as raw bytes, once as
    /// the JWK's base64url `x` text. A verifier that let the token choose
    /// its algorithm would accept them.
    pub fn hs256_public_key_tokens(&self, user_id: uuid::Uuid) -> [String; 2] {
        let header = Header {
            kid: Some(self.kid.clone()),
            ..Header::new(Algorithm::HS256)
        };
        let claims = self.user_claims(user_id);
        let as_text = URL_SAFE_NO_PAD.encode(&self.public_key);
        [self.public_key.as_slice(), as_text.as_bytes()].map(|secret| {
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).expect("sign")
        })
    }

    pub fn user_token(&self, user_id: uuid::Uuid) -> String {
        self.sign(&self.user_claims(user_id))
    }

    pub fn service_token(&self) -> String {
        self.sign(&self.service_claims())
    }

    /// A token for `user_id` that expired an hour ago.
    pub fn expired_token(&self, user_id: uuid::Uuid) -> String {
        let mut claims = self.user_claims(user_id);
        claims["exp"] = json!(now() - 3600);
        claims["iat"] = json!(now() - 7200);
        claims["nbf"] = json!(now() - 7200);
        self.sign(&claims)
    }

    /// A valid token for another audience.
    pub fn wrong_audience_token(&self, user_id: uuid::Uuid) -> String {
        let mut claims = self.user_claims(user_id);
        claims["aud"] = json!("someone-else");
        self.sign(&claims)
    }
}

/// A JWT's header, unverified (tests read their own tokens).
pub fn header_of(token: &str) -> Value {
    decoded_part(token, 0)
}

/// A JWT's claims, unverified (tests read their own tokens).
pub fn claims_of(token: &str) -> Value {
    decoded_part(token, 1)
}

fn decoded_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// `token` with its payload swapped for another subject, signature kept.
pub fn tampered(token: &str, other_subject: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload = claims_of(token);
    payload["sub"] = json!(other_subject);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("json"));
    parts.join(".")
}

/// An unsigned `alg: none` token naming key `kid`, with `claims`: refused
/// only for its algorithm when the key is known and the claims are valid.
pub fn alg_none_token(kid: &str, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({"alg": "none", "typ": "JWT", "kid": kid})).expect("json"),
    );
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("json"));
    format!("{header}.{payload}.")
}
