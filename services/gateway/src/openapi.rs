//! The public API's OpenAPI document, assembled from the upstreams' own
//! documents (so it always describes what is deployed), and a browsable
//! reference at `/docs` served from assets compiled into the binary.
//!
//! The same document names the operations behind each route: a proxied
//! request's metrics carry the path template of its operation
//! (`/v1/users/{id}`) rather than the route's prefix.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use portico_common::http::client::HttpClient;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::{config::DENIED_PREFIX, running::Live, upstream::Upstream};

/// How long an assembled document is served before upstreams are asked again.
const CACHE_FOR: Duration = Duration::from_secs(30);

/// How soon an incomplete document (an upstream unreachable) is assembled
/// again in the background, so operation labels appear once it answers.
const RETRY_INCOMPLETE_AFTER: Duration = Duration::from_secs(2);

/// Where to fetch one upstream's document.
#[derive(Debug)]
pub struct Source {
    pub upstream: Arc<Upstream>,
    pub path: String,
}

#[derive(Debug)]
pub struct PublicDocument {
    client: HttpClient,
    /// The running routes and upstreams: a reload changes the document.
    live: Live,
    /// The merged document, when, and for which config version.
    cached: Mutex<Option<(Instant, u64, Value)>>,
    /// The public operations of the last document assembled.
    operations: ArcSwap<Operations>,
}

impl PublicDocument {
    pub fn new(client: HttpClient, live: Live) -> Self {
        Self {
            client,
            live,
            cached: Mutex::new(None),
            operations: ArcSwap::default(),
        }
    }

    /// The merged document. A complete result is cached; when an upstream
    /// cannot be reached the document omits it and is not cached.
    pub async fn get(&self) -> Value {
        self.assemble().await.0
    }

    /// The metric label of the operation `path` belongs to: its path
    /// template in the public document, if it has one.
    pub fn operation_label(&self, path: &str) -> Option<Arc<str>> {
        self.operations.load().label(path)
    }

