//! Upstreams: named groups of replicas, picked by the upstream's balancing
//! policy ([`crate::balance`]), with replicas that refused a connection,
//! failed mid-request or timed out set aside for a while (passive health).
//!
//! Metric names start with the owner's prefix (`gateway_upstream_…` in the
//! gateway, `auth_upstream_…` for auth's calls to the user service), so a
//! dashboard tells the edge from service-to-service traffic.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

use http::uri::{Authority, Scheme};

use crate::{
    balance::{Balancer, HashOn, PickContext, Policy},
    config::UpstreamConfig,
    discovery::Discovery,
    health::{
        ActiveState, HealthCheck,
        outlier::{Outcome, OutlierPolicy, OutlierState, Verdict},
    },
};

/// One replica.
#[derive(Debug)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub authority: Authority,
    /// `scheme://authority` without a trailing slash: the base of URLs the
    /// gateway itself builds (OpenAPI documents, probes).
    pub base_url: String,
    /// The endpoint as configured, for logs and metric labels.
    pub label: String,
    ejected_until: Mutex<Option<Instant>>,
    /// `gateway_upstream_endpoint_ejected{upstream, endpoint}`: 1 from an
    /// ejection until the replica next answers. Registered once, set only
    /// when the state changes (not per request).
    ejected_gauge: Mutex<metrics::Gauge>,
    /// Share of traffic under the `weighted` policy (1 unless configured).
    pub weight: u32,
    /// Requests sent to it whose response headers have not arrived yet
    /// (what `least_request` compares).
    in_flight: AtomicUsize,
    /// What the active checks say.
    pub(crate) active: ActiveState,
    /// Passive outlier detection's counters.
    pub(crate) outlier: OutlierState,
    /// Since when it has been in service (created, or last taken back).
    in_service_since: Mutex<Instant>,
    /// Since when it ramps up its share (slow start): set when it joins a
    /// serving upstream or comes back from an ejection; `None` for the
    /// endpoints an upstream starts with.
    warming_since: Mutex<Option<Instant>>,
    /// Its circuit breaker.
    pub(crate) breaker: crate::resilience::breaker::Breaker,
    /// Handles of its per-attempt metrics, registered on first use (once
    /// the recorder is installed), so an attempt does not build labels.
    attempt_metrics: OnceLock<AttemptMetrics>,
    /// Its connections.
    pub(crate) pool: crate::connection::pool::Pool,
    /// `Host` of an HTTP/1.1 request to it.
    pub(crate) host_header: http::HeaderValue,
}

/// One endpoint's per-attempt series.
#[derive(Debug)]
pub(crate) struct AttemptMetrics {
    pub requests: metrics::Counter,
    pub duration: metrics::Histogram,
    pub connect_failures: metrics::Counter,
    pub failures: metrics::Counter,
    pub attempt_timeouts: metrics::Counter,
    /// Connections dialed (reuse: 1 − connections / requests).
    pub connections_opened: metrics::Counter,
}

