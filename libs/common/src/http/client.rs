//! The outgoing HTTP client for service-to-service calls: bounded connect
//! and request times, pooled connections, and `traceparent` plus
//! `x-request-id` of the current request on every call.

use std::time::Duration;

use serde::Deserialize;

use super::{REQUEST_ID_HEADER, pipeline::current_request_id};
use crate::telemetry;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpClientConfig {
    /// TCP connect timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout, in milliseconds.
    pub request_timeout_ms: u64,
}

/// A cheap-to-clone client; share one per service.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    pub fn new(config: &HttpClientConfig) -> Result<Self, reqwest::Error> {
        let inner = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("portico/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { inner })
    }

    /// A request carrying the current trace context and request id.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.inner
            .request(method, url)
            .headers(propagation_headers())
    }

    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, url)
    }

    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, url)
    }
}

/// The JSON body of `response`, read no further than `max_bytes` whether
/// or not its length was announced: a peer's answer never grows memory
/// without bound. The error says why it could not be read.
pub async fn json_within<T: serde::de::DeserializeOwned>(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<T, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| err.to_string())? {
        if body.len() + chunk.len() > max_bytes {
            return Err(format!("longer than {max_bytes} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|err| err.to_string())
}

/// `traceparent` of the current span and `x-request-id` of the current request.
pub fn propagation_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    telemetry::inject_current_context(&mut headers);
    if let Some(id) = current_request_id()
        && let Ok(value) = http::HeaderValue::from_str(&id)
    {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    headers
}
