//! How one upstream is described: where its endpoints come from, how
//! traffic is spread over them, how their health is judged and how much
//! retrying and queueing it takes. The gateway reads one per
//! `upstreams.<name>`; a service reads one for each service it calls (auth:
//! `user_service.upstream`). Every key is optional except where its
//! endpoints come from.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::balance::Policy;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URLs of the replicas (`http://host:port`): the `static`
    /// discovery. Leave it out (or empty) when `dns` finds them.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Path of the upstream's OpenAPI document, merged into the gateway's
    /// public one; absent, the upstream's operations are not documented.
    pub openapi_path: Option<String>,
    /// How attempts are spread over the endpoints; absent, `least_request`.
    pub balance: Option<Policy>,
    /// The `weighted` policy's share per endpoint URL (as listed in
    /// `endpoints`); unlisted endpoints weigh 1.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// DNS discovery instead of a fixed list.
    pub dns: Option<DnsConfig>,
    /// Active health checks; absent, none (passive detection only).
    pub health: Option<HealthConfig>,
    /// Passive outlier detection; absent, its defaults.
    pub outlier: Option<OutlierConfig>,
    /// Below this share of available endpoints (percent), traffic goes to
    /// all of them, fit or not (Envoy's panic threshold); absent, 50.
    pub panic_threshold_percent: Option<u32>,
    /// What `consistent_hash` keys on: `header:<name>`, `cookie:<name>`,
    /// `subject` or `client_ip` (absent: `client_ip`).
    pub hash_on: Option<String>,
    /// A traffic split instead of endpoints: other upstreams by name with
    /// their weights (`{ user-stable = 95, user-canary = 5 }`).
    #[serde(default)]
    pub split: BTreeMap<String, u32>,
    /// The header that pins a request to a split's group by name (absent:
    /// `x-portico-group`).
    pub split_pin_header: Option<String>,
    /// How many retries the upstream takes on top of its requests.
    pub retry_budget: Option<RetryBudgetConfig>,
    /// Requests in flight and queued for the upstream as a whole.
    pub limits: Option<LimitsConfig>,
    /// The circuit breaker of each endpoint.
    pub breaker: Option<BreakerConfig>,
    /// Slow start: an endpoint that joins (discovery) or comes back from
    /// an ejection ramps its share up from 10% over this long (absent: 0,
    /// off). Not with `consistent_hash`.
    pub slow_start_ms: Option<u64>,
    /// The protocol spoken to the endpoints (absent: `http1`): `http2` is
    /// h2c (prior knowledge) on plain connections and h2 by ALPN over TLS;
    /// one multiplexed connection per endpoint instead of a pool.
    pub protocol: Option<Protocol>,
    /// TLS to the endpoints: with this section every endpoint is dialed
    /// over TLS; `https://` endpoints without it are verified against the
    /// public (Mozilla) roots.
    pub tls: Option<UpstreamTlsConfig>,
}

/// `upstreams.<name>.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
}

/// `upstreams.<name>.tls`: whom to trust and, for mutual TLS, who we are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of the CA certificates the endpoints' certificates must
    /// chain to (absent: the public roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM certificate chain and private key presented to the endpoints
    /// (mutual TLS); both or neither.
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    /// The name the endpoints' certificates are checked against (absent:
    /// each endpoint's host, a DNS name or an IP address).
    pub server_name: Option<String>,
}

/// `upstreams.<name>.retry_budget`: retries may add at most
/// `ratio_percent` (20) of the requests plus `min_per_second` (10) per
/// second, over 10 s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    pub ratio_percent: Option<u32>,
    pub min_per_second: Option<u32>,
}

impl RetryBudgetConfig {
    pub fn policy(&self) -> crate::resilience::retry::BudgetPolicy {
        crate::resilience::retry::BudgetPolicy {
            ratio_percent: self.ratio_percent.unwrap_or(20),
            min_per_second: self.min_per_second.unwrap_or(10),
        }
    }
}

/// `upstreams.<name>.limits`: at most `max_in_flight` (1024) requests at
/// once, `max_queued` (1024) more waiting up to `queue_timeout_ms` (1000);
/// beyond, 503 with `Retry-After` at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_in_flight: Option<usize>,
    pub max_queued: Option<usize>,
    pub queue_timeout_ms: Option<u64>,
}

impl LimitsConfig {
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.unwrap_or(1024)
    }
    pub fn max_queued(&self) -> usize {
        self.max_queued.unwrap_or(1024)
    }
    pub fn queue_timeout_ms(&self) -> u64 {
        self.queue_timeout_ms.unwrap_or(1000)
    }
}

