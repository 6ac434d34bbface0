//! Reading query strings into problems a client can act on.

use axum::extract::rejection::QueryRejection;

use crate::{FieldError, Problem};

/// A query string that does not parse (a parameter given twice).
pub fn rejected(rejection: QueryRejection) -> Problem {
    Problem::bad_request("the query string could not be read: each parameter at most once")
        .with_cause(rejection.body_text())
}

/// An optional whole number from `min` to `max`; the error names `field`.
pub fn bounded_integer(
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
