//! The events the user service emits: one per change to a profile, written
//! to the outbox (`portico_common::outbox`) in the change's own
//! transaction. Consumers dedupe by `id` and order per subject by
//! `version` (the profile's).

use portico_common::outbox::{Event, rfc3339};
use serde_json::{Value, json};

use crate::domain::{Profile, ProfileBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A profile was created (registration).
    UserCreated,
    /// Fields of a profile changed; `data.changed` names them.
    UserUpdated,
    /// The account was deleted: its sessions and credentials go (auth),
    /// its personal data after the grace period.
    UserDeleted,
}

impl EventType {
    /// Every type, for subscribers' `types`.
    pub const ALL: [Self; 3] = [Self::UserCreated, Self::UserUpdated, Self::UserDeleted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserCreated => "user.created",
            Self::UserUpdated => "user.updated",
            Self::UserDeleted => "user.deleted",
        }
    }

    /// The names of every type.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|t| t.as_str()).collect()
    }
}

fn about(event_type: EventType, profile: &Profile, data: Value) -> Event {
    Event::new(
        event_type.as_str(),
        profile.id,
        profile.version,
        profile.updated_at,
        data,
    )
}

/// `user.created`: the new profile.
pub fn created(profile: &Profile) -> Event {
    about(
        EventType::UserCreated,
        profile,
        json!({ "profile": ProfileBody::from(profile.clone()) }),
    )
}

/// `user.updated`: the profile after the change and the fields that moved.
pub fn updated(profile: &Profile, changed: &[&str]) -> Event {
    about(
        EventType::UserUpdated,
        profile,
        json!({ "profile": ProfileBody::from(profile.clone()), "changed": changed }),
    )
}

/// `user.deleted`: only the id and when (no personal data: it is about to
/// be scrubbed, and a subscriber has no need of it).
pub fn deleted(profile: &Profile) -> Event {
    about(
        EventType::UserDeleted,
        profile,
        json!({ "user_id": profile.id, "deleted_at": rfc3339(profile.updated_at) }),
    )
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn an_update_carries_the_profile_and_what_changed() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let profile = Profile {
            id: Uuid::now_v7(),
            email: "ann@example.com".into(),
            display_name: "Ann".into(),
            locale: None,
            time_zone: None,
            status: "active".into(),
            version: 2,
            created_at: at,
            updated_at: at,
        };
        let envelope = updated(&profile, &["display_name"]).envelope();
        assert_eq!(envelope["type"], "user.updated");
        assert_eq!(envelope["subject"], profile.id.to_string());
        assert_eq!(envelope["version"], 2);
        assert_eq!(envelope["data"]["changed"], json!(["display_name"]));
        assert_eq!(envelope["data"]["profile"]["display_name"], "Ann");
        let envelope = deleted(&profile).envelope();
        assert_eq!(envelope["type"], "user.deleted");
        assert_eq!(envelope["data"]["deleted_at"], "1970-01-01T00:00:00Z");
        assert!(envelope["data"].get("profile").is_none());
    }
}
