//! `/v1/users/admin/*`: the webhook deliveries that ran out of attempts,
//! for admins to inspect and send again.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use portico_common::{
    FieldError, Problem,
    error::ApiJson,
    identity::Role,
    openapi::{BearerRejections, Unavailable},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::storage::deliveries::Delivery;

/// Most deliveries on one page.
pub const MAX_PAGE: i64 = 100;
const DEFAULT_PAGE: i64 = 50;

async fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let (_, claims) = super::profile::caller(state, headers).await?;
    if !claims.roles.contains(Role::ADMIN) {
        return Err(Problem::forbidden("this needs the admin role"));
    }
    Ok(())
}

/// Paging through dead-lettered deliveries, newest first.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadQuery {
    /// At most this many (1–100, default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// Only deliveries older than this one (the previous page's `next_before`).
    #[param(minimum = 1)]
    pub before: Option<String>,
}

/// One dead-lettered delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadDelivery {
    /// What `redeliver` takes.
    pub id: i64,
    pub subscriber: String,
    pub attempts: i32,
    /// Why the last attempt failed (a status or a connection failure).
    pub last_error: Option<String>,
    /// The event as the subscriber receives it.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadDeliveries {
    pub items: Vec<DeadDelivery>,
    /// Pass as `before` for the next page; absent on the last.
    pub next_before: Option<i64>,
}

impl From<Delivery> for DeadDelivery {
    fn from(delivery: Delivery) -> Self {
        Self {
            id: delivery.id,
            subscriber: delivery.subscriber,
            attempts: delivery.attempts,
            last_error: delivery.last_error,
            event: delivery.event.envelope(),
        }
    }
}

fn parse_bounded(
    field: &str,
    raw: Option<&str>,
    min: i64,
    max: i64,
) -> Result<Option<i64>, FieldError> {
    raw.map(|raw| {
        raw.parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                FieldError::new(field, format!("must be a whole number from {min} to {max}"))
            })
    })
    .transpose()
}

/// Deliveries that ran out of attempts, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/admin/deliveries",
    tag = "admin",
    security(("bearer" = [])),
    params(DeadQuery),
    responses(
        (status = 200, description = "A page of dead-lettered deliveries", body = DeadDeliveries),
        (status = 403, description = "The caller is not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit` or `before` out of range", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn dead_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<DeadQuery>,
) -> Result<Response, Problem> {
    admin(&state, &headers).await?;
    let limit = parse_bounded("limit", query.limit.as_deref(), 1, MAX_PAGE);
    let before = parse_bounded("before", query.before.as_deref(), 1, i64::MAX);
    let (limit, before) = match (limit, before) {
        (Ok(limit), Ok(before)) => (limit.unwrap_or(DEFAULT_PAGE), before),
        (limit, before) => {
            return Err(Problem::validation(
                [limit.err(), before.err()].into_iter().flatten().collect(),
            ));
        }
    };
    let page = state.accounts.dead_deliveries(before, limit).await?;
    let next_before = (page.len() as i64 == limit)
        .then(|| page.last().map(|delivery| delivery.id))
        .flatten();
    Ok(ApiJson(DeadDeliveries {
        items: page.into_iter().map(DeadDelivery::from).collect(),
        next_before,
    })
    .into_response())
}

/// Sends a dead-lettered delivery again, from its first attempt.
#[utoipa::path(
    post,
    path = "/v1/users/admin/deliveries/{id}/redeliver",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "A dead-lettered delivery's id")),
    responses(
        (status = 202, description = "Queued for delivery"),
        (status = 403, description = "The caller is not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No dead-lettered delivery with this id", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn redeliver(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    admin(&state, &headers).await?;
    let not_found = || Problem::not_found("no dead-lettered delivery with this id");
    let id: i64 = id.parse().map_err(|_| not_found())?;
    if !state.accounts.redeliver(id, state.clock.now()).await? {
        return Err(not_found());
    }
    tracing::info!(
        delivery = id,
        "dead-lettered delivery queued again by an admin"
    );
    Ok(StatusCode::ACCEPTED.into_response())
}
