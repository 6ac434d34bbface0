//! The route table: resolved once from config ("parse, don't validate") and
//! swapped whole on reload. Matching is the first stage of a proxied
//! request: path prefix (longest wins), then host, method and headers —
//! among routes with the same prefix, the one with more conditions wins.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use portico_common::config::ConfigError;

use crate::{
    config::{Config, DENIED_PREFIX, ENV_PREFIX, RouteConfig, is_reserved},
    upstream::Upstream,
};

/// Who may use a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    /// Anyone.
    Public,
    /// A valid bearer token.
    Bearer,
    /// A valid bearer token whose roles include this one (403 otherwise).
    Role(String),
}

impl AuthPolicy {
    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "public" => Ok(Self::Public),
            "bearer" => Ok(Self::Bearer),
            other => match other.strip_prefix("role:") {
                Some(role) if !role.is_empty() => Ok(Self::Role(role.to_owned())),
                _ => Err(format!(
                    "`{other}` is not an auth policy (public, bearer or role:<name>)"
                )),
            },
        }
    }

    pub fn needs_token(&self) -> bool {
        *self != Self::Public
    }
}

/// A host condition: an exact name, or `*.example.com` (any subdomain, not
/// the bare domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    Suffix(String),
}

impl HostPattern {
    fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.to_ascii_lowercase();
        let (suffix, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            return Err(format!(
                "`{pattern}` is not a host name or `*.domain` pattern"
            ));
        }
        Ok(if suffix {
            Self::Suffix(format!(".{name}"))
        } else {
            Self::Exact(name.to_owned())
        })
    }

    /// `host` as the client sent it (`Host`, port removed, any case).
    fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match self {
            Self::Exact(name) => host == *name,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

/// A header condition: present with any value (`*`), or equal to a value.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    pub name: HeaderName,
    pub value: Option<HeaderValue>,
}

/// One route, resolved: what it matches and how it forwards.
#[derive(Debug)]
pub struct Route {
    /// The configured prefix, without a trailing slash: also the route's
    /// metric label.
    pub path_prefix: String,
    pub label: Arc<str>,
    pub host: Option<HostPattern>,
    pub methods: Option<Vec<Method>>,
    pub headers: Vec<HeaderCondition>,
    /// What replaces the matched prefix upstream (`""` strips it).
    pub rewrite_prefix: Option<String>,
    pub upstream: Arc<Upstream>,
    pub timeout: Duration,
    /// One attempt's wait for response headers (at most `timeout`).
    pub attempt_timeout: Duration,
    pub auth: AuthPolicy,
    pub max_body_bytes: usize,
    /// Attempts per request in all.
    pub max_attempts: u32,
    pub rate_limit: Option<crate::ratelimit::Limit>,
    pub cors: Option<crate::cors::Cors>,
}

impl Route {
    fn matches_path(&self, path: &str) -> bool {
        path == self.path_prefix
            || (path.starts_with(&self.path_prefix)
                && path.as_bytes().get(self.path_prefix.len()) == Some(&b'/'))
    }

    fn matches(&self, host: Option<&str>, method: &Method, headers: &HeaderMap) -> bool {
        self.host
            .as_ref()
            .is_none_or(|pattern| host.is_some_and(|host| pattern.matches(host)))
            && self
                .methods
                .as_ref()
                .is_none_or(|methods| methods.contains(method))
            && self.headers.iter().all(|condition| {
                headers.get_all(&condition.name).iter().any(|value| {
                    condition
                        .value
                        .as_ref()
                        .is_none_or(|wanted| value == wanted)
                })
            })
    }

    /// How many conditions besides the path: more wins among equal prefixes.
    fn specificity(&self) -> usize {
        usize::from(self.host.is_some()) + usize::from(self.methods.is_some()) + self.headers.len()
    }

    /// The path (and query) sent upstream.
    pub fn upstream_path(&self, path_and_query: &str) -> String {
        match &self.rewrite_prefix {
            None => path_and_query.to_owned(),
            Some(replacement) => {
                let rest = &path_and_query[self.path_prefix.len().min(path_and_query.len())..];
                let joined = format!("{}{rest}", replacement.trim_end_matches('/'));
                if joined.is_empty() || joined.starts_with('?') {
                    format!("/{joined}")
                } else {
                    joined
                }
            }
        }
    }
}

