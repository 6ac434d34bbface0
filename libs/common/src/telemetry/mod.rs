//! Tracing and OpenTelemetry, set up once by each service's `main`.
//!
//! Logs go to stdout as JSON (containers; formatted by [`json`]) or pretty
//! text (terminals), written in batches by a thread of their own
//! ([`output`]). Every
//! request has a W3C trace context — the caller's `traceparent` continued,
//! or a new trace — that is logged and propagated to the services it
//! calls. Spans are exported over OTLP/HTTP when an endpoint is configured;
//! only then does each request span go through OpenTelemetry. Without one,
//! the trace context is a small value carried with the request
//! ([`TraceContext`]), which costs a fraction of building an OpenTelemetry
//! span nobody exports.

#[cfg(test)]
mod captured;
mod json;
pub mod output;

use std::{io::IsTerminal, sync::OnceLock};

use opentelemetry::{KeyValue, global, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use serde::Deserialize;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, pretty otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log output format.
    pub log_format: LogFormat,
    /// `EnvFilter` directives; `RUST_LOG` wins when set.
    pub log_filter: String,
    /// OTLP/HTTP traces endpoint (e.g. `http://otel-collector:4318/v1/traces`).
    pub otlp_endpoint: Option<String>,
}

/// Flushes and stops the exporter, then writes the log lines still
/// pending, when dropped at the end of `main`.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    // Dropped after the provider (fields drop in order), so what the
    // exporter's shutdown logs is written too.
    _log_output: output::LogOutputGuard,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = &self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("telemetry shutdown: {err}");
        }
    }
}

/// Whether request spans go through OpenTelemetry to an exporter (set once
/// by [`init`]; without `init`, as in unit tests, they do not).
static EXPORTING: OnceLock<bool> = OnceLock::new();

pub(crate) fn exporting() -> bool {
    EXPORTING.get().copied().unwrap_or(false)
}

/// The log output when logs are JSON (set once by [`init`]): the access
/// line is written into it directly ([`json::InfoLine`]).
static JSON_OUTPUT: OnceLock<output::LogOutput> = OnceLock::new();

pub(crate) fn json_output() -> Option<&'static output::LogOutput> {
    JSON_OUTPUT.get()
}

pub(crate) use json::InfoLine;

/// Installs the global subscriber, tracer provider and W3C propagator.
pub fn init(
    service_name: &'static str,
    config: &TelemetryConfig,
) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());

    let provider = match &config.otlp_endpoint {
        Some(endpoint) => {
            let resource = Resource::builder()
                .with_service_name(service_name)
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint.clone())
                .build()?;
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(exporter)
                .build();
            global::set_tracer_provider(provider.clone());
            Some(provider)
        }
        None => None,
    };
    let _ = EXPORTING.set(provider.is_some());
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(otel_filter())
    });

    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log_filter))?;
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let (log_output, log_output_guard) =
        output::LogOutput::start(json, output::FLUSH_INTERVAL, std::io::stdout())?;
    let fmt_layer = if json {
        let _ = JSON_OUTPUT.set(log_output.clone());
        json::JsonLayer::new(log_output).boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(log_output)
            .boxed()
    };

    // The filter applies to log output only: request spans must exist (and
    // carry trace context onward) even when logging is set to `warn`.
    tracing_subscriber::registry()
        .with(fmt_layer.with_filter(filter))
        .with(otel_layer)
        .try_init()?;
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(%endpoint, "exporting traces over OTLP");
    }
    Ok(TelemetryGuard {
        provider,
        _log_output: log_output_guard,
    })
}

/// What becomes an OpenTelemetry span: spans at `info` and above. Log
/// events are left to the log output — turning each into a span event would
/// cost allocations on every request and duplicate the logs.
fn otel_filter() -> tracing_subscriber::filter::FilterFn {
    tracing_subscriber::filter::filter_fn(|metadata| {
        metadata.is_span() && *metadata.level() <= tracing::Level::INFO
    })
}

tokio::task_local! {
    static CURRENT_TRACE: TraceContext;
}

/// A request's W3C trace context: its trace, its own span id (the parent
/// of whatever it calls), the trace flags and the caller's `tracestate`,
/// passed on as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
    pub state: Option<http::HeaderValue>,
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
/// The longest `tracestate` passed on (the W3C limit a vendor must keep).
const TRACESTATE_MAX: usize = 512;
/// `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LEN: usize = 55;

/// The value of up to 32 lowercase hex digits; `None` if any is not one.
fn lower_hex_value(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(nibble))
    })
}

