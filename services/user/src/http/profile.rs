//! `/v1/users/me` (the caller's own profile) and `/v1/users/{id}`.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use portico_common::{
    Problem,
    error::{ApiJson, Validation},
    identity::Role,
    jwt::Claims,
    openapi::{BearerRejections, JsonBodyRejections, Unavailable},
    types::DisplayName,
};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, conditional};
use crate::{
    domain::{Locale, Profile, ProfileBody, ProfileChange, TimeZone},
    error::UserError,
};

/// Fields of the profile a user may change: each left out is unchanged;
/// `locale` and `time_zone` are cleared with `null`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = portico_common::types::display_name_schema)]
    pub display_name: Option<Option<String>>,
    /// A BCP 47 language tag (`en-GB`), stored in canonical form; `null`
    /// clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 64, example = "en-GB")]
    pub locale: Option<Option<String>>,
    /// An IANA time zone name (`Europe/London`); `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 64, example = "Europe/London")]
    pub time_zone: Option<Option<String>>,
}

/// A field that is present, with its value or `null` (absent fields keep
/// the `default`, `None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl UpdateProfile {
    /// The change, or every field's error at once.
    fn validate(self) -> Result<ProfileChange, Problem> {
        let mut validation = Validation::new();
        let display_name = match self.display_name {
            None => None,
            Some(None) => {
                validation.check::<()>("display_name", Err("must not be null".to_owned()));
                None
            }
            Some(Some(raw)) => validation
                .check("display_name", DisplayName::parse(&raw))
                .map(Some),
        };
        let locale = match self.locale {
            None => Some(None),
            Some(None) => Some(Some(None)),
            Some(Some(raw)) => validation
                .check("locale", Locale::parse(&raw))
                .map(|locale| Some(Some(locale))),
        };
        let time_zone = match self.time_zone {
            None => Some(None),
            Some(None) => Some(Some(None)),
            Some(Some(raw)) => validation
                .check("time_zone", TimeZone::parse(&raw))
                .map(|zone| Some(Some(zone))),
        };
        validation.finish()?;
        match (locale, time_zone) {
            (Some(locale), Some(time_zone)) => Ok(ProfileChange {
                display_name: display_name.flatten(),
                locale,
                time_zone,
            }),
            _ => Err(Problem::internal().with_cause("validation passed without values")),
        }
    }
}

pub(super) async fn caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Uuid, Claims), Problem> {
    let claims = state.user_tokens.authenticate(headers).await?;
    // A valid token whose subject is not a user id is not a user's token.
    let id = claims
        .user_id()
        .ok_or_else(|| Problem::unauthorized("the bearer token is not a user token"))?;
    Ok((id, claims))
}

fn etag_of(profile: &Profile) -> Option<HeaderValue> {
    HeaderValue::from_str(&profile.etag()).ok()
}

fn profile_response(profile: Profile) -> Response {
    let etag = etag_of(&profile);
    let mut response = ApiJson(ProfileBody::from(profile)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The profile, or 304 when the client's `If-None-Match` names it; either
/// carries the ETag (made once).
fn conditional_read(headers: &HeaderMap, profile: Profile) -> Response {
    let etag = profile.etag();
    let mut response = if conditional::client_has_current(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ApiJson(ProfileBody::from(profile)).into_response()
    };
    if let Ok(etag) = HeaderValue::try_from(etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The caller's profile.
#[utoipa::path(
    get,
    path = "/v1/users/me",
    tag = "users",
    security(("bearer" = [])),
    params(("If-None-Match" = Option<String>, Header, description = "An ETag read before: 304 if the profile is still at it")),
    responses(
        conditional::ConditionalRead,
        (status = 404, description = "No profile for this user", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn get_me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (id, _) = caller(&state, &headers).await?;
    let profile = state.accounts.active(id).await?;
    Ok(conditional_read(&headers, profile))
}

/// Changes the caller's profile, if it is still at the version read.
#[utoipa::path(
    patch,
    path = "/v1/users/me",
    tag = "users",
    security(("bearer" = [])),
    params(("If-Match" = String, Header, description = "The ETag of the profile the change is based on (or `*`)",
        pattern = r#"^(\*|(W/)?"[!#-~]*"(, ?(W/)?"[!#-~]*")*)$"#)),
    request_body = UpdateProfile,
    responses(
        (status = 200, description = "The updated profile", body = ProfileBody,
            headers(("etag" = String, description = "Version of the profile"))),
        (status = 404, description = "No profile for this user", body = Problem, content_type = "application/problem+json"),
        conditional::PreconditionRejections,
        JsonBodyRejections,
        BearerRejections,
        Unavailable,
    )
)]
pub async fn update_me(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<UpdateProfile>, Problem>,
) -> Result<Response, Problem> {
    // Authenticate before looking at anything else: an anonymous caller
    // learns nothing.
    let (id, _) = caller(&state, &headers).await?;
    let precondition = conditional::required_precondition(&headers)?;
    let ApiJson(update) = body?;
    let change = update.validate()?;
    let profile = state
        .accounts
        .update(id, &precondition, &change, state.clock.now())
        .await?;
    tracing::info!(user_id = %id, version = profile.version, "profile updated");
    Ok(profile_response(profile))
}

/// Deletes the caller's account, if the profile is still at the version
/// read: the profile reads as absent at once, `user.deleted` goes to the
/// other services (auth ends every session and removes the credentials),
/// and personal data is scrubbed after the grace period.
#[utoipa::path(
    delete,
    path = "/v1/users/me",
    tag = "users",
    security(("bearer" = [])),
    params(("If-Match" = String, Header, description = "The ETag of the profile read before deciding (or `*`)",
        pattern = r#"^(\*|(W/)?"[!#-~]*"(, ?(W/)?"[!#-~]*")*)$"#)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No profile for this user", body = Problem, content_type = "application/problem+json"),
        conditional::PreconditionRejections,
        BearerRejections,
        Unavailable,
    )
)]
pub async fn delete_me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (id, _) = caller(&state, &headers).await?;
    let precondition = conditional::required_precondition(&headers)?;
    let deleted = state
        .accounts
        .delete(id, &precondition, state.clock.now())
        .await?;
    tracing::info!(user_id = %id, version = deleted.version, "account deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A user's profile: the user's own, or anyone's for an admin.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The user id"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag read before: 304 if the profile is still at it"),
    ),
    responses(
        conditional::ConditionalRead,
        (status = 404, description = "No such profile, or not the caller's (a non-admin cannot tell which)", body = Problem, content_type = "application/problem+json"),
        BearerRejections,
        Unavailable,
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (caller_id, claims) = caller(&state, &headers).await?;
    // Someone else's profile is as absent as a missing one: a non-admin
    // learns nothing of which ids exist. An id that is not a UUID names
    // no profile either.
    let id = Uuid::parse_str(&id).map_err(|_| UserError::NotFound)?;
    if id != caller_id && !claims.roles.contains(Role::ADMIN) {
        return Err(UserError::NotFound.into());
    }
    let profile = state.accounts.active(id).await?;
    Ok(conditional_read(&headers, profile))
}
