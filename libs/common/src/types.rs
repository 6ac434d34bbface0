//! Value types shared by the auth and user services. Parse, don't validate:
//! a value of these types is valid by construction.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest email address accepted (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;
/// Longest display name, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// An email address with a plausible shape. Comparison for uniqueness uses
/// [`Email::normalized`], so `Ann@X.io` and `ann@x.io` are one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim();
        const INVALID: &str = "must be a valid email address";
        if email.is_empty() || email.len() > MAX_EMAIL_LEN {
            return Err(format!("{INVALID} of at most {MAX_EMAIL_LEN} bytes"));
        }
        let (local, domain) = email.rsplit_once('@').ok_or(INVALID)?;
        let plausible = !local.is_empty()
            && local.len() <= 64
            && !domain.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && !local.contains('@')
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        if plausible {
            Ok(Self(email.to_owned()))
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

/// A non-empty display name of at most 100 characters, trimmed, without
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be empty".to_owned());
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
        for ok in ["a@b.io", "first.last+tag@sub.example.com", "  x@y.org "] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "", "plain", "@x.io", "a@", "a@b", "a b@c.io", "a@b..io", "a@.b.io", "a@b.io.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@x.io", "a".repeat(250))).is_err());
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
        assert!(DisplayName::parse("a\u{0007}b").is_err());
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
    }
}
