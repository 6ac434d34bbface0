//! The events a service sends, described in its OpenAPI document's
//! `webhooks` (OpenAPI 3.1): per event type, the signed POST a subscriber
//! receives — the Standard Webhooks headers and the envelope with that
//! type's `data` schema, taken from the Rust type the event is built from,
//! so the description cannot drift from what is sent.

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::{
    ToSchema,
    openapi::{OpenApi, PathItem, RefOr, Schema},
};

/// One event type as documented.
pub struct DocumentedEvent {
    /// `user.created`, `auth.password_changed`…
    pub name: &'static str,
    /// When it is sent.
    pub when: &'static str,
    data_name: Cow<'static, str>,
    schemas: Vec<(String, RefOr<Schema>)>,
}

impl DocumentedEvent {
    /// Event `name`, sent `when`, whose `data` is a `T`.
    pub fn of<T: ToSchema>(name: &'static str, when: &'static str) -> Self {
        let mut schemas = vec![(T::name().into_owned(), T::schema())];
        T::schemas(&mut schemas);
        Self {
            name,
            when,
            data_name: T::name(),
            schemas,
        }
    }

    fn path_item(&self) -> Result<PathItem, serde_json::Error> {
        let header = |name: &str, kind: &str, description: &str| {
            json!({
                "name": name, "in": "header", "required": true,
                "schema": {"type": kind}, "description": description,
            })
        };
        serde_json::from_value(json!({
            "post": {
                "tags": ["events"],
                "summary": self.name,
                "description": format!(
                    "{} Sent at least once, in order per subject, to each subscriber that wants this type; dedupe by `id`.",
                    self.when
                ),
                "operationId": format!("event_{}", self.name.replace('.', "_")),
                "parameters": [
                    header("webhook-id", "string", "The event's `id`: the same on every retry and resend."),
                    header("webhook-timestamp", "integer", "When this attempt was signed (Unix seconds): refuse one far from now."),
                    header("webhook-signature", "string", "`v1,<base64 HMAC-SHA256 of \"{webhook-id}.{webhook-timestamp}.{body}\">` under the subscriber's secret (Standard Webhooks). Verify in constant time against each secret you accept (while rotating, the old and the new); the header may hold several space-separated signatures: one matching is enough."),
                ],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": envelope(self.name, &self.data_name)}},
                },
                "responses": {
                    "2XX": {"description": "Received: the delivery ends."},
                    "default": {"description": "Any other answer, or none in time, is a failed attempt: retried with backoff, dead-lettered after the configured attempts."},
                },
            }
        }))
    }
}

/// The envelope every event is sent in, with `event_type`'s `data`.
fn envelope(event_type: &str, data_schema: &str) -> Value {
    json!({
        "type": "object",
        "required": ["id", "type", "occurred_at", "subject", "version", "data"],
        "additionalProperties": false,
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "Unique per event (UUIDv7); what consumers dedupe by."},
            "type": {"type": "string", "enum": [event_type]},
            "occurred_at": {"type": "string", "format": "date-time"},
            "subject": {"type": "string", "format": "uuid", "description": "The user the event is about."},
            "version": {"type": "integer", "format": "int64", "minimum": 1, "description": "The subject's version after the change, rising per subject within the sending service."},
            "data": {"$ref": format!("#/components/schemas/{data_schema}")},
        },
    })
}

/// Adds `events` to `openapi`'s `webhooks`, their data schemas to its
/// components.
pub fn describe(
    openapi: &mut OpenApi,
    events: &[DocumentedEvent],
) -> Result<(), serde_json::Error> {
    let mut webhooks = openapi.webhooks.take().unwrap_or_default();
    let components = openapi.components.get_or_insert_with(Default::default);
    for event in events {
        webhooks
            .paths
            .insert(event.name.to_owned(), event.path_item()?);
        for (name, schema) in &event.schemas {
            components
                .schemas
                .entry(name.clone())
                .or_insert_with(|| schema.clone());
        }
    }
    openapi.webhooks = Some(webhooks);
    Ok(())
}

/// An OpenAPI modifier that describes the events `.0` lists:
/// `modifiers(&Webhooks(crate::events::documented))`.
pub struct Webhooks(pub fn() -> Vec<DocumentedEvent>);

impl utoipa::Modify for Webhooks {
    fn modify(&self, openapi: &mut OpenApi) {
        if let Err(err) = describe(openapi, &(self.0)()) {
            tracing::error!(%err, "the events could not be described in the OpenAPI document");
        }
    }
}
