//! Webhook signatures per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com>): the sender signs
//! `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 under a
//! shared secret and sends `webhook-id`, `webhook-timestamp` (Unix
//! seconds) and `webhook-signature` (`v1,<base64>`, several separated by
//! spaces while a secret is being rotated). A receiver recomputes the
//! signature in constant time and refuses a timestamp outside its
//! tolerance, so a captured delivery cannot be replayed later; within the
//! tolerance, deduplication by `webhook-id` stops a replay.

use aws_lc_rs::hmac;
use axum::http::HeaderMap;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The prefix of a Standard Webhooks secret; the rest is the key, base64.
const SECRET_PREFIX: &str = "whsec_";

/// A signing key, parsed from its `whsec_…` form. Never printed.
#[derive(Clone)]
pub struct SigningSecret(hmac::Key);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    /// `whsec_` and at least 24 bytes (192 bits) of base64 key.
    pub fn parse(secret: &SecretString) -> Result<Self, String> {
        let raw = secret.expose_secret();
        let encoded = raw
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("must start with `{SECRET_PREFIX}`"))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the part after `whsec_` must be base64".to_owned())?;
        if key.len() < 24 {
            return Err("the key must be at least 24 bytes".to_owned());
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    fn tag(&self, id: &str, timestamp: i64, body: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        context.sign()
    }

    /// The `webhook-signature` value for a delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.tag(id, timestamp, body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }
}

/// Why a delivery was refused. The receiver answers each the same way (a
/// sender learns nothing about which check failed); the reason is logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("a webhook header is missing or not text")]
    MissingHeader,
    #[error("the timestamp is not a number")]
    BadTimestamp,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    BadSignature,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, VerifyError> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .ok_or(VerifyError::MissingHeader)
}

/// A verified delivery's id (what the receiver dedupes by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: String,
    pub timestamp: i64,
}

/// Checks a delivery against any of `secrets` (several during a rotation)
/// with the timestamp at most `tolerance_secs` from `now_unix` either way.
pub fn verify(
    secrets: &[SigningSecret],
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<Verified, VerifyError> {
    let id = header(headers, ID_HEADER)?;
    let timestamp: i64 = header(headers, TIMESTAMP_HEADER)?
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if now_unix.abs_diff(timestamp) > tolerance_secs.unsigned_abs() {
        return Err(VerifyError::Stale);
    }
    let signatures = header(headers, SIGNATURE_HEADER)?;
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .filter_map(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .collect();
    for secret in secrets {
        let message = [
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ]
        .concat();
        // hmac::verify compares in constant time.
        if candidates
            .iter()
            .any(|candidate| hmac::verify(&secret.0, &message, candidate).is_ok())
        {
            return Ok(Verified {
                id: id.to_owned(),
                timestamp,
            });
        }
    }
    Err(VerifyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// The example of the Standard Webhooks specification's reference
    /// libraries: this secret, id, timestamp and body sign to this value.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret(raw: &str) -> SigningSecret {
        SigningSecret::parse(&SecretString::from(raw.to_owned())).unwrap()
    }

    fn headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ID_HEADER, HeaderValue::from_str(id).unwrap());
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
        headers
    }

    #[test]
    fn signs_as_the_specification_does() {
        assert_eq!(
            secret(SPEC_SECRET).sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn a_signed_delivery_verifies_within_the_tolerance() {
        let secrets = [secret(SPEC_SECRET)];
        let delivery = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE);
        let verified = verify(&secrets, &delivery, SPEC_BODY, SPEC_TIMESTAMP + 299, 300).unwrap();
        assert_eq!(verified.id, SPEC_ID);
        // Several signatures (a rotation): any one that matches will do.
        let rotated = headers(
            SPEC_ID,
            SPEC_TIMESTAMP,
            &format!("v1,bm9wZQ== {SPEC_SIGNATURE}"),
        );
        assert!(verify(&secrets, &rotated, SPEC_BODY, SPEC_TIMESTAMP, 300).is_ok());
    }

    #[test]
    fn forged_altered_or_replayed_deliveries_are_refused() {
        let secrets = [secret(SPEC_SECRET)];
        let good = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE);
        let other_secret = secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let forged = headers(
            SPEC_ID,
            SPEC_TIMESTAMP,
            &other_secret.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
        );
        let at = SPEC_TIMESTAMP;
        assert_eq!(
            verify(&secrets, &forged, SPEC_BODY, at, 300),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&secrets, &good, br#"{"test": 1}"#, at, 300),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&secrets, &good, SPEC_BODY, at + 301, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&secrets, &good, SPEC_BODY, at - 301, 300),
            Err(VerifyError::Stale)
        );
        let moved = headers(SPEC_ID, at + 1, SPEC_SIGNATURE);
        assert_eq!(
            verify(&secrets, &moved, SPEC_BODY, at, 300),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&secrets, &HeaderMap::new(), SPEC_BODY, at, 300),
            Err(VerifyError::MissingHeader)
        );
    }

    #[test]
    fn secrets_must_have_the_prefix_and_a_long_enough_key() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_short",
            "whsec_***",
        ] {
            assert!(
                SigningSecret::parse(&SecretString::from(bad.to_owned())).is_err(),
                "{bad}"
            );
        }
        assert_eq!(format!("{:?}", secret(SPEC_SECRET)), "SigningSecret(..)");
    }
}
