//! Profiles and the rules for changing them. No I/O here; time comes in
//! as a value from the caller's clock.

use portico_common::types::{DisplayName, Email};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// A user's profile as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub status: String,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Profile {
    /// Strong ETag derived from the version counter.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
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

/// The public representation of a profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProfileBody {
    #[schema(example = "0195f3c2-8f1e-7c2a-9d1b-4b7c1f3e2a10")]
    pub id: Uuid,
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann")]
    pub display_name: String,
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
            ["created_at", "display_name", "email", "id", "updated_at"]
        );
        let created = body["created_at"].as_str().unwrap();
        assert!(
            OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).is_ok()
        );
    }
}
