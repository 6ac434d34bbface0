//! Where log lines go: gathered in memory and written to stdout by a
//! thread of their own, in batches.
//!
//! Writing each line with its own `write(2)` cost a system call per
//! request (≈ 1 µs of the gateway's CPU per proxied request, measured), and
//! a stalled stdout — a full pipe, a slow disk — stopped the worker that
//! was logging. Here a line is
//! appended to a buffer under a short lock; the writer thread writes the
//! buffer out once it holds [`BATCH_BYTES`], [`FLUSH_INTERVAL`] after its
//! first line, or within [`URGENT_WAIT`] of a warning or an error. It is nginx's
//! `access_log … buffer= flush=` and Envoy's access-log flush thread.
//!
//! Bounded: past [`PENDING_MAX`] waiting bytes (stdout not draining), lines
//! are dropped rather than held or waited for, counted in
//! `log_lines_dropped_total`, and the count is written as a line of its own
//! when output moves again. What is pending is written when the
//! [`LogOutput`] is closed (the end of `main`); a process killed outright
//! loses at most the last [`FLUSH_INTERVAL`] of lines.

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// A batch is written once this much is waiting.
pub const BATCH_BYTES: usize = 32 * 1024;
/// …or this long after its first line (the services' setting).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A warning or an error waits at most this long: long enough that a storm
/// of them (every answer a 502 while an upstream is down) still shares
/// writes, short enough to read as at once.
pub const URGENT_WAIT: Duration = Duration::from_millis(5);
/// Past this much waiting, new lines are dropped.
pub const PENDING_MAX: usize = 4 * 1024 * 1024;

/// The `MakeWriter` the log layer writes each formatted line to.
#[derive(Clone)]
pub struct LogOutput {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// What the line that reports dropped lines looks like.
    json: bool,
    /// How long a line waits for others to share its write.
    flush_interval: Duration,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// When the first of the pending lines came.
    first_at: Option<Instant>,
    /// When the first waiting warning or error came: the batch is due
    /// [`URGENT_WAIT`] after it.
    urgent_at: Option<Instant>,
    /// The writer thread was woken and has not yet looked.
    signalled: bool,
    dropped: u64,
    closing: bool,
}

/// Closes the output when dropped: what is pending is written, then the
/// writer thread ends.
pub struct LogOutputGuard {
    output: LogOutput,
    thread: Option<JoinHandle<()>>,
}

