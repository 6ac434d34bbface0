//! `POST /v1/auth/token`: the OAuth 2.0 token endpoint, client credentials
//! grant only (RFC 6749 §4.4). Errors are in the RFC's own form (§5.2),
//! `{"error": …, "error_description": …}`, plus `request_id`.

use axum::{
    Form,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use portico_common::{error::ApiJson, http::pipeline};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AppState, client::Client};
use crate::{
    domain::{
        audit::{AuditEvent, AuditKind},
        clients::GrantError,
    },
    error::AuthError,
};

/// The form fields of a token request.
#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`.
    #[schema(example = "client_credentials")]
    pub grant_type: Option<String>,
    /// With `client_secret`, instead of HTTP Basic authentication.
    pub client_id: Option<String>,
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<SecretString>,
    /// The service the token is for (RFC 8707); default: the client's first.
    #[schema(example = "portico-user")]
    pub audience: Option<String>,
    /// Space-separated scopes; default: every scope the client may have.
    #[schema(example = "users:write")]
    pub scope: Option<String>,
}

/// Issued service token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientTokenResponse {
    /// EdDSA-signed JWT: subject `service:<client_id>`, the requested audience and scope.
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until it expires.
    #[schema(example = 60)]
    pub expires_in: i64,
    /// The scopes granted, space-separated.
    #[schema(example = "users:write")]
    pub scope: String,
}

/// An error in RFC 6749 §5.2 form.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `unsupported_grant_type`,
    /// `invalid_scope` or `invalid_target`.
    pub error: String,
    pub error_description: String,
    /// This request's `x-request-id`, to find it in the logs.
    pub request_id: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = OAuthError {
        error: error.to_owned(),
        error_description: description.to_owned(),
        request_id: pipeline::current_request_id(),
    };
    let mut response = (status, no_store(), ApiJson(body)).into_response();
    response.extensions_mut().insert(pipeline::OwnErrorFormat);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portico\""),
        );
    }
    response
}

fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_client() -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    )
}

/// Tokens are never cached (RFC 6749 §5.1).
fn no_store() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ]
}

/// Decodes one `application/x-www-form-urlencoded` component, as RFC 6749
/// §2.3.1 requires of Basic credentials.
fn form_decode(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Basic credentials: `None` when there is no Basic header, `Some(Err)`
/// when there is one that does not decode.
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, SecretString), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    Some(
        decoded
            .as_deref()
            .and_then(|text| text.split_once(':'))
            .and_then(|(id, secret)| {
                Some((form_decode(id)?, SecretString::from(form_decode(secret)?)))
            })
            .ok_or(()),
    )
}

/// Issues a service token to a client (OAuth 2.0 client credentials).
#[utoipa::path(
    post,
    path = "/v1/auth/token",
    tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses(
        (status = 200, description = "A service token", body = ClientTokenResponse),
        (status = 400, description = "`invalid_request`, `unsupported_grant_type`, `invalid_scope` or `invalid_target`", body = OAuthError),
        (status = 401, description = "`invalid_client`: unknown client or wrong secret", body = OAuthError),
        (status = 503, description = "The event could not be recorded; retry shortly", body = portico_common::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Result<Response, portico_common::Problem> {
    let Ok(Form(request)) = form else {
        return Ok(invalid_request(
            "the body must be application/x-www-form-urlencoded with each parameter at most once",
        ));
    };
    let (client_id, secret) = match (
        basic_credentials(&headers),
        request.client_id,
        request.client_secret,
    ) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Ok(invalid_request(
                "use one client authentication method, not two",
            ));
        }
        (Some(Ok(credentials)), None, None) => credentials,
        (Some(Err(())), None, None) => return Ok(invalid_client()),
        (None, Some(id), Some(secret)) => (id, secret),
        (None, _, _) => return Ok(invalid_client()),
    };
    // The client is authenticated before the grant is looked at, so a
    // stranger learns nothing about which grants or scopes exist.
    let Some(service_client) = state
        .clients
        .authenticate(&client_id, secret.expose_secret())
    else {
        // Audited, not throttled: secrets are long and random, so guessing
        // one is hopeless, while a lock keyed by client id would let any
        // stranger shut a service out.
        let claimed: String = client_id.chars().take(64).collect();
        let event = AuditEvent::new(AuditKind::ClientAuthFailed, state.accounts.now(), &client.0)
            .actor(format!("client:{claimed}"));
        state
            .accounts
            .store()
            .record(&event)
            .await
            .map_err(AuthError::from)?;
        tracing::warn!(client_id = %claimed.escape_debug(), "client authentication failed");
        return Ok(invalid_client());
    };
    match request.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported here",
            ));
        }
        None => return Ok(invalid_request("grant_type is required")),
    }
    let grant = match service_client.grant(request.audience.as_deref(), request.scope.as_deref()) {
        Ok(grant) => grant,
        Err(GrantError::InvalidScope) => {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "a requested scope is not allowed for this client",
            ));
        }
        Err(GrantError::InvalidTarget) => {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "this client may not ask for tokens for that audience",
            ));
        }
    };
    let accounts = &state.accounts;
    let now = accounts.now();
    let access_token = accounts
        .issuer()
        .client_token(&service_client.id, &grant.audience, &grant.scope, now)
        .map_err(AuthError::from)?;
    let event = AuditEvent::new(AuditKind::ClientTokenIssued, now, &client.0)
        .actor(format!("client:{}", service_client.id.name()))
        .detail(format!("aud={} scope={}", grant.audience, grant.scope));
    accounts
        .store()
        .record(&event)
        .await
        .map_err(AuthError::from)?;
    let body = ClientTokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: accounts.issuer().settings().service_token_ttl_secs,
        scope: grant.scope,
    };
    Ok((StatusCode::OK, no_store(), ApiJson(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("my%20client:p%40ss+word%3A");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().unwrap(),
        );
        let (id, secret) = basic_credentials(&headers).unwrap().unwrap();
        assert_eq!(id, "my client");
        assert_eq!(secret.expose_secret(), "p@ss word:");

        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(basic_credentials(&headers).unwrap().is_err());
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(basic_credentials(&headers).is_none());
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
    }
}
