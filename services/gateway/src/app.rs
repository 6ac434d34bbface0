//! Wiring: config → upstreams, routes, verifier → a running gateway.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use portico_common::{
    admin::Readiness,
    app::{self, Assembly, Context, Service},
    http::{
        client::HttpClient,
        pipeline::{self, PipelineOptions},
    },
    jwt::{JwksCache, KeySource, Revocations, TokenVerifier},
};
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    config::Config,
    openapi::{PublicDocument, Source},
    proxy::{Proxy, Route},
    upstream::{Upstream, UpstreamsCheck},
};

#[derive(Clone)]
struct GatewayState {
    proxy: Arc<Proxy>,
    document: Arc<PublicDocument>,
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
        let mut upstreams = Vec::new();
        for (name, upstream) in &config.upstreams {
            let built = Upstream::new(
                name,
                &upstream.endpoints,
                upstream.balance.unwrap_or_default(),
                &upstream.weights,
            )
            .map_err(anyhow::Error::msg)?;
            upstreams.push((Arc::new(built), upstream.openapi_path.clone()));
        }
        let routes: Vec<Arc<Route>> = config
            .routes
            .iter()
            .filter_map(|route| {
                let upstream = upstreams
                    .iter()
                    .find(|(u, _)| u.name == route.upstream)?
                    .0
                    .clone();
                Some(Arc::new(Route {
                    path_prefix: route.path_prefix.trim_end_matches('/').to_owned(),
                    upstream,
                    timeout: Duration::from_millis(route.timeout_ms),
                    attempt_timeout: Duration::from_millis(
                        route
                            .attempt_timeout_ms
                            .unwrap_or(config.proxy.attempt_timeout_ms)
                            .min(route.timeout_ms),
                    ),
                    require_auth: route.require_auth,
                }))
            })
            .collect();

        let client = HttpClient::new(&config.http_client)?;
        let jwks = Arc::new(JwksCache::new(config.tokens.jwks.clone(), client.clone()));
        let revocations = Revocations::new(config.tokens.revocations.clone(), client.clone());
        let verifier = Arc::new(
            TokenVerifier::new(
                KeySource::Remote(jwks.clone()),
                &config.tokens.issuer,
                &config.tokens.audience,
                context.clock,
            )
            .with_revocations(revocations.clone()),
        );
        let sources = upstreams
            .iter()
            .filter_map(|(upstream, path)| {
                path.clone().map(|path| Source {
                    upstream: upstream.clone(),
                    path,
                })
            })
            .collect();
        let state = GatewayState {
            proxy: Arc::new(Proxy::new(&config.proxy, verifier)),
            document: Arc::new(PublicDocument::new(client, sources, &routes)),
        };

        // Ready means: config loaded (we got here), keys to verify tokens
        // with when a route needs them, and a usable replica per upstream.
        let mut readiness = Readiness::new().with(UpstreamsCheck(
            upstreams
                .iter()
                .map(|(upstream, _)| upstream.clone())
                .collect(),
        ));
        if routes.iter().any(|route| route.require_auth) {
            readiness = readiness
                .with(jwks.readiness_check())
                .with(revocations.readiness_check());
        }
        let redis = config.redis.client().context("invalid redis.url")?;
        readiness = readiness.with_redis(redis.clone());
        for route in &routes {
            tracing::info!(prefix = %route.path_prefix, upstream = %route.upstream.name,
                replicas = route.upstream.endpoints.len(), auth = route.require_auth, "route");
        }
        let mut assembly = Assembly::new(router(state, &routes), readiness, ());
        revocations.catch_up_at_start().await;
        if let Some(redis) = redis {
            assembly
                .background
                .push(Box::pin(revocations.clone().follow_redis(redis)));
        }
        assembly.background.push(Box::pin(revocations.follow()));
        Ok(assembly)
    }
}

fn router(state: GatewayState, routes: &[Arc<Route>]) -> Router {
    let mut router = Router::new();
    for route in routes {
        let handler = {
            let route = route.clone();
            move |State(state): State<GatewayState>, request: Request| {
                let route = route.clone();
                async move { forward(state, route, request).await }
            }
        };
        // The prefix itself, with a trailing slash, and everything below.
        router = router
            .route(&route.path_prefix, any(handler.clone()))
            .route(&format!("{}/", route.path_prefix), any(handler.clone()))
            .route(&format!("{}/{{*rest}}", route.path_prefix), any(handler));
    }
    let swagger: Router<GatewayState> = SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::new(["/openapi.json"]))
        .into();
    let router = router
        .route("/openapi.json", get(openapi_document))
        .merge(swagger)
        .fallback(pipeline::not_found)
        .with_state(state);
    // Bodies and time limits are per route, enforced by the proxy.
    pipeline::apply(
        router,
        &PipelineOptions {
            body_limit: None,
            handler_timeout: None,
        },
    )
}

async fn forward(state: GatewayState, route: Arc<Route>, request: Request) -> Response {
    match state.proxy.forward(&route, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn openapi_document(State(state): State<GatewayState>) -> impl IntoResponse {
    Json(state.document.get().await)
}