impl LogOutput {
    /// Starts the writer thread; lines go to `sink` (stdout in the
    /// services, with [`FLUSH_INTERVAL`]). `json` says how the
    /// dropped-lines note is written.
    pub fn start(
        json: bool,
        flush_interval: Duration,
        sink: impl Write + Send + 'static,
    ) -> io::Result<(Self, LogOutputGuard)> {
        let output = Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                json,
                flush_interval,
            }),
        };
        let shared = output.shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-output".into())
            .spawn(move || shared.write_out(sink))?;
        let guard = LogOutputGuard {
            output: output.clone(),
            thread: Some(thread),
        };
        Ok((output, guard))
    }

    /// Writes one whole INFO line (as [`LineWriter`] does for the layer).
    pub(crate) fn write_line(&self, line: &[u8]) {
        self.append(line, false);
    }

    fn append(&self, line: &[u8], urgent: bool) {
        let mut state = self.shared.lock();
        if state.closing {
            // After close (a line from a thread still running at exit):
            // nobody will write it later, so it goes out now.
            drop(state);
            let _ = io::stdout().lock().write_all(line);
            return;
        }
        if state.pending.len() + line.len() > PENDING_MAX {
            state.dropped += 1;
            metrics::counter!("log_lines_dropped_total").increment(1);
            return;
        }
        let was_empty = state.pending.is_empty();
        let before = state.pending.len();
        state.pending.extend_from_slice(line);
        if was_empty {
            state.first_at = Some(Instant::now());
        }
        let first_urgent = urgent && state.urgent_at.is_none();
        if first_urgent {
            state.urgent_at = Some(Instant::now());
        }
        // The writer sleeps untimed while nothing is pending, else until
        // the batch is due: wake it for the first line, the first urgent
        // one, and when the batch fills — once per batch each, not per line.
        let due = was_empty
            || first_urgent
            || (before < BATCH_BYTES && state.pending.len() >= BATCH_BYTES);
        if due && !state.signalled {
            state.signalled = true;
            drop(state);
            self.shared.wake.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the buffer usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: waits for a due batch, writes it, until closed.
    fn write_out(&self, mut sink: impl Write) {
        let mut spare = Vec::new();
        loop {
            let mut state = self.lock();
            loop {
                if state.closing {
                    break;
                }
                let Some(first_at) = state.first_at else {
                    state.signalled = false;
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    continue;
                };
                if state.pending.len() >= BATCH_BYTES {
                    break;
                }
                let mut due = first_at + self.flush_interval;
                if let Some(urgent_at) = state.urgent_at {
                    due = due.min(urgent_at + URGENT_WAIT);
                }
                let Some(remaining) = due
                    .checked_duration_since(Instant::now())
                    .filter(|left| !left.is_zero())
                else {
                    break;
                };
                state.signalled = false;
                state = self
                    .wake
                    .wait_timeout(state, remaining)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut state.pending, &mut spare);
            state.first_at = None;
            state.urgent_at = None;
            let dropped = std::mem::take(&mut state.dropped);
            let closing = state.closing;
            drop(state);

            if dropped > 0 {
                spare.extend_from_slice(self.dropped_note(dropped).as_bytes());
            }
            // Nothing to report a failed write to but the output itself.
            let _ = sink.write_all(&spare).and_then(|()| sink.flush());
            spare.clear();
            // Keep a batch's worth of capacity, not a burst's.
            spare.shrink_to(BATCH_BYTES * 2);
            if closing {
                return;
            }
        }
    }

    fn dropped_note(&self, dropped: u64) -> String {
        if self.json {
            format!(
                "{{\"level\":\"WARN\",\"message\":\"log lines dropped: stdout did not keep up\",\"dropped\":{dropped},\"target\":\"portico_common::telemetry\"}}\n"
            )
        } else {
            format!("WARN log lines dropped: stdout did not keep up (dropped {dropped})\n")
        }
    }
}

impl Drop for LogOutputGuard {
    fn drop(&mut self) {
        self.output.shared.lock().closing = true;
        self.output.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line as the log layer writes it (it formats a whole line, then
/// makes one `write_all`).
pub struct LineWriter<'a> {
    output: &'a LogOutput,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            output: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            output: self,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::captured::Captured;

    /// An interval the test waits out.
    const SHORT: Duration = Duration::from_millis(100);
    /// An interval no test waits for: what is written before it passed
    /// was written for another reason.
    const LONG: Duration = Duration::from_secs(600);

    fn write_line(output: &LogOutput, line: &str, level: Level) {
        let mut writer = LineWriter {
            output,
            urgent: level <= Level::WARN,
        };
        writer.write_all(line.as_bytes()).unwrap();
    }

    /// Polls until `sink` holds `expected` or the deadline passes.
    fn wait_for(sink: &Captured, expected: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if sink.text() == expected {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn info_lines_wait_for_the_interval_and_come_out_in_order() {
        let sink = Captured::default();
        let (output, _guard) = LogOutput::start(true, SHORT, sink.clone()).unwrap();
        let started = Instant::now();
        write_line(&output, "one\n", Level::INFO);
        write_line(&output, "two\n", Level::INFO);
        assert!(wait_for(&sink, "one\ntwo\n", Duration::from_secs(5)));
        // Held for the interval, not written per line.
        assert!(started.elapsed() >= SHORT, "{:?}", started.elapsed());
    }

    #[test]
    fn a_warning_is_written_without_waiting_for_the_interval() {
        let sink = Captured::default();
        let (output, _guard) = LogOutput::start(true, LONG, sink.clone()).unwrap();
        write_line(&output, "before\n", Level::INFO);
        write_line(&output, "careful\n", Level::WARN);
        // Long before the interval: the warning took the waiting line along.
        assert!(wait_for(
            &sink,
            "before\ncareful\n",
            Duration::from_secs(10)
        ));
    }

    #[test]
    fn a_full_batch_is_written_without_waiting_for_the_interval() {
        let sink = Captured::default();
        let (output, _guard) = LogOutput::start(true, LONG, sink.clone()).unwrap();
        let line = format!("{}\n", "x".repeat(1023));
        let mut expected = String::new();
        for _ in 0..BATCH_BYTES / line.len() {
            write_line(&output, &line, Level::INFO);
            expected.push_str(&line);
        }
        assert!(wait_for(&sink, &expected, Duration::from_secs(10)));
    }

    #[test]
    fn closing_writes_what_is_pending() {
        let sink = Captured::default();
        let (output, guard) = LogOutput::start(true, LONG, sink.clone()).unwrap();
        write_line(&output, "last words\n", Level::INFO);
        drop(guard);
        assert_eq!(sink.text(), "last words\n");
    }

    /// A sink that does not take anything until the test lets it.
    struct Stalled {
        open: Arc<(Mutex<bool>, Condvar)>,
        inner: Captured,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, opened) = &*self.open;
            let mut is_open = open.lock().unwrap();
            while !*is_open {
                is_open = opened.wait(is_open).unwrap();
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_past_the_bound_and_says_how_many() {
        let sink = Captured::default();
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let (output, guard) = LogOutput::start(
            true,
            LONG,
            Stalled {
                open: open.clone(),
                inner: sink.clone(),
            },
        )
        .unwrap();
        // The first line is taken by the writer thread, which then blocks
        // in the stalled sink; wait until it has taken it.
        write_line(&output, "first\n", Level::WARN);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !output.shared.lock().pending.is_empty() {
            assert!(Instant::now() < deadline, "the writer never took the line");
            std::thread::sleep(Duration::from_millis(1));
        }
        let line = format!("{}\n", "y".repeat(1023));
        let fits = PENDING_MAX / line.len();
        for _ in 0..fits + 10 {
            // Never blocks on the stalled sink.
            write_line(&output, &line, Level::INFO);
        }
        assert_eq!(output.shared.lock().dropped, 10);
        {
            let (is_open, opened) = &*open;
            *is_open.lock().unwrap() = true;
            opened.notify_all();
        }
        drop(guard);
        let text = sink.text();
        assert!(text.starts_with("first\n"));
        assert_eq!(text.matches(&line).count(), fits);
        let note = text.lines().last().unwrap();
        let note: serde_json::Value = serde_json::from_str(note).unwrap();
        assert_eq!(note["dropped"], 10);
        assert_eq!(note["level"], "WARN");
    }
}