/// One request in flight to an endpoint, counted until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|err| format!("`{url}`: {err}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(format!("`{url}` must be an absolute http URL"));
        };
        let host_header = http::HeaderValue::from_str(authority.as_str())
            .map_err(|err| format!("`{url}`: {err}"))?;
        Ok(Self {
            host_header,
            pool: crate::connection::pool::Pool::default(),
            base_url: format!("{scheme}://{authority}"),
            scheme,
            authority,
            label: url.trim_end_matches('/').to_owned(),
            ejected_until: Mutex::new(None),
            ejected_gauge: Mutex::new(metrics::Gauge::noop()),
            weight: 1,
            in_flight: AtomicUsize::new(0),
            active: ActiveState::default(),
            outlier: OutlierState::default(),
            in_service_since: Mutex::new(Instant::now()),
            warming_since: Mutex::new(None),
            breaker: crate::resilience::breaker::Breaker::default(),
            attempt_metrics: OnceLock::new(),
        })
    }

    pub(crate) fn set_ejected_gauge(&self, value: f64) {
        if let Ok(gauge) = self.ejected_gauge.lock() {
            gauge.set(value);
        }
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Neither ejected nor failing its active checks.
    pub fn is_available(&self, now: Instant) -> bool {
        !self.is_ejected(now) && self.active.is_healthy()
    }

    /// How long it has served since it was last taken back (`None` while
    /// ejected).
    pub fn healthy_since(&self) -> Option<Instant> {
        if self.is_ejected(Instant::now()) {
            return None;
        }
        self.in_service_since.lock().ok().map(|since| *since)
    }

    /// Its share under slow start, 0.1 to 1: how far it is through the
    /// window since it (re)joined; 1 when it is not warming.
    pub fn warmth(&self, window: Duration, now: Instant) -> f64 {
        let Some(since) = self.warming_since.lock().ok().and_then(|since| *since) else {
            return 1.0;
        };
        if window.is_zero() {
            return 1.0;
        }
        let progress = now.saturating_duration_since(since).as_secs_f64() / window.as_secs_f64();
        progress.clamp(0.1, 1.0)
    }

    /// Time left of its ejection, if ejected.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = (*self.ejected_until.lock().ok()?)?;
        until.checked_duration_since(Instant::now())
    }

    /// `<prefix>_upstream_endpoint_healthy{upstream, endpoint}`: what the
    /// active checks say (1 healthy, 0 not).
    pub fn publish_health(&self, upstream: &Upstream) {
        metrics::gauge!(upstream.metric("upstream_endpoint_healthy"),
            "upstream" => upstream.name.clone(), "endpoint" => self.label.clone())
        .set(if self.active.is_healthy() { 1.0 } else { 0.0 });
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .map(|until| until.is_some_and(|until| until > now))
            .unwrap_or(false)
    }

    /// Sets the replica aside (outlier detection decides when and how long).
    pub fn eject(&self, for_how_long: Duration) {
        if let Ok(mut until) = self.ejected_until.lock() {
            *until = Some(Instant::now() + for_how_long);
        }
        self.set_ejected_gauge(1.0);
    }

    /// Takes the replica back after it answered.
    pub fn restore(&self) {
        if let Ok(mut until) = self.ejected_until.lock()
            && until.take().is_some()
        {
            self.set_ejected_gauge(0.0);
            if let Ok(mut since) = self.in_service_since.lock() {
                *since = Instant::now();
            }
            if let Ok(mut warming) = self.warming_since.lock() {
                *warming = Some(Instant::now());
            }
        }
    }
}

/// A named group of replicas. Its endpoint set can change while it serves
/// (discovery): a request works on the set it loaded, so a change never
/// pulls an endpoint from under an attempt.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    /// First word of its metrics' names (`gateway`, `auth`).
    metric_prefix: &'static str,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    balancer: Box<dyn Balancer>,
    policy: Policy,
    weights: BTreeMap<String, u32>,
    /// Where the endpoints come from; `None`: the configured list, fixed.
    discovery: Option<Arc<dyn Discovery>>,
    /// Active checks, when configured.
    health_check: Option<Arc<dyn HealthCheck>>,
    outlier: OutlierPolicy,
    /// Below this share of available endpoints (percent), traffic goes to
    /// all of them (Envoy's panic threshold).
    panic_threshold_percent: u32,
    /// What `consistent_hash` keys on.
    hash_on: HashOn,
    /// Retries it takes on top of its requests.
    pub(crate) budget: crate::resilience::retry::RetryBudget,
    /// In flight and queued, as a whole.
    pub(crate) limits: crate::resilience::limits::Limits,
    max_in_flight: usize,
    breaker_policy: crate::resilience::breaker::BreakerPolicy,
    /// Slow start: a new or recovered endpoint's share ramps up over this.
    slow_start: Duration,
    /// A traffic split: this upstream only chooses one of its groups.
    split: Option<crate::split::Split>,
    /// How its endpoints are dialed.
    pub(crate) connector: crate::connection::Connector,
    /// The config it was built from (a reload keeps it when unchanged).
    spec: UpstreamConfig,
    default_ejection: Duration,
    /// Whether its metrics are registered (it serves, not just checked).
    published: AtomicBool,
    /// `<prefix>_upstream_responses_total{upstream, class}` by status class
    /// (1xx…5xx), registered on first use.
    responses: OnceLock<[metrics::Counter; 5]>,
    /// A split's `<prefix>_split_requests_total{upstream, group}` by group
    /// index, registered on first use.
    split_requests: OnceLock<Vec<metrics::Counter>>,
}

