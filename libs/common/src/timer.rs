//! Coarse timers for the bounds a request arms and nearly never reaches
//! (the handler timeout, a Redis query's bound). On an API event loop a
//! deadline is rounded up to a slot — a grid of `duration / 32`, between
//! [`FINEST`] and [`COARSEST`] — and every timer of that loop ending in the
//! same slot waits on one runtime timer, kept armed until it fires.
//!
//! Why: tokio wakes its I/O driver (an eventfd write, then one more
//! `epoll_wait`) whenever a newly armed timer is due before the one the
//! driver last slept toward (tokio-rs/tokio#5207). On a loop that answers
//! each request before the next arrives — a service behind the gateway, at
//! anything below its full rate — that was every request's shortest timer:
//! one wake-up syscall per request. With slots, a new timer joins a slot
//! already armed, or arms one due no earlier than those armed before it
//! for the same bound, so it wakes nothing: a loop's driver is woken at
//! most once per new slot, not once per request. A bound fires up to one
//! slot late: ≈ 3 %, or 10 ms for bounds under 320 ms (Redis's 50 ms).
//!
//! Off the event loops (auth's runtime, tests, background tasks) these are
//! plain tokio timers: a slot's timer belongs to the runtime that armed it,
//! and only a loop's thread is sure to keep one runtime for its life.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::{FutureExt, Shared};
use tokio::time::Instant;

use crate::http::server::event_loop_index;

/// The finest slot: timers due within 10 ms of each other share one.
pub const FINEST: Duration = Duration::from_millis(10);
/// The coarsest slot, for long bounds (a 30 s handler timeout: ≈ 0.94 s).
pub const COARSEST: Duration = Duration::from_secs(1);

/// A bound's slot width: a thirty-second of it, within [`FINEST`] and
/// [`COARSEST`].
fn slot_width(duration: Duration) -> Duration {
    (duration / 32).clamp(FINEST, COARSEST)
}

/// Waits until `duration` from now (on an event loop, until the end of its
/// slot).
pub fn sleep(duration: Duration) -> Sleep {
    let deadline = Instant::now() + duration;
    if event_loop_index().is_none() {
        return Sleep(Kind::Own(Box::pin(tokio::time::sleep_until(deadline))));
    }
    let slot = SLOTS.with(|slots| slots.borrow_mut().slot(deadline, slot_width(duration)));
    Sleep(Kind::Slot(slot))
}

/// `future`'s output, or `Err(Elapsed)` once `duration` has passed first.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let expired = sleep(duration);
    tokio::select! {
        biased;
        output = future => Ok(output),
        () = expired => Err(Elapsed),
    }
}

/// A [`timeout`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// A timer from [`sleep`].
#[derive(Debug)]
pub struct Sleep(Kind);

#[derive(Debug)]
enum Kind {
    /// A slot shared with this loop's other timers due in it.
    Slot(Shared<tokio::time::Sleep>),
    /// A timer of its own, off the event loops.
    Own(Pin<Box<tokio::time::Sleep>>),
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            Kind::Slot(slot) => slot.poll_unpin(cx),
            Kind::Own(sleep) => sleep.as_mut().poll(cx),
        }
    }
}

thread_local! {
    /// This loop's armed slots.
    static SLOTS: RefCell<Slots> = const { RefCell::new(Slots { origin: None, armed: BTreeMap::new() }) };
}

/// Armed slots by their end (nanoseconds since `origin`), each kept until
/// its end has passed, waited on or not: dropped early, the next timer due
/// in it would arm it again, and be the loop's earliest again.
struct Slots {
    /// The grid's origin: when this thread first asked for a timer (so no
    /// deadline is before it).
    origin: Option<Instant>,
    armed: BTreeMap<u64, Shared<tokio::time::Sleep>>,
}

