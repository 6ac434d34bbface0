//! `/v1/auth/sessions` and `/v1/auth/password`: a signed-in user reviews and
//! ends their sessions, and changes their password.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    error::ApiJson,
    openapi::{BearerRejections, JsonBodyRejections, Unavailable},
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, client::Client};
use crate::accounts::{MfaState, SessionView};

/// One of the caller's live sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionItem {
    pub id: Uuid,
    /// RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Last sign-in or refresh. RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_used_at: OffsetDateTime,
    /// When the session ends at the latest (it ends sooner unused). RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// The address it was opened from, when known.
    pub ip: Option<String>,
    /// The user agent it was opened with, when known.
    pub user_agent: Option<String>,
    /// The session of the token that asked.
    pub current: bool,
}

impl From<SessionView> for SessionItem {
    fn from(SessionView { session, current }: SessionView) -> Self {
        Self {
            id: session.id,
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            expires_at: session.expires_at,
            ip: session.ip,
            user_agent: session.user_agent,
            current,
        }
    }
}

/// The caller's live sessions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub items: Vec<SessionItem>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(value_type = String)]
    pub current_password: SecretString,
    /// The same rules as at registration: at least 8 characters (or the
    /// configured minimum) after NFKC normalisation, at most 1024 bytes, not
    /// common or leaked, not containing the account's email name.
    #[schema(value_type = String, min_length = 8, max_length = 1024)]
    pub new_password: SecretString,
}

/// The caller's live sessions.
#[utoipa::path(
    get,
    path = "/v1/auth/sessions",
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Live sessions, newest first; `current` marks the caller's", body = SessionList),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (user_id, session_id) = super::session_caller(&state, &headers).await?;
    let sessions = state.accounts.sessions(user_id, session_id).await?;
    Ok(ApiJson(SessionList {
        items: sessions.into_iter().map(SessionItem::from).collect(),
    })
    .into_response())
}

/// Ends one of the caller's sessions (its refresh token stops working).
#[utoipa::path(
    delete,
    path = "/v1/auth/sessions/{id}",
    tag = "sessions",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A session id from the list")),
    responses(
        (status = 204, description = "Session ended"),
        (status = 404, description = "Not a live session of the caller", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn end_session(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (user_id, _) = super::session_caller(&state, &headers).await?;
    // An id that is not a UUID names no session: the same 404.
    let session_id =
        Uuid::parse_str(&id).map_err(|_| Problem::not_found("no such session of yours"))?;
    state
        .accounts
        .end_session(user_id, session_id, client.0)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Ends every session of the caller except the current one.
#[utoipa::path(
    delete,
    path = "/v1/auth/sessions",
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every other session ended"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn end_other_sessions(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (user_id, session_id) = super::session_caller(&state, &headers).await?;
    state
        .accounts
        .end_other_sessions(user_id, session_id, client.0)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Changes the caller's password; every other session ends.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "sessions",
    security(("bearer" = [])),
    request_body = ChangePassword,
    responses(
        (status = 204, description = "Password changed; every other session ended"),
        (status = 403, description = "The current password does not match", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong current passwords; wait `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
        JsonBodyRejections,
        BearerRejections,
        Unavailable,
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    body: Result<ApiJson<ChangePassword>, Problem>,
) -> Result<Response, Problem> {
    // Authenticate before looking at the body: an anonymous caller learns nothing.
    let (user_id, session_id) = super::session_caller(&state, &headers).await?;
    let ApiJson(request) = body?;
    state
        .accounts
        .change_password(
            user_id,
            session_id,
            request.current_password,
            request.new_password,
            client.0,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Everything auth holds about the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountExportBody {
    pub email: String,
    pub email_verified: bool,
    /// `off`, `pending` or `on`.
    pub mfa: String,
    /// Live sessions, newest first.
    pub sessions: Vec<SessionItem>,
    /// Security events about the account, newest first (at most 10,000).
    pub audit_events: Vec<super::admin::AuditItem>,
}

/// Everything auth holds about the caller: the account, its live sessions,
/// its second factor's state and its audit trail (never a secret). The
/// user service's `GET /v1/users/me/export` includes it.
#[utoipa::path(
    get,
    path = "/v1/auth/export",
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account data", body = AccountExportBody),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (user_id, session_id) = super::session_caller(&state, &headers).await?;
    let export = state.accounts.export(user_id, session_id).await?;
    let mfa = match export.mfa {
        MfaState::Off => "off",
        MfaState::Pending => "pending",
        MfaState::On { .. } => "on",
    };
    let body = AccountExportBody {
        email: export.email,
        email_verified: export.email_verified,
        mfa: mfa.to_owned(),
        sessions: export.sessions.into_iter().map(SessionItem::from).collect(),
        audit_events: export
            .audit_events
            .into_iter()
            .map(super::admin::AuditItem::from)
            .collect(),
    };
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        ApiJson(body),
    )
        .into_response())
}
