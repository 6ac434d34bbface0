//! `/v1/auth/admin/*`: role grants, the audit log, key rotation and the
//! webhook deliveries that ran out of attempts, for admins.

use axum::{
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use portico_common::{
    FieldError, Problem,
    error::ApiJson,
    openapi::{BearerRejections, Unavailable},
    outbox::{
        self,
        admin::{DeadPageResponses, DeadQuery, RedeliverResponses},
    },
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{AppState, client::Client};
use crate::{
    accounts::{MAX_AUDIT_PAGE, RoleAction},
    domain::audit::{AuditEvent, AuditKind},
    storage::AuditQuery,
};

/// Events in a page when `limit` is not given.
const DEFAULT_AUDIT_PAGE: i64 = 50;

/// A path id that is not a UUID names no user: the same 404.
fn user_id_of(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::not_found("no such user"))
}

/// What both role routes do: an admin, a user id, then the change.
async fn change_role(
    state: &AppState,
    client: Client,
    headers: &HeaderMap,
    id: &str,
    role: &str,
    action: RoleAction,
) -> Result<Response, Problem> {
    let admin = super::admin_caller(state, headers).await?;
    let user_id = user_id_of(id)?;
    state
        .accounts
        .set_role(admin, user_id, role, action, client.0)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Grants a role to a user; their sessions end so new tokens carry it.
#[utoipa::path(
    put,
    path = "/v1/auth/admin/users/{id}/roles/{role}",
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The user's id"),
        ("role" = String, Path, description = "The role: `admin`", pattern = r"^[a-z][a-z0-9_-]{0,63}$"),
    ),
    responses(
        (status = 204, description = "The user has the role (their sessions ended if it was new)"),
        (status = 403, description = "The caller is not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user, or a role that is not granted by hand", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn grant_role(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Path((id, role)): Path<(String, String)>,
) -> Result<Response, Problem> {
    change_role(&state, client, &headers, &id, &role, RoleAction::Grant).await
}

/// Revokes a role from a user; their sessions end so new tokens lack it.
#[utoipa::path(
    delete,
    path = "/v1/auth/admin/users/{id}/roles/{role}",
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The user's id"),
        ("role" = String, Path, description = "The role: `admin`", pattern = r"^[a-z][a-z0-9_-]{0,63}$"),
    ),
    responses(
        (status = 204, description = "The user lacks the role (their sessions ended if they had it)"),
        (status = 403, description = "The caller is not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user, or a role that is not granted by hand", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn revoke_role(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Path((id, role)): Path<(String, String)>,
) -> Result<Response, Problem> {
    change_role(&state, client, &headers, &id, &role, RoleAction::Revoke).await
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditParams {
    /// Only events about this user.
    pub user_id: Option<String>,
    /// Only events of this type (e.g. `login_failed`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Events per page, 1–200 (default 50).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One security event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditItem {
    pub id: Uuid,
    /// `registered`, `login_succeeded`, `login_failed`, `login_throttled`,
    /// `refresh_reused`, `logout`, `session_revoked`, `password_changed`,
    /// `role_granted`, `role_revoked`, `key_rotated`, `client_token_issued`,
    /// `client_auth_failed`, `account_deleted`, `registration_abandoned`,
    /// `mfa_enabled`, `mfa_disabled`, `mfa_failed`, `recovery_code_used`,
    /// `email_verified`, `password_reset_requested`, `password_reset`.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: OffsetDateTime,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// Who acted when not the user: `user:<id>` (an admin), `client:<id>`,
    /// `service:<name>` (a service's event, or auth's own reconciler).
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
}

impl From<AuditEvent> for AuditItem {
    fn from(event: AuditEvent) -> Self {
        Self {
            id: event.id,
            kind: event.kind.as_str().to_owned(),
            occurred_at: event.occurred_at,
            user_id: event.user_id,
            session_id: event.session_id,
            actor: event.actor,
            ip: event.client.ip,
            user_agent: event.client.user_agent,
            request_id: event.client.request_id,
            detail: event.detail,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditItem>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Reads the query, naming every parameter that is wrong.
fn audit_query(params: AuditParams) -> Result<AuditQuery, Problem> {
    let mut errors = Vec::new();
    let mut uuid = |name: &str, raw: Option<String>| {
        raw.and_then(|raw| {
            Uuid::parse_str(&raw)
                .map_err(|_| errors.push(FieldError::new(name, "must be a UUID")))
                .ok()
        })
    };
    let user_id = uuid("user_id", params.user_id);
    let before = uuid("cursor", params.cursor);
    let kind = params.kind.and_then(|raw| {
        AuditKind::parse(&raw)
            .ok_or_else(|| errors.push(FieldError::new("type", "is not an audit event type")))
            .ok()
    });
    let limit = match params.limit {
        None => DEFAULT_AUDIT_PAGE,
        Some(raw) => match raw.parse::<i64>() {
            Ok(limit) if (1..=MAX_AUDIT_PAGE).contains(&limit) => limit,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_AUDIT_PAGE}"),
                ));
                DEFAULT_AUDIT_PAGE
            }
        },
    };
    if !errors.is_empty() {
        let mut problem = Problem::bad_request("invalid query parameters");
        problem.errors = errors;
        return Err(problem);
    }
    Ok(AuditQuery {
        user_id,
        kind,
        before,
        limit,
    })
}

/// The audit log, newest first, filtered by user and type.
#[utoipa::path(
    get,
    path = "/v1/auth/admin/audit",
    tag = "admin",
    security(("bearer" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "A page of events", body = AuditPage),
        (status = 400, description = "A parameter is malformed; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not an admin", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn audit_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, Problem> {
    super::admin_caller(&state, &headers).await?;
    let Query(params) = params.map_err(|_| Problem::bad_request("invalid query parameters"))?;
    let (events, next) = state.accounts.audit(audit_query(params)?).await?;
    Ok(ApiJson(AuditPage {
        items: events.into_iter().map(AuditItem::from).collect(),
        next_cursor: next.map(|id| id.to_string()),
    })
    .into_response())
}

/// The key a rotation made (or the one already waiting to sign).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotationAccepted {
    /// Published in the JWKS from now.
    pub kid: String,
    /// When it starts signing (after verifiers' JWKS caches have it).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub signs_from: OffsetDateTime,
}

/// Rotates the signing key: a new key is published now and signs after
/// the publish lead time; the current one keeps verifying until its tokens
/// expire. A rotation already waiting to sign is answered again.
#[utoipa::path(
    post,
    path = "/v1/auth/admin/keys/rotate",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "A new key is published and will sign from `signs_from`", body = RotationAccepted),
        (status = 403, description = "The caller is not an admin", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn rotate_keys(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let admin = super::admin_caller(&state, &headers).await?;
    let rotation = state
        .signing_keys
        .rotate(Some((format!("user:{admin}"), client.0)))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(RotationAccepted {
            kid: rotation.kid,
            signs_from: rotation.signs_from,
        }),
    )
        .into_response())
}

/// Webhook deliveries that ran out of attempts, newest first.
#[utoipa::path(
    get,
    path = "/v1/auth/admin/deliveries",
    tag = "admin",
    security(("bearer" = [])),
    params(DeadQuery),
    responses(DeadPageResponses, BearerRejections, Unavailable)
)]
pub async fn dead_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    super::admin_caller(&state, &headers).await?;
    outbox::admin::dead_page(state.accounts.outbox(), params).await
}

/// Sends a dead-lettered delivery again, from its first attempt.
#[utoipa::path(
    post,
    path = "/v1/auth/admin/deliveries/{id}/redeliver",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "A dead-lettered delivery's id")),
    responses(RedeliverResponses, BearerRejections, Unavailable)
)]
pub async fn redeliver(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let admin = super::admin_caller(&state, &headers).await?;
    outbox::admin::redeliver(
        state.accounts.outbox(),
        &id,
        state.accounts.now(),
        &admin.to_string(),
    )
    .await
}
