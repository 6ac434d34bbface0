//! The access log: one JSON line per request (target `access`), written
//! when the response body has been sent (or dropped, when the client went
//! away), so it holds the whole duration and the bytes really sent.
//!
//! What it records is chosen, never copied wholesale from the request: the
//! method, the route, the path without its query, statuses, durations,
//! sizes, who served it, the request and trace ids and the client address.
//! No header, cookie or query string is logged, so no token or secret in
//! them can reach the log.

use std::{
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

use crate::{net::IpText, telemetry};

/// How the access log is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccessLog {
    /// Share of successful answers (below 400) that are logged, 0 to 1;
    /// every error is.
    pub success_sample_rate: f64,
}

impl AccessLog {
    /// Whether an answer with `status` is logged, `draw` a uniform number
    /// in [0, 1).
    pub fn keeps(&self, status: u16, draw: f64) -> bool {
        status >= 400 || draw < self.success_sample_rate
    }
}

/// Response extension: what a proxy adds to the line.
#[derive(Debug, Clone)]
pub struct ProxiedFacts {
    pub upstream: String,
    /// The endpoint that gave the answer.
    pub endpoint: String,
    /// Attempts made, the answering one included.
    pub attempts: u32,
    /// From the first attempt to the answer's head.
    pub upstream_duration: Duration,
    /// The client as the proxy judged it (`X-Forwarded-For` from a trusted
    /// proxy), rather than the connection's peer.
    pub client_ip: Option<IpAddr>,
}

/// One request's line, written when its body is done.
#[derive(Debug)]
pub(crate) struct Record {
    pub method: axum::http::Method,
    pub route: Arc<str>,
    pub path: String,
    pub status: u16,
    pub started: Instant,
    pub bytes_in: u64,
    pub request_id: String,
    pub trace_id: String,
    pub client_ip: Option<IpAddr>,
    pub cause: Option<String>,
    pub proxied: Option<ProxiedFacts>,
}

impl Record {
    fn write(&self, bytes_out: u64, complete: bool) {
        self.write_to(telemetry::json_output(), bytes_out, complete);
    }

    /// Into `json_output` when logs are JSON, else as a `tracing` event.
    pub(crate) fn write_to(
        &self,
        json_output: Option<&telemetry::output::LogOutput>,
        bytes_out: u64,
        complete: bool,
    ) {
        let client_ip = self
            .proxied
            .as_ref()
            .and_then(|proxied| proxied.client_ip)
            .or(self.client_ip)
            .map(IpText::new);
        let line = Line {
            record: self,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            bytes_out,
            complete,
            client_ip: client_ip.as_deref().unwrap_or_default(),
        };
        match json_output {
            // JSON logs: the line goes straight into the log output, if
            // the log filter lets the `access` target through.
            Some(output) => {
                if tracing::enabled!(target: "access", tracing::Level::INFO) {
                    output.write_line(line.json(SystemTime::now()).as_bytes());
                }
            }
            None => line.log(),
        }
    }
}

/// One access line's values.
pub(crate) struct Line<'a> {
    pub record: &'a Record,
    pub duration_ms: f64,
    pub bytes_out: u64,
    pub complete: bool,
    pub client_ip: &'a str,
}

impl Line<'_> {
    /// The line as the JSON log layer writes the event [`Line::log`] logs,
    /// but for the timestamp: `now`'s.
    pub(crate) fn json(&self, now: SystemTime) -> String {
        let record = self.record;
        let mut line = telemetry::InfoLine::new(now, "request");
        line.str("method", record.method.as_str());
        line.str("route", &record.route);
        line.str("path", &record.path);
        line.u64("status", u64::from(record.status));
        line.f64("duration_ms", self.duration_ms);
        if let Some(proxied) = &record.proxied {
            line.f64(
                "upstream_ms",
                proxied.upstream_duration.as_secs_f64() * 1000.0,
            );
        }
        line.u64("bytes_in", record.bytes_in);
        line.u64("bytes_out", self.bytes_out);
        if let Some(proxied) = &record.proxied {
            line.str("upstream", &proxied.upstream);
            line.str("endpoint", &proxied.endpoint);
            line.u64("attempts", u64::from(proxied.attempts));
        }
        line.str("request_id", &record.request_id);
        line.str("trace_id", &record.trace_id);
        line.str("client_ip", self.client_ip);
        line.bool("complete", self.complete);
        line.str("cause", record.cause.as_deref().unwrap_or_default());
        line.finish("access")
    }

    /// The line as a `tracing` event, for the pretty (terminal) output.
    /// Text fields go as `&str`, not `%` (Display): the line takes them as
    /// they are instead of through the formatting machinery.
    pub(crate) fn log(&self) {
        let record = self.record;
        let cause = record.cause.as_deref().unwrap_or_default();
        match &record.proxied {
            Some(proxied) => tracing::info!(
                target: "access",
                method = record.method.as_str(),
                route = &*record.route,
                path = record.path.as_str(),
                status = record.status,
                duration_ms = self.duration_ms,
                upstream_ms = proxied.upstream_duration.as_secs_f64() * 1000.0,
                bytes_in = record.bytes_in,
                bytes_out = self.bytes_out,
                upstream = proxied.upstream.as_str(),
                endpoint = proxied.endpoint.as_str(),
                attempts = proxied.attempts,
                request_id = record.request_id.as_str(),
                trace_id = record.trace_id.as_str(),
                client_ip = self.client_ip,
                complete = self.complete,
                cause,
                "request"
            ),
            None => tracing::info!(
                target: "access",
                method = record.method.as_str(),
                route = &*record.route,
                path = record.path.as_str(),
                status = record.status,
                duration_ms = self.duration_ms,
                bytes_in = record.bytes_in,
                bytes_out = self.bytes_out,
                request_id = record.request_id.as_str(),
                trace_id = record.trace_id.as_str(),
                client_ip = self.client_ip,
                complete = self.complete,
                cause,
                "request"
            ),
        }
    }
}

/// `response` with a body that writes `record` once it is done.
pub(crate) fn log_when_sent(response: Response, record: Record) -> Response {
    response.map(|inner| {
        Body::new(Logged {
            inner,
            record: Some(record),
            bytes_out: 0,
            complete: false,
        })
    })
}

struct Logged {
    inner: Body,
    record: Option<Record>,
    bytes_out: u64,
    complete: bool,
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.complete = true;
                }
            }
            None => self.complete = true,
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // An empty body is never polled: it is complete as it is.
        let complete = self.complete || self.inner.is_end_stream();
        if let Some(record) = self.record.take() {
            record.write(self.bytes_out, complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_kept_and_successes_by_their_sample_rate() {
        let tenth = AccessLog {
            success_sample_rate: 0.1,
        };
        assert!(tenth.keeps(200, 0.05));
        assert!(!tenth.keeps(200, 0.5));
        assert!(!tenth.keeps(304, 0.5));
        assert!(tenth.keeps(404, 0.99));
        assert!(tenth.keeps(503, 0.99));
        let none = AccessLog {
            success_sample_rate: 0.0,
        };
        assert!(!none.keeps(200, 0.0));
    }
}
