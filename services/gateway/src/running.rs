//! The running configuration: routes and upstreams resolved from one
//! config, swapped whole (`arc-swap`) when a new one loads. A request holds
//! the snapshot it started with, so a reload never changes a request midway
//! and never drops one; pooled connections live in the proxy's client and
//! survive every reload.
//!
//! Reloads come from SIGHUP and from the config file changing (its
//! modification time and length are looked at every second). An invalid
//! new config is refused whole: the running one keeps serving, the error is
//! logged with its key and `gateway_config_reloads_total{outcome="error"}`
//! counts it.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use axum::{Json, Router, extract::State, routing::get};
use portico_common::config::{ConfigError, ServiceConfig};
use serde_json::{Value, json};

use crate::{
    config::{Config, ENV_PREFIX},
    routing::RouteTable,
    upstream::Upstream,
};

/// One resolved configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 at startup, +1 per successful reload.
    pub version: u64,
    pub loaded_at: SystemTime,
    pub routes: RouteTable,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Where each upstream's OpenAPI document is, by upstream name.
    pub openapi_paths: BTreeMap<String, String>,
}

impl Snapshot {
    /// Resolves `config`. Upstreams whose endpoints and policy did not
    /// change are taken over from `previous`, with their ejections,
    /// requests in flight and balancing state.
    pub fn build(
        config: &Config,
        version: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Self, ConfigError> {
        let mut upstreams = BTreeMap::new();
        let default_ejection = Duration::from_secs(config.proxy.eject_secs);
        for (name, spec) in config
            .upstreams
            .iter()
            .filter(|(_, spec)| spec.split.is_empty())
        {
            let kept = previous
                .and_then(|previous| previous.upstreams.get(name))
                .filter(|upstream| upstream.is_built_from(spec, default_ejection));
            let upstream = match kept {
                Some(upstream) => upstream.clone(),
                None => Arc::new(
                    Upstream::from_config("gateway", name, spec, default_ejection).map_err(
                        |err| {
                            ConfigError::key(
                                ENV_PREFIX,
                                &format!("upstreams.{name}.endpoints"),
                                err,
                            )
                        },
                    )?,
                ),
            };
            upstreams.insert(name.clone(), upstream);
        }
        // Splits last: their groups are the upstreams above.
        for (name, spec) in config
            .upstreams
            .iter()
            .filter(|(_, spec)| !spec.split.is_empty())
        {
            let groups = spec
                .split
                .iter()
                .filter_map(|(group, weight)| Some((upstreams.get(group)?.clone(), *weight)))
                .collect();
            let pin = spec
                .split_pin_header
                .as_deref()
                .unwrap_or("x-portico-group");
            let pin = http::HeaderName::from_bytes(pin.as_bytes()).map_err(|_| {
                ConfigError::key(
                    ENV_PREFIX,
                    &format!("upstreams.{name}.split_pin_header"),
                    "not a header name",
                )
            })?;
            let upstream = Upstream::from_config("gateway", name, spec, default_ejection)
                .map_err(|err| ConfigError::key(ENV_PREFIX, &format!("upstreams.{name}"), err))?
                .with_split(crate::split::Split::new(groups, pin));
            upstreams.insert(name.clone(), Arc::new(upstream));
        }
        let routes = RouteTable::resolve(config, &upstreams)?;
        let openapi_paths = config
            .upstreams
            .iter()
            .filter_map(|(name, spec)| Some((name.clone(), spec.openapi_path.clone()?)))
            .collect();
        Ok(Self {
            version,
            loaded_at: SystemTime::now(),
            routes,
            upstreams,
            openapi_paths,
        })
    }

    /// The admin view: routes and upstreams with their endpoints' state.
    /// Holds no secrets (those live in sections not shown).
    pub fn describe(&self) -> Value {
        let loaded_at = self
            .loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let routes: Vec<Value> = self
            .routes
            .routes()
            .iter()
            .map(|route| {
                json!({
                    "path_prefix": route.path_prefix,
                    "host": route.host.as_ref().map(|h| format!("{h:?}")),
                    "methods": route.methods.as_ref().map(|m| m.iter().map(ToString::to_string).collect::<Vec<_>>()),
                    "headers": route.headers.iter().map(|h| json!({
                        "name": h.name.as_str(),
                        "value": h.value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("*"),
                    })).collect::<Vec<_>>(),
                    "rewrite_prefix": route.rewrite_prefix,
                    "upstream": route.upstream.name,
                    "timeout_ms": route.timeout.as_millis() as u64,
                    "attempt_timeout_ms": route.attempt_timeout.as_millis() as u64,
                    "auth": format!("{:?}", route.auth),
                    "max_body_bytes": route.max_body_bytes,
                })
            })
            .collect();
        let upstreams: BTreeMap<&String, Value> = self
            .upstreams
            .iter()
            .map(|(name, upstream)| (name, upstream.describe()))
            .collect();
        json!({
            "version": self.version,
            "loaded_at_unix": loaded_at,
            "routes": routes,
            "upstreams": upstreams,
        })
    }
}

/// The snapshot every request reads, and what swaps it.
#[derive(Debug, Clone)]
pub struct Live {
    current: Arc<ArcSwap<Snapshot>>,
}

impl Live {
    /// Serves `snapshot`, once its discovered upstreams have had a first
    /// answer (or [`FIRST_DISCOVERY_TIMEOUT`]).
    pub async fn start(snapshot: Snapshot) -> Self {
        snapshot.start_discovery(None).await;
        snapshot.publish_metrics(None);
        Self {
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Loads the configuration again (file and environment, as at
    /// startup) and swaps it in if it is valid.
    pub async fn reload(&self, why: &str) -> Result<u64, ConfigError> {
        let previous = self.current.load_full();
        let outcome = Config::load()
            .and_then(|config| Snapshot::build(&config, previous.version + 1, Some(&previous)));
        match outcome {
            Ok(snapshot) => {
                let version = snapshot.version;
                snapshot.start_discovery(Some(&previous)).await;
                snapshot.publish_metrics(Some(&previous));
                self.current.store(Arc::new(snapshot));
                metrics::counter!("gateway_config_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(version, why, "configuration reloaded");
                Ok(version)
            }
            Err(err) => {
                metrics::counter!("gateway_config_reloads_total", "outcome" => "error")
                    .increment(1);
                tracing::warn!(error = %err, why, "new configuration refused; the running one stays");
                Err(err)
            }
        }
    }

    /// Reloads on SIGHUP and when the config file changes, until dropped.
    pub async fn follow(self, file: Option<PathBuf>) {
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        };
        let mut seen = file.as_deref().and_then(stamp);
        let mut ticks = tokio::time::interval(FILE_POLL_INTERVAL);
        loop {
            tokio::select! {
                Some(()) = async { match hangups.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    let _ = self.reload("SIGHUP").await;
                }
                _ = ticks.tick() => {
                    let now = file.as_deref().and_then(stamp);
                    if now != seen {
                        seen = now;
                        let _ = self.reload("config file changed").await;
                    }
                }
            }
        }
    }

    /// `GET /config` on the admin listener.
    pub fn admin_routes(&self) -> Router {
        Router::new()
            .route("/config", get(running_config))
            .with_state(self.clone())
    }
}

/// How often the config file is looked at.
const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What tells a changed file: modification time and length.
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

async fn running_config(State(live): State<Live>) -> Json<Value> {
    Json(live.load().describe())
}

impl Snapshot {
    /// The upstreams that routes send traffic to: each route's, and for a
    /// split its groups (not the split itself, which has no endpoints).
    pub fn routed_upstreams(&self) -> Vec<Arc<Upstream>> {
        let mut routed: Vec<Arc<Upstream>> = Vec::new();
        for route in self.routes.routes() {
            let targets: Vec<Arc<Upstream>> = match route.upstream.split() {
                Some(split) => split.groups().map(|(group, _)| group.clone()).collect(),
                None => vec![route.upstream.clone()],
            };
            for target in targets {
                if !routed.iter().any(|known| Arc::ptr_eq(known, &target)) {
                    routed.push(target);
                }
            }
        }
        routed
    }
}

/// How long a new discovered upstream may take to find its first
/// endpoints before its snapshot serves anyway (not ready until it does).
const FIRST_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);

impl Snapshot {
    /// Asks each discovery source this snapshot brings (upstreams not taken
    /// over from `previous`) once, then follows it while its upstream lives.
    async fn start_discovery(&self, previous: Option<&Snapshot>) {
        let fresh: Vec<Arc<Upstream>> = self
            .upstreams
            .iter()
            .filter(|(name, upstream)| {
                (upstream.discovery().is_some() || upstream.health_check().is_some())
                    && previous
                        .and_then(|previous| previous.upstreams.get(*name))
                        .is_none_or(|old| !Arc::ptr_eq(old, upstream))
            })
            .map(|(_, upstream)| upstream.clone())
            .collect();
        portico_upstream::start(&fresh, FIRST_DISCOVERY_TIMEOUT).await;
    }

    /// Publishes this snapshot's gauges; a split group that `previous` had
    /// and this one has not gets weight 0 (a gauge cannot be removed, and a
    /// canary rollout reads these weights to know the reload arrived).
    fn publish_metrics(&self, previous: Option<&Snapshot>) {
        metrics::gauge!("gateway_config_version").set(self.version as f64);
        for upstream in self.upstreams.values() {
            upstream.publish_metrics();
        }
        for (name, old) in previous.map(|p| &p.upstreams).into_iter().flatten() {
            let Some(old_split) = old.split() else {
                continue;
            };
            let now = self.upstreams.get(name).and_then(|u| u.split());
            for (group, _) in old_split.groups() {
                let kept =
                    now.is_some_and(|split| split.groups().any(|(g, _)| g.name == group.name));
                if !kept {
                    metrics::gauge!(old.metric("split_weight"),
                        "upstream" => name.clone(), "group" => group.name.clone())
                    .set(0.0);
                }
            }
        }
    }
}

/// `upstreams`: the gateway is ready when every upstream has a usable
/// replica — otherwise it would take traffic only to answer 503.
#[derive(Debug, Clone)]
pub struct UpstreamsCheck(pub Live);

impl portico_common::admin::ReadinessCheck for UpstreamsCheck {
    fn name(&self) -> &'static str {
        "upstreams"
    }

    fn check(&self) -> portico_common::admin::CheckFuture {
        // The upstreams of the configuration running now.
        // Only the upstreams some route sends traffic to (a split's groups
        // included): one that is configured but unrouted decides nothing.
        let upstreams = self.0.load().routed_upstreams();
        Box::pin(async move {
            // All at once: the probes share the check's time bound.
            let usable = futures::future::join_all(
                upstreams
                    .iter()
                    .map(|upstream| upstream.has_usable_endpoint()),
            )
            .await;
            let unusable: Vec<String> = upstreams
                .iter()
                .zip(usable)
                .filter(|(_, usable)| !usable)
                .map(|(upstream, _)| upstream.name.clone())
                .collect();
            if unusable.is_empty() {
                Ok(())
            } else {
                Err(format!("no usable replica for: {}", unusable.join(", ")))
            }
        })
    }
}
