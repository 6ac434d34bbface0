//! The JSON log layer: one line per event, written straight into a buffer.
//!
//! The lines look as `tracing_subscriber`'s JSON formatter made them
//! (`flatten_event`, `with_current_span`): `timestamp`, `level`, the
//! event's fields (`message` first), `target`, and `span` — the current
//! span's fields and `name`. What differs is the cost. That formatter kept
//! each span's fields as JSON text and, on every `span.record`, parsed the
//! text back into a map, added the field and wrote it out again; every
//! event went through `serde` visitors and a fresh timestamp string. With
//! a request span recorded twice and an access line per request, that was
//! about a quarter of the gateway's CPU per proxied request
//! (docs/benchmarks.md). Here a span's fields are kept as the members of a
//! JSON object, a recorded field is appended (or its value replaced in
//! place), and an event is written once, with the date and time of day
//! formatted once per second per thread.

use std::{
    cell::RefCell,
    fmt::{self, Write as _},
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{
    fmt::MakeWriter,
    layer::{Context, Layer},
    registry::LookupSpan,
};

/// Writes events as JSON lines to `W`.
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

/// A span's fields, as the members of a JSON object without its braces:
/// `"method":"GET","route":"/v1/users/me"`, and which of the span's
/// declared fields (by their index in its field set) are among them, so
/// that recording a field not yet there appends it without searching the
/// text (only a field recorded again is looked for, to be replaced).
#[derive(Debug)]
struct SpanFields {
    members: String,
    written: u64,
}

impl SpanFields {
    fn new() -> Self {
        // A request span's fields fit without growing the string.
        Self {
            members: String::with_capacity(160),
            written: 0,
        }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = SpanFields::new();
        attrs.record(&mut SpanVisitor(&mut fields));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut SpanVisitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            // An event logged while this thread is writing one (a field's
            // Display that logs) gets a buffer of its own.
            let mut own = String::new();
            let mut borrowed = line.try_borrow_mut();
            let line = match borrowed.as_deref_mut() {
                Ok(line) => line,
                Err(_) => &mut own,
            };
            line.clear();
            let normalized = event.normalized_metadata();
            let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
            push_line_start(line, SystemTime::now(), meta.level());
            event.record(&mut EventVisitor(line));
            push_target(line, meta.target());
            if let Some(span) = ctx.event_span(event) {
                line.push_str(",\"span\":{");
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<SpanFields>()
                    && !fields.members.is_empty()
                {
                    line.push_str(&fields.members);
                    line.push(',');
                }
                line.push_str("\"name\":");
                push_string(line, span.name());
                line.push('}');
            }
            line.push_str("}\n");
            // Nowhere to report a lost line but the output itself.
            let _ = self
                .make_writer
                .make_writer_for(meta)
                .write_all(line.as_bytes());
            // Keep a line's worth of capacity, not a burst's.
            line.shrink_to(4096);
        });
    }
}

/// A line as the layer writes an INFO event outside spans, built without
/// `tracing`'s event machinery: for the access line, one per request,
/// where dispatching each of its seventeen fields through a visitor cost
/// more than writing them (≈ 7 k instructions per line, ≈ 2 k this way).
pub(crate) struct InfoLine(String);

impl InfoLine {
    pub(crate) fn new(now: SystemTime, message: &str) -> Self {
        let mut line = String::with_capacity(512);
        push_line_start(&mut line, now, &Level::INFO);
        line.push_str(",\"message\":");
        push_string(&mut line, message);
        Self(line)
    }

    /// `,"key":` — a key is a name in the code, never anything to escape,
    /// so it is not looked at (a third of the line's cost when it was).
    fn key(&mut self, key: &'static str) {
        debug_assert!(!any_needs_escape(key.as_bytes()), "{key}");
        self.0.push_str(",\"");
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    pub(crate) fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        push_string(&mut self.0, value);
    }

    pub(crate) fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key);
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    pub(crate) fn f64(&mut self, key: &'static str, value: f64) {
        self.key(key);
        push_f64(&mut self.0, value);
    }

    pub(crate) fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.0.push_str(if value { "true" } else { "false" });
    }

    /// The whole line, with its target and the newline.
    pub(crate) fn finish(mut self, target: &str) -> String {
        push_target(&mut self.0, target);
        self.0.push_str("}\n");
        self.0
    }
}

