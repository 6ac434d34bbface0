//! For admins: the user directory (`GET /v1/users`), and the webhook
//! deliveries that ran out of attempts (`/v1/users/admin/*`), to inspect
//! and send again.

use axum::{
    extract::{Path, Query, State, rejection::QueryRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use portico_common::{
    FieldError, Problem,
    error::ApiJson,
    http::query,
    identity::Role,
    openapi::{BearerRejections, Unavailable},
    outbox::{
        self,
        admin::{DeadPageResponses, DeadQuery, RedeliverResponses},
    },
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use base64::Engine as _;
use uuid::Uuid;

use super::AppState;
use crate::{domain::ProfileBody, storage::profiles::DirectoryQuery};

/// A directory page when `limit` is not given.
const DEFAULT_PAGE: i64 = 50;

/// The admin making the request (their user id), or the problem.
pub(super) async fn admin(state: &AppState, headers: &HeaderMap) -> Result<Uuid, Problem> {
    let (id, claims) = super::profile::caller(state, headers).await?;
    if !claims.roles.contains(Role::ADMIN) {
        return Err(Problem::forbidden("this needs the admin role"));
    }
    Ok(id)
}

/// Deliveries that ran out of attempts, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/admin/deliveries",
    tag = "admin",
    security(("bearer" = [])),
    params(DeadQuery),
    responses(DeadPageResponses, BearerRejections, Unavailable)
)]
pub async fn dead_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    admin(&state, &headers).await?;
    outbox::admin::dead_page(state.accounts.outbox(), query).await
}

/// Sends a dead-lettered delivery again, from its first attempt.
#[utoipa::path(
    post,
    path = "/v1/users/admin/deliveries/{id}/redeliver",
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
    let admin_id = admin(&state, &headers).await?;
    outbox::admin::redeliver(
        state.accounts.outbox(),
        &id,
        state.clock.now(),
        &admin_id.to_string(),
    )
    .await
}

/// Most profiles on one directory page.
pub const MAX_DIRECTORY_PAGE: i64 = 100;
/// Longest search text.
const MAX_SEARCH_CHARS: usize = 100;
/// The cursor's format version, its first byte.
const CURSOR_V1: u8 = 1;

/// The opaque cursor after `id`.
fn cursor_after(id: Uuid) -> String {
    let mut bytes = Vec::with_capacity(17);
    bytes.push(CURSOR_V1);
    bytes.extend_from_slice(id.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn id_of_cursor(cursor: &str) -> Result<Uuid, FieldError> {
    let bad = || FieldError::new("cursor", "must be a `next_cursor` from a previous page");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    match bytes.split_first() {
        Some((&CURSOR_V1, id)) => Uuid::from_slice(id).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The directory's query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DirectoryParams {
    /// At most this many (1–100, default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// An email prefix or a display-name substring, any letter case
    /// (1–100 characters).
    #[param(min_length = 1, max_length = 100)]
    pub q: Option<String>,
    /// `active` or `deleted`.
    #[param(pattern = "^(active|deleted)$")]
    pub status: Option<String>,
}

/// A page of the directory.
#[derive(Debug, Serialize, ToSchema)]
pub struct DirectoryPage {
    pub items: Vec<ProfileBody>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// The user directory, in creation order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "admin",
    security(("bearer" = [])),
    params(DirectoryParams),
    responses(
        (status = 200, description = "A page of profiles, oldest first", body = DirectoryPage),
        (status = 400, description = "A query parameter given twice", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit`, `cursor`, `q` or `status` (`errors` names each)", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn directory(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<DirectoryParams>, QueryRejection>,
) -> Result<Response, Problem> {
    admin(&state, &headers).await?;
    let Query(params) = params.map_err(query::rejected)?;
    let mut errors = Vec::new();
    let limit = query::bounded_integer("limit", params.limit.as_deref(), 1, MAX_DIRECTORY_PAGE)
        .unwrap_or_else(|err| {
            errors.push(err);
            None
        })
        .unwrap_or(DEFAULT_PAGE);
    let after = params
        .cursor
        .as_deref()
        .map(id_of_cursor)
        .transpose()
        .unwrap_or_else(|err| {
            errors.push(err);
            None
        });
    let search = match params.q {
        Some(q) if q.is_empty() || q.chars().count() > MAX_SEARCH_CHARS => {
            errors.push(FieldError::new("q", "must be 1 to 100 characters"));
            None
        }
        q => q,
    };
    let status = match params.status.as_deref() {
        None => None,
        Some(status @ ("active" | "deleted")) => Some(status.to_owned()),
        Some(_) => {
            errors.push(FieldError::new("status", "must be `active` or `deleted`"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let page = state
        .accounts
        .directory(&DirectoryQuery {
            after,
            status,
            search,
            limit,
        })
        .await?;
    let next_cursor = (page.len() as i64 == limit)
        .then(|| page.last().map(|profile| cursor_after(profile.id)))
        .flatten();
    Ok(ApiJson(DirectoryPage {
        items: page.into_iter().map(ProfileBody::from).collect(),
        next_cursor,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(id_of_cursor(&cursor_after(id)).unwrap(), id);
        for bad in ["", "x", "AAAA", &cursor_after(id)[1..], "not base64!"] {
            assert!(id_of_cursor(bad).is_err(), "{bad}");
        }
    }
}
