//! What admins see of the deliveries that ran out of attempts: the page
//! query and the answer, shared by every service's
//! `GET …/admin/deliveries` and `POST …/admin/deliveries/{id}/redeliver`
//! (each service routes them under its own prefix and admin check).

use axum::{
    extract::{Query, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::{Delivery, Outbox};
use crate::{Problem, error::ApiJson, http::query::bounded_integer};

/// Most deliveries on one page.
pub const MAX_PAGE: i64 = 100;
const DEFAULT_PAGE: i64 = 50;

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

impl DeadQuery {
    /// `(limit, before)`, or a 422 naming every bad parameter.
    pub fn page(&self) -> Result<(i64, Option<i64>), Problem> {
        let limit = bounded_integer("limit", self.limit.as_deref(), 1, MAX_PAGE);
        let before = bounded_integer("before", self.before.as_deref(), 1, i64::MAX);
        match (limit, before) {
            (Ok(limit), Ok(before)) => Ok((limit.unwrap_or(DEFAULT_PAGE), before)),
            (limit, before) => Err(Problem::validation(
                [limit.err(), before.err()].into_iter().flatten().collect(),
            )),
        }
    }
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

impl DeadDeliveries {
    /// The answer for `page`, read with `limit`.
    pub fn new(page: Vec<Delivery>, limit: i64) -> Self {
        let next_before = (page.len() as i64 == limit)
            .then(|| page.last().map(|delivery| delivery.id))
            .flatten();
        Self {
            items: page.into_iter().map(DeadDelivery::from).collect(),
            next_before,
        }
    }
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

/// The 404 of a redelivery whose id names no dead-lettered delivery (also
/// an id that is not a number).
pub fn no_such_dead_delivery() -> Problem {
    Problem::not_found("no dead-lettered delivery with this id")
}

/// The answers of `GET …/admin/deliveries` (besides 401 and 503).
#[derive(Debug, IntoResponses)]
pub enum DeadPageResponses {
    /// A page of dead-lettered deliveries
    #[response(status = 200)]
    Page(DeadDeliveries),
    /// A query parameter given twice
    #[response(status = 400, content_type = "application/problem+json")]
    Unreadable(Problem),
    /// The caller is not an admin
    #[response(status = 403, content_type = "application/problem+json")]
    NotAdmin(Problem),
    /// `limit` or `before` out of range
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
}

/// The answers of `POST …/admin/deliveries/{id}/redeliver` (besides 401
/// and 503).
#[derive(Debug, IntoResponses)]
pub enum RedeliverResponses {
    /// Queued for delivery
    #[response(status = 202)]
    Queued,
    /// The caller is not an admin
    #[response(status = 403, content_type = "application/problem+json")]
    NotAdmin(Problem),
    /// No dead-lettered delivery with this id
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
}

/// `GET …/admin/deliveries` once the caller is known to be an admin.
pub async fn dead_page(
    outbox: &Outbox,
    query: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(crate::http::query::rejected)?;
    let (limit, before) = query.page()?;
    let page = outbox
        .dead(before, limit)
        .await
        .map_err(|err| crate::db::problem_for(&err))?;
    Ok(ApiJson(DeadDeliveries::new(page, limit)).into_response())
}

/// `POST …/admin/deliveries/{id}/redeliver` once the caller is known to be
/// an admin (`admin` names them in the log line).
pub async fn redeliver(
    outbox: &Outbox,
    id: &str,
    now: OffsetDateTime,
    admin: &str,
) -> Result<Response, Problem> {
    let id: i64 = id.parse().map_err(|_| no_such_dead_delivery())?;
    if !outbox
        .redeliver(id, now)
        .await
        .map_err(|err| crate::db::problem_for(&err))?
    {
        return Err(no_such_dead_delivery());
    }
    tracing::info!(
        delivery = id,
        admin,
        "dead-lettered delivery queued again by an admin"
    );
    Ok(StatusCode::ACCEPTED.into_response())
}
