//! `GET /v1/users/me/export`: everything Portico holds about the caller in
//! one JSON document — the profile and its events from this service, the
//! account, sessions, second factor and audit trail from auth (asked with
//! the caller's own token, so this service can fetch no one else's).

use axum::{
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    error::ApiJson,
    http::client::{self, HttpClient},
    openapi::{BearerRejections, Unavailable},
};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::domain::ProfileBody;

/// Answers this large are not an export auth would send.
const MAX_AUTH_EXPORT_BYTES: usize = 32 * 1024 * 1024;

/// The auth service's export endpoint.
#[derive(Debug, Clone)]
pub struct AuthApi {
    client: HttpClient,
    export_url: String,
}

impl AuthApi {
    pub fn new(client: HttpClient, base_url: &str) -> Self {
        Self {
            client,
            export_url: format!("{}/v1/auth/export", base_url.trim_end_matches('/')),
        }
    }

    /// What auth holds about the bearer of `authorization`, as it sends it.
    async fn export(
        &self,
        authorization: &header::HeaderValue,
    ) -> Result<serde_json::Value, Problem> {
        let unavailable = |cause: String| {
            Problem::service_unavailable("the export needs the auth service; retry shortly")
                .retry_after(1)
                .with_cause(cause)
        };
        let response = self
            .client
            .get(&self.export_url)
            .header(header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|err| unavailable(format!("auth export: {err}")))?;
        match response.status().as_u16() {
            200 => {}
            // The session ended between our check and auth's.
            401 => return Err(Problem::unauthorized("the session has ended")),
            status => return Err(unavailable(format!("auth export answered {status}"))),
        }
        client::json_within(response, MAX_AUTH_EXPORT_BYTES)
            .await
            .map_err(|err| unavailable(format!("auth export unreadable: {err}")))
    }
}

/// One event about the caller, as its webhook carried it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct ExportedEvent(serde_json::Value);

/// Everything Portico holds about the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    pub user_id: Uuid,
    /// RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub exported_at: OffsetDateTime,
    pub profile: ProfileBody,
    /// The profile's change events (`user.created`, `user.updated`, …),
    /// oldest first, as their webhooks carried them.
    pub events: Vec<ExportedEvent>,
    /// What auth holds: `{email, email_verified, mfa, sessions,
    /// audit_events}` (see auth's `GET /v1/auth/export`).
    #[schema(value_type = Object)]
    pub auth: serde_json::Value,
}

/// Everything Portico holds about the caller, as one JSON document.
#[utoipa::path(
    get,
    path = "/v1/users/me/export",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's data (a download: `Content-Disposition: attachment`)", body = Export),
        (status = 404, description = "No active profile", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn export_me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (id, _) = super::profile::caller(&state, &headers).await?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Problem::unauthorized("a bearer token is required"))?;
    let profile = state.accounts.active(id).await?;
    let events = state
        .accounts
        .events_of(id)
        .await?
        .iter()
        .map(|event| ExportedEvent(event.envelope()))
        .collect();
    let auth = state.auth_api.export(authorization).await?;
    let export = Export {
        user_id: id,
        exported_at: state.clock.now(),
        profile: ProfileBody::from(profile),
        events,
        auth,
    };
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"portico-export.json\"",
            ),
        ],
        ApiJson(export),
    )
        .into_response())
}