/// `upstreams.<name>.breaker`: an endpoint whose last `window_ms` (10000)
/// saw at least `min_requests` (20) with `error_percent` (50) or more
/// failing opens for `open_ms` (5000), then lets `half_open_requests` (1)
/// probes through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    pub error_percent: Option<u32>,
    pub min_requests: Option<u32>,
    pub window_ms: Option<u64>,
    pub open_ms: Option<u64>,
    pub half_open_requests: Option<u32>,
}

impl BreakerConfig {
    pub fn policy(&self) -> crate::resilience::breaker::BreakerPolicy {
        use std::time::Duration;
        crate::resilience::breaker::BreakerPolicy {
            error_percent: self.error_percent.unwrap_or(50),
            min_requests: self.min_requests.unwrap_or(20),
            window: Duration::from_millis(self.window_ms.unwrap_or(10_000)),
            open_for: Duration::from_millis(self.open_ms.unwrap_or(5_000)),
            half_open_requests: self.half_open_requests.unwrap_or(1),
        }
    }
}

/// `upstreams.<name>.health`: `GET path` on each endpoint every
/// `interval_ms`; `fall` failures in a row take it out, `rise` passes in a
/// row bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Absent, `/readyz`.
    pub path: Option<String>,
    /// The port to ask (a replica's admin listener); absent, the endpoint's
    /// port plus `port_offset`, or its own port.
    pub port: Option<u16>,
    pub port_offset: Option<u16>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

impl HealthConfig {
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms.unwrap_or(2000)
    }
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(1000)
    }
    pub fn rise(&self) -> u32 {
        self.rise.unwrap_or(2)
    }
    pub fn fall(&self) -> u32 {
        self.fall.unwrap_or(2)
    }
}

/// `upstreams.<name>.outlier` (every key optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Connection failures, resets and attempt timeouts in a row that eject
    /// (absent: 1).
    pub consecutive_gateway_failures: Option<u32>,
    /// 5xx answers in a row that eject (absent: 5).
    pub consecutive_5xx: Option<u32>,
    /// The first ejection's length; each further one is longer by as much
    /// (absent: `proxy.eject_secs`).
    pub base_ejection_ms: Option<u64>,
    /// The longest ejection (absent: 300000).
    pub max_ejection_ms: Option<u64>,
    /// The most of an upstream's endpoints ejected at once (absent: 50).
    pub max_ejection_percent: Option<u32>,
}

impl OutlierConfig {
    pub fn policy(
        &self,
        default_ejection: std::time::Duration,
    ) -> crate::health::outlier::OutlierPolicy {
        use std::time::Duration;
        let base = self
            .base_ejection_ms
            .map_or(default_ejection, Duration::from_millis);
        crate::health::outlier::OutlierPolicy {
            consecutive_gateway_failures: self.consecutive_gateway_failures.unwrap_or(1),
            consecutive_5xx: self.consecutive_5xx.unwrap_or(5),
            base_ejection: base,
            max_ejection: self
                .max_ejection_ms
                .map_or(Duration::from_secs(300), Duration::from_millis)
                .max(base),
            max_ejection_percent: self.max_ejection_percent.unwrap_or(50),
        }
    }
}

/// `upstreams.<name>.dns`: the endpoints are what a DNS name resolves to,
/// looked up again every `interval_ms` (sooner, backing off, after a
/// failure, which keeps the last good set).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The name: every A/AAAA record is an endpoint on `port` (a Kubernetes
    /// headless Service, a compose service with replicas); with `srv`, an
    /// SRV name whose records give target and port.
    pub name: String,
    /// Port of every address; required unless `srv`.
    pub port: Option<u16>,
    #[serde(default)]
    pub srv: bool,
    /// How often the name is resolved again.
    pub interval_ms: Option<u64>,
    /// `ip:port` of the DNS servers to ask; empty: the system's
    /// (`/etc/resolv.conf`).
    #[serde(default)]
    pub nameservers: Vec<String>,
}

impl UpstreamConfig {
    /// An upstream of `urls` with `policy` and nothing else configured.
    pub fn of_endpoints(urls: &[String], policy: Policy) -> Self {
        Self {
            endpoints: urls.to_vec(),
            openapi_path: None,
            balance: Some(policy),
            weights: BTreeMap::new(),
            dns: None,
            health: None,
            outlier: None,
            panic_threshold_percent: None,
            hash_on: None,
            split: BTreeMap::new(),
            split_pin_header: None,
            retry_budget: None,
            limits: None,
            breaker: None,
            slow_start_ms: None,
            protocol: None,
            tls: None,
        }
    }

