//! Endpoint health: passive outlier detection on every attempt's outcome
//! ([`outlier`]) and, where configured, active checks ([`HealthCheck`], one
//! file per kind: [`http`]). Selection ([`crate::upstream::Attempts`]) uses
//! both, with Envoy's panic threshold: when too few endpoints are healthy,
//! traffic goes to all of them rather than overload the few or answer 503
//! to everyone.

pub mod http;
pub mod outlier;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Weak,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use crate::upstream::{Endpoint, Upstream};

/// An active check: asks one endpoint whether it is fit to serve.
pub trait HealthCheck: Send + Sync + std::fmt::Debug {
    fn probe<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
    fn interval(&self) -> Duration;
    /// Consecutive passes that make an unhealthy endpoint healthy.
    fn rise(&self) -> u32;
    /// Consecutive failures that make a healthy endpoint unhealthy.
    fn fall(&self) -> u32;
}

/// What the active checks say of one endpoint.
#[derive(Debug)]
pub struct ActiveState {
    healthy: AtomicBool,
    passes: AtomicU32,
    failures: AtomicU32,
}

impl Default for ActiveState {
    /// A new endpoint counts as healthy until its checks say otherwise
    /// (the first check runs at once).
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            passes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }
}

impl ActiveState {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Applies one check's result; returns the new state when it changed.
    pub fn record(&self, passed: bool, rise: u32, fall: u32) -> Option<bool> {
        if passed {
            self.failures.store(0, Ordering::Relaxed);
            let passes = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            (!self.is_healthy() && passes >= rise).then(|| {
                self.healthy.store(true, Ordering::Relaxed);
                true
            })
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            (self.is_healthy() && failures >= fall).then(|| {
                self.healthy.store(false, Ordering::Relaxed);
                false
            })
        }
    }
}

/// Runs `upstream`'s active checks every interval until the upstream is
/// dropped (a reload replaced it).
pub async fn follow(upstream: Weak<Upstream>) {
    loop {
        let wait = {
            let Some(upstream) = upstream.upgrade() else {
                return;
            };
            let Some(check) = upstream.health_check().cloned() else {
                return;
            };
            let endpoints = upstream.endpoints();
            let results =
                futures::future::join_all(endpoints.iter().map(|endpoint| check.probe(endpoint)))
                    .await;
            for (endpoint, passed) in endpoints.iter().zip(results) {
                let outcome = if passed { "pass" } else { "fail" };
                metrics::counter!(upstream.metric("health_checks_total"),
                    "upstream" => upstream.name.clone(), "outcome" => outcome)
                .increment(1);
                if let Some(healthy) = endpoint.active.record(passed, check.rise(), check.fall()) {
                    tracing::warn!(upstream = %upstream.name, endpoint = %endpoint.label, healthy,
                        "active health check changed the endpoint's state");
                    endpoint.publish_health(&upstream);
                }
            }
            check.interval()
        };
        tokio::time::sleep(wait).await;
    }
}