impl Upstream {
    /// An upstream of `urls` balanced by `policy` (metrics `portico_…`),
    /// for tests and tools; `weights` by URL (the
    /// `weighted` policy's shares; unlisted endpoints weigh 1).
    pub fn new(
        name: &str,
        urls: &[String],
        policy: Policy,
        weights: &BTreeMap<String, u32>,
    ) -> Result<Self, String> {
        let spec = UpstreamConfig {
            weights: weights.clone(),
            ..UpstreamConfig::of_endpoints(urls, policy)
        };
        Self::from_config("portico", name, &spec, Duration::from_secs(5))
    }

    /// The upstream `spec` describes, named `name`, its metrics named
    /// `<metric_prefix>_…`; `default_ejection` is the first ejection's
    /// length unless its `outlier` section says otherwise.
    pub fn from_config(
        metric_prefix: &'static str,
        name: &str,
        spec: &UpstreamConfig,
        default_ejection: Duration,
    ) -> Result<Self, String> {
        let policy = spec.balance.unwrap_or_default();
        let upstream = Self {
            name: name.to_owned(),
            metric_prefix,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            balancer: policy.balancer(spec.endpoints.len()),
            policy,
            weights: spec.weights.clone(),
            discovery: crate::discovery::from_config(spec)?,
            health_check: spec.health.as_ref().map(|health| {
                Arc::new(crate::health::http::HttpCheck::new(health)) as Arc<dyn HealthCheck>
            }),
            outlier: spec
                .outlier
                .clone()
                .unwrap_or_default()
                .policy(default_ejection),
            panic_threshold_percent: spec.panic_threshold_percent.unwrap_or(50),
            hash_on: spec
                .hash_on
                .as_deref()
                .map(HashOn::parse)
                .transpose()?
                .unwrap_or(HashOn::ClientIp),
            split: None,
            connector: crate::connection::Connector::from_config(spec)?,
            responses: OnceLock::new(),
            split_requests: OnceLock::new(),
            budget: crate::resilience::retry::RetryBudget::new(
                spec.retry_budget.clone().unwrap_or_default().policy(),
            ),
            limits: {
                let limits = spec.limits.clone().unwrap_or_default();
                crate::resilience::limits::Limits::new(
                    limits.max_in_flight(),
                    limits.max_queued(),
                    Duration::from_millis(limits.queue_timeout_ms()),
                )
            },
            max_in_flight: spec.limits.clone().unwrap_or_default().max_in_flight(),
            breaker_policy: spec.breaker.clone().unwrap_or_default().policy(),
            slow_start: Duration::from_millis(spec.slow_start_ms.unwrap_or(0)),
            spec: spec.clone(),
            default_ejection,
            published: AtomicBool::new(false),
        };
        upstream.set_endpoints(&spec.endpoints)?;
        Ok(upstream)
    }

    /// Whether `spec` would build this very upstream (a reload keeps it).
    /// A split is always built again: its groups may have been.
    /// Its retry budget (a caller that retries a whole call asks it too).
    pub fn budget(&self) -> &crate::resilience::retry::RetryBudget {
        &self.budget
    }

