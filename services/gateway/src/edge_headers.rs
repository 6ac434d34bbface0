//! Security headers at the edge: what every answer of the gateway carries
//! (`[security_headers]`), and the upstream headers that tell which
//! software and version answered, removed. An upstream that set one of the
//! headers itself keeps its own value; the gateway's `/docs` (Swagger UI,
//! which needs its own scripts, styles and images) gets its own policy.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde::Deserialize;

/// `[security_headers]`. An empty value leaves that header out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersConfig {
    /// `X-Content-Type-Options`.
    pub content_type_options: String,
    /// `Referrer-Policy`.
    pub referrer_policy: String,
    /// `X-Frame-Options`.
    pub frame_options: String,
    /// `Content-Security-Policy` of API answers.
    pub content_security_policy: String,
    /// `Content-Security-Policy` of `/docs`, always this one.
    pub docs_content_security_policy: String,
    /// `Strict-Transport-Security`: for a gateway clients reach over HTTPS.
    pub strict_transport_security: String,
    /// Upstream response headers removed (lower case names).
    pub remove_upstream: Vec<String>,
}

/// The resolved headers.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    defaults: Vec<(HeaderName, HeaderValue)>,
    docs_policy: Option<HeaderValue>,
    removed: Vec<HeaderName>,
}

impl SecurityHeaders {
    /// Resolves `config`; an error names the key (relative to the section)
    /// whose value is not a valid header.
    pub fn new(config: &SecurityHeadersConfig) -> Result<Self, (String, String)> {
        let value = |key: &str, text: &str| -> Result<Option<HeaderValue>, (String, String)> {
            if text.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(text)
                .map(Some)
                .map_err(|_| (key.to_owned(), "is not a valid header value".to_owned()))
        };
        let mut defaults = Vec::new();
        for (key, name, text) in [
            (
                "content_type_options",
                header::X_CONTENT_TYPE_OPTIONS,
                &config.content_type_options,
            ),
            (
                "referrer_policy",
                header::REFERRER_POLICY,
                &config.referrer_policy,
            ),
            (
                "frame_options",
                header::X_FRAME_OPTIONS,
                &config.frame_options,
            ),
            (
                "content_security_policy",
                header::CONTENT_SECURITY_POLICY,
                &config.content_security_policy,
            ),
            (
                "strict_transport_security",
                header::STRICT_TRANSPORT_SECURITY,
                &config.strict_transport_security,
            ),
        ] {
            if let Some(value) = value(key, text)? {
                defaults.push((name, value));
            }
        }
        let removed = config
            .remove_upstream
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    (
                        "remove_upstream".to_owned(),
                        format!("`{name}` is not a header name"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            defaults,
            docs_policy: value(
                "docs_content_security_policy",
                &config.docs_content_security_policy,
            )?,
            removed,
        })
    }

    /// On every answer: the upstream's revealing headers out, each missing
    /// default in.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.removed {
            headers.remove(name);
        }
        // One lookup each (not a test, then an insert).
        for (name, value) in &self.defaults {
            headers.entry(name).or_insert_with(|| value.clone());
        }
    }

    /// On `/docs`: its own content security policy (absent: none).
    pub fn apply_docs_policy(&self, headers: &mut HeaderMap) {
        match &self.docs_policy {
            Some(policy) => {
                headers.insert(header::CONTENT_SECURITY_POLICY, policy.clone());
            }
            None => {
                headers.remove(header::CONTENT_SECURITY_POLICY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use portico_common::config::ServiceConfig as _;

    use super::*;

    fn config() -> SecurityHeadersConfig {
        crate::config::Config::built_in().security_headers
    }

    #[test]
    fn upstream_values_win_revealing_headers_go_and_empty_ones_are_left_out() {
        let headers = SecurityHeaders::new(&config()).unwrap();
        let mut answer = HeaderMap::new();
        answer.insert(header::SERVER, HeaderValue::from_static("nginx/1.22.1"));
        answer.insert("x-powered-by", HeaderValue::from_static("Express"));
        answer.insert(header::REFERRER_POLICY, HeaderValue::from_static("origin"));

        headers.apply(&mut answer);

        assert!(!answer.contains_key(header::SERVER));
        assert!(!answer.contains_key("x-powered-by"));
        assert_eq!(answer[header::REFERRER_POLICY], "origin");
        assert_eq!(answer[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(answer[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            !answer.contains_key(header::STRICT_TRANSPORT_SECURITY),
            "HSTS is off by default"
        );
    }

    #[test]
    fn a_value_that_is_not_a_header_is_refused_with_its_key() {
        let mut bad = config();
        bad.referrer_policy = "no-referrer\nx-injected: 1".into();
        assert_eq!(SecurityHeaders::new(&bad).unwrap_err().0, "referrer_policy");
        let mut bad = config();
        bad.remove_upstream = vec!["not a name".into()];
        assert_eq!(SecurityHeaders::new(&bad).unwrap_err().0, "remove_upstream");
    }
}
