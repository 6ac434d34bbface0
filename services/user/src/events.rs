//! The events the user service emits: one per change to a profile, written
//! to the outbox (`portico_common::outbox`) in the change's own
//! transaction. Consumers dedupe by `id` and order per subject by
//! `version` (the profile's).

use portico_common::outbox::{Event, document::DocumentedEvent};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

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

/// `user.created`'s data.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserCreatedData {
    /// The new profile, as `GET /v1/users/me` shows it.
    pub profile: ProfileBody,
}

/// `user.updated`'s data.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserUpdatedData {
    /// The profile after the change.
    pub profile: ProfileBody,
    /// The fields that moved (`display_name`, `locale`, `time_zone`).
    pub changed: Vec<String>,
}

/// `user.deleted`'s data: no personal data (it is about to be scrubbed,
/// and a subscriber has no need of it).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserDeletedData {
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub deleted_at: OffsetDateTime,
}

/// Every event type as the OpenAPI document's `webhooks` describe it.
pub fn documented() -> Vec<DocumentedEvent> {
    vec![
        DocumentedEvent::of::<UserCreatedData>(
            EventType::UserCreated.as_str(),
            "A profile was created (registration).",
        ),
        DocumentedEvent::of::<UserUpdatedData>(
            EventType::UserUpdated.as_str(),
            "`PATCH /v1/users/me` moved at least one field.",
        ),
        DocumentedEvent::of::<UserDeletedData>(
            EventType::UserDeleted.as_str(),
            "`DELETE /v1/users/me`: auth ends the sessions; personal data goes after the grace period.",
        ),
    ]
}

fn about(event_type: EventType, profile: &Profile, data: impl Serialize) -> Event {
    Event::new(
        event_type.as_str(),
        profile.id,
        profile.version,
        profile.updated_at,
        // Plain structs of strings and numbers: serialising cannot fail.
        serde_json::to_value(data).unwrap_or(Value::Null),
    )
}

/// `user.created`: the new profile.
pub fn created(profile: &Profile) -> Event {
    about(
        EventType::UserCreated,
        profile,
        UserCreatedData {
            profile: ProfileBody::from(profile.clone()),
        },
    )
}

/// `user.updated`: the profile after the change and the fields that moved.
pub fn updated(profile: &Profile, changed: &[&str]) -> Event {
    about(
        EventType::UserUpdated,
        profile,
        UserUpdatedData {
            profile: ProfileBody::from(profile.clone()),
            changed: changed.iter().map(|field| (*field).to_owned()).collect(),
        },
    )
}

/// `user.deleted`: only the id and when.
pub fn deleted(profile: &Profile) -> Event {
    about(
        EventType::UserDeleted,
        profile,
        UserDeletedData {
            user_id: profile.id,
            deleted_at: profile.updated_at,
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
