//! The events the user service emits: one per change to a profile, written
//! to the outbox in the change's own transaction. Consumers dedupe by `id`
//! and order per subject by `version`.

use serde_json::{Value, json};
use time::OffsetDateTime;
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
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserCreated => "user.created",
            Self::UserUpdated => "user.updated",
            Self::UserDeleted => "user.deleted",
        }
    }
}

impl std::str::FromStr for EventType {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "user.created" => Ok(Self::UserCreated),
            "user.updated" => Ok(Self::UserUpdated),
            "user.deleted" => Ok(Self::UserDeleted),
            other => Err(format!("unknown event type `{other}`")),
        }
    }
}

/// One event, as stored in the outbox and sent to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What consumers dedupe by (UUIDv7: also roughly time-ordered).
    pub id: Uuid,
    pub event_type: EventType,
    /// The user the event is about.
    pub subject: Uuid,
    /// The profile's version after the change.
    pub version: i64,
    pub occurred_at: OffsetDateTime,
    pub data: Value,
}

impl Event {
    fn about(event_type: EventType, profile: &Profile, data: Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type,
            subject: profile.id,
            version: profile.version,
            occurred_at: profile.updated_at,
            data,
        }
    }

    /// `user.created`: the new profile.
    pub fn created(profile: &Profile) -> Self {
        Self::about(
            EventType::UserCreated,
            profile,
            json!({ "profile": ProfileBody::from(profile.clone()) }),
        )
    }

    /// `user.updated`: the profile after the change and the fields that
    /// moved.
    pub fn updated(profile: &Profile, changed: &[&str]) -> Self {
        Self::about(
            EventType::UserUpdated,
            profile,
            json!({ "profile": ProfileBody::from(profile.clone()), "changed": changed }),
        )
    }

    /// `user.deleted`: only the id and when (no personal data: it is
    /// about to be scrubbed, and a subscriber has no need of it).
    pub fn deleted(profile: &Profile) -> Self {
        let deleted_at = profile
            .updated_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self::about(
            EventType::UserDeleted,
            profile,
            json!({ "user_id": profile.id, "deleted_at": deleted_at }),
        )
    }

    /// The event as subscribers receive it.
    pub fn envelope(&self) -> Value {
        let occurred_at = self
            .occurred_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        json!({
            "id": self.id,
            "type": self.event_type.as_str(),
            "occurred_at": occurred_at,
            "subject": self.subject,
            "version": self.version,
            "data": self.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_through_their_names() {
        for event_type in [
            EventType::UserCreated,
            EventType::UserUpdated,
            EventType::UserDeleted,
        ] {
            assert_eq!(event_type.as_str().parse::<EventType>(), Ok(event_type));
        }
        assert!("user.nope".parse::<EventType>().is_err());
    }

    #[test]
    fn the_envelope_names_the_event_its_subject_and_version() {
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
        let event = Event::updated(&profile, &["display_name"]);
        let envelope = event.envelope();
        assert_eq!(envelope["type"], "user.updated");
        assert_eq!(envelope["subject"], profile.id.to_string());
        assert_eq!(envelope["version"], 2);
        assert_eq!(envelope["occurred_at"], "1970-01-01T00:00:00Z");
        assert_eq!(envelope["data"]["changed"], json!(["display_name"]));
        assert_eq!(envelope["data"]["profile"]["display_name"], "Ann");
    }
}