    /// `<prefix>_<suffix>`: one of its metrics' names.
    pub fn metric(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.metric_prefix)
    }

    /// Counts one answer the caller got through this upstream, by its
    /// status class: the endpoint's, or the one the caller makes of a
    /// failure (502/503/504). A canary is judged by these.
    pub(crate) fn count_response(&self, status: u16) {
        let counters = self.responses.get_or_init(|| {
            let name = self.metric("upstream_responses_total");
            ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
                metrics::counter!(name.clone(), "upstream" => self.name.clone(), "class" => class)
            })
        });
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        counters[class].increment(1);
    }

    /// The handles of `endpoint`'s per-attempt series.
    pub(crate) fn attempt_metrics<'e>(&self, endpoint: &'e Endpoint) -> &'e AttemptMetrics {
        endpoint.attempt_metrics.get_or_init(|| {
            let labels = [
                ("upstream", self.name.clone()),
                ("endpoint", endpoint.label.clone()),
            ];
            AttemptMetrics {
                requests: metrics::counter!(self.metric("upstream_requests_total"), &labels),
                duration: metrics::histogram!(self.metric("upstream_duration_seconds"), &labels),
                connect_failures: metrics::counter!(
                    self.metric("upstream_connect_failures_total"),
                    &labels
                ),
                failures: metrics::counter!(self.metric("upstream_failures_total"), &labels),
                attempt_timeouts: metrics::counter!(
                    self.metric("upstream_attempt_timeouts_total"),
                    &labels
                ),
                connections_opened: {
                    endpoint.pool.observe(metrics::gauge!(
                        self.metric("upstream_pool_idle_connections"),
                        &labels
                    ));
                    metrics::counter!(self.metric("upstream_connections_opened_total"), &labels)
                },
            }
        })
    }

    pub fn is_built_from(&self, spec: &UpstreamConfig, default_ejection: Duration) -> bool {
        self.split.is_none() && self.spec == *spec && self.default_ejection == default_ejection
    }

    /// The protocol spoken to its endpoints.
    pub fn protocol(&self) -> crate::config::Protocol {
        self.connector.protocol
    }

    pub fn split(&self) -> Option<&crate::split::Split> {
        self.split.as_ref()
    }

    /// Makes this upstream a traffic split over `split`'s groups.
    #[must_use]
    pub fn with_split(mut self, split: crate::split::Split) -> Self {
        self.split = Some(split);
        self
    }

    /// The upstream a request goes to: itself, or for a split the group the
    /// request falls in (and a sticky cookie to set).
    pub fn resolve<'a>(
        self: &'a Arc<Self>,
        facts: &crate::request_facts::RequestFacts<'_>,
    ) -> (&'a Arc<Self>, Option<String>) {
        match &self.split {
            None => (self, None),
            Some(split) => {
                let choice = split.choose(facts);
                let counters = self.split_requests.get_or_init(|| {
                    let name = self.metric("split_requests_total");
                    split
                        .groups()
                        .map(|(group, _)| {
                            metrics::counter!(name.clone(),
                                "upstream" => self.name.clone(), "group" => group.name.clone())
                        })
                        .collect()
                });
                counters[choice.group].increment(1);
                (choice.upstream, choice.set_cookie)
            }
        }
    }

    /// What the balancing policy may know of the request.
    pub fn pick_context(&self, facts: &crate::request_facts::RequestFacts<'_>) -> PickContext {
        PickContext {
            hash: (self.policy == Policy::ConsistentHash)
                .then(|| self.hash_on.key(facts))
                .flatten(),
        }
    }

    pub fn health_check(&self) -> Option<&Arc<dyn HealthCheck>> {
        self.health_check.as_ref()
    }

    /// Counts one attempt's outcome for `endpoint`: outlier detection and
    /// its circuit breaker.
    pub fn report(&self, endpoint: &Endpoint, outcome: Outcome) {
        if let Some(state) = endpoint
            .breaker
            .record(&self.breaker_policy, outcome != Outcome::Success)
        {
            tracing::warn!(upstream = %self.name, endpoint = %endpoint.label, state = state.label(),
                "circuit breaker changed state");
            metrics::counter!(self.metric("breaker_transitions_total"),
                "upstream" => self.name.clone(), "endpoint" => endpoint.label.clone(),
                "state" => state.label())
            .increment(1);
        }
        // Counted only when an ejection is due, not on every attempt.
        let census = || {
            let endpoints = self.endpoints();
            let now = Instant::now();
            let ejected = endpoints.iter().filter(|e| e.is_ejected(now)).count();
            (ejected, endpoints.len())
        };
        match self.outlier.record(endpoint, outcome, census) {
            Verdict::Kept => {}
            Verdict::Ejected => {
                tracing::warn!(upstream = %self.name, endpoint = %endpoint.label, ?outcome,
                    for_ms = endpoint.ejected_for().map_or(0, |d| d.as_millis() as u64),
                    "endpoint ejected");
                metrics::counter!(self.metric("outlier_ejections_total"),
                    "upstream" => self.name.clone(), "endpoint" => endpoint.label.clone())
                .increment(1);
            }
            Verdict::Capped => {
                metrics::counter!(self.metric("outlier_ejections_skipped_total")).increment(1);
            }
        }
    }

    /// The endpoints now.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    pub fn discovery(&self) -> Option<&Arc<dyn Discovery>> {
        self.discovery.as_ref()
    }

    /// Replaces the endpoint set with `urls`. Endpoints that stay keep
    /// their state (ejection, requests in flight); requests on removed
    /// ones finish on them.
    pub fn set_endpoints(&self, urls: &[String]) -> Result<(), String> {
        let current = self.endpoints.load();
        let mut next = Vec::with_capacity(urls.len());
        for url in urls {
            let label = url.trim_end_matches('/');
            match current.iter().find(|endpoint| endpoint.label == label) {
                Some(kept) => next.push(kept.clone()),
                None => {
                    let mut endpoint = Endpoint::parse(url)?;
                    endpoint.weight = self.weights.get(url).copied().unwrap_or(1);
                    // Joining an upstream that already serves: ramp up.
                    if !current.is_empty()
                        && let Ok(mut warming) = endpoint.warming_since.lock()
                    {
                        *warming = Some(Instant::now());
                    }
                    next.push(Arc::new(endpoint));
                }
            }
        }
        let changed = next.len() != current.len()
            || next
                .iter()
                .zip(current.iter())
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed {
            for gone in current
                .iter()
                .filter(|old| !next.iter().any(|new| Arc::ptr_eq(old, new)))
            {
                gone.set_ejected_gauge(0.0);
            }
            self.endpoints.store(Arc::new(next));
            if self.published.load(Ordering::Relaxed) {
                self.publish_metrics();
            }
        }
        Ok(())
    }

    /// Registers the per-endpoint gauges once the upstream serves (not when
    /// a config is only being checked).
    pub fn publish_metrics(&self) {
        self.published.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let endpoints = self.endpoints();
        metrics::gauge!(self.metric("upstream_endpoints"), "upstream" => self.name.clone())
            .set(endpoints.len() as f64);
        if let Some(split) = &self.split {
            for (group, weight) in split.groups() {
                metrics::gauge!(self.metric("split_weight"),
                    "upstream" => self.name.clone(), "group" => group.name.clone())
                .set(f64::from(weight));
            }
        }
        for endpoint in endpoints.iter() {
            let gauge = metrics::gauge!(
                self.metric("upstream_endpoint_ejected"),
                "upstream" => self.name.clone(),
                "endpoint" => endpoint.label.clone(),
            );
            gauge.set(if endpoint.is_ejected(now) { 1.0 } else { 0.0 });
            if let Ok(mut slot) = endpoint.ejected_gauge.lock() {
                *slot = gauge;
            }
            endpoint.publish_health(self);
        }
    }

    /// Policy, discovery and endpoints with their state, for `/config`.
    pub fn describe(&self) -> serde_json::Value {
        let now = Instant::now();
        if let Some(split) = &self.split {
            return serde_json::json!({
                "split": split.groups().map(|(group, weight)| serde_json::json!({
                    "upstream": group.name, "weight": weight,
                })).collect::<Vec<_>>(),
            });
        }
        serde_json::json!({
            "in_flight": self.limits.in_flight(self.max_in_flight),
            "balance": self.policy.as_str(),
            "discovery": self.discovery.as_ref().map_or_else(|| "static".to_owned(), |d| d.describe()),
            "endpoints": self.endpoints().iter().map(|endpoint| serde_json::json!({
                "url": endpoint.label,
                "weight": endpoint.weight,
                "in_flight": endpoint.in_flight(),
                "ejected": endpoint.is_ejected(now),
                "healthy": endpoint.active.is_healthy(),
                "breaker": endpoint.breaker.state().label(),
            })).collect::<Vec<_>>(),
        })
    }

    /// The endpoints one request may try, each chosen by the policy when
    /// its turn comes: among the healthy endpoints not yet tried, and once
    /// none is left among the ejected ones (tried last rather than failing
    /// the request outright).
    pub fn attempts(&self, context: PickContext) -> Attempts<'_> {
        let endpoints = self.endpoints();
        let now = Instant::now();
        let available = endpoints
            .iter()
            .filter(|e| e.is_available(now) && !e.breaker.is_open(&self.breaker_policy))
            .count();
        // Too few fit to serve: spread over all rather than overload them
        // (or, with none, answer 503 to everyone).
        let panic = (available as u64) * 100
            < u64::from(self.panic_threshold_percent) * endpoints.len() as u64;
        if panic && !endpoints.is_empty() {
            metrics::counter!(self.metric("upstream_panic_total"), "upstream" => self.name.clone())
                .increment(1);
        }
        Attempts {
            balancer: self.balancer.as_ref(),
            // Keys stay on their endpoint under consistent hashing.
            slow_start: if self.policy == Policy::ConsistentHash {
                Duration::ZERO
            } else {
                self.slow_start
            },
            breaker_policy: &self.breaker_policy,
            endpoints,
            tried: Vec::with_capacity(2),
            panic,
            context,
        }
    }
}