/// Every route, most specific first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// The route for a request, or `None` (404).
    pub fn find(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<&Arc<Route>> {
        self.routes
            .iter()
            .find(|route| route.matches_path(path) && route.matches(host, method, headers))
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Resolves the configured routes against `upstreams`. Every mistake is
    /// an error naming its key: the same rules at startup and on reload.
    pub fn resolve(
        config: &Config,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
    ) -> Result<Self, ConfigError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let upstream = upstreams.get(&route.upstream).cloned().ok_or_else(|| {
                key(
                    i,
                    "upstream",
                    format!("no upstream named `{}`", route.upstream),
                )
            })?;
            routes.push(Arc::new(resolve_route(i, route, config, upstream)?));
        }
        // Longest prefix first; among equal prefixes, more conditions first.
        routes.sort_by(|a, b| {
            b.path_prefix
                .len()
                .cmp(&a.path_prefix.len())
                .then(b.specificity().cmp(&a.specificity()))
        });
        for pair in routes.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.path_prefix == b.path_prefix
                && a.host == b.host
                && a.methods == b.methods
                && same_headers(&a.headers, &b.headers)
            {
                return Err(ConfigError::key(
                    ENV_PREFIX,
                    "routes",
                    format!(
                        "two routes match the same requests (prefix `{}`)",
                        a.path_prefix
                    ),
                ));
            }
        }
        Ok(Self { routes })
    }
}

fn same_headers(a: &[HeaderCondition], b: &[HeaderCondition]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.value == y.value)
}

fn key(i: usize, field: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::key(ENV_PREFIX, &format!("routes.{i}.{field}"), message)
}

