//! Value types shared by the auth and user services. Parse, don't validate:
//! a value of these types is valid by construction.
//!
//! Each type also gives the JSON Schema of its rules ([`email_schema`],
//! [`display_name_schema`]), which request bodies use with
//! `#[schema(schema_with = ...)]`, so the OpenAPI documents state the rules
//! from the same constants the validators use.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// The JSON Schema pattern equivalent to [`Email::parse`] (plus
/// `maxLength: 254`), used in the OpenAPI documents.
pub const EMAIL_PATTERN: &str = r"^[\x21-\x3f\x41-\x7e]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$";

/// Longest email address accepted (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// The JSON Schema pattern equivalent to [`DisplayName::parse`] (with
/// `maxLength: 100`): no control characters, no bidirectional embedding,
/// override or isolate controls, and at least one visible character.
///
/// "Blank" is spelled out as Unicode `White_Space` (what `str::trim`
/// removes) rather than `\s`, whose meaning differs between regex dialects
/// (ECMAScript's includes U+FEFF); "invisible" adds the characters that
/// render as nothing ([`is_invisible`]).
pub const DISPLAY_NAME_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*[^\u0000-\u0020\u007f-\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0][^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$";

/// Bidirectional embedding, override and isolate controls: they reorder
/// what follows them, so a name can display as something else (the
/// "Trojan Source" trick). The marks (U+200E, U+200F, U+061C) only nudge
/// neutral characters and are let be.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Characters that render as nothing: white space, zero-width characters
/// and joiners, the BOM, invisible operators, variation selectors and the
/// blank fillers (Hangul, Braille) used to fake an empty name. Only the
/// Basic Multilingual Plane, so the JSON Schema pattern can state it.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{061c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2060}'..='\u{2064}'
                | '\u{206a}'..='\u{206f}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
        )
}

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// An email address with a plausible shape. Comparison for uniqueness uses
/// [`Email::normalized`], so `Ann@X.io` and `ann@x.io` are one account.
///
/// The address is kept as the user typed it (for display and mail); every
/// comparison goes through [`Email::normalize`], the one normalisation.
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
        Self::normalize(&self.0)
    }

    /// The one normalisation of an address for comparison: letter case is
    /// ignored. The accepted syntax is ASCII only, so ASCII folding is the
    /// whole of it. Also used on stored addresses read back as text.
    pub fn normalize(address: &str) -> String {
        address.to_ascii_lowercase()
    }
}

/// The JSON Schema of an email field: [`EMAIL_PATTERN`], at most
/// [`MAX_EMAIL_LEN`] characters.
pub fn email_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Unique whatever its letter case. ASCII local part; internationalised \
             domains in their `xn--` form.",
        ))
        .max_length(Some(MAX_EMAIL_LEN))
        .pattern(Some(EMAIL_PATTERN))
        .examples(["ann@example.com"])
        .build()
}

/// The JSON Schema of a display-name field: [`DISPLAY_NAME_PATTERN`],
/// 1–[`MAX_DISPLAY_NAME_CHARS`] characters as sent.
pub fn display_name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "1–100 characters with a visible one; no control characters and no bidirectional embedding, override or isolate controls; stored trimmed.",
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_DISPLAY_NAME_CHARS))
        .pattern(Some(DISPLAY_NAME_PATTERN))
        .examples(["Ann"])
        .build()
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
        // Control characters count wherever they are, even where trimming
        // would remove them (a leading tab or NEL): the schema says so too.
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        if raw.chars().any(is_bidi_control) {
            return Err(
                "must not contain bidirectional embedding, override or isolate controls".to_owned(),
            );
        }
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be blank".to_owned());
        }
        if name.chars().all(is_invisible) {
            return Err("must contain a visible character".to_owned());
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
    use portico_testkit::fields;

    fn schema_json(schema: Object) -> serde_json::Value {
        serde_json::to_value(schema).unwrap()
    }

    #[test]
    fn the_email_schema_accepts_exactly_what_the_validator_accepts() {
        fields::assert_schema_agrees_with_validator(
            &schema_json(email_schema()),
            |raw| Email::parse(raw).is_ok(),
            &fields::emails(),
        );
    }

    #[test]
    fn the_display_name_schema_accepts_exactly_what_the_validator_accepts() {
        fields::assert_schema_agrees_with_validator(
            &schema_json(display_name_schema()),
            |raw| DisplayName::parse(raw).is_ok(),
            &fields::display_names(),
        );
    }

    #[test]
    fn normalization_ignores_letter_case() {
        let a = Email::parse("Ann@Example.COM").unwrap();
        let b = Email::parse("ann@example.com").unwrap();
        assert_eq!(a.normalized(), b.normalized());
        assert_eq!(Email::normalize("Ann@Example.COM"), "ann@example.com");
        assert_eq!(a.as_str(), "Ann@Example.COM");
    }

    #[test]
    fn display_names_are_stored_trimmed() {
        assert_eq!(DisplayName::parse("  Ann ").unwrap().as_str(), "Ann");
    }
}
