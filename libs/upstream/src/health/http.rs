//! `http` active check: `GET <path>` on the endpoint's host at the check's
//! port (the replica's admin listener, where `/readyz` is), passing on any
//! 2xx within the timeout.

use std::{future::Future, pin::Pin, time::Duration};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::HealthCheck;
use crate::{config::HealthConfig, upstream::Endpoint};

#[derive(Debug)]
pub struct HttpCheck {
    client: Client<HttpConnector, Empty<Bytes>>,
    path: String,
    port: Option<u16>,
    port_offset: Option<u16>,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
}

impl HttpCheck {
    pub fn new(config: &HealthConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(config.timeout_ms())));
        Self {
            // Probes keep no connections: each one sees whether the replica
            // accepts new work, as a client would.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            path: config.path.clone().unwrap_or_else(|| "/readyz".to_owned()),
            port: config.port,
            port_offset: config.port_offset,
            interval: Duration::from_millis(config.interval_ms()),
            timeout: Duration::from_millis(config.timeout_ms()),
            rise: config.rise(),
            fall: config.fall(),
        }
    }

    fn url(&self, endpoint: &Endpoint) -> Option<http::Uri> {
        let api_port = endpoint.authority.port_u16().unwrap_or(80);
        let port = match (self.port, self.port_offset) {
            (Some(port), _) => port,
            (None, Some(offset)) => api_port.checked_add(offset)?,
            (None, None) => api_port,
        };
        let host = endpoint.authority.host();
        format!("http://{host}:{port}{}", self.path).parse().ok()
    }
}

impl HealthCheck for HttpCheck {
    fn probe<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let Some(url) = self.url(endpoint) else {
                return false;
            };
            matches!(
                tokio::time::timeout(self.timeout, self.client.get(url)).await,
                Ok(Ok(response)) if response.status().is_success()
            )
        })
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn rise(&self) -> u32 {
        self.rise
    }

    fn fall(&self) -> u32 {
        self.fall
    }
}
