//! `/internal/revocations`: the feed of revoked sessions that gateways and
//! services follow, so a logged-out session's access tokens stop working
//! everywhere within a second — without a call to auth per request.
//! Never routed by the gateway. It lists only session ids (random, and
//! worthless once revoked) and when they were revoked.

use axum::{
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    error::ApiJson,
    jwt::{RevocationFeed, RevokedSession},
    openapi::Unavailable,
};
use serde::Deserialize;
use time::{Duration, OffsetDateTime};
use utoipa::IntoParams;

use super::AppState;
use crate::error::AuthError;

/// Most revocations in one answer; a follower asks again from the last one.
const PAGE: i64 = 1_000;

/// Beyond the access-token lifetime: the verifiers' leeway (30 s) and
/// clock skew between replicas.
const HORIZON_MARGIN: Duration = Duration::seconds(90);

#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedQuery {
    /// RFC 3339: revocations at or after this moment. Absent: every
    /// revocation whose access tokens may still be valid.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<OffsetDateTime>,
    /// With `since`: only sessions revoked at `since` whose id sorts after
    /// this one, and any revoked later (the next page).
    pub after: Option<uuid::Uuid>,
}

/// Revoked sessions since a moment.
#[utoipa::path(
    get,
    path = "/internal/revocations",
    tag = "internal",
    params(FeedQuery),
    responses(
        (status = 200, description = "Revoked sessions, oldest first", body = RevocationFeed),
        (status = 400, description = "`since` is not an RFC 3339 time or `after` not a UUID", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
pub async fn feed(
    State(state): State<AppState>,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query
        .map_err(|_| Problem::bad_request("`since` must be an RFC 3339 time and `after` a UUID"))?;
    let now = state.accounts.now();
    // Tokens of sessions revoked before this have all expired, allowing
    // for the verifiers' leeway and clock skew.
    let horizon = now
        - Duration::seconds(state.accounts.issuer().settings().access_token_ttl_secs)
        - HORIZON_MARGIN;
    let (since, after) = match query.since {
        Some(since) if since >= horizon => (since, query.after),
        _ => (horizon, None),
    };
    let revoked = state
        .accounts
        .store()
        .revocations_since(since, after, PAGE)
        .await
        .map_err(AuthError::from)?;
    let complete = revoked.len() < PAGE as usize;
    Ok(ApiJson(RevocationFeed {
        items: revoked
            .into_iter()
            .map(|(sid, revoked_at)| RevokedSession { sid, revoked_at })
            .collect(),
        now,
        complete,
    })
    .into_response())
}
