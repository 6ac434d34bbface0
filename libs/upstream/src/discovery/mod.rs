//! Where an upstream's endpoints come from. The `static` source is the
//! configured `endpoints` list (no discovery runs); every other source is one
//! file implementing [`Discovery`], followed by [`follow`] while its upstream
//! serves.

pub mod dns;

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    time::Duration,
};

use crate::{config::UpstreamConfig, upstream::Upstream};

/// A source of endpoint URLs.
pub trait Discovery: Send + Sync + std::fmt::Debug {
    /// The endpoints now (`http://ip:port` URLs), or why they could not be
    /// found.
    fn discover(&self) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + '_>>;
    /// How long a found set stands before asking again.
    fn interval(&self) -> Duration;
    /// For `/config`: what is asked, and how.
    fn describe(&self) -> String;
}

/// The discovery `spec` asks for; `None` for the static list.
pub fn from_config(spec: &UpstreamConfig) -> Result<Option<Arc<dyn Discovery>>, String> {
    match &spec.dns {
        None => Ok(None),
        Some(dns) => Ok(Some(Arc::new(dns::DnsDiscovery::new(dns)?))),
    }
}

/// After a failure the next try comes sooner: from this, doubling up to the
/// interval.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Asks once and applies the answer. A failure or an empty answer keeps the
/// endpoints the upstream has (the last good set).
pub async fn refresh(upstream: &Upstream) -> bool {
    let Some(discovery) = upstream.discovery().cloned() else {
        return true;
    };
    let outcome = match discovery.discover().await {
        Ok(urls) if urls.is_empty() => Err("the answer has no endpoints".to_owned()),
        Ok(urls) => upstream.set_endpoints(&urls),
        Err(err) => Err(err),
    };
    let label = if outcome.is_ok() { "ok" } else { "error" };
    metrics::counter!(upstream.metric("discovery_refreshes_total"),
        "upstream" => upstream.name.clone(), "outcome" => label)
    .increment(1);
    if let Err(err) = &outcome {
        tracing::warn!(upstream = %upstream.name, source = %discovery.describe(), %err,
            "discovery failed; keeping the last endpoints");
    }
    outcome.is_ok()
}

/// Keeps `upstream`'s endpoints current until the upstream is dropped (a
/// reload replaced it).
pub async fn follow(upstream: Weak<Upstream>) {
    let mut retry = FIRST_RETRY;
    loop {
        let wait = {
            let Some(upstream) = upstream.upgrade() else {
                return;
            };
            let Some(interval) = upstream.discovery().map(|d| d.interval()) else {
                return;
            };
            if refresh(&upstream).await {
                retry = FIRST_RETRY;
                interval
            } else {
                let wait = retry.min(interval);
                retry = (retry * 2).min(interval);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