impl Slots {
    fn slot(&mut self, deadline: Instant, width: Duration) -> Shared<tokio::time::Sleep> {
        let origin = *self.origin.get_or_insert_with(Instant::now);
        let width_ns = width.as_nanos().max(1);
        // Whole nanoseconds since the origin fit u64 for 584 years.
        let since_ns = deadline.saturating_duration_since(origin).as_nanos();
        let end_ns = since_ns.div_ceil(width_ns).saturating_mul(width_ns);
        let end_ns = u64::try_from(end_ns).unwrap_or(u64::MAX);
        if let Some(armed) = self.armed.get(&end_ns) {
            return armed.clone();
        }
        // Slots whose end has passed have fired: forget them.
        let now_ns = Instant::now().saturating_duration_since(origin).as_nanos();
        let now_ns = u64::try_from(now_ns).unwrap_or(u64::MAX);
        if self
            .armed
            .first_key_value()
            .is_some_and(|(end, _)| *end < now_ns)
        {
            self.armed = self.armed.split_off(&now_ns);
        }
        let slot = tokio::time::sleep_until(origin + Duration::from_nanos(end_ns)).shared();
        self.armed.insert(end_ns, slot.clone());
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::server::pretend_event_loop;

    fn on_an_event_loop() {
        pretend_event_loop(Some(0));
    }

    fn slots_from(origin: Instant) -> Slots {
        Slots {
            origin: Some(origin),
            armed: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn timers_due_in_one_slot_share_one_runtime_timer() {
        let origin = Instant::now();
        let mut slots = slots_from(origin);
        let width = FINEST;
        let first = slots.slot(origin + Duration::from_millis(301), width);
        let second = slots.slot(origin + Duration::from_millis(309), width);
        let next = slots.slot(origin + Duration::from_millis(311), width);
        assert!(first.ptr_eq(&second), "both end at 310 ms: one slot");
        assert!(!first.ptr_eq(&next), "311 ms is in the next slot");
        // A loop's timers come from its slots; elsewhere each is its own.
        on_an_event_loop();
        assert!(matches!(sleep(Duration::from_millis(300)).0, Kind::Slot(_)));
    }

    #[tokio::test]
    async fn a_slot_stays_armed_after_its_timers_are_dropped_until_it_ends() {
        let origin = Instant::now();
        let mut slots = slots_from(origin);
        let deadline = origin + Duration::from_millis(200);
        let first = slots.slot(deadline, FINEST);
        let weak = first.downgrade().expect("not yet polled to its end");
        drop(first);
        // The next request's timer finds it instead of arming another.
        let again = slots.slot(deadline, FINEST);
        assert!(weak.upgrade().is_some_and(|slot| slot.ptr_eq(&again)));
        drop(again);
        // Once its end has passed, the next new slot forgets it.
        tokio::time::sleep(Duration::from_millis(250)).await;
        drop(slots.slot(Instant::now() + Duration::from_millis(200), FINEST));
        assert!(weak.upgrade().is_none(), "an ended slot is dropped");
        assert_eq!(slots.armed.len(), 1);
    }

    #[tokio::test]
    async fn a_timer_on_a_loop_fires_after_its_deadline_and_within_a_slot() {
        on_an_event_loop();
        for millis in [15, 50, 400] {
            let duration = Duration::from_millis(millis);
            let started = Instant::now();
            sleep(duration).await;
            let waited = started.elapsed();
            assert!(
                waited >= duration,
                "{millis} ms: fired early, at {waited:?}"
            );
            // One slot late at most, plus the runtime's millisecond and
            // some scheduling slack.
            let latest = duration + slot_width(duration) + Duration::from_millis(50);
            assert!(waited <= latest, "{millis} ms: fired late, at {waited:?}");
        }
    }

    #[tokio::test]
    async fn off_the_loops_a_timer_is_its_own() {
        pretend_event_loop(None);
        assert!(matches!(sleep(Duration::from_millis(300)).0, Kind::Own(_)));
        let started = Instant::now();
        sleep(Duration::from_millis(30)).await;
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn a_timeout_gives_the_output_in_time_and_elapsed_after() {
        on_an_event_loop();
        assert_eq!(
            timeout(Duration::from_millis(200), async { 7 }).await,
            Ok(7)
        );
        let slow = tokio::time::sleep(Duration::from_secs(5));
        let started = Instant::now();
        assert_eq!(timeout(Duration::from_millis(50), slow).await, Err(Elapsed));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
