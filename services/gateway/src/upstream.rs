//! Upstreams: named groups of replicas, picked round-robin, with replicas
//! that refused a connection set aside for a while (passive health).

use std::{
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http::uri::{Authority, Scheme};

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
    ejected_gauge: metrics::Gauge,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|err| format!("`{url}`: {err}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(format!("`{url}` must be an absolute http URL"));
        };
        Ok(Self {
            base_url: format!("{scheme}://{authority}"),
            scheme,
            authority,
            label: url.trim_end_matches('/').to_owned(),
            ejected_until: Mutex::new(None),
            ejected_gauge: metrics::Gauge::noop(),
        })
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .map(|until| until.is_some_and(|until| until > now))
            .unwrap_or(false)
    }

    /// Sets the replica aside after it refused a connection.
    pub fn eject(&self, for_how_long: Duration) {
        if let Ok(mut until) = self.ejected_until.lock() {
            *until = Some(Instant::now() + for_how_long);
        }
        self.ejected_gauge.set(1.0);
    }

    /// Takes the replica back after it answered.
    pub fn restore(&self) {
        if let Ok(mut until) = self.ejected_until.lock()
            && until.take().is_some()
        {
            self.ejected_gauge.set(0.0);
        }
    }
}

/// A named group of replicas.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    next: AtomicUsize,
}

impl Upstream {
    pub fn new(name: &str, urls: &[String]) -> Result<Self, String> {
        let mut endpoints: Vec<Endpoint> = urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<_, _>>()?;
        for endpoint in &mut endpoints {
            endpoint.ejected_gauge = metrics::gauge!(
                "gateway_upstream_endpoint_ejected",
                "upstream" => name.to_owned(),
                "endpoint" => endpoint.label.clone(),
            );
            endpoint.ejected_gauge.set(0.0);
        }
        Ok(Self {
            name: name.to_owned(),
            endpoints,
            next: AtomicUsize::new(0),
        })
    }

    /// Every replica once, in the order to try them: round-robin from the
    /// next one, healthy replicas before ejected ones (which are still tried
    /// last rather than failing the request outright).
    pub fn attempt_order(&self) -> Vec<&Endpoint> {
        let count = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let (mut healthy, ejected): (Vec<_>, Vec<_>) = (0..count)
            .map(|i| &self.endpoints[(start + i) % count])
            .partition(|endpoint| !endpoint.is_ejected(now));
        healthy.extend(ejected);
        healthy
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
        let probes = self
            .endpoints
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

/// `upstreams`: the gateway is ready when every upstream has a usable
/// replica — otherwise it would take traffic only to answer 503.
#[derive(Debug, Clone)]
pub struct UpstreamsCheck(pub Vec<std::sync::Arc<Upstream>>);

impl portico_common::admin::ReadinessCheck for UpstreamsCheck {
    fn name(&self) -> &'static str {
        "upstreams"
    }

    fn check(&self) -> portico_common::admin::CheckFuture {
        let upstreams = self.0.clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(n: usize) -> Upstream {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 1000 + i))
            .collect();
        Upstream::new("u", &urls).unwrap()
    }

    #[test]
    fn round_robin_starts_at_the_next_replica_each_time() {
        let upstream = upstream(3);
        let firsts: Vec<String> = (0..6)
            .map(|_| upstream.attempt_order()[0].label.clone())
            .collect();
        assert_eq!(
            firsts,
            [
                "http://127.0.0.1:1000",
                "http://127.0.0.1:1001",
                "http://127.0.0.1:1002",
                "http://127.0.0.1:1000",
                "http://127.0.0.1:1001",
                "http://127.0.0.1:1002"
            ]
        );
    }

    #[test]
    fn ejected_replicas_are_tried_last() {
        let upstream = upstream(2);
        upstream.endpoints[0].eject(Duration::from_secs(60));
        for _ in 0..4 {
            let order = upstream.attempt_order();
            assert_eq!(order[0].label, "http://127.0.0.1:1001");
            assert_eq!(order[1].label, "http://127.0.0.1:1000");
        }
        upstream.endpoints[0].restore();
        let firsts: Vec<_> = (0..2)
            .map(|_| upstream.attempt_order()[0].label.clone())
            .collect();
        assert!(firsts.contains(&"http://127.0.0.1:1000".to_owned()));
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
        let upstream = Upstream::new("u", &[dead.clone(), live]).unwrap();
        assert!(upstream.has_usable_endpoint().await);
        let all_dead = Upstream::new("u", &[dead]).unwrap();
        assert!(!all_dead.has_usable_endpoint().await);
        // An ejected replica does not count even if it accepts connections.
        upstream.endpoints[1].eject(Duration::from_secs(60));
        assert!(!upstream.has_usable_endpoint().await);
    }
}
