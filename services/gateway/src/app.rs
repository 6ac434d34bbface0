//! Wiring: config → upstreams, routes, verifier → a running gateway.

use std::{convert::Infallible, sync::Arc, task::Poll};

use anyhow::Context as _;
use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{Request, State},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use futures::future::BoxFuture;
use http::{Method, StatusCode, header};
use portico_common::{
    admin::Readiness,
    app::{self, Assembly, Context, Service},
    http::{
        access_log::AccessLog,
        client::HttpClient,
        pipeline::{self, RouteLabel},
        server::Api,
        tls::ServerTls,
    },
    jwt::{JwksCache, KeySource, Revocations},
};
use tower::ServiceExt as _;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    compression,
    config::Config,
    cors,
    edge_headers::SecurityHeaders,
    error::GatewayError,
    grpc,
    openapi::PublicDocument,
    proxy::Proxy,
    ratelimit::{Limiter, redis::RedisGcra},
    running::{Live, Snapshot, UpstreamsCheck},
};

/// What every request handler shares: one `Arc`, so the per-request copy
/// axum's `State` makes is one reference count, not one per part (counts
/// both worker threads touch on every request).
#[derive(Clone)]
struct GatewayState(Arc<Shared>);

struct Shared {
    proxy: Proxy,
    live: Live,
    document: Arc<PublicDocument>,
    security_headers: Arc<SecurityHeaders>,
}

impl std::ops::Deref for GatewayState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The gateway, as the application shell runs it.
#[derive(Debug)]
pub struct Gateway;

/// A built gateway, listening but not yet serving.
pub type Application = app::Application<Gateway>;

impl Service for Gateway {
    const NAME: &'static str = "portico-gateway";
    type Config = Config;
    type Handle = ();

    async fn assemble(config: Config, context: Context) -> anyhow::Result<Assembly<()>> {
        let live = Live::start(Snapshot::build(&config, 1, None)?).await;
        let snapshot = live.load();

        let client = HttpClient::new(&config.http_client)?;
        let jwks = Arc::new(JwksCache::new(config.tokens.jwks.clone(), client.clone()));
        let revocations = Revocations::new(config.tokens.revocations.clone(), client.clone());
        let verifier = Arc::new(
            config
                .tokens
                .verifier(KeySource::Remote(jwks.clone()), context.clock)
                .with_revocations(revocations.clone()),
        );
        let redis = config.redis.client().context("invalid redis.url")?;
        let limiter = Limiter::new(
            redis
                .clone()
                .map(|client| RedisGcra::new(client, &config.redis.key_prefix)),
        );
        let security_headers = SecurityHeaders::new(&config.security_headers)
            .map_err(|(field, err)| anyhow::anyhow!("security_headers.{field}: {err}"))?;
        let document = Arc::new(PublicDocument::new(client, live.clone()));
        let state = GatewayState(Arc::new(Shared {
            proxy: Proxy::new(&config.proxy, config.access_log.enabled, verifier, limiter),
            live: live.clone(),
            document: document.clone(),
            security_headers: Arc::new(security_headers),
        }));

        // Ready means: config loaded (we got here), keys to verify tokens
        // with when a route needs them, and a usable replica per upstream.
        let mut readiness = Readiness::new().with(UpstreamsCheck(live.clone()));
        if snapshot
            .routes
            .routes()
            .iter()
            .any(|route| route.auth.needs_token())
        {
            readiness = readiness
                .with(jwks.readiness_check())
                .with(revocations.readiness_check());
        }
        readiness = readiness.with_redis(redis.clone());
        for route in snapshot.routes.routes() {
            tracing::info!(prefix = %route.path_prefix, upstream = %route.upstream.name,
                replicas = route.upstream.endpoints().len(), auth = ?route.auth, "route");
        }
        let mut assembly = Assembly::new(edge(state, &config), readiness, ());
        if config.tls.enabled {
            let tls = ServerTls::load(&config.tls)
                .map(Arc::new)
                .map_err(|(field, err)| anyhow::anyhow!("tls.{field}: {err}"))?;
            assembly.background.push(Box::pin(tls.clone().follow()));
            assembly.tls = Some(tls);
        }
        assembly.admin = Some(live.admin_routes());
        revocations.catch_up_at_start().await;
        if let Some(redis) = redis {
            assembly
                .background
                .push(Box::pin(revocations.clone().follow_redis(redis)));
        }
        assembly.background.push(Box::pin(revocations.follow()));
        assembly.background.push(Box::pin(document.follow()));
        let config_file = std::env::var_os(format!("{}CONFIG_FILE", crate::config::ENV_PREFIX))
            .map(std::path::PathBuf::from);
        assembly.background.push(Box::pin(live.follow(config_file)));
        Ok(assembly)
    }
}