/// See [`Upstream::attempts`].
#[derive(Debug)]
pub struct Attempts<'a> {
    balancer: &'a dyn Balancer,
    slow_start: Duration,
    breaker_policy: &'a crate::resilience::breaker::BreakerPolicy,
    endpoints: Arc<Vec<Arc<Endpoint>>>,
    tried: Vec<usize>,
    /// Health is ignored (panic threshold crossed).
    panic: bool,
    context: PickContext,
}

impl Iterator for Attempts<'_> {
    type Item = Arc<Endpoint>;

    fn next(&mut self) -> Option<Arc<Endpoint>> {
        let endpoints = &self.endpoints;
        let now = Instant::now();
        // One pass, one list sized for all (unfit ones are rare): an open
        // breaker keeps its endpoint out entirely (panic or not); a
        // half-open one lets its probes through.
        let mut healthy = Vec::with_capacity(endpoints.len());
        let mut unfit = Vec::new();
        for i in 0..endpoints.len() {
            if self.tried.contains(&i) {
                continue;
            }
            if endpoints[i].breaker.is_open(self.breaker_policy) {
                self.tried.push(i);
            } else if self.panic || endpoints[i].is_available(now) {
                healthy.push(i);
            } else {
                unfit.push(i);
            }
        }
        for candidates in [healthy, unfit] {
            let mut candidates = candidates;
            while !candidates.is_empty() {
                let mut picked = self.balancer.pick(endpoints, &candidates, &self.context);
                // Slow start: a warming endpoint keeps a pick with the
                // probability of its warmth; otherwise the policy picks again
                // among the others (once), so its share ramps up.
                if candidates.len() > 1
                    && !self.slow_start.is_zero()
                    && fastrand::f64() >= endpoints[picked].warmth(self.slow_start, now)
                {
                    let others: Vec<usize> = candidates
                        .iter()
                        .copied()
                        .filter(|&i| i != picked)
                        .collect();
                    picked = self.balancer.pick(endpoints, &others, &self.context);
                }
                self.tried.push(picked);
                candidates.retain(|&i| i != picked);
                if endpoints[picked].breaker.admit(self.breaker_policy) {
                    return Some(endpoints[picked].clone());
                }
            }
        }
        None
    }
}