fn resolve_route(
    i: usize,
    route: &RouteConfig,
    config: &Config,
    upstream: Arc<Upstream>,
) -> Result<Route, ConfigError> {
    let prefix = route.path_prefix.trim_end_matches('/');
    if !route.path_prefix.starts_with('/') || prefix.is_empty() {
        return Err(key(i, "path_prefix", "must start with `/` and not be `/`"));
    }
    if prefix == DENIED_PREFIX || prefix.starts_with(&format!("{DENIED_PREFIX}/")) {
        return Err(key(i, "path_prefix", "internal APIs are never routed"));
    }
    if is_reserved(prefix) {
        return Err(key(i, "path_prefix", "is served by the gateway itself"));
    }
    if prefix.contains(['{', '}', '*', '?', '#']) || crate::proxy::is_ambiguous(prefix) {
        return Err(key(i, "path_prefix", "must be a literal, normalised path"));
    }
    if route.timeout_ms == 0 {
        return Err(key(i, "timeout_ms", "must be positive"));
    }
    if route.attempt_timeout_ms == Some(0) {
        return Err(key(i, "attempt_timeout_ms", "must be positive"));
    }
    let rate_limit = route
        .rate_limit
        .as_ref()
        .map(|limit| crate::ratelimit::Limit::parse(limit, prefix))
        .transpose()
        .map_err(|(field, err)| key(i, &format!("rate_limit.{field}"), err))?;
    let cors = route
        .cors
        .as_ref()
        .map(crate::cors::Cors::new)
        .transpose()
        .map_err(|(field, err)| key(i, &format!("cors.{field}"), err))?;
    if route.max_attempts == Some(0) {
        return Err(key(i, "max_attempts", "must be at least 1"));
    }
    if route.max_body_bytes == Some(0) {
        return Err(key(i, "max_body_bytes", "must be positive"));
    }
    let auth = match (&route.auth, route.require_auth) {
        (Some(policy), None) => AuthPolicy::parse(policy).map_err(|err| key(i, "auth", err))?,
        (None, Some(true)) => AuthPolicy::Bearer,
        (None, Some(false)) => AuthPolicy::Public,
        (Some(_), Some(_)) => {
            return Err(key(
                i,
                "auth",
                "give `auth` or the older `require_auth`, not both",
            ));
        }
        (None, None) => {
            return Err(key(
                i,
                "auth",
                "every route states its auth policy: public, bearer or role:<name>",
            ));
        }
    };
    let host = route
        .host
        .as_deref()
        .map(HostPattern::parse)
        .transpose()
        .map_err(|err| key(i, "host", err))?;
    let methods = route
        .methods
        .as_ref()
        .map(|methods| {
            if methods.is_empty() {
                return Err(key(
                    i,
                    "methods",
                    "list at least one method, or leave it out",
                ));
            }
            methods
                .iter()
                .map(|m| {
                    let upper = m.to_ascii_uppercase();
                    match Method::from_bytes(upper.as_bytes()) {
                        Ok(method)
                            if [
                                Method::GET,
                                Method::HEAD,
                                Method::POST,
                                Method::PUT,
                                Method::PATCH,
                                Method::DELETE,
                                Method::OPTIONS,
                            ]
                            .contains(&method) =>
                        {
                            Ok(method)
                        }
                        _ => Err(key(i, "methods", format!("`{m}` is not an HTTP method"))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let mut headers = Vec::with_capacity(route.headers.len());
    for (name, value) in &route.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| key(i, "headers", format!("`{name}` is not a header name")))?;
        let value =
            match value.as_str() {
                "*" => None,
                exact => Some(HeaderValue::from_str(exact).map_err(|_| {
                    key(i, "headers", format!("`{name}`: not a valid header value"))
                })?),
            };
        headers.push(HeaderCondition {
            name: header_name,
            value,
        });
    }
    if let Some(rewrite) = &route.rewrite_prefix
        && !(rewrite.is_empty() || rewrite.starts_with('/'))
    {
        return Err(key(
            i,
            "rewrite_prefix",
            "must be empty (strip the prefix) or start with `/`",
        ));
    }
    let attempt_timeout_ms = route
        .attempt_timeout_ms
        .unwrap_or(config.proxy.attempt_timeout_ms)
        .min(route.timeout_ms);
    Ok(Route {
        path_prefix: prefix.to_owned(),
        label: Arc::from(prefix),
        host,
        methods,
        headers,
        rewrite_prefix: route.rewrite_prefix.clone(),
        upstream,
        timeout: Duration::from_millis(route.timeout_ms),
        attempt_timeout: Duration::from_millis(attempt_timeout_ms),
        auth,
        max_body_bytes: route.max_body_bytes.unwrap_or(config.proxy.max_body_bytes),
        max_attempts: route.max_attempts.unwrap_or(config.proxy.max_attempts),
        rate_limit,
        cors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Policy;
    use portico_common::config::ServiceConfig as _;

    fn upstreams() -> BTreeMap<String, Arc<Upstream>> {
        ["auth", "user", "canary"]
            .into_iter()
            .map(|name| {
                let upstream = Upstream::new(
                    name,
                    &["http://127.0.0.1:1".to_owned()],
                    Policy::RoundRobin,
                    &BTreeMap::new(),
                )
                .unwrap();
                (name.to_owned(), Arc::new(upstream))
            })
            .collect()
    }

    fn route(prefix: &str, upstream: &str) -> RouteConfig {
        RouteConfig {
            path_prefix: prefix.to_owned(),
            upstream: upstream.to_owned(),
            timeout_ms: 1000,
            require_auth: None,
            auth: Some("public".to_owned()),
            attempt_timeout_ms: None,
            host: None,
            methods: None,
            headers: BTreeMap::new(),
            rewrite_prefix: None,
            max_body_bytes: None,
            max_attempts: None,
            rate_limit: None,
            cors: None,
        }
    }

    fn table(routes: Vec<RouteConfig>) -> Result<RouteTable, String> {
        let mut config = Config::built_in();
        config.routes = routes;
        RouteTable::resolve(&config, &upstreams()).map_err(|err| err.to_string())
    }

    fn find<'a>(
        table: &'a RouteTable,
        host: &str,
        method: Method,
        path: &str,
        headers: &[(&'static str, &'static str)],
    ) -> Option<&'a str> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        table
            .find(Some(host), &method, path, &map)
            .map(|route| route.upstream.name.as_str())
    }

    #[test]
    fn the_longest_prefix_wins_on_segment_boundaries() {
        let table = table(vec![route("/v1", "auth"), route("/v1/users", "user")]).unwrap();
        assert_eq!(
            find(&table, "h", Method::GET, "/v1/users/me", &[]),
            Some("user")
        );
        assert_eq!(
            find(&table, "h", Method::GET, "/v1/users", &[]),
            Some("user")
        );
        assert_eq!(
            find(&table, "h", Method::GET, "/v1/usersx", &[]),
            Some("auth")
        );
        assert_eq!(find(&table, "h", Method::GET, "/v2", &[]), None);
    }

    #[test]
    fn host_method_and_header_conditions_narrow_a_route() {
        let mut by_host = route("/v1/users", "canary");
        by_host.host = Some("*.example.com".to_owned());
        let mut by_header = route("/v1/users", "auth");
        by_header.headers = BTreeMap::from([("x-pin".to_owned(), "canary".to_owned())]);
        by_header.methods = Some(vec!["get".to_owned()]);
        let table = table(vec![route("/v1/users", "user"), by_host, by_header]).unwrap();
        assert_eq!(
            find(&table, "api.example.com", Method::GET, "/v1/users", &[]),
            Some("canary")
        );
        assert_eq!(
            find(&table, "example.com", Method::GET, "/v1/users", &[]),
            Some("user")
        );
        assert_eq!(
            find(
                &table,
                "h",
                Method::GET,
                "/v1/users",
                &[("x-pin", "canary")]
            ),
            Some("auth")
        );
        assert_eq!(
            find(
                &table,
                "h",
                Method::POST,
                "/v1/users",
                &[("x-pin", "canary")]
            ),
            Some("user")
        );
    }

    #[test]
    fn an_exact_host_route_alone_answers_only_that_host() {
        let mut only = route("/v1/users", "user");
        only.host = Some("API.example.com".to_owned());
        let table = table(vec![only]).unwrap();
        assert_eq!(
            find(&table, "api.EXAMPLE.com", Method::GET, "/v1/users", &[]),
            Some("user")
        );
        assert_eq!(
            find(&table, "other.example.com", Method::GET, "/v1/users", &[]),
            None
        );
    }

    #[test]
    fn a_rewrite_replaces_or_strips_the_matched_prefix() {
        let mut strip = route("/api/users", "user");
        strip.rewrite_prefix = Some(String::new());
        let mut replace = route("/legacy", "user");
        replace.rewrite_prefix = Some("/v1/users".to_owned());
        let table = table(vec![strip, replace]).unwrap();
        let strip = &table.routes()[0];
        let replace = &table.routes()[1];
        assert_eq!(strip.upstream_path("/api/users/me?x=1"), "/me?x=1");
        assert_eq!(strip.upstream_path("/api/users"), "/");
        assert_eq!(strip.upstream_path("/api/users?x=1"), "/?x=1");
        assert_eq!(replace.upstream_path("/legacy/me"), "/v1/users/me");
    }

    #[test]
    fn auth_policies_parse_and_the_older_flag_still_works() {
        let mut role = route("/v1/admin", "auth");
        role.auth = Some("role:admin".to_owned());
        let mut old = route("/v1/users", "user");
        old.auth = None;
        old.require_auth = Some(true);
        let table = table(vec![role, old]).unwrap();
        assert_eq!(table.routes()[0].auth, AuthPolicy::Role("admin".to_owned()));
        assert_eq!(table.routes()[1].auth, AuthPolicy::Bearer);
    }

    #[test]
    fn every_route_mistake_names_its_key() {
        type Change = Box<dyn Fn(&mut RouteConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|r| r.upstream = "nope".into()),
                "routes.0.upstream",
            ),
            (
                Box::new(|r| r.host = Some("bad host!".into())),
                "routes.0.host",
            ),
            (Box::new(|r| r.host = Some("*.".into())), "routes.0.host"),
            (
                Box::new(|r| r.methods = Some(vec!["FETCH".into()])),
                "routes.0.methods",
            ),
            (Box::new(|r| r.methods = Some(vec![])), "routes.0.methods"),
            (
                Box::new(|r| r.auth = Some("admins".into())),
                "routes.0.auth",
            ),
            (Box::new(|r| r.auth = None), "routes.0.auth"),
            (Box::new(|r| r.require_auth = Some(true)), "routes.0.auth"),
            (
                Box::new(|r| r.headers = BTreeMap::from([("bad name".into(), "*".into())])),
                "routes.0.headers",
            ),
            (
                Box::new(|r| r.rewrite_prefix = Some("v2".into())),
                "routes.0.rewrite_prefix",
            ),
            (
                Box::new(|r| r.max_body_bytes = Some(0)),
                "routes.0.max_body_bytes",
            ),
            (
                Box::new(|r| r.path_prefix = "/a/../b".into()),
                "routes.0.path_prefix",
            ),
        ];
        for (change, wanted) in cases {
            let mut bad = route("/v1/users", "user");
            change(&mut bad);
            let err = table(vec![bad]).unwrap_err();
            assert!(err.contains(wanted), "{wanted}: {err}");
        }
    }

    #[test]
    fn two_routes_matching_the_same_requests_are_refused() {
        let err = table(vec![
            route("/v1/users/", "user"),
            route("/v1/users", "auth"),
        ])
        .unwrap_err();
        assert!(err.contains("routes"), "{err}");
        assert!(err.contains("same requests"), "{err}");
        // A condition tells them apart.
        let mut narrower = route("/v1/users", "auth");
        narrower.methods = Some(vec!["GET".to_owned()]);
        table(vec![route("/v1/users", "user"), narrower]).unwrap();
    }
}
