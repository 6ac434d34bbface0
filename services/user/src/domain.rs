//! Profiles and the rules for changing them. No I/O here; time comes in
//! as a value from the caller's clock.

use portico_common::types::{DisplayName, Email};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// A user's profile as stored (and as the profile cache holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
    pub status: String,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Profile {
    /// Strong ETag derived from the version counter (written with `itoa`:
    /// every read makes one; two by `format!` cost ≈ 0.5 k instructions).
    pub fn etag(&self) -> String {
        let mut buffer = itoa::Buffer::new();
        let digits = buffer.format(self.version);
        let mut etag = String::with_capacity(digits.len() + 2);
        etag.push('"');
        etag.push_str(digits);
        etag.push('"');
        etag
    }
}

/// A profile to create, valid by construction.
#[derive(Debug, Clone)]
pub struct NewProfile {
    pub id: Uuid,
    pub email: Email,
    pub display_name: DisplayName,
}

/// What creating a profile did (creation is idempotent by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new profile.
    New(Profile),
    /// The same profile already existed (a retried call).
    Existing(Profile),
}

/// A BCP 47 language tag, kept in its canonical form (`en-US`, `sr-Latn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

/// Longest language tag accepted: far past any real one, short enough
/// that the parser never sees a megabyte.
const MAX_LOCALE_CHARS: usize = 64;