/// `/openapi.json` and `/docs` are the gateway's own; everything else goes
/// through the route table of the running configuration. The edge takes
/// every request whole: no router in front of it (its pages have one).
fn edge(state: GatewayState, config: &Config) -> Api {
    let swagger: Router<GatewayState> = Router::from(
        SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::new(["/openapi.json"])),
    )
    .route_layer(middleware::map_response(mark_docs_page));
    let pages = Router::new()
        .route("/openapi.json", get(openapi_document))
        .merge(swagger)
        .with_state(state.clone());
    let routes = Routes(Arc::new(RoutesParts { state, pages }));
    let edge = Edge(Arc::new(EdgeParts {
        // Inside the pipeline: the access log counts the bytes that were
        // sent.
        compressed: compression::layer(&config.compression).map(|layer| {
            (
                tower::Layer::layer(&layer, routes.clone()),
                compression::Compressible::new(&config.compression),
            )
        }),
        routes,
        access_log: config.access_log.enabled.then_some(AccessLog {
            success_sample_rate: config.access_log.success_sample_rate,
        }),
    }));
    Api::Handler(Arc::new(move |request| {
        Box::pin(edge.clone().answer(request))
    }))
}

/// The gateway's whole answer to a request, as one future: the pipeline
/// (observation, deadline, panics) around compression and the routes, the
/// gRPC statuses of its own problems, the security headers. Plain calls
/// rather than a stack of middleware layers, each of which boxed its
/// future and cloned its inner stack per request. One `Arc` (a request
/// copies it: one count both cores touch, not one per part).
#[derive(Clone)]
struct Edge(Arc<EdgeParts>);

struct EdgeParts {
    routes: Routes,
    /// The compression layer around the routes, and what it compresses.
    compressed: Option<(Compressed, compression::Compressible)>,
    access_log: Option<AccessLog>,
}

type Compressed = tower_http::compression::Compression<Routes, compression::Compressible>;

impl Edge {
    async fn answer(self, request: Request) -> Response {
        let edge = self.0;
        let grpc = grpc::is_grpc(request.headers());
        // The routes' future (the proxying, several KiB) is boxed where it
        // starts — here, or in `Routes::call` under compression — so that
        // the pipeline's wrappers around it, and the box this whole answer
        // is served in, move a pointer rather than copy it each.
        let response = pipeline::around(edge.access_log, request, |request| async {
            match &edge.compressed {
                Some((compressed, _))
                    if request.headers().contains_key(header::ACCEPT_ENCODING) =>
                {
                    match compressed.clone().oneshot(request).await {
                        Ok(response) => response.map(Body::new),
                        Err(never) => match never {},
                    }
                }
                // A client that accepts no encoding gets the answer as it
                // is. The layer would only pass its body through, wrapped
                // in a value sized for its encoders' state (5.8 KB, moved
                // whole five times per request).
                Some((_, compressible)) => {
                    let mut response = Box::pin(edge.routes.route(request)).await;
                    compressible.mark_vary(&mut response);
                    response
                }
                None => Box::pin(edge.routes.route(request)).await,
            }
        })
        .await;
        // gRPC statuses for gRPC clients, the pipeline's own refusals
        // (timeouts, bad heads) included.
        let mut response = if grpc {
            grpc::as_grpc_status(response)
        } else {
            response
        };
        // Last, so every answer has them: proxied ones, the gateway's own
        // errors and pages, and what the pipeline refuses.
        let security = &edge.routes.0.state.security_headers;
        let docs = response.extensions().get::<DocsPage>().is_some();
        security.apply(response.headers_mut());
        if docs {
            security.apply_docs_policy(response.headers_mut());
        }
        response
    }
}

