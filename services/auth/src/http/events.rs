//! `POST /internal/events`: events other services deliver as Standard
//! Webhooks. Never routed by the gateway. A delivery is believed only with
//! a valid signature under a configured secret and a fresh timestamp; each
//! event id is applied once.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    clock::SharedClock,
    openapi::Unavailable,
    webhooks::{self, SigningSecret},
};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, client::Client};
use crate::config::EventsInboxConfig;

/// What verifies deliveries.
#[derive(Debug)]
pub struct Inbox {
    secrets: Vec<SigningSecret>,
    tolerance_secs: i64,
    clock: SharedClock,
}

impl Inbox {
    /// The inbox of the config; `Err` is the bad key and why.
    pub fn new(config: &EventsInboxConfig, clock: SharedClock) -> Result<Self, (String, String)> {
        let secrets = config
            .secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                SigningSecret::parse(secret)
                    .map_err(|err| (format!("events.secrets[{index}]"), err))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if config.tolerance_secs <= 0 {
            return Err((
                "events.tolerance_secs".to_owned(),
                "must be above 0".to_owned(),
            ));
        }
        Ok(Self {
            secrets,
            tolerance_secs: config.tolerance_secs,
            clock,
        })
    }

    /// Whether the config makes an inbox (`check-config` and startup).
    pub fn check(config: &EventsInboxConfig) -> Result<(), (String, String)> {
        Self::new(
            config,
            std::sync::Arc::new(portico_common::clock::SystemClock),
        )
        .map(|_| ())
    }
}

/// An event as the user service sends it (the fields acted on).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReceivedEvent {
    /// The event id; equal to `webhook-id`.
    pub id: String,
    /// `user.deleted`, …; other types are acknowledged and ignored.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub event_type: String,
    /// The user the event is about.
    pub subject: Uuid,
}

/// Receives an event.
#[utoipa::path(
    post,
    path = "/internal/events",
    tag = "internal",
    request_body(content = ReceivedEvent, description = "The event envelope, signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`)"),
    responses(
        (status = 204, description = "Applied, or applied before (a redelivery), or a type this service ignores"),
        (status = 400, description = "Not an event envelope, or its id is not the `webhook-id`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid signature under a configured secret, or a timestamp out of tolerance", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let inbox = &state.inbox;
    let now = inbox.clock.now().unix_timestamp();
    let verified = webhooks::verify(&inbox.secrets, &headers, &body, now, inbox.tolerance_secs)
        .map_err(|err| {
            // The sender learns only that the delivery is not believed.
            Problem::unauthorized("the delivery's webhook signature does not verify")
                .with_cause(err)
        })?;
    let event: ReceivedEvent = serde_json::from_slice(&body)
        .map_err(|_| Problem::bad_request("the body is not an event envelope"))?;
    if event.id != verified.id {
        return Err(Problem::bad_request(
            "the event's id is not the delivery's `webhook-id`",
        ));
    }
    match event.event_type.as_str() {
        "user.deleted" => {
            state
                .accounts
                .account_deleted(&event.id, event.subject, client.0)
                .await?;
        }
        other => tracing::debug!(event_id = %event.id, event_type = other, "event ignored"),
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
