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
    /// The endpoint as configured, for logs and metric labels.
    pub label: String,
    ejected_until: Mutex<Option<Instant>>,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|err| format!("`{url}`: {err}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(format!("`{url}` must be an absolute http URL"));
        };
        Ok(Self {
            scheme,
            authority,
            label: url.trim_end_matches('/').to_owned(),
            ejected_until: Mutex::new(None),
        })
    }

    fn is_ejected(&self, now: Instant) -> bool {
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
    }

    /// Takes the replica back after it answered.
    pub fn restore(&self) {
        if let Ok(mut until) = self.ejected_until.lock() {
            *until = None;
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
        Ok(Self {
            name: name.to_owned(),
            endpoints: urls
                .iter()
                .map(|u| Endpoint::parse(u))
                .collect::<Result<_, _>>()?,
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
}