/// How long the readiness probe waits for a replica to accept a connection.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

impl Upstream {
    /// Whether some replica is usable now: not ejected, and accepting TCP
    /// connections. (Active health checks with HTTP probes come with the
    /// governance work; this is what readiness needs.)
    pub async fn has_usable_endpoint(&self) -> bool {
        let now = Instant::now();
        let endpoints = self.endpoints();
        let probes = endpoints
            .iter()
            .filter(|endpoint| !endpoint.is_ejected(now))
            .map(|endpoint| async move {
                let host = endpoint.authority.host();
                let port = endpoint.authority.port_u16().unwrap_or(80);
                matches!(
                    tokio::time::timeout(
                        PROBE_CONNECT_TIMEOUT,
                        tokio::net::TcpStream::connect((host, port))
                    )
                    .await,
                    Ok(Ok(_))
                )
            });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .any(|usable| usable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(n: usize) -> Upstream {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 1000 + i))
            .collect();
        Upstream::new("u", &urls, Policy::RoundRobin, &BTreeMap::new()).unwrap()
    }

    fn order(upstream: &Upstream) -> Vec<String> {
        upstream
            .attempts(PickContext::default())
            .map(|e| e.label.clone())
            .collect()
    }

    #[test]
    fn each_request_may_try_every_endpoint_once() {
        let upstream = upstream(3);
        let mut tried = order(&upstream);
        tried.sort();
        assert_eq!(
            tried,
            [
                "http://127.0.0.1:1000",
                "http://127.0.0.1:1001",
                "http://127.0.0.1:1002"
            ]
        );
    }