/// How every line starts: `{"timestamp":"…","level":"…"`.
fn push_line_start(line: &mut String, now: SystemTime, level: &Level) {
    line.push_str("{\"timestamp\":\"");
    push_timestamp(line, now);
    line.push_str("\",\"level\":\"");
    line.push_str(level_name(level));
    line.push('"');
}

/// `,"target":"…"`, after an event's fields.
fn push_target(line: &mut String, target: &str) {
    line.push_str(",\"target\":");
    push_string(line, target);
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// An event's fields, each as `,"name":value` after what is written.
struct EventVisitor<'a>(&'a mut String);

impl Visit for EventVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        push_key(self.0, field.name());
        push_debug(self.0, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        push_key(self.0, field.name());
        push_string(self.0, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        push_key(self.0, field.name());
        push_f64(self.0, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        push_key(self.0, field.name());
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        push_key(self.0, field.name());
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        push_key(self.0, field.name());
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        push_key(self.0, field.name());
        push_display(self.0, value);
    }
}

fn push_key(line: &mut String, name: &str) {
    line.push(',');
    push_string(line, name);
    line.push(':');
}

/// A span's fields: a field recorded again replaces its value in place,
/// so each name appears once, as in an object.
struct SpanVisitor<'a>(&'a mut SpanFields);

impl SpanVisitor<'_> {
    fn set(&mut self, field: &Field, write_value: impl FnOnce(&mut String)) {
        // A span declares at most 32 fields (tracing's limit); past 64 the
        // text is searched every time.
        let bit = 1u64.checked_shl(field.index() as u32).unwrap_or(0);
        let members = &mut self.0.members;
        let written_before = bit == 0 || self.0.written & bit != 0;
        match written_before
            .then(|| member_value(members, field.name()))
            .flatten()
        {
            Some(range) => {
                let mut value = String::new();
                write_value(&mut value);
                members.replace_range(range, &value);
            }
            None => {
                if !members.is_empty() {
                    members.push(',');
                }
                push_string(members, field.name());
                members.push(':');
                write_value(members);
                self.0.written |= bit;
            }
        }
    }
}