/// The gateway's pages, else the route table.
#[derive(Clone)]
struct Routes(Arc<RoutesParts>);

struct RoutesParts {
    state: GatewayState,
    pages: Router,
}

impl Routes {
    async fn route(&self, request: Request) -> Response {
        let path = request.uri().path();
        if crate::config::is_reserved(path) {
            match self.0.pages.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        } else {
            route_request(&self.0.state, request).await
        }
    }
}

/// What the compression layer wraps.
impl tower::Service<Request> for Routes {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let routes = self.clone();
        Box::pin(async move { Ok(routes.route(request).await) })
    }
}

/// Response extension: a page of `/docs`, which gets the docs policy
/// (Swagger UI loads its own scripts, styles and images).
#[derive(Debug, Clone, Copy)]
struct DocsPage;

async fn mark_docs_page(mut response: Response) -> Response {
    response.extensions_mut().insert(DocsPage);
    response.extensions_mut().insert(RouteLabel("/docs".into()));
    response
}

/// Match route (in the snapshot this request started with), then answer a
/// CORS preflight here or forward; the operation's path template in the
/// public document (else the route's prefix) labels the request's metrics.
async fn route_request(state: &GatewayState, request: Request) -> Response {
    // The snapshot lives as long as the request: its route is borrowed, not
    // copied (a route owns strings and lists).
    let snapshot = state.live.load();
    let cors_request = cors::classify(request.method(), request.headers());
    // A preflight is matched as the request it announces; a WebSocket
    // over HTTP/2 (extended CONNECT) as the GET it is over HTTP/1.1.
    let method = match &cors_request {
        cors::CorsRequest::Preflight { method, .. } => method,
        _ if crate::upgrade::is_extended_connect(request.method(), request.extensions()) => {
            &Method::GET
        }
        _ => request.method(),
    };
    let Some(route) = snapshot.routes.find(
        request_host(&request),
        method,
        request.uri().path(),
        request.headers(),
    ) else {
        return GatewayError::NoRoute.into_response();
    };
    let label = state
        .document
        .operation_label(request.uri().path())
        .unwrap_or_else(|| route.label.clone());
    let mut response = match (&route.cors, cors_request) {
        // Answered here: a preflight carries no credentials, and the
        // upstream has nothing to add.
        (Some(policy), cors::CorsRequest::Preflight { origin, method }) => {
            match policy.preflight(origin, &method, request.headers()) {
                Some(headers) => (StatusCode::NO_CONTENT, headers).into_response(),
                None => GatewayError::CorsRefused.into_response(),
            }
        }
        (policy, cors_request) => {
            let origin = match cors_request {
                cors::CorsRequest::Actual { origin } => Some(origin.clone()),
                _ => None,
            };
            // Boxed (as the sending inside it is): rustc lays an async fn
            // out with room for the future it awaits beside the place that
            // future is built in, so each layer about doubled what it
            // wrapped — 4 KB of sending made 20 KB here, moved whole
            // several times per request.
            let mut response = match Box::pin(state.proxy.forward(route, request)).await {
                Ok(response) => response,
                Err(err) => err.into_response(),
            };
            if let (Some(policy), Some(origin)) = (policy, &origin) {
                policy.apply(origin, response.headers_mut());
            }
            response
        }
    };
    response.extensions_mut().insert(RouteLabel(label));
    response
}

/// The host the client asked for, without a port: `Host`, or the
/// authority of an absolute-form request target.
fn request_host(request: &Request) -> Option<&str> {
    let raw = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))?;
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => raw.split(':').next().unwrap_or_default(),
    };
    Some(host)
}

async fn openapi_document(State(state): State<GatewayState>) -> impl IntoResponse {
    (
        Extension(RouteLabel("/openapi.json".into())),
        Json(state.document.get().await),
    )
}
