//! Scheduled jobs: background work a service runs on a schedule (an
//! outbox relay, a reconciler, a scrubber), each under one lifecycle —
//! started with the service (as an [`Assembly`](crate::app::Assembly)
//! background task), stopped with it, a metric and a log line per run.
//!
//! A job runs, then waits for its interval or a wake-up (the relay is woken
//! right after a commit adds work, so delivery does not wait for the next
//! tick) — or runs again at once when its last run was full (more work is
//! waiting). A failed run is logged and counted and retried next time; a
//! job never ends the service. Whether one replica or all run a job is the
//! job's own business (row leases, `SKIP LOCKED`), since only it knows
//! what it claims.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ran {
    /// Items handled (events delivered, rows scrubbed…).
    pub handled: u64,
    /// Whether more work was left when the run ended (a full batch): the
    /// job runs again without waiting.
    pub more: bool,
}

/// A job's work: one run.
pub trait Job: Send + Sync + 'static {
    /// The `task` label of its metrics, and `job` in its log lines.
    const NAME: &'static str;

    fn run(&self) -> impl Future<Output = anyhow::Result<Ran>> + Send;
}

/// Wakes a job before its interval is up.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// Asks for a run as soon as the current one (if any) ends.
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// The wait before attempt `attempt + 1` after `attempt` failures:
/// `base · 2^(attempt-1)`, at most `max`, with equal jitter (between half
/// and all of it) so that retries of many failures spread out instead of
/// arriving together.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let full = base.saturating_mul(1u32 << exponent.min(31)).min(max);
    let half = full / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Runs `job` every `interval` (or when woken) until the service stops.
pub async fn run_every<J: Job>(job: J, interval: Duration, wake: Wake) {
    // `task`, not `job`: Prometheus gives every series the `job` of its
    // scrape target, and would rename ours out of the way.
    let runs_ok = metrics::counter!("job_runs_total", "task" => J::NAME, "outcome" => "ok");
    let runs_failed = metrics::counter!("job_runs_total", "task" => J::NAME, "outcome" => "failed");
    let handled = metrics::counter!("job_items_total", "task" => J::NAME);
    let duration = metrics::histogram!("job_run_duration_seconds", "task" => J::NAME);
    loop {
        let started = Instant::now();
        let outcome = job.run().await;
        let elapsed = started.elapsed();
        duration.record(elapsed.as_secs_f64());
        let more = match outcome {
            Ok(ran) => {
                runs_ok.increment(1);
                handled.increment(ran.handled);
                if ran.handled > 0 {
                    tracing::info!(
                        job = J::NAME,
                        handled = ran.handled,
                        more = ran.more,
                        ms = elapsed.as_millis() as u64,
                        "job ran"
                    );
                } else {
                    tracing::debug!(job = J::NAME, "job ran, nothing to do");
                }
                ran.more
            }
            Err(err) => {
                runs_failed.increment(1);
                tracing::warn!(job = J::NAME, error = %err, "job run failed");
                false
            }
        };
        if !more {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = wake.0.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Counts its runs; fails on run `fails_on`; reports more work waiting
    /// on the runs before `more_until`.
    struct Counting {
        runs: Arc<AtomicU64>,
        fails_on: u64,
        more_until: u64,
    }

    impl Job for Counting {
        const NAME: &'static str = "counting";

        async fn run(&self) -> anyhow::Result<Ran> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.fails_on {
                anyhow::bail!("run {n} fails");
            }
            Ok(Ran {
                handled: 1,
                more: n < self.more_until,
            })
        }
    }

    async fn runs_reach(runs: &AtomicU64, at_least: u64) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while runs.load(Ordering::SeqCst) < at_least {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the job ran");
    }

    #[tokio::test]
    async fn a_woken_job_runs_before_its_interval_and_a_failure_does_not_stop_it() {
        let runs = Arc::new(AtomicU64::new(0));
        let wake = Wake::default();
        let job = Counting {
            runs: runs.clone(),
            fails_on: 2,
            more_until: 0,
        };
        // An hour between runs: every run after the first is a wake-up's.
        let task = tokio::spawn(run_every(job, Duration::from_secs(3600), wake.clone()));
        runs_reach(&runs, 1).await;
        wake.now();
        runs_reach(&runs, 2).await;
        wake.now();
        runs_reach(&runs, 3).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_run_that_leaves_work_is_followed_by_another_at_once() {
        let runs = Arc::new(AtomicU64::new(0));
        let job = Counting {
            runs: runs.clone(),
            fails_on: 0,
            more_until: 4,
        };
        let task = tokio::spawn(run_every(job, Duration::from_secs(3600), Wake::default()));
        // Runs 2 to 4 come only from "more", with an hour's interval.
        runs_reach(&runs, 4).await;
        task.abort();
        assert_eq!(runs.load(Ordering::SeqCst), 4, "then it waits");
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_below_each_step() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..100 {
            for (attempt, full) in [(1, 100), (2, 200), (3, 400), (5, 1000), (40, 1000)] {
                let wait = backoff(attempt, base, max);
                let full = Duration::from_millis(full);
                assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
            }
        }
    }
}
