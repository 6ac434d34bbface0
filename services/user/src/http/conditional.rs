//! Conditional requests (RFC 9110 §13): `If-Match` guards every change to
//! a profile (optimistic concurrency: a change based on a stale read is
//! refused, never applied over another), `If-None-Match` saves a re-read.

use axum::http::{HeaderMap, StatusCode, header};
use portico_common::Problem;
use utoipa::IntoResponses;

use crate::domain::{Precondition, ProfileBody};

/// The answers of a profile read that honours `If-None-Match` (documented
/// once for every read).
#[derive(Debug, IntoResponses)]
#[allow(dead_code)] // the document's shape; handlers answer with their own types
pub enum ConditionalRead {
    /// The profile
    #[response(status = 200, headers(("etag" = String, description = "Version of the profile")))]
    Profile(#[to_schema] ProfileBody),
    /// Unchanged since the ETag in `If-None-Match`
    #[response(status = 304, headers(("etag" = String, description = "Version of the profile")))]
    NotModified,
}

/// The refusals of a profile change guarded by `If-Match`; after each,
/// nothing was changed.
#[derive(Debug, IntoResponses)]
#[allow(dead_code)] // the document's shape; the problems come from `UserError`
pub enum PreconditionRejections {
    /// `If-Match` is not `*` or a list of entity tags
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem),
    /// The profile changed since that ETag: nothing was changed
    #[response(status = 412, content_type = "application/problem+json")]
    Failed(Problem),
    /// No `If-Match`: nothing was changed
    #[response(status = 428, content_type = "application/problem+json")]
    Required(Problem),
}

/// One entity tag of a list: weak or strong, and its opaque text.
#[derive(Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a str,
}

/// `*`, or a comma-separated list of entity tags (`"3"`, `W/"3"`); `None`
/// if it is neither. A tag's opaque part may itself hold commas, so the
/// list is read tag by tag, not split.
fn entity_tags(value: &str) -> Option<Option<Vec<EntityTag<'_>>>> {
    let is_ows = |c: char| c == ' ' || c == '\t';
    if value.trim_matches(is_ows) == "*" {
        return Some(None);
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        // Empty list elements are allowed (RFC 9110 §5.6.1).
        rest = rest.trim_start_matches(|c: char| is_ows(c) || c == ',');
        if rest.is_empty() {
            break;
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let body = quoted.strip_prefix('"')?;
        let close = body.find('"')?;
        let opaque = &body[..close];
        // etagc: any visible character but `"`, or obs-text.
        if opaque.bytes().any(|b| b < 0x21 || b == 0x7f) {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        rest = body[close + 1..].trim_start_matches(is_ows);
        // Another tag follows only after a comma.
        if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
    }
    (!tags.is_empty()).then_some(Some(tags))
}

/// The header's lines joined as one list; `Err` if one is not text.
fn joined(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<String>, Problem> {
    let mut lines = headers.get_all(&name).iter().peekable();
    if lines.peek().is_none() {
        return Ok(None);
    }
    let mut all = Vec::new();
    for line in lines {
        all.push(line.to_str().map_err(|_| malformed(&name))?);
    }
    Ok(Some(all.join(",")))
}

fn malformed(name: &header::HeaderName) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "malformed-precondition",
        format!("`{name}` must be `*` or a list of entity tags such as `\"3\"`"),
    )
}

/// The precondition a change must carry: `If-Match` with the ETag the
/// client read (or `*`). Without it 428; unparseable 400. Weak tags never
/// match (If-Match compares strongly), nor do tags that are not a version.
pub fn required_precondition(headers: &HeaderMap) -> Result<Precondition, Problem> {
    let Some(value) = joined(headers, header::IF_MATCH)? else {
        return Err(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition-required",
            "send `If-Match` with the ETag of the profile you read (or `*`), so that a change \
             made since is not overwritten",
        ));
    };
    match entity_tags(&value).ok_or_else(|| malformed(&header::IF_MATCH))? {
        None => Ok(Precondition::Any),
        // Strong comparison is of the text: `"03"` is not `"3"`.
        Some(tags) => Ok(Precondition::OneOf(
            tags.iter()
                .filter(|tag| !tag.weak)
                .filter_map(|tag| {
                    tag.opaque
                        .parse::<i64>()
                        .ok()
                        .filter(|version| version.to_string() == tag.opaque)
                })
                .collect(),
        )),
    }
}

/// Whether `If-None-Match` names `etag` (weak comparison) or is `*`: the
/// client has the current representation (304). An unparseable value is
/// ignored: the client simply gets the profile.
pub fn client_has_current(headers: &HeaderMap, etag: &str) -> bool {
    let Ok(Some(value)) = joined(headers, header::IF_NONE_MATCH) else {
        return false;
    };
    let current = etag.trim_matches('"');
    match entity_tags(&value) {
        Some(None) => true,
        Some(Some(tags)) => tags.iter().any(|tag| tag.opaque == current),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(&name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn if_match_is_required_and_parsed() {
        let missing = required_precondition(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status, 428);
        assert_eq!(
            required_precondition(&with(header::IF_MATCH, &["*"])).unwrap(),
            Precondition::Any
        );
        assert_eq!(
            required_precondition(&with(
                header::IF_MATCH,
                &["\"3\", W/\"4\"", "\"x\", \"5\", \"06\", \"+7\""]
            ))
            .unwrap(),
            Precondition::OneOf(vec![3, 5])
        );
        // Commas inside a tag are part of it.
        assert_eq!(
            required_precondition(&with(header::IF_MATCH, &["\",;<\",\"7\", \"\""])).unwrap(),
            Precondition::OneOf(vec![7])
        );
        for bad in ["3", "\"3", "W/3", "\"a\"b\"", "", " , ", "\"3\" \"4\""] {
            let refused = required_precondition(&with(header::IF_MATCH, &[bad])).unwrap_err();
            assert_eq!(refused.status, 400, "{bad:?}");
        }
    }

    #[test]
    fn if_none_match_compares_weakly_and_ignores_garbage() {
        assert!(client_has_current(
            &with(header::IF_NONE_MATCH, &["W/\"7\""]),
            "\"7\""
        ));
        assert!(client_has_current(
            &with(header::IF_NONE_MATCH, &["\"6\", \"7\""]),
            "\"7\""
        ));
        assert!(client_has_current(
            &with(header::IF_NONE_MATCH, &["*"]),
            "\"7\""
        ));
        assert!(!client_has_current(
            &with(header::IF_NONE_MATCH, &["\"6\""]),
            "\"7\""
        ));
        assert!(!client_has_current(
            &with(header::IF_NONE_MATCH, &["7"]),
            "\"7\""
        ));
        assert!(!client_has_current(&HeaderMap::new(), "\"7\""));
    }
}
