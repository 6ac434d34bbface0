//! Admin endpoints, served on their own listener: `/healthz` (the process is
//! alive), `/readyz` (its dependencies are usable and it is not draining) and
//! `/metrics` (Prometheus text format).

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

/// What a readiness check returns: `Err` says what is wrong, for the
/// `/readyz` body and a log line.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A dependency a service needs in order to serve its routes. Each store or
/// client module provides its own (the database, Redis, the key set), so
/// this module knows none of them.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Name in the `/readyz` body (`database`, `redis`, `keys`, ...).
    fn name(&self) -> &'static str;
    /// Whether a failure takes the service out of rotation; `false` means it
    /// is reported only (a dependency whose loss degrades, not breaks).
    fn decides_readiness(&self) -> bool {
        true
    }
    /// One check; bounded by the caller.
    fn check(&self) -> CheckFuture;
}

/// A check made of a name and a closure.
struct FnCheck<F> {
    name: &'static str,
    check: F,
}

impl<F> ReadinessCheck for FnCheck<F>
where
    F: Fn() -> CheckFuture + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self) -> CheckFuture {
        (self.check)()
    }
}

/// How often histogram samples are folded into buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long one dependency check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness of a service: false while draining or while any deciding
/// check fails.
#[derive(Clone, Default)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
    checks: Vec<Arc<dyn ReadinessCheck>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("draining", &self.is_draining())
            .field(
                "checks",
                &self.checks.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dependency check.
    #[must_use]
    pub fn with(mut self, check: impl ReadinessCheck) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Adds a deciding check made of a name and a closure.
    #[must_use]
    pub fn with_check<F, Fut>(self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.with(FnCheck {
            name,
            check: move || Box::pin(check()) as CheckFuture,
        })
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Runs every check concurrently; `(ready, per-check status)`.
    pub async fn report(&self) -> (bool, BTreeMap<&'static str, String>) {
        let results = futures::future::join_all(self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(outcome) => outcome,
                Err(_) => Err("timed out".to_owned()),
            };
            (check.name(), check.decides_readiness(), outcome)
        }))
        .await;
        let mut ready = !self.is_draining();
        let mut statuses = BTreeMap::new();
        for (name, decides, outcome) in results {
            match outcome {
                Ok(()) => {
                    statuses.insert(name, "ok".to_owned());
                }
                Err(err) => {
                    tracing::warn!(check = name, %err, "readiness check failed");
                    ready &= !decides;
                    statuses.insert(name, "unavailable".to_owned());
                }
            }
        }
        (ready, statuses)
    }
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]);
            let recorder = match builder {
                Ok(builder) => builder.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            // Histogram samples accumulate until upkeep folds them into
            // buckets; without it memory grows whenever nobody scrapes.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(%err, "cannot start metrics upkeep; memory grows until /metrics is scraped");
            }
            handle
        })
        .clone()
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// The admin router.
pub fn router(readiness: Readiness) -> Router {
    let state = AdminState {
        readiness,
        metrics: metrics_handle(),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let (ready, checks) = state.readiness.report().await;
    let draining = state.readiness.is_draining();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else if draining { "draining" } else { "not ready" },
        "checks": checks,
    });
    (status, Json(body))
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_when_all_checks_pass() {
        let readiness = Readiness::new().with_check("db", || async { Ok(()) });
        let (ready, checks) = readiness.report().await;
        assert!(ready);
        assert_eq!(checks["db"], "ok");
    }

    #[tokio::test]
    async fn not_ready_when_a_check_fails() {
        let readiness = Readiness::new()
            .with_check("db", || async { Ok(()) })
            .with_check("redis", || async { Err("connection refused".to_owned()) });
        let (ready, checks) = readiness.report().await;
        assert!(!ready);
        assert_eq!(checks["redis"], "unavailable");
    }

    struct Informational;

    impl ReadinessCheck for Informational {
        fn name(&self) -> &'static str {
            "cache"
        }
        fn decides_readiness(&self) -> bool {
            false
        }
        fn check(&self) -> CheckFuture {
            Box::pin(async { Err("connection refused".to_owned()) })
        }
    }

    #[tokio::test]
    async fn a_failing_informational_check_is_reported_but_keeps_the_service_ready() {
        let readiness = Readiness::new()
            .with_check("database", || async { Ok(()) })
            .with(Informational);
        let (ready, checks) = readiness.report().await;
        assert!(ready);
        assert_eq!(checks["cache"], "unavailable");
    }

    #[tokio::test]
    async fn a_check_that_hangs_fails_after_the_timeout() {
        let readiness =
            Readiness::new().with_check("db", std::future::pending::<Result<(), String>>);
        // Without the check's own bound (2 s) the outer one fires.
        let (ready, checks) = tokio::time::timeout(Duration::from_secs(10), readiness.report())
            .await
            .expect("the report did not bound the hanging check");
        assert!(!ready);
        assert_eq!(checks["db"], "unavailable");
    }

    #[tokio::test]
    async fn not_ready_while_draining() {
        let readiness = Readiness::new();
        readiness.set_draining();
        assert!(!readiness.report().await.0);
    }
}