    #[test]
    fn ejected_replicas_are_tried_last() {
        let upstream = upstream(2);
        upstream.endpoints()[0].eject(Duration::from_secs(60));
        for _ in 0..4 {
            assert_eq!(
                order(&upstream),
                ["http://127.0.0.1:1001", "http://127.0.0.1:1000"]
            );
        }
        upstream.endpoints()[0].restore();
        let firsts: Vec<_> = (0..2).map(|_| order(&upstream)[0].clone()).collect();
        assert!(firsts.contains(&"http://127.0.0.1:1000".to_owned()));
    }

    #[test]
    fn a_joining_endpoint_ramps_up_its_share_under_slow_start() {
        let urls = ["http://127.0.0.1:1".to_owned()];
        let mut spec = UpstreamConfig {
            endpoints: urls.to_vec(),
            ..Upstream::new("u", &urls, Policy::Random, &BTreeMap::new())
                .unwrap()
                .spec
                .clone()
        };
        spec.slow_start_ms = Some(60_000);
        let upstream =
            Upstream::from_config("gateway", "u", &spec, Duration::from_secs(5)).unwrap();
        upstream
            .set_endpoints(&[
                "http://127.0.0.1:1".to_owned(),
                "http://127.0.0.1:2".to_owned(),
            ])
            .unwrap();
        let picks = 10_000;
        let to_new = (0..picks)
            .filter(|_| {
                upstream
                    .attempts(PickContext::default())
                    .next()
                    .unwrap()
                    .label
                    == "http://127.0.0.1:2"
            })
            .count();
        // Just joined: warmth 0.1, so about half of one tenth.
        let share = to_new as f64 / f64::from(picks);
        assert!((0.03..0.08).contains(&share), "{share}");
        // The endpoints it started with never warm up.
        assert_eq!(
            upstream.endpoints()[0].warmth(Duration::from_secs(60), Instant::now()),
            1.0
        );
    }

    #[test]
    fn weights_are_taken_by_url() {
        let urls = [
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ];
        let weights = BTreeMap::from([("http://127.0.0.1:2".to_owned(), 3)]);
        let upstream = Upstream::new("u", &urls, Policy::Weighted, &weights).unwrap();
        assert_eq!(upstream.endpoints()[0].weight, 1);
        assert_eq!(upstream.endpoints()[1].weight, 3);
        let firsts: Vec<_> = (0..4).map(|_| order(&upstream)[0].clone()).collect();
        assert_eq!(firsts.iter().filter(|u| u.ends_with(":2")).count(), 3);
    }

    #[test]
    fn the_base_url_is_scheme_and_authority_whatever_the_configured_form() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8081/").unwrap();
        assert_eq!(endpoint.base_url, "http://127.0.0.1:8081");
    }

    #[tokio::test]
    async fn an_upstream_is_usable_when_a_replica_accepts_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = format!("http://{}", listener.local_addr().unwrap());
        let dead = format!("http://127.0.0.1:{}", portico_testkit::http::closed_port());
        let upstream = Upstream::new(
            "u",
            &[dead.clone(), live],
            Policy::RoundRobin,
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(upstream.has_usable_endpoint().await);
        let all_dead = Upstream::new("u", &[dead], Policy::RoundRobin, &BTreeMap::new()).unwrap();
        assert!(!all_dead.has_usable_endpoint().await);
        // An ejected replica does not count even if it accepts connections.
        upstream.endpoints()[1].eject(Duration::from_secs(60));
        assert!(!upstream.has_usable_endpoint().await);
    }
}