    /// Keeps the operations current: assembles the document at start, again
    /// soon while an upstream is missing from it, and then as often as the
    /// cache expires (a deploy may add operations; a reload, routes).
    pub async fn follow(self: Arc<Self>) {
        loop {
            let (_, complete) = self.assemble().await;
            let wait = if complete {
                CACHE_FOR
            } else {
                RETRY_INCOMPLETE_AFTER
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The merged document and whether every upstream contributed to it.
    async fn assemble(&self) -> (Value, bool) {
        let snapshot = self.live.load();
        let mut cached = self.cached.lock().await;
        if let Some((at, version, doc)) = cached.as_ref()
            && at.elapsed() < CACHE_FOR
            && *version == snapshot.version
        {
            return (doc.clone(), true);
        }
        // Route prefixes: only operations under them are public, with the
        // statuses their routes' edge policies add.
        let routes: Vec<RoutedPrefix> = snapshot
            .routes
            .routes()
            .iter()
            .map(|route| RoutedPrefix::of(route))
            .collect();
        let sources: Vec<Source> = snapshot
            .openapi_paths
            .iter()
            .filter_map(|(name, path)| {
                Some(Source {
                    upstream: snapshot.upstreams.get(name)?.clone(),
                    path: path.clone(),
                })
            })
            .collect();
        let mut parts = Vec::new();
        let mut complete = true;
        for source in &sources {
            match self.fetch(source).await {
                Some(doc) => parts.push(doc),
                None => complete = false,
            }
        }
        let merged = merge(&parts, &routes);
        // A document missing an upstream would take its labels away until
        // it answers again: keep the last complete set meanwhile.
        if complete || self.operations.load().is_empty() {
            self.operations.store(Arc::new(Operations::of(&merged)));
        }
        if complete {
            *cached = Some((Instant::now(), snapshot.version, merged.clone()));
        }
        (merged, complete)
    }

    async fn fetch(&self, source: &Source) -> Option<Value> {
        for endpoint in source
            .upstream
            .attempts(crate::balance::PickContext::default())
        {
            let url = format!("{}{}", endpoint.base_url, source.path);
            match self.client.get(&url).send().await {
                Ok(response) if response.status().is_success() => match response
                    .json::<Value>()
                    .await
                {
                    Ok(doc) => return Some(doc),
                    Err(err) => tracing::warn!(%url, %err, "upstream OpenAPI document unreadable"),
                },
                Ok(response) => {
                    tracing::warn!(%url, status = %response.status(), "upstream OpenAPI document unavailable")
                }
                Err(err) => tracing::warn!(%url, %err, "upstream OpenAPI document unavailable"),
            }
        }
        None
    }
}

/// The public operations' path templates, matched against request paths.
/// Only documented paths become labels, so the label set stays as small as
/// the API (an unknown path is labelled with its route's prefix).
#[derive(Debug, Default)]
pub struct Operations {
    router: matchit::Router<Arc<str>>,
    count: usize,
}

impl Operations {
    /// The operations of a merged document. OpenAPI's `{name}` segments are
    /// the matcher's own syntax; a template it cannot hold (a parameter
    /// inside a segment, say) is left out and its requests keep the
    /// route's label.
    pub fn of(document: &Value) -> Self {
        let mut router = matchit::Router::new();
        let mut count = 0;
        for path in document
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|paths| paths.keys())
        {
            match router.insert(path.as_str(), Arc::from(path.as_str())) {
                Ok(()) => count += 1,
                Err(err) => {
                    tracing::debug!(%path, %err, "operation left without its own metric label")
                }
            }
        }
        Self { router, count }
    }

    pub fn label(&self, path: &str) -> Option<Arc<str>> {
        self.router.at(path).ok().map(|found| found.value.clone())
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A route's prefix and the statuses its edge policies may answer with.
#[derive(Debug, Clone)]
pub struct RoutedPrefix {
    pub prefix: String,
    pub statuses: Vec<(&'static str, String)>,
}

impl RoutedPrefix {
    /// A prefix whose route adds nothing of its own.
    pub fn plain(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            statuses: Vec::new(),
        }
    }

    pub fn of(route: &crate::routing::Route) -> Self {
        let mut statuses = Vec::new();
        if let crate::routing::AuthPolicy::Role(role) = &route.auth {
            statuses.push((
                "403",
                format!("The token is valid but lacks the `{role}` role"),
            ));
        }
        if route.rate_limit.is_some() {
            statuses.push((
                "429",
                "Over the route's rate limit: see `Retry-After` and the `RateLimit` headers"
                    .to_owned(),
            ));
        }
        Self {
            prefix: route.path_prefix.clone(),
            statuses,
        }
    }

    fn covers(&self, path: &str) -> bool {
        path == self.prefix || path.starts_with(&format!("{}/", self.prefix))
    }
}

fn is_public(path: &str, routes: &[RoutedPrefix]) -> bool {
    let internal = path == DENIED_PREFIX || path.starts_with(&format!("{DENIED_PREFIX}/"));
    !internal && routes.iter().any(|route| route.covers(path))
}

/// The statuses the routes serving `path` add: those of every route with
/// the longest prefix covering it (routes on one prefix may differ by host,
/// method or header, and the document cannot tell them apart).
fn route_statuses<'r>(path: &str, routes: &'r [RoutedPrefix]) -> Vec<&'r (&'static str, String)> {
    let longest = routes
        .iter()
        .filter(|route| route.covers(path))
        .map(|route| route.prefix.len())
        .max();
    routes
        .iter()
        .filter(|route| Some(route.prefix.len()) == longest && route.covers(path))
        .flat_map(|route| route.statuses.iter())
        .collect()
}

/// Statuses the gateway itself may answer on any proxied operation.
fn gateway_responses() -> [(&'static str, &'static str); 7] {
    [
        ("408", "The request body was not received in time"),
        ("413", "Body over the gateway's limit"),
        (
            "414",
            "The request target is longer than the gateway accepts",
        ),
        (
            "431",
            "The request's headers are larger than the gateway accepts",
        ),
        ("502", "The service failed mid-request"),
        (
            "503",
            "No replica of the service is reachable, or it is at capacity (see Retry-After)",
        ),
        ("504", "The service did not answer in time"),
    ]
}

/// Merges upstream documents: public paths only, their component schemas,
/// the bearer scheme, and the gateway's own error responses on every
/// operation.
pub fn merge(docs: &[Value], routes: &[RoutedPrefix]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut security_schemes = Map::new();
    let mut tags = Vec::new();
    for doc in docs {
        if let Some(doc_paths) = doc.get("paths").and_then(Value::as_object) {
            for (path, item) in doc_paths {
                if is_public(path, routes) {
                    paths.insert(path.clone(), item.clone());
                }
            }
        }
        let components = doc.get("components");
        for (target, key) in [
            (&mut schemas, "schemas"),
            (&mut security_schemes, "securitySchemes"),
        ] {
            if let Some(map) = components
                .and_then(|c| c.get(key))
                .and_then(Value::as_object)
            {
                for (name, value) in map {
                    target.entry(name.clone()).or_insert_with(|| value.clone());
                }
            }
        }
        for tag in doc
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if tag.get("name").and_then(Value::as_str) != Some("internal") && !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
    }
    for (path, item) in paths.iter_mut() {
        // A path parameter can carry an encoded separator or dot segment,
        // which the gateway refuses with 400 before any upstream sees it.
        let templated = path.contains('{');
        let edge = route_statuses(path, routes);
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let refused_paths = templated.then_some((
                "400",
                "The path contains dot segments or encoded separators",
            ));
            let edge = edge
                .iter()
                .map(|(status, description)| (*status, description.as_str()));
            for (status, description) in gateway_responses()
                .into_iter()
                .chain(refused_paths)
                .chain(edge)
            {
                responses.entry(status.to_owned()).or_insert_with(|| {
                    json!({
                        "description": description,
                        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                    })
                });
            }
        }
    }
    let schemas = referenced_schemas(&paths, schemas);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Portico API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The public API, as served through the gateway. Errors are RFC 9457 problem details (`application/problem+json`) carrying a `request_id`."
        },
        "tags": tags,
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": security_schemes},
    })
}

