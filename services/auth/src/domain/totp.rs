//! Time-based one-time passwords (RFC 6238: HOTP, RFC 4226, over 30-second
//! steps; HMAC-SHA-1 and six digits, what every authenticator app reads
//! from an `otpauth://` URI) and the single-use recovery codes that stand
//! in for the app. No I/O: storage keeps the secret sealed and the last
//! step used.

use aws_lc_rs::{
    constant_time::verify_slices_are_equal,
    hmac,
    rand::{SecureRandom, SystemRandom},
};
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Seconds per time step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps either side of now a code may come from: a clock a little off
/// (or a code typed as it turned over) still works.
const SKEW_STEPS: i64 = 1;
/// 160 bits, the HMAC-SHA-1 block the RFC recommends.
const SECRET_BYTES: usize = 20;
/// Recovery codes made at once.
pub const RECOVERY_CODES: usize = 10;
/// Base32 characters of a recovery code (80 bits).
const RECOVERY_CODE_CHARS: usize = 16;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

#[derive(Debug, thiserror::Error)]
#[error("randomness unavailable")]
pub struct Randomness;

/// A user's TOTP secret. Redacted in `Debug`; sealed at rest.
pub struct TotpSecret(SecretBox<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(…)")
    }
}

impl TotpSecret {
    pub fn generate() -> Result<Self, Randomness> {
        let mut bytes = vec![0u8; SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Randomness)?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// The raw secret, for sealing.
    pub fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// Base32 without padding: what a user types into an app by hand.
    pub fn base32(&self) -> String {
        base32(self.bytes())
    }

    /// The `otpauth://` URI an authenticator app reads (as a QR code):
    /// labelled `issuer:account`, with the issuer repeated as a parameter.
    pub fn uri(&self, issuer: &str, account: &str) -> String {
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            percent_encode(issuer),
            percent_encode(account),
            self.base32(),
            percent_encode(issuer),
        )
    }

    /// The code of time step `step` (RFC 4226 §5.3 dynamic truncation).
    fn code_at(&self, step: i64) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, self.bytes());
        let tag = hmac::sign(&key, &step.to_be_bytes());
        let digest = tag.as_ref();
        let offset = usize::from(digest[digest.len() - 1] & 0x0f);
        let binary = u32::from_be_bytes([
            digest[offset] & 0x7f,
            digest[offset + 1],
            digest[offset + 2],
            digest[offset + 3],
        ]);
        format!(
            "{:0width$}",
            binary % 10u32.pow(DIGITS as u32),
            width = DIGITS
        )
    }

    /// The time step (within the allowed skew of `now`) whose code `code`
    /// is; `None` if none. Every candidate is compared in constant time.
    /// The caller accepts a step only once (storage keeps the last).
    pub fn matching_step(&self, code: &str, now: OffsetDateTime) -> Option<i64> {
        let code = code.trim();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = step_of(now);
        let mut found = None;
        for step in current - SKEW_STEPS..=current + SKEW_STEPS {
            if verify_slices_are_equal(self.code_at(step).as_bytes(), code.as_bytes()).is_ok() {
                found = found.or(Some(step));
            }
        }
        found
    }
}

/// The time step `at` falls in.
pub fn step_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(STEP_SECS)
}

/// A fresh set of recovery codes, as shown to the user once
/// (`xxxx-xxxx-xxxx-xxxx`, lower-case base32).
pub fn recovery_codes() -> Result<Vec<String>, Randomness> {
    let random = SystemRandom::new();
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; RECOVERY_CODE_CHARS];
            random.fill(&mut bytes).map_err(|_| Randomness)?;
            let chars: Vec<char> = bytes
                .iter()
                .map(|b| char::from(BASE32[usize::from(b % 32)]).to_ascii_lowercase())
                .collect();
            Ok(chars
                .chunks(4)
                .map(|group| group.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-"))
        })
        .collect()
}

/// What is stored of a recovery code: SHA-256 of its normalised form (the
/// code is 80 random bits, so a fast hash is enough — as for refresh
/// tokens). Letter case, dashes and spaces do not matter when typed.
pub fn recovery_code_hash(code: &str) -> Vec<u8> {
    let normalised: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Sha256::digest(normalised.as_bytes()).to_vec()
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec())
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    /// RFC 6238 appendix B (SHA-1), the last six of its eight digits.
    #[test]
    fn codes_match_the_rfc_test_vectors() {
        for (unix, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(rfc_secret().code_at(step_of(at(unix))), code, "T = {unix}");
        }
    }

    #[test]
    fn a_code_matches_within_one_step_either_side_and_not_beyond() {
        let secret = rfc_secret();
        let now = at(1_111_111_111);
        let step = step_of(now);
        let previous = secret.code_at(step - 1);
        let next = secret.code_at(step + 1);
        let stale = secret.code_at(step - 2);
        assert_eq!(secret.matching_step(&previous, now), Some(step - 1));
        assert_eq!(secret.matching_step(&next, now), Some(step + 1));
        assert_eq!(secret.matching_step(&stale, now), None);
        assert_eq!(secret.matching_step("12345", now), None);
        assert_eq!(secret.matching_step("12345a", now), None);
    }

    #[test]
    fn base32_and_uri_follow_rfc_4648_and_the_key_uri_format() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        let uri = rfc_secret().uri("Portico Dev", "ann@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Portico%20Dev:ann%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Portico%20Dev&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn recovery_codes_are_ten_distinct_and_hash_the_same_however_typed() {
        let codes = recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert!(
            codes
                .iter()
                .all(|c| c.len() == 19 && c.matches('-').count() == 3)
        );
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        let typed = codes[0].to_uppercase().replace('-', " ");
        assert_eq!(recovery_code_hash(&typed), recovery_code_hash(&codes[0]));
        assert_ne!(recovery_code_hash(&codes[1]), recovery_code_hash(&codes[0]));
    }
}