impl Visit for SpanVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, |out| push_debug(out, value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, |out| push_string(out, value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, |out| push_f64(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, |out| out.push_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field, |out| out.push_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, |out| {
            out.push_str(if value { "true" } else { "false" })
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field, |out| push_display(out, value));
    }
}

/// Where the value of member `name` is in `members` (the text of an
/// object's members without braces, as written here), if it is there.
///
/// A member starts at the beginning or after a comma with an unescaped
/// quote; inside a string value every quote is escaped, so `,"name":`
/// can only be a member's start. A value is a string (to its closing
/// unescaped quote) or a scalar (to the next comma).
fn member_value(members: &str, name: &str) -> Option<std::ops::Range<usize>> {
    let mut key = String::with_capacity(name.len() + 3);
    push_string(&mut key, name);
    key.push(':');
    let bytes = members.as_bytes();
    let mut from = 0;
    let start = loop {
        let at = from + members[from..].find(&key)?;
        if at == 0 || bytes[at - 1] == b',' {
            break at + key.len();
        }
        from = at + 1;
    };
    let end = if bytes.get(start) == Some(&b'"') {
        let mut i = start + 1;
        loop {
            match bytes.get(i)? {
                b'\\' => i += 2,
                b'"' => break i + 1,
                _ => i += 1,
            }
        }
    } else {
        members[start..]
            .find(',')
            .map_or(members.len(), |comma| start + comma)
    };
    Some(start..end)
}

/// `value` as a JSON string, escaped as it is formatted.
fn push_debug(line: &mut String, value: &dyn fmt::Debug) {
    line.push('"');
    let _ = write!(Escaped(line), "{value:?}");
    line.push('"');
}

fn push_display(line: &mut String, value: &dyn fmt::Display) {
    line.push('"');
    let _ = write!(Escaped(line), "{value}");
    line.push('"');
}

fn push_string(line: &mut String, value: &str) {
    line.push('"');
    escape_into(line, value);
    line.push('"');
}

/// A number as JSON has it; NaN and the infinities (which JSON lacks) are
/// `null`, as `serde_json` writes them.
fn push_f64(line: &mut String, value: f64) {
    if value.is_finite() {
        // The shortest text that reads back as the same number (as
        // `Display` writes it, for a fraction of the cost); a whole number
        // without its ".0", as `Display` has it.
        let mut buffer = ryu::Buffer::new();
        let text = buffer.format_finite(value);
        line.push_str(text.strip_suffix(".0").unwrap_or(text));
    } else {
        line.push_str("null");
    }
}

/// Writes what is formatted into it as the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// The JSON escapes (RFC 8259 §7): quote, backslash and control characters.
fn escape_into(line: &mut String, value: &str) {
    // Most values have nothing to escape: one pass over the bytes, eight
    // at a time, and one copy.
    if !any_needs_escape(value.as_bytes()) {
        line.push_str(value);
        return;
    }
    let mut plain_from = 0;
    for (i, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        line.push_str(&value[plain_from..i]);
        if escape.is_empty() {
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escape);
        }
        plain_from = i + 1;
    }
    line.push_str(&value[plain_from..]);
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Whether any byte needs an escape, tested a word at a time: `(w - 0x20
/// in every byte) & !w` has a byte's high bit set only if some byte of
/// `w` is below 0x20, and `(v - 1 in every byte) & !v` only if some byte
/// of `v` is zero — `v` being `w` with every byte XORed with `"` or `\`.
/// (Bytes from 0x80 up are never below 0x20 and clear their high bit by
/// the `& !`.)
fn any_needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES * 0x80;
    let has_zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGH_BITS != 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(word);
        if word.wrapping_sub(ONES * 0x20) & !word & HIGH_BITS != 0
            || has_zero_byte(word ^ (ONES * u64::from(b'"')))
            || has_zero_byte(word ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words.remainder().iter().any(|&byte| needs_escape(byte))
}

/// RFC 3339 in UTC with microseconds, `2026-12-04T22:21:49.408148Z`: the
/// date and time of day are formatted when the second changes (per
/// thread), the microseconds every time.
fn push_timestamp(line: &mut String, now: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            second.1.clear();
            match time::OffsetDateTime::from_unix_timestamp(secs as i64) {
                Ok(at) => {
                    let _ = write!(
                        second.1,
                        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                        at.year(),
                        u8::from(at.month()),
                        at.day(),
                        at.hour(),
                        at.minute(),
                        at.second()
                    );
                }
                Err(_) => second.1.push_str("1970-01-01T00:00:00"),
            }
            second.0 = secs;
        }
        line.push_str(&second.1);
    });
    let mut micros = since_epoch.subsec_micros();
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    line.push('.');
    line.push_str(std::str::from_utf8(&digits).unwrap_or("000000"));
    line.push('Z');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::captured::Captured;

    fn logged(body: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(captured.clone()));
        tracing::subscriber::with_default(subscriber, body);
        captured.json_lines()
    }

    #[test]
    fn an_event_in_a_span_has_its_fields_the_target_and_the_span() {
        let lines = logged(|| {
            let span = tracing::info_span!(
                "request",
                method = %"GET",
                request_id = "r-1",
                status = tracing::field::Empty,
            );
            span.record("status", 200u64);
            span.in_scope(|| {
                tracing::info!(
                    latency_ms = 2u64,
                    ok = true,
                    ratio = 0.5,
                    delta = -3i64,
                    "request completed"
                );
            });
        });
        let [line] = &lines[..] else {
            panic!("{lines:?}")
        };
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{timestamp}"
        );
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request completed");
        assert_eq!(line["latency_ms"], 2);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["delta"], -3);
        assert_eq!(line["target"], module_path!());
        assert_eq!(
            line["span"],
            json!({"method": "GET", "request_id": "r-1", "status": 200, "name": "request"})
        );
    }

    /// The access line written straight into the output is the line this
    /// layer writes for the access event, byte for byte but for the
    /// timestamp: with and without a proxy's facts, with text to escape.
    #[test]
    fn the_access_line_written_directly_is_the_one_the_layer_writes() {
        use crate::http::access_log::{Line, ProxiedFacts, Record};

        let proxied = ProxiedFacts {
            upstream: "user".into(),
            endpoint: "http://127.0.0.1:8081".into(),
            attempts: 2,
            upstream_duration: Duration::from_micros(1_497),
            client_ip: None,
        };
        for proxied in [None, Some(proxied)] {
            let record = Record {
                method: http::Method::PATCH,
                route: "/v1/users/{id}".into(),
                path: "/v1/users/\"odd\"\\path".into(),
                status: 412,
                started: std::time::Instant::now(),
                bytes_in: 120,
                request_id: "01a2460c-6e93-7496-8303-db738269750f".into(),
                trace_id: "4bef96052ae144b1948b9b5e829da0c1".into(),
                client_ip: None,
                cause: Some("stale \"If-Match\"\n".into()),
                proxied,
            };
            let line = Line {
                record: &record,
                duration_ms: 1.784351,
                bytes_out: 245,
                complete: false,
                client_ip: "192.0.2.7",
            };
            let direct = line.json(SystemTime::now());
            let captured = Captured::default();
            tracing::subscriber::with_default(
                tracing_subscriber::registry().with(JsonLayer::new(captured.clone())),
                || line.log(),
            );
            let without_timestamp = |line: &str| {
                let (_, rest) = line.split_once("\",\"level\":").unwrap();
                rest.to_owned()
            };
            assert_eq!(
                without_timestamp(&direct),
                without_timestamp(&captured.text())
            );
            let parsed: Value = serde_json::from_str(&direct).unwrap();
            assert_eq!(parsed["path"], "/v1/users/\"odd\"\\path");
            assert_eq!(parsed["target"], "access");
            assert_eq!(
                parsed.get("upstream").is_some(),
                record.proxied.is_some(),
                "{parsed}"
            );
        }
    }

    /// Written straight into the output, the access line still passes the
    /// log filter: `access=off` keeps it out.
    #[test]
    fn the_direct_access_line_honours_the_log_filter() {
        use tracing_subscriber::{EnvFilter, Layer as _};

        use crate::{http::access_log::Record, telemetry::output::LogOutput};

        let record = Record {
            method: http::Method::GET,
            route: "/v1/users/me".into(),
            path: "/v1/users/me".into(),
            status: 200,
            started: std::time::Instant::now(),
            bytes_in: 0,
            request_id: "r-1".into(),
            trace_id: "4bef96052ae144b1948b9b5e829da0c1".into(),
            client_ip: None,
            cause: None,
            proxied: None,
        };
        for (filter, lines) in [("info", 1), ("info,access=off", 0), ("warn", 0)] {
            let sink = Captured::default();
            let (output, closing) =
                LogOutput::start(true, Duration::from_secs(600), sink.clone()).unwrap();
            let subscriber = tracing_subscriber::registry()
                .with(JsonLayer::new(output.clone()).with_filter(EnvFilter::new(filter)));
            tracing::subscriber::with_default(subscriber, || {
                record.write_to(Some(&output), 245, true);
            });
            // Closing writes out what is pending.
            drop(closing);
            let written: Vec<Value> = sink
                .text()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            assert_eq!(written.len(), lines, "{filter}: {written:?}");
            if let Some(line) = written.first() {
                assert_eq!(line["target"], "access");
                assert_eq!(line["bytes_out"], 245);
            }
        }
    }

    #[test]
    fn a_field_recorded_again_replaces_its_value() {
        let lines = logged(|| {
            let span = tracing::info_span!(
                "request",
                route = "unmatched",
                note = "a \"quoted\", \\ text,\"route\":x",
                status = tracing::field::Empty,
            );
            span.record("status", 200u64);
            span.record("route", "/v1/users/me");
            span.record("status", 404u64);
            span.record("note", "plain");
            span.in_scope(|| tracing::warn!("refused"));
        });
        assert_eq!(
            lines[0]["span"],
            json!({"route": "/v1/users/me", "note": "plain", "status": 404, "name": "request"})
        );
        assert_eq!(lines[0]["level"], "WARN");
        let raw = serde_json::to_string(&lines[0]["span"]).unwrap();
        assert_eq!(raw.matches("route").count(), 1, "{raw}");
    }

    #[test]
    fn strings_are_escaped_and_an_event_outside_spans_has_no_span() {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
        let lines = logged(|| {
            tracing::info!(target: "access", text, shown = %text, debugged = ?"x\"y", "line");
        });
        let line = &lines[0];
        assert_eq!(line["text"], text);
        assert_eq!(line["shown"], text);
        assert_eq!(line["debugged"], "\"x\\\"y\"");
        assert_eq!(line["target"], "access");
        assert!(line.get("span").is_none(), "{line}");
    }

    #[test]
    fn a_byte_to_escape_is_found_wherever_it_is_among_any_others() {
        // Every byte value at every position of a word and of the tail,
        // among neighbours that need no escape and ones from 0x80 up
        // (which the word test must not mistake for control characters).
        for filler in [b'a', 0x7f, 0x80, 0xa0, 0xff] {
            for len in [1, 7, 8, 9, 16, 23] {
                for at in 0..len {
                    for byte in 0..=u8::MAX {
                        let mut bytes = vec![filler; len];
                        bytes[at] = byte;
                        assert_eq!(any_needs_escape(&bytes), needs_escape(byte), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn numbers_json_cannot_hold_are_null() {
        let lines =
            logged(|| tracing::info!(nan = f64::NAN, inf = f64::INFINITY, whole = 2.0, "n"));
        assert_eq!(lines[0]["nan"], Value::Null);
        assert_eq!(lines[0]["inf"], Value::Null);
        assert_eq!(lines[0]["whole"], 2);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut line = String::new();
        let at = UNIX_EPOCH + Duration::from_micros(1_796_422_870_408_148);
        push_timestamp(&mut line, at);
        line.push(' ');
        // The same second again (cached), then the next one.
        push_timestamp(&mut line, at + Duration::from_micros(1));
        line.push(' ');
        push_timestamp(&mut line, at + Duration::from_secs(1));
        assert_eq!(
            line,
            "2026-12-04T22:21:10.408148Z 2026-12-04T22:21:10.408149Z 2026-12-04T22:21:11.408148Z"
        );
    }

    /// The pipeline records a span's last fields only when something reads
    /// them: the line of a failed request does, beside an access log.
    #[tokio::test]
    async fn a_failed_request_is_logged_with_its_route_and_status_beside_an_access_log() {
        use crate::http::{access_log::AccessLog, pipeline};
        use axum::response::IntoResponse as _;

        let captured = Captured::default();
        let _default = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(JsonLayer::new(captured.clone())),
        );
        let access_log = Some(AccessLog {
            success_sample_rate: 1.0,
        });
        for status in [200, 502] {
            let request = http::Request::get("/v1/things/7")
                .body(axum::body::Body::empty())
                .unwrap();
            let response = pipeline::around(access_log, request, |_| async move {
                let mut response = http::StatusCode::from_u16(status).unwrap().into_response();
                response
                    .extensions_mut()
                    .insert(pipeline::RouteLabel("/v1/things/{id}".into()));
                response
            })
            .await;
            assert_eq!(response.status().as_u16(), status);
            // The access line is written as the answer's body goes.
            drop(response);
        }
        let lines = captured.json_lines();
        let failed: Vec<_> = lines
            .iter()
            .filter(|line| line["message"] == "request failed")
            .collect();
        let [failed] = failed[..] else {
            panic!("{lines:?}")
        };
        assert_eq!(failed["level"], "WARN");
        assert_eq!(failed["span"]["route"], "/v1/things/{id}");
        assert_eq!(failed["span"]["status"], 502);
        assert_eq!(failed["span"]["method"], "GET");
        let access: Vec<_> = lines
            .iter()
            .filter(|line| line["target"] == "access")
            .map(|line| (line["status"].clone(), line["route"].clone()))
            .collect();
        assert_eq!(
            access,
            [
                (json!(200), json!("/v1/things/{id}")),
                (json!(502), json!("/v1/things/{id}"))
            ]
        );
    }

    #[test]
    fn member_values_are_found_only_at_a_member_start() {
        let members = r#""note":"x,\"route\":1","route":"/a","status":200"#;
        assert_eq!(&members[member_value(members, "route").unwrap()], "\"/a\"");
        assert_eq!(&members[member_value(members, "status").unwrap()], "200");
        assert_eq!(
            &members[member_value(members, "note").unwrap()],
            r#""x,\"route\":1""#
        );
        assert!(member_value(members, "absent").is_none());
    }
}
