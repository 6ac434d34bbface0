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
    record_process_metrics();
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// The process's own figures, read from `/proc` at each scrape (Linux;
/// elsewhere they are left out): `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_threads`.
fn record_process_metrics() {
    let Some(figures) = ProcessFigures::read() else {
        return;
    };
    // A float that only grows: exposed as a gauge (the `metrics` crate's
    // counters are integers), which `rate()` reads like a counter.
    metrics::gauge!("process_cpu_seconds_total").set(figures.cpu_seconds);
    metrics::gauge!("process_resident_memory_bytes").set(figures.resident_bytes as f64);
    metrics::gauge!("process_open_fds").set(figures.open_fds as f64);
    metrics::gauge!("process_threads").set(figures.threads as f64);
    if let Some(max_fds) = figures.max_fds {
        metrics::gauge!("process_max_fds").set(max_fds as f64);
    }
}

/// What `/proc/self` says of this process.
#[derive(Debug, Clone, PartialEq)]
struct ProcessFigures {
    cpu_seconds: f64,
    resident_bytes: u64,
    open_fds: usize,
    max_fds: Option<u64>,
    threads: u64,
}

impl ProcessFigures {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Self::parse(
            &stat,
            &status,
            limits.as_deref(),
            open_fds,
            rustix::param::clock_ticks_per_second(),
        )
    }

    fn parse(
        stat: &str,
        status: &str,
        limits: Option<&str>,
        open_fds: usize,
        ticks_per_second: u64,
    ) -> Option<Self> {
        // The command name may hold spaces and parentheses: fields count
        // from after its closing one. utime and stime are fields 14 and 15.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<u64>().ok())
        };
        let max_fds = limits.and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        });
        Some(Self {
            cpu_seconds: ticks as f64 / ticks_per_second.max(1) as f64,
            resident_bytes: kib("VmRSS:")? * 1024,
            open_fds,
            max_fds,
            threads: kib("Threads:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_figures_are_read_from_proc_texts() {
        let stat = "4242 (portico (gw)) S 1 4242 4242 0 -1 4194560 3051 0 0 0 250 50 0 0 20 0 9 0 5117 1234 567";
        let status = "Name:\tportico-gateway\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            65536                65536                files\n";

        let figures = ProcessFigures::parse(stat, status, Some(limits), 17, 100).unwrap();

        assert_eq!(
            figures,
            ProcessFigures {
                cpu_seconds: 3.0,
                resident_bytes: 20480 * 1024,
                open_fds: 17,
                max_fds: Some(65536),
                threads: 9,
            }
        );
    }

    #[test]
    fn this_process_has_figures() {
        let figures = ProcessFigures::read().expect("/proc/self is readable on Linux");
        assert!(figures.resident_bytes > 0);
        assert!(figures.open_fds > 0);
    }

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
