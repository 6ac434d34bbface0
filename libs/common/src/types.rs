//! Value types shared by the auth and user services. Parse, don't validate:
//! a value of these types is valid by construction.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The JSON Schema pattern equivalent to [`Email::parse`] (plus
/// `maxLength: 254`), used in the OpenAPI documents.
pub const EMAIL_PATTERN: &str = r"^[\x21-\x3f\x41-\x7e]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$";

/// Longest email address accepted (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;
/// The JSON Schema pattern equivalent to [`DisplayName::parse`] (with
/// `maxLength: 100`): no control characters and at least one non-space.
pub const DISPLAY_NAME_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$";

/// Longest display name, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// An email address with a plausible shape. Comparison for uniqueness uses
/// [`Email::normalized`], so `Ann@X.io` and `ann@x.io` are one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Accepts exactly what [`EMAIL_PATTERN`] (with at most 254 bytes)
    /// describes, so the OpenAPI schema and the server agree: an ASCII local
    /// part without `@` or spaces, and a domain of at least two dot-separated
    /// ASCII labels (internationalised domains in their `xn--` form).
    pub fn parse(raw: &str) -> Result<Self, String> {
        const INVALID: &str = "must be a valid email address";
        if raw.len() > MAX_EMAIL_LEN {
            return Err(format!("must be at most {MAX_EMAIL_LEN} bytes"));
        }
        let (local, domain) = raw.split_once('@').ok_or(INVALID)?;
        let local_ok = (1..=64).contains(&local.len())
            && local.bytes().all(|b| matches!(b, 0x21..=0x7e) && b != b'@');
        let mut labels = domain.split('.');
        let domain_ok = domain.split('.').count() >= 2
            && labels.all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if local_ok && domain_ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(INVALID.to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used for uniqueness and lookups.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: at most 100 characters as sent, not blank, without
/// control characters; stored trimmed. [`DISPLAY_NAME_PATTERN`] is its
/// JSON Schema form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        // The length bound applies to the string as sent (as the schema's
        // maxLength does); surrounding whitespace is then trimmed.
        if raw.chars().count() > MAX_DISPLAY_NAME_CHARS {
            return Err(format!(
                "must be at most {MAX_DISPLAY_NAME_CHARS} characters"
            ));
        }
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be blank".to_owned());
        }
        if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            return Err(format!(
                "must be at most {MAX_DISPLAY_NAME_CHARS} characters"
            ));
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DisplayName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DisplayName> for String {
    fn from(value: DisplayName) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@b.io",
            "first.last+tag@sub.example.com",
            "o'neil@xn--bcher-kva.example",
            "x@1-2.io",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@x.io",
            "a@",
            "a@b",
            "a b@c.io",
            "a@b..io",
            "a@.b.io",
            "a@b.io.",
            " x@y.org",
            "x@y.org ",
            "a@b@c.io",
            "\u{fc}@x.io",
            "a@b\u{fc}cher.example",
            "a\u{7}@x.io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@x.io", "a".repeat(65))).is_err());
        assert!(Email::parse(&format!("a@{}.io", "b".repeat(250))).is_err());
    }

    #[test]
    fn normalization_ignores_letter_case() {
        let a = Email::parse("Ann@Example.COM").unwrap();
        let b = Email::parse("ann@example.com").unwrap();
        assert_eq!(a.normalized(), b.normalized());
        assert_eq!(a.as_str(), "Ann@Example.COM");
    }

    #[test]
    fn display_name_rules() {
        assert_eq!(DisplayName::parse("  Ann ").unwrap().as_str(), "Ann");
        assert!(DisplayName::parse("   ").is_err());
        assert!(
            DisplayName::parse(&format!("a{}", " ".repeat(100))).is_err(),
            "raw length counts"
        );
        assert!(DisplayName::parse("a\u{0007}b").is_err());
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
    }
}