impl TraceContext {
    /// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); a later
    /// version is read by the same four fields, as the spec asks. All-zero
    /// ids and version `ff` are invalid.
    ///
    /// The fields have fixed places, so each is read where it must be, its
    /// lowercase hex digits folded as they are checked: every request a
    /// service gets through the gateway carries one (splitting and
    /// `from_str_radix` cost ≈ 1.8 k instructions a request; this ≈ 0.3 k).
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let bytes = value.trim().as_bytes();
        let dashes = [2, 35, 52];
        if bytes.len() < TRACEPARENT_LEN || dashes.iter().any(|&at| bytes[at] != b'-') {
            return None;
        }
        let version = lower_hex_value(&bytes[..2])?;
        if version == 0xff {
            return None;
        }
        // Version 00 is exactly these four fields; a later one may go on
        // after another dash.
        if bytes.len() > TRACEPARENT_LEN && (version == 0 || bytes[TRACEPARENT_LEN] != b'-') {
            return None;
        }
        let context = Self {
            trace_id: lower_hex_value(&bytes[3..35])?,
            span_id: u64::try_from(lower_hex_value(&bytes[36..52])?).ok()?,
            flags: u8::try_from(lower_hex_value(&bytes[53..55])?).ok()?,
            state: None,
        };
        (context.trace_id != 0 && context.span_id != 0).then_some(context)
    }

    /// This request's context: a new span of the caller's trace when
    /// `headers` carry a valid `traceparent`, else a new sampled trace.
    pub fn continue_or_start(headers: &http::HeaderMap) -> Self {
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .and_then(Self::from_traceparent);
        match parent {
            Some(parent) => Self {
                span_id: random_nonzero_u64(),
                state: headers
                    .get(TRACESTATE)
                    .filter(|state| state.len() <= TRACESTATE_MAX)
                    .cloned(),
                ..parent
            },
            None => Self {
                trace_id: random_nonzero_u128(),
                span_id: random_nonzero_u64(),
                flags: 0x01,
                state: None,
            },
        }
    }

    pub fn trace_id_hex(&self) -> String {
        let mut digits = [0; 32];
        lower_hex(self.trace_id, &mut digits);
        String::from_utf8_lossy(&digits).into_owned()
    }

    /// As a `traceparent` value: this span is the parent of the callee's.
    pub fn traceparent(&self) -> http::HeaderValue {
        // `00-{trace id:032x}-{span id:016x}-{flags:02x}`, written digit by
        // digit: on every proxied request, where `format!` cost two
        // microseconds.
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        lower_hex(self.trace_id, &mut text[3..35]);
        lower_hex(u128::from(self.span_id), &mut text[36..52]);
        lower_hex(u128::from(self.flags), &mut text[53..55]);
        // Hex digits and dashes only: always a valid header value.
        let mut value = http::HeaderValue::from_bytes(&text)
            .unwrap_or_else(|_| http::HeaderValue::from_static(""));
        // New on every call: never indexed by HPACK, where it would only
        // take room in an HTTP/2 hop's tables from entries that repeat.
        value.set_sensitive(true);
        value
    }

    /// The context of the request whose task this is.
    pub fn current() -> Option<Self> {
        CURRENT_TRACE.try_with(Clone::clone).ok()
    }

    /// Runs `future` as part of this trace ([`TraceContext::current`]).
    pub async fn scope<F: std::future::Future>(self, future: F) -> F::Output {
        CURRENT_TRACE.scope(self, future).await
    }
}

fn random_nonzero_u128() -> u128 {
    // uuid's v4 generator is the thread-local CSPRNG (feature fast-rng):
    // 122 random bits, no system call.
    uuid::Uuid::new_v4().as_u128() | 1
}

fn random_nonzero_u64() -> u64 {
    (uuid::Uuid::new_v4().as_u128() as u64) | 1
}

/// The trace context of a request being served under `span`: from the
/// caller's `traceparent` in `headers`, or a new trace. With an exporter
/// the span becomes an OpenTelemetry span with that parent and the context
/// is its own; without one no OpenTelemetry work is done.
pub fn start_request_trace(span: &tracing::Span, headers: &http::HeaderMap) -> TraceContext {
    if exporting() {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
        });
        // Fails only when the span is disabled; a context of our own then.
        let _ = span.set_parent(parent);
        let context = span.context();
        let own = context.span().span_context().clone();
        if own.is_valid() {
            return TraceContext {
                trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
                span_id: u64::from_be_bytes(own.span_id().to_bytes()),
                flags: own.trace_flags().to_u8(),
                state: None,
            };
        }
    }
    TraceContext::continue_or_start(headers)
}