impl Locale {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > MAX_LOCALE_CHARS {
            return Err(format!("must be at most {MAX_LOCALE_CHARS} characters"));
        }
        // Unicode locale identifiers are BCP 47 tags; the parser refuses
        // what is not well-formed (`en_US` is not: the separator is `-`).
        if raw.contains('_') {
            return Err("must be a BCP 47 language tag such as `en-US`".to_owned());
        }
        icu_locale_core::Locale::try_from_str(raw)
            .map(|locale| Self(locale.to_string()))
            .map_err(|_| "must be a BCP 47 language tag such as `en-US`".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone name (`Europe/Paris`), as the time zone database
/// spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZone(String);

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, String> {
        const MESSAGE: &str = "must be an IANA time zone name such as `Europe/Paris`";
        // The database also answers for POSIX TZ strings and offsets;
        // a name has letters and `/`, `_`, `-`, `+` and digits only.
        let name_like = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
            && raw.starts_with(|c: char| c.is_ascii_alphabetic());
        if !name_like {
            return Err(MESSAGE.to_owned());
        }
        let zone = jiff::tz::db().get(raw).map_err(|_| MESSAGE.to_owned())?;
        Ok(Self(zone.iana_name().unwrap_or(raw).to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a PATCH asks for: each field absent (unchanged) or given; locale
/// and time zone may be cleared with `null`.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub display_name: Option<DisplayName>,
    pub locale: Option<Option<Locale>>,
    pub time_zone: Option<Option<TimeZone>>,
}

/// A change applied to a profile: the new values and which fields moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub display_name: String,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
    /// Names of the fields whose values differ from the profile's.
    pub changed: Vec<&'static str>,
}

impl ProfileChange {
    /// The profile's fields after this change; `changed` is empty when it
    /// sets every field to the value it has (nothing to write).
    pub fn apply_to(&self, profile: &Profile) -> Applied {
        let mut changed = Vec::new();
        let display_name = match &self.display_name {
            Some(name) if name.as_str() != profile.display_name => {
                changed.push("display_name");
                name.as_str().to_owned()
            }
            _ => profile.display_name.clone(),
        };
        let locale = match &self.locale {
            Some(locale) if locale.as_ref().map(Locale::as_str) != profile.locale.as_deref() => {
                changed.push("locale");
                locale.as_ref().map(|l| l.as_str().to_owned())
            }
            _ => profile.locale.clone(),
        };
        let time_zone = match &self.time_zone {
            Some(zone) if zone.as_ref().map(TimeZone::as_str) != profile.time_zone.as_deref() => {
                changed.push("time_zone");
                zone.as_ref().map(|z| z.as_str().to_owned())
            }
            _ => profile.time_zone.clone(),
        };
        Applied {
            display_name,
            locale,
            time_zone,
            changed,
        }
    }
}

/// A request's precondition on the profile's version (`If-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match: *`: any current version (the profile must exist).
    Any,
    /// One of these versions.
    OneOf(Vec<i64>),
}

impl Precondition {
    pub fn holds_for(&self, profile: &Profile) -> bool {
        match self {
            Self::Any => true,
            Self::OneOf(versions) => versions.contains(&profile.version),
        }
    }
}

/// The public representation of a profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProfileBody {
    #[schema(example = "0195f3c2-8f1e-7c2a-9d1b-4b7c1f3e2a10")]
    pub id: Uuid,
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann")]
    pub display_name: String,
    /// BCP 47 language tag; null until set.
    #[schema(example = "en-GB")]
    pub locale: Option<String>,
    /// IANA time zone name; null until set.
    #[schema(example = "Europe/London")]
    pub time_zone: Option<String>,
    /// `active`, or `deleted` (kept until personal data is scrubbed).
    #[schema(example = "active")]
    pub status: String,
    /// Rises by one with every change; the ETag is this number quoted.
    #[schema(example = 3)]
    pub version: i64,
    /// RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<Profile> for ProfileBody {
    fn from(p: Profile) -> Self {
        Self {
            id: p.id,
            email: p.email,
            display_name: p.display_name,
            locale: p.locale,
            time_zone: p.time_zone,
            status: p.status,
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(version: i64) -> Profile {
        let at = OffsetDateTime::UNIX_EPOCH;
        Profile {
            id: Uuid::now_v7(),
            email: "ann@example.com".into(),
            display_name: "Ann".into(),
            locale: None,
            time_zone: Some("Europe/Paris".into()),
            status: "active".into(),
            version,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn etag_is_a_quoted_strong_tag_of_the_version() {
        assert_eq!(profile(7).etag(), "\"7\"");
        assert_ne!(profile(1).etag(), profile(2).etag());
    }

    #[test]
    fn public_body_has_rfc3339_times_and_no_internal_fields() {
        let body = serde_json::to_value(ProfileBody::from(profile(3))).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "created_at",
                "display_name",
                "email",
                "id",
                "locale",
                "status",
                "time_zone",
                "updated_at",
                "version"
            ]
        );
        let created = body["created_at"].as_str().unwrap();
        assert!(
            OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).is_ok()
        );
    }

    #[test]
    fn locales_are_bcp47_tags_in_canonical_form() {
        for (raw, canonical) in [
            ("en", "en"),
            ("en-us", "en-US"),
            ("sr-latn-rs", "sr-Latn-RS"),
            ("de-CH-1996", "de-CH-1996"),
        ] {
            assert_eq!(Locale::parse(raw).unwrap().as_str(), canonical, "{raw}");
        }
        for raw in ["", "en_US", "english!", "e", "en--US", &"a".repeat(65)] {
            assert!(Locale::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        for (raw, name) in [
            ("Europe/Paris", "Europe/Paris"),
            ("UTC", "UTC"),
            (
                "America/Argentina/Buenos_Aires",
                "America/Argentina/Buenos_Aires",
            ),
        ] {
            assert_eq!(TimeZone::parse(raw).unwrap().as_str(), name, "{raw}");
        }
        for raw in [
            "",
            "Mars/Olympus_Mons",
            "+05:00",
            "EST5EDT,M3.2.0,M11.1.0",
            "../etc/passwd",
        ] {
            assert!(TimeZone::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn a_change_names_only_the_fields_it_moves() {
        let current = profile(1);
        let change = ProfileChange {
            display_name: Some(DisplayName::parse("Ann").unwrap()),
            locale: Some(Some(Locale::parse("fr-FR").unwrap())),
            time_zone: Some(None),
        };
        let applied = change.apply_to(&current);
        assert_eq!(applied.changed, ["locale", "time_zone"]);
        assert_eq!(applied.locale.as_deref(), Some("fr-FR"));
        assert_eq!(applied.time_zone, None);
        assert!(
            ProfileChange::default()
                .apply_to(&current)
                .changed
                .is_empty()
        );
    }

    #[test]
    fn preconditions_hold_for_listed_versions_or_any() {
        assert!(Precondition::Any.holds_for(&profile(4)));
        assert!(Precondition::OneOf(vec![3, 4]).holds_for(&profile(4)));
        assert!(!Precondition::OneOf(vec![3]).holds_for(&profile(4)));
    }
}
