//! CORS per route, answered at the edge: a preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) from an allowed origin gets 204 with
//! the route's methods and headers, from any other origin a 403 problem,
//! and never reaches the upstream or the route's authentication (browsers
//! send no credentials on a preflight). Other requests are forwarded as
//! usual and, from an allowed origin, answered with that origin allowed;
//! credentials are allowed only when the route says so and only to
//! allowed origins, never to `*`.

use http::{HeaderMap, HeaderValue, Method, header};
use serde::Deserialize;

/// `routes[].cors`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) or one leading wildcard
    /// label (`https://*.example.com`: any subdomain, not the apex).
    pub origins: Vec<String>,
    /// Methods a preflight may ask for (absent: GET, HEAD, POST).
    pub methods: Option<Vec<String>>,
    /// Request headers a preflight may ask for (absent: authorization,
    /// content-type).
    pub headers: Option<Vec<String>>,
    /// Response headers a page may read besides the safelisted ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Whether cookies and `Authorization` may be sent (default false).
    #[serde(default)]
    pub credentials: bool,
    /// How long a browser may cache a preflight (default 600 s).
    pub max_age_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginPattern {
    Exact(String),
    /// `scheme://*.` + `suffix` (suffix begins with the dot).
    Subdomain {
        scheme: String,
        suffix: String,
    },
}

/// A route's resolved CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<OriginPattern>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: Vec<String>,
    allow_headers_value: HeaderValue,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

/// What a request is, as far as CORS goes.
#[derive(Debug)]
pub enum CorsRequest<'a> {
    /// No `Origin`: not a cross-origin browser request.
    None,
    /// A preflight for this method.
    Preflight {
        origin: &'a HeaderValue,
        method: Method,
    },
    /// A cross-origin request proper.
    Actual { origin: &'a HeaderValue },
}

/// Classifies `method` + `headers`.
pub fn classify<'a>(method: &Method, headers: &'a HeaderMap) -> CorsRequest<'a> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return CorsRequest::None;
    };
    if method == Method::OPTIONS
        && let Some(requested) = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|value| Method::from_bytes(value.as_bytes()).ok())
    {
        return CorsRequest::Preflight {
            origin,
            method: requested,
        };
    }
    CorsRequest::Actual { origin }
}

impl Cors {
    /// Resolves `config`; an error names the field.
    pub fn new(config: &CorsConfig) -> Result<Self, (String, String)> {
        let err = |field: &str, msg: String| (field.to_owned(), msg);
        if config.origins.is_empty() {
            return Err(err("origins", "list at least one origin".into()));
        }
        let origins = config
            .origins
            .iter()
            .map(|origin| parse_origin(origin).map_err(|msg| err("origins", msg)))
            .collect::<Result<Vec<_>, _>>()?;
        let method_names = config
            .methods
            .clone()
            .unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()]);
        let methods = method_names
            .iter()
            .map(|name| {
                Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                    .map_err(|_| err("methods", format!("`{name}` is not a method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow_headers: Vec<String> = config
            .headers
            .clone()
            .unwrap_or_else(|| vec!["authorization".into(), "content-type".into()])
            .iter()
            .map(|name| name.to_ascii_lowercase())
            .collect();
        for name in allow_headers.iter().chain(&config.expose_headers) {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| err("headers", format!("`{name}` is not a header name")))?;
        }
        let list = |items: Vec<String>| {
            HeaderValue::from_str(&items.join(", "))
                .map_err(|_| err("headers", "not a valid header list".into()))
        };
        Ok(Self {
            origins,
            allow_methods: list(methods.iter().map(|m| m.as_str().to_owned()).collect())?,
            methods,
            allow_headers_value: list(allow_headers.clone())?,
            allow_headers,
            expose_headers: if config.expose_headers.is_empty() {
                None
            } else {
                Some(list(config.expose_headers.clone())?)
            },
            credentials: config.credentials,
            max_age: HeaderValue::from(config.max_age_secs.unwrap_or(600)),
        })
    }

    pub fn allows_origin(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.origins.iter().any(|pattern| match pattern {
            OriginPattern::Exact(exact) => exact == origin,
            OriginPattern::Subdomain { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_prefix("://"))
                .and_then(|host| host.strip_suffix(suffix.as_str()))
                .is_some_and(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                }),
        })
    }

    /// The answer to a preflight: `Some(headers)` of a 204 when the origin,
    /// the method and every requested header are allowed.
    pub fn preflight(
        &self,
        origin: &HeaderValue,
        method: &Method,
        request: &HeaderMap,
    ) -> Option<HeaderMap> {
        if !self.allows_origin(origin) || !self.methods.contains(method) {
            return None;
        }
        let requested_ok = request
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .all(|name| self.allow_headers.contains(&name));
        if !requested_ok {
            return None;
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        self.allow(origin, &mut headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers_value.clone(),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Some(headers)
    }

    /// On the answer to an actual cross-origin request. The upstream's own
    /// `Vary` stays; what it said about CORS does not: the route's policy
    /// decides.
    pub fn apply(&self, origin: &HeaderValue, response: &mut HeaderMap) {
        for name in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
        ] {
            response.remove(name);
        }
        response.append(header::VARY, HeaderValue::from_static("origin"));
        if self.allows_origin(origin) {
            self.allow(origin, response);
            if let Some(expose) = &self.expose_headers {
                response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
    }

    /// `origin` allowed, with credentials where the route allows them.
    fn allow(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

fn parse_origin(origin: &str) -> Result<OriginPattern, String> {
    let bad =
        || format!("`{origin}` is not an origin (scheme://host[:port], or scheme://*.domain)");
    let (scheme, host) = origin.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https")
        || host.is_empty()
        || host.contains(['/', '?', '#', '@', ' '])
    {
        return Err(bad());
    }
    match host.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') => {
            Ok(OriginPattern::Subdomain {
                scheme: scheme.to_owned(),
                suffix: suffix.to_owned(),
            })
        }
        Some(_) => Err(bad()),
        None if host.contains('*') => Err(bad()),
        None => Ok(OriginPattern::Exact(origin.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors::new(&CorsConfig {
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            methods: None,
            headers: None,
            expose_headers: vec![],
            credentials: true,
            max_age_secs: None,
        })
        .unwrap()
    }

    #[test]
    fn exact_and_subdomain_origins_match_and_nothing_else() {
        let cors = cors(&["https://app.example.com", "https://*.example.org"]);
        for allowed in [
            "https://app.example.com",
            "https://a.example.org",
            "https://a.b.example.org",
        ] {
            assert!(
                cors.allows_origin(&HeaderValue::from_static(allowed)),
                "{allowed}"
            );
        }
        for refused in [
            "https://example.org",
            "http://a.example.org",
            "https://app.example.com.evil.test",
            "https://evilexample.org",
            "https://app.example.co",
            "null",
        ] {
            assert!(
                !cors.allows_origin(&HeaderValue::from_static(refused)),
                "{refused}"
            );
        }
    }

    #[test]
    fn malformed_origins_are_refused() {
        for bad in [
            "*",
            "https://*",
            "example.com",
            "ftp://x.test",
            "https://a.*.test",
            "https://x.test/path",
        ] {
            let config = CorsConfig {
                origins: vec![bad.into()],
                methods: None,
                headers: None,
                expose_headers: vec![],
                credentials: false,
                max_age_secs: None,
            };
            assert_eq!(Cors::new(&config).unwrap_err().0, "origins", "{bad}");
        }
    }
}