/// Writes the current trace context as `traceparent` into `headers`: with
/// an exporter, the current OpenTelemetry span's (a child span of the
/// request included); without one, the request's.
pub fn inject_current_context(headers: &mut http::HeaderMap) {
    if exporting() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = tracing::Span::current().context();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
        });
        if headers.contains_key(TRACEPARENT) {
            return;
        }
    }
    let _ = CURRENT_TRACE.try_with(|context| {
        headers.insert(TRACEPARENT, context.traceparent());
        if let Some(state) = &context.state {
            headers.insert(TRACESTATE, state.clone());
        }
    });
}

/// `value`'s lowest `out.len() * 4` bits as lowercase hex digits, zero
/// padded, into `out`.
fn lower_hex(mut value: u128, out: &mut [u8]) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_parsed_and_written_back_the_same() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::from_traceparent(value).unwrap();
        assert_eq!(context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(context.span_id, 0x00f067aa0ba902b7);
        assert_eq!(context.flags, 1);
        assert_eq!(context.traceparent(), value);
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            context.traceparent().is_sensitive(),
            "never indexed by HPACK"
        );
    }

    #[test]
    fn malformed_and_all_zero_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            TraceContext::from_traceparent(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"
            )
            .is_some()
        );
    }

    /// The fixed-place parse says what the rule says — four dash-separated
    /// fields of 2, 32, 16 and 2 lowercase hex digits, version `ff` and
    /// all-zero ids refused, more fields only after a version other than
    /// `00` — for every one- and two-character change to valid values.
    #[test]
    fn the_fixed_place_parse_agrees_with_the_rule() {
        fn rule(value: &str) -> Option<(u128, u64, u8)> {
            let mut fields = value.trim().split('-');
            let (version, trace, span, flags) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            let hex = |field: &str, len: usize| {
                field.len() == len
                    && field
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            };
            if !hex(version, 2)
                || version == "ff"
                || !hex(trace, 32)
                || !hex(span, 16)
                || !hex(flags, 2)
            {
                return None;
            }
            if version == "00" && fields.next().is_some() {
                return None;
            }
            let parsed = (
                u128::from_str_radix(trace, 16).ok()?,
                u64::from_str_radix(span, 16).ok()?,
                u8::from_str_radix(flags, 16).ok()?,
            );
            (parsed.0 != 0 && parsed.1 != 0).then_some(parsed)
        }
        let valid = [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
            " 00-00000000000000000000000000000001-0000000000000001-ff ",
        ];
        let replacements = ['0', '9', 'a', 'f', 'g', 'A', 'F', '-', ' ', 'x'];
        let mut values: Vec<String> = valid.iter().map(|v| (*v).to_owned()).collect();
        for value in valid {
            let chars: Vec<char> = value.chars().collect();
            for at in 0..chars.len() {
                // Removed, doubled, or replaced, alone and beside a second
                // change further on.
                let mut removed = chars.clone();
                removed.remove(at);
                values.push(removed.iter().collect());
                let mut doubled = chars.clone();
                doubled.insert(at, chars[at]);
                values.push(doubled.iter().collect());
                for &first in &replacements {
                    let mut changed = chars.clone();
                    changed[at] = first;
                    values.push(changed.iter().collect());
                    for later in (at + 1..chars.len()).step_by(7) {
                        for &second in &replacements {
                            let mut twice = changed.clone();
                            twice[later] = second;
                            values.push(twice.iter().collect());
                        }
                    }
                }
            }
        }
        assert!(values.len() > 50_000);
        for value in &values {
            let parsed = TraceContext::from_traceparent(value)
                .map(|context| (context.trace_id, context.span_id, context.flags));
            assert_eq!(parsed, rule(value), "{value:?}");
        }
    }

    #[test]
    fn a_request_continues_the_callers_trace_in_a_new_span_or_starts_one() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        );
        let continued = TraceContext::continue_or_start(&headers);
        assert_eq!(continued.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_ne!(continued.span_id, 0x00f067aa0ba902b7);
        assert_eq!(continued.flags, 0, "the caller's sampling decision is kept");

        let started = TraceContext::continue_or_start(&http::HeaderMap::new());
        let other = TraceContext::continue_or_start(&http::HeaderMap::new());
        assert_ne!(started.trace_id, other.trace_id);
        assert_eq!(started.flags, 1);
    }
}