/// The schemas reachable from `paths` (directly or through other schemas):
/// upstream documents also describe internal operations whose schemas must
/// not leak into the public document.
fn referenced_schemas(
    paths: &Map<String, Value>,
    mut all: Map<String, Value>,
) -> Map<String, Value> {
    const PREFIX: &str = "#/components/schemas/";
    fn collect_refs(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner.as_str()) {
                        ("$ref", Some(reference)) => {
                            if let Some(name) = reference.strip_prefix(PREFIX) {
                                into.push(name.to_owned());
                            }
                        }
                        _ => collect_refs(inner, into),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| collect_refs(item, into)),
            _ => {}
        }
    }
    let mut pending = Vec::new();
    for item in paths.values() {
        collect_refs(item, &mut pending);
    }
    let mut kept = Map::new();
    while let Some(name) = pending.pop() {
        if kept.contains_key(&name) {
            continue;
        }
        if let Some(schema) = all.remove(&name) {
            collect_refs(&schema, &mut pending);
            kept.insert(name, schema);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled_with_their_operations_template() {
        let doc = json!({"paths": {
            "/v1/users/me": {"get": {"responses": {}}},
            "/v1/users/{id}": {"get": {"responses": {}}},
            "/v1/auth/login": {"post": {"responses": {}}},
            "/v1/files/{name}.json": {"get": {"responses": {}}},
            "/internal/users": {"post": {"responses": {}}}
        }});
        let merged = merge(
            &[doc],
            &[
                RoutedPrefix::plain("/v1/users"),
                RoutedPrefix::plain("/v1/auth"),
            ],
        );
        let operations = Operations::of(&merged);
        let label = |path| operations.label(path).map(|label| label.to_string());
        assert_eq!(label("/v1/users/me").as_deref(), Some("/v1/users/me"));
        assert_eq!(
            label("/v1/users/0192f7a4-1b2c").as_deref(),
            Some("/v1/users/{id}")
        );
        assert_eq!(label("/v1/auth/login").as_deref(), Some("/v1/auth/login"));
        // Not documented (or not public): the route's prefix labels it.
        assert_eq!(label("/v1/auth/nowhere"), None);
        assert_eq!(label("/v1/users/a/b"), None);
        assert_eq!(label("/internal/users"), None);
    }

    #[test]
    fn operations_with_path_parameters_document_the_gateways_400() {
        let doc = json!({"paths": {
            "/v1/things/{id}": {"delete": {"responses": {"204": {"description": "ok"}}}},
            "/v1/things": {"get": {"responses": {"200": {"description": "ok"}}}}
        }});
        let merged = merge(&[doc], &[RoutedPrefix::plain("/v1/things")]);
        let templated = &merged["paths"]["/v1/things/{id}"]["delete"]["responses"];
        let fixed = &merged["paths"]["/v1/things"]["get"]["responses"];
        assert!(templated.get("400").is_some(), "{templated}");
        assert!(fixed.get("400").is_none(), "{fixed}");
    }

    #[test]
    fn internal_paths_and_unrouted_paths_are_left_out() {
        let doc = json!({
            "paths": {
                "/v1/users/me": {"get": {"responses": {"200": {"description": "ok"}}}},
                "/internal/users": {"post": {"responses": {}}},
                "/v2/other": {"get": {"responses": {}}}
            },
            "components": {"schemas": {
                "Problem": {"type": "object", "properties": {"errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}}},
                "FieldError": {"type": "object"},
                "CreateUser": {"type": "object"}
            }},
            "tags": [{"name": "users"}, {"name": "internal"}]
        });
        // A prefix covering /internal (which config validation refuses)
        // still does not publish it.
        let merged = merge(
            &[doc],
            &[
                RoutedPrefix::plain("/v1/users"),
                RoutedPrefix::plain("/internal"),
            ],
        );
        let paths = merged["paths"].as_object().unwrap();
        assert_eq!(paths.keys().collect::<Vec<_>>(), ["/v1/users/me"]);
        assert_eq!(merged["tags"], json!([{"name": "users"}]));
        let responses = &merged["paths"]["/v1/users/me"]["get"]["responses"];
        for status in ["200", "413", "414", "431", "502", "503", "504"] {
            assert!(responses.get(status).is_some(), "{status}");
        }
        let schemas = merged["components"]["schemas"].as_object().unwrap();
        assert!(
            schemas.contains_key("Problem"),
            "referenced by the gateway's own responses"
        );
        assert!(
            schemas.contains_key("FieldError"),
            "referenced through Problem"
        );
        assert!(
            !schemas.contains_key("CreateUser"),
            "only used by internal operations"
        );
    }

    #[test]
    fn a_rate_limited_role_route_documents_its_403_and_429() {
        let doc = json!({"paths": {
            "/v1/admin/users": {"get": {"responses": {"200": {"description": "ok"}}}},
            "/v1/users/me": {"get": {"responses": {"200": {"description": "ok"}}}}
        }});
        let admin = RoutedPrefix {
            prefix: "/v1/admin".into(),
            statuses: vec![
                ("403", "lacks the role".into()),
                ("429", "over the limit".into()),
            ],
        };
        let merged = merge(&[doc], &[RoutedPrefix::plain("/v1"), admin]);
        let guarded = &merged["paths"]["/v1/admin/users"]["get"]["responses"];
        assert!(
            guarded.get("403").is_some() && guarded.get("429").is_some(),
            "{guarded}"
        );
        let plain = &merged["paths"]["/v1/users/me"]["get"]["responses"];
        assert!(
            plain.get("403").is_none() && plain.get("429").is_none(),
            "{plain}"
        );
    }
}