    /// The rules of a plain upstream (not a split, which its owner checks
    /// against the other upstreams): on failure, the offending key relative
    /// to the upstream's own section (`dns.port`) and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        let fail = |field: String, message: String| (field, message);
        if let Some(hash_on) = &self.hash_on {
            crate::balance::HashOn::parse(hash_on)
                .map_err(|err| fail("hash_on".to_owned(), err))?;
        }
        match (&self.dns, self.endpoints.is_empty()) {
            (None, true) => {
                return Err(fail(
                    "endpoints".to_owned(),
                    "must list at least one endpoint (or configure `dns`)".into(),
                ));
            }
            (Some(_), false) => {
                return Err(fail(
                    "dns".to_owned(),
                    "give `endpoints` or `dns`, not both".into(),
                ));
            }
            (Some(dns), true) => crate::discovery::dns::check(dns)
                .map_err(|(field, err)| fail(format!("dns.{field}"), err))?,
            (None, false) => {}
        }
        if let Some(health) = &self.health {
            let field = |f: &str| format!("health.{f}");
            if health.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                return Err(fail(field("path"), "must start with `/`".into()));
            }
            if health.port.is_some() && health.port_offset.is_some() {
                return Err(fail(
                    field("port"),
                    "give `port` or `port_offset`, not both".into(),
                ));
            }
            for (f, value) in [
                ("interval_ms", health.interval_ms()),
                ("timeout_ms", health.timeout_ms()),
                ("rise", u64::from(health.rise())),
                ("fall", u64::from(health.fall())),
            ] {
                if value == 0 {
                    return Err(fail(field(f), "must be positive".into()));
                }
            }
        }
        if let Some(outlier) = &self.outlier {
            let field = |f: &str| format!("outlier.{f}");
            for (f, value) in [
                (
                    "consecutive_gateway_failures",
                    outlier.consecutive_gateway_failures.map(u64::from),
                ),
                ("consecutive_5xx", outlier.consecutive_5xx.map(u64::from)),
                ("base_ejection_ms", outlier.base_ejection_ms),
                ("max_ejection_ms", outlier.max_ejection_ms),
            ] {
                if value == Some(0) {
                    return Err(fail(field(f), "must be positive".into()));
                }
            }
            if outlier.max_ejection_percent.is_some_and(|p| p > 100) {
                return Err(fail(field("max_ejection_percent"), "at most 100".into()));
            }
        }
        let positive = |field: String, value: Option<u64>| match value {
            Some(0) => Err(fail(field, "must be positive".into())),
            _ => Ok(()),
        };
        if let Some(limits) = &self.limits {
            let field = |f: &str| format!("limits.{f}");
            positive(
                field("max_in_flight"),
                limits.max_in_flight.map(|v| v as u64),
            )?;
            positive(field("queue_timeout_ms"), limits.queue_timeout_ms)?;
        }
        if let Some(breaker) = &self.breaker {
            let field = |f: &str| format!("breaker.{f}");
            positive(field("min_requests"), breaker.min_requests.map(u64::from))?;
            positive(field("window_ms"), breaker.window_ms)?;
            positive(field("open_ms"), breaker.open_ms)?;
            positive(
                field("half_open_requests"),
                breaker.half_open_requests.map(u64::from),
            )?;
            if breaker.error_percent.is_some_and(|p| p == 0 || p > 100) {
                return Err(fail(field("error_percent"), "between 1 and 100".into()));
            }
        }
        if let Some(budget) = &self.retry_budget
            && budget.ratio_percent.is_some_and(|p| p > 1000)
        {
            return Err(fail(
                "retry_budget.ratio_percent".to_owned(),
                "at most 1000".into(),
            ));
        }
        if self.panic_threshold_percent.is_some_and(|p| p > 100) {
            return Err(fail(
                "panic_threshold_percent".to_owned(),
                "at most 100".into(),
            ));
        }
        for (url, weight) in &self.weights {
            if !self.endpoints.contains(url) {
                return Err(fail(
                    "weights".to_owned(),
                    format!("`{url}` is not one of the upstream's endpoints"),
                ));
            }
            if *weight == 0 {
                return Err(fail(
                    "weights".to_owned(),
                    format!("`{url}`: a weight must be at least 1"),
                ));
            }
        }
        for endpoint in &self.endpoints {
            let uri: http::Uri = endpoint
                .parse()
                .map_err(|err| fail("endpoints".to_owned(), format!("`{endpoint}`: {err}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(fail(
                    "endpoints".to_owned(),
                    format!("`{endpoint}` must be an http:// or https://host:port URL"),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(fail(
                    "tls.cert_file".to_owned(),
                    "give `cert_file` and `key_file` together (mutual TLS), or neither".into(),
                ));
            }
            crate::connection::tls::client_config(Some(tls), self.protocol.unwrap_or_default())
                .map_err(|(field, err)| fail(format!("tls.{field}"), err))?;
        }
        Ok(())
    }
}
