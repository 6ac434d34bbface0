//! Wiring: config → upstreams, routes, verifier → a running gateway.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use portico_common::config::ServiceConfig as _;
use portico_common::{
    admin::Readiness,
    auth::{JwksCache, KeySource, TokenVerifier},
    http::{
        client::HttpClient,
        pipeline::{self, PipelineOptions},
        server::{Listeners, Server},
    },
};
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    config::Config,
    openapi::{PublicDocument, Source},
    proxy::{Proxy, Route},
    upstream::Upstream,
};

#[derive(Clone)]
struct GatewayState {
    proxy: Arc<Proxy>,
    document: Arc<PublicDocument>,
}

/// A built gateway, listening but not yet serving.
pub struct Application {
    server: Server,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config.listen).await?;
        Self::build_with_listeners(config, listeners).await
    }

    pub async fn build_with_listeners(
        config: Config,
        listeners: Listeners,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let mut upstreams = Vec::new();
        for (name, upstream) in &config.upstreams {
            let built = Upstream::new(name, &upstream.endpoints).map_err(anyhow::Error::msg)?;
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
                    require_auth: route.require_auth,
                }))
            })
            .collect();

        let client = HttpClient::new(&config.http_client)?;
        let jwks = Arc::new(JwksCache::new(config.tokens.jwks.clone(), client.clone()));
        let verifier = Arc::new(TokenVerifier::new(
            KeySource::Remote(jwks),
            &config.tokens.issuer,
            &config.tokens.audience,
        ));
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

        let redis = config.redis.client().context("invalid redis.url")?;
        let readiness = Readiness::new().with_redis(redis);
        let server = Server::new(
            listeners,
            router(state, &routes),
            readiness,
            &config.shutdown,
        );
        for route in &routes {
            tracing::info!(prefix = %route.path_prefix, upstream = %route.upstream.name,
                replicas = route.upstream.endpoints.len(), auth = route.require_auth, "route");
        }
        Ok(Self { server })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.server.api_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.server.admin_addr()
    }

    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.server.run(stop).await
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
