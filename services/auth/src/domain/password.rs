//! Passwords: the normalised form hashed and verified, argon2id hashing on
//! the blocking pool. What a *new* password must satisfy is in
//! [`super::password_policy`].

use std::{sync::Arc, time::Duration};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use unicode_normalization::UnicodeNormalization;

/// Longest password accepted, in bytes of its normalised form (bounds the
/// hashing work a request can cause).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// OWASP's floor for argon2id: 19 MiB, 2 passes, 1 lane.
pub const MIN_MEMORY_KIB: u32 = 19 * 1024;
pub const MIN_ITERATIONS: u32 = 2;

/// A password as hashed and verified: the NFKC normalisation of what the
/// client sent (NIST SP 800-63B §3.1.1.2), so the same password typed on
/// keyboards that compose characters differently still matches. Never
/// logged or printed.
#[derive(Clone)]
pub struct Password {
    normalized: SecretString,
    /// What the client sent, when NFKC changed it: hashes made before
    /// passwords were normalised were made from it, so verification tries
    /// it too (and a match re-hashes the normalised form).
    as_typed: Option<SecretString>,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

impl Password {
    /// Normalises what a client sent. `None` when it is longer than
    /// [`MAX_PASSWORD_BYTES`] (before or after normalising): such a
    /// password can never have been stored.
    pub fn from_client(raw: &SecretString) -> Option<Self> {
        let raw = raw.expose_secret();
        if raw.len() > MAX_PASSWORD_BYTES {
            return None;
        }
        let normalized: String = raw.nfkc().collect();
        let as_typed = (normalized != raw).then(|| SecretString::from(raw.to_owned()));
        (normalized.len() <= MAX_PASSWORD_BYTES).then(|| Self {
            normalized: SecretString::from(normalized),
            as_typed,
        })
    }

    /// The normalised text, for the policy checks.
    pub(super) fn text(&self) -> &str {
        self.normalized.expose_secret()
    }

    fn bytes(&self) -> &[u8] {
        self.normalized.expose_secret().as_bytes()
    }

    fn typed_bytes(&self) -> Option<&[u8]> {
        self.as_typed
            .as_ref()
            .map(|typed| typed.expose_secret().as_bytes())
    }
}

/// argon2id cost parameters (config key `password_hashing`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashingConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once (each holds `memory_kib`); 0 means one per
    /// CPU. Bounds memory and CPU under a flood of logins.
    pub max_concurrent: usize,
    /// How long a request waits for a hashing slot before a 503.
    pub queue_timeout_ms: u64,
}

impl HashingConfig {
    /// Refuses costs under the floor, naming the offending key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.memory_kib < MIN_MEMORY_KIB {
            return Err((
                "password_hashing.memory_kib",
                format!("must be at least {MIN_MEMORY_KIB}"),
            ));
        }
        if self.iterations < MIN_ITERATIONS {
            return Err((
                "password_hashing.iterations",
                format!("must be at least {MIN_ITERATIONS}"),
            ));
        }
        if self.parallelism < 1 {
            return Err((
                "password_hashing.parallelism",
                "must be at least 1".to_owned(),
            ));
        }
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map(|_| ())
            .map_err(|err| ("password_hashing", err.to_string()))
    }
}

/// Hashes and verifies passwords off the async workers.
#[derive(Clone)]
pub struct PasswordHashing {
    params: Params,
    /// One permit per hash allowed to run at once.
    slots: Arc<Semaphore>,
    /// The threads that hash: as many as there are slots.
    pool: Arc<HashPool>,
    queue_timeout: Duration,
    /// Hash verified when the email is unknown, so that a login for an
    /// unknown email costs the same time as one with a wrong password.
    decoy_hash: String,
}

impl std::fmt::Debug for PasswordHashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHashing")
            .field("params", &self.params)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// Every hashing slot stayed busy for the whole queue timeout.
    #[error("password hashing is saturated")]
    Busy,
}

/// Nice value of the hashing threads. A hash is ~10 ms of CPU a sign-in
/// pays for; a refresh or a JWKS fetch is well under a millisecond.
/// Hashing at a lower priority lets the scheduler run request handling
/// first while a login storm keeps every core busy (p99 of refresh under a
/// storm: docs/benchmarks.md); with nothing else to run, hashing still
/// gets every cycle.
const HASHING_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A held hashing slot, counted in `auth_password_hashes_in_flight` for as
/// long as it lives (it travels with the hash to its thread).
struct HashSlot {
    _permit: OwnedSemaphorePermit,
}

impl HashSlot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("auth_password_hashes_in_flight").increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        metrics::gauge!("auth_password_hashes_in_flight").decrement(1.0);
    }
}

/// Dedicated threads for argon2 (not tokio's blocking pool, whose threads
/// are shared with other blocking work and would keep a lowered priority).
/// At most one per hashing slot; started when work comes and ended after
/// [`IDLE_EXIT`] without any, so a storm's hashing memory leaves with them
/// (the allocator keeps an idle thread's freed blocks in its caches).
struct HashPool {
    jobs: std::sync::mpsc::Sender<Job>,
    queue: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<Job>>>,
    /// Threads running now.
    live: Arc<std::sync::atomic::AtomicUsize>,
    max_threads: usize,
}

/// A hashing thread with nothing to do for this long ends.
const IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

impl HashPool {
    fn new(max_threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        Self {
            jobs,
            queue: Arc::new(std::sync::Mutex::new(queue)),
            live: Arc::default(),
            max_threads,
        }
    }

    /// Runs `work` on a hashing thread.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        use std::sync::atomic::Ordering::SeqCst;
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = answer.send(work());
            }))
            .map_err(|_| HashError::Hashing("the hashing queue is gone".to_owned()))?;
        // Sent first, counted second: a thread that is ending either still
        // finds this job (it looks once more after leaving the count) or
        // has left the count already, and a new thread is started here.
        let spawn = self
            .live
            .fetch_update(SeqCst, SeqCst, |live| {
                (live < self.max_threads).then_some(live + 1)
            })
            .is_ok();
        if spawn {
            self.spawn_thread()?;
        }
        answered
            .await
            .map_err(|_| HashError::Hashing("a hashing thread failed".to_owned()))
    }

    fn spawn_thread(&self) -> Result<(), HashError> {
        use std::sync::{atomic::Ordering::SeqCst, mpsc::RecvTimeoutError};
        let (queue, live) = (Arc::clone(&self.queue), Arc::clone(&self.live));
        let spawned = std::thread::Builder::new()
            .name("argon2".to_owned())
            .spawn(move || {
                lower_this_threads_priority();
                loop {
                    let job = {
                        let Ok(queue) = queue.lock() else {
                            live.fetch_sub(1, SeqCst);
                            return;
                        };
                        match queue.recv_timeout(IDLE_EXIT) {
                            Ok(job) => job,
                            Err(RecvTimeoutError::Timeout) => {
                                live.fetch_sub(1, SeqCst);
                                // One last look, still holding the queue: a
                                // job sent before the count dropped is ours.
                                match queue.try_recv() {
                                    Ok(job) => {
                                        live.fetch_add(1, SeqCst);
                                        job
                                    }
                                    Err(_) => return,
                                }
                            }
                            Err(RecvTimeoutError::Disconnected) => {
                                live.fetch_sub(1, SeqCst);
                                return;
                            }
                        }
                    };
                    // A panicking job must not take the thread's place in
                    // the count with it: its caller sees the error, the
                    // thread carries on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        spawned.map(|_| ()).map_err(|err| {
            self.live.fetch_sub(1, SeqCst);
            HashError::Hashing(format!("hashing thread: {err}"))
        })
    }
}

#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // On Linux the nice value is per thread: this thread's id names it.
    let this_thread = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(this_thread), HASHING_NICE) {
        tracing::warn!(%err, "could not lower the hashing threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

impl PasswordHashing {
    pub async fn new(config: &HashingConfig) -> Result<Self, HashError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|err| HashError::Hashing(err.to_string()))?;
        let slots = match config.max_concurrent {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let pool = Arc::new(HashPool::new(slots));
        let decoy = Password::from_client(&SecretString::from("decoy password for unknown emails"))
            .ok_or_else(|| HashError::Hashing("decoy password rejected".to_owned()))?;
        let decoy_hash = hash_on(&pool, params.clone(), decoy, None).await?;
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(slots)),
            pool,
            queue_timeout: Duration::from_millis(config.queue_timeout_ms),
            decoy_hash,
        })
    }

    /// Waits (bounded) for a hashing slot. Metrics: the wait
    /// (`auth_password_hash_queue_seconds`), refusals
    /// (`auth_password_hash_rejected_total`) and, through [`HashSlot`], the
    /// hashes running (`auth_password_hashes_in_flight`).
    async fn slot(&self) -> Result<HashSlot, HashError> {
        let started = std::time::Instant::now();
        let acquired =
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        metrics::histogram!("auth_password_hash_queue_seconds")
            .record(started.elapsed().as_secs_f64());
        match acquired {
            Ok(Ok(permit)) => Ok(HashSlot::new(permit)),
            Ok(Err(_)) | Err(_) => {
                metrics::counter!("auth_password_hash_rejected_total").increment(1);
                Err(HashError::Busy)
            }
        }
    }

    /// Hashing slots free right now (for tests and metrics).
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let slot = self.slot().await?;
        hash_on(
            &self.pool,
            self.params.clone(),
            password.clone(),
            Some(slot),
        )
        .await
    }

    /// Whether `hash` was made with weaker parameters than the configured
    /// ones (or another algorithm): re-made at the next successful login,
    /// so raising the cost reaches every account that signs in.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        let Ok(parsed) = argon2::PasswordHash::new(hash) else {
            return true;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm != Algorithm::Argon2id.ident()
            || params.m_cost() < self.params.m_cost()
            || params.t_cost() < self.params.t_cost()
            || params.p_cost() < self.params.p_cost()
    }

    /// Whether `password` matches `hash`. With `hash = None` (unknown
    /// account) it verifies against the decoy and never matches. A password
    /// that NFKC changed is also tried as typed (hashes from before
    /// normalisation) — for known and unknown accounts alike, so the extra
    /// cost depends on the input only.
    pub async fn verify(
        &self,
        password: &Password,
        hash: Option<&str>,
    ) -> Result<PasswordMatch, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.decoy_hash).to_owned();
        let password = password.clone();
        // The slot goes with the work: a request dropped while its hash is
        // queued does not free a slot the hash still needs.
        let slot = self.slot().await?;
        let outcome = self
            .pool
            .run(move || {
                let _slot = slot;
                let verifier = argon2();
                if verifier
                    .verify_password(password.bytes(), hash.as_str())
                    .is_ok()
                {
                    PasswordMatch::Yes
                } else if password
                    .typed_bytes()
                    .is_some_and(|typed| verifier.verify_password(typed, hash.as_str()).is_ok())
                {
                    PasswordMatch::AsTyped
                } else {
                    PasswordMatch::No
                }
            })
            .await?;
        Ok(if known { outcome } else { PasswordMatch::No })
    }
}

/// How a password matched a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordMatch {
    No,
    Yes,
    /// Only as typed, not normalised: a hash from before normalisation,
    /// to be re-made from the normalised form.
    AsTyped,
}

impl PasswordMatch {
    pub fn matched(self) -> bool {
        self != Self::No
    }
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

async fn hash_on(
    pool: &HashPool,
    params: Params,
    password: Password,
    slot: Option<HashSlot>,
) -> Result<String, HashError> {
    pool.run(move || {
        let _slot = slot;
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.bytes())
            .map(|hash| hash.to_string())
            .map_err(|err| HashError::Hashing(err.to_string()))
    })
    .await?
}

#[cfg(test)]
mod tests {
    /// The shipped hashing settings (config/defaults.toml).
    fn built_in() -> HashingConfig {
        use portico_common::config::ServiceConfig as _;
        crate::Config::built_in().password_hashing
    }

    use super::*;

    fn password(s: &str) -> Password {
        Password::from_client(&SecretString::from(s)).unwrap()
    }

    #[test]
    fn passwords_are_nfkc_normalised_and_bounded_in_bytes() {
        // "é" precomposed and as e + combining acute are one password.
        assert_eq!(
            password("caf\u{e9}!").text(),
            password("cafe\u{301}!").text()
        );
        // Compatibility forms fold too: full-width letters, ligatures.
        assert_eq!(password("\u{ff30}\u{ff37}").text(), "PW");
        assert_eq!(password("\u{fb01}").text(), "fi");
        assert!(Password::from_client(&SecretString::from("é".repeat(512))).is_some());
        assert!(Password::from_client(&SecretString::from("é".repeat(513))).is_none());
        // U+FDFA expands to 18 characters (33 bytes) under NFKC: 3 bytes
        // in, too long once normalised.
        let expanding = "\u{fdfa}".repeat(300);
        assert!(expanding.len() <= MAX_PASSWORD_BYTES);
        assert!(Password::from_client(&SecretString::from(expanding)).is_none());
    }

    #[test]
    fn debug_output_hides_the_password() {
        assert_eq!(
            format!("{:?}", password("hunter2hunter2")),
            "Password([REDACTED])"
        );
    }

    #[test]
    fn weak_costs_are_refused() {
        let weak = HashingConfig {
            memory_kib: 1024,
            ..built_in()
        };
        assert_eq!(weak.check().unwrap_err().0, "password_hashing.memory_kib");
        let weak = HashingConfig {
            iterations: 1,
            ..built_in()
        };
        assert_eq!(weak.check().unwrap_err().0, "password_hashing.iterations");
        assert!(built_in().check().is_ok());
    }

    #[tokio::test]
    async fn hash_is_argon2id_with_the_configured_cost_and_verifies() {
        let hashing = PasswordHashing::new(&built_in()).await.unwrap();
        let hash = hashing.hash(&password("correct horse")).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_eq!(
            hashing
                .verify(&password("correct horse"), Some(&hash))
                .await
                .unwrap(),
            PasswordMatch::Yes
        );
        assert_eq!(
            hashing
                .verify(&password("wrong horse!"), Some(&hash))
                .await
                .unwrap(),
            PasswordMatch::No
        );
    }

    #[tokio::test]
    async fn hashing_beyond_the_slots_waits_then_reports_busy() {
        let config = HashingConfig {
            max_concurrent: 1,
            queue_timeout_ms: 1,
            ..built_in()
        };
        let hashing = PasswordHashing::new(&config).await.unwrap();
        // Hold the only slot the way a running hash does.
        let held = hashing.slot().await.unwrap();
        assert_eq!(hashing.free_slots(), 0);

        let refused = hashing.hash(&password("correct horse")).await;
        assert!(matches!(refused, Err(HashError::Busy)));

        drop(held);
        assert!(hashing.hash(&password("correct horse")).await.is_ok());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_at_a_lower_priority_than_request_handling() {
        let hashing = PasswordHashing::new(&built_in()).await.unwrap();
        let nice_of_this_thread =
            || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        assert_eq!(
            hashing.pool.run(nice_of_this_thread).await.unwrap(),
            HASHING_NICE
        );
        assert_eq!(
            nice_of_this_thread(),
            0,
            "the test's own thread is untouched"
        );
    }

    #[tokio::test]
    async fn hashing_threads_end_when_idle_and_come_back_for_work() {
        use std::sync::atomic::Ordering::SeqCst;
        let hashing = PasswordHashing::new(&built_in()).await.unwrap();
        assert!(
            hashing.pool.live.load(SeqCst) >= 1,
            "the decoy hash started one"
        );
        let started = std::time::Instant::now();
        while hashing.pool.live.load(SeqCst) > 0 {
            assert!(
                started.elapsed() < IDLE_EXIT * 5,
                "idle hashing threads stayed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let hash = hashing.hash(&password("correct horse")).await.unwrap();
        assert!(
            hashing
                .verify(&password("correct horse"), Some(&hash))
                .await
                .unwrap()
                .matched()
        );
        assert!(hashing.pool.live.load(SeqCst) <= hashing.pool.max_threads);
    }

    #[tokio::test]
    async fn a_hash_made_before_normalisation_still_matches_as_typed() {
        // A hash of the decomposed form, as stored before passwords were
        // normalised; the same password typed the same way still matches.
        let hashing = PasswordHashing::new(&built_in()).await.unwrap();
        let typed = "cafe\u{301} au lait";
        let old_hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, hashing.params.clone())
            .hash_password(typed.as_bytes())
            .unwrap()
            .to_string();
        assert_eq!(
            hashing
                .verify(&password(typed), Some(&old_hash))
                .await
                .unwrap(),
            PasswordMatch::AsTyped
        );
        assert_eq!(
            hashing
                .verify(&password("cafe au lait"), Some(&old_hash))
                .await
                .unwrap(),
            PasswordMatch::No
        );
        // Hashes made now are of the normalised form: either typing matches.
        let new_hash = hashing.hash(&password(typed)).await.unwrap();
        assert_eq!(
            hashing
                .verify(&password("caf\u{e9} au lait"), Some(&new_hash))
                .await
                .unwrap(),
            PasswordMatch::Yes
        );
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let hashing = PasswordHashing::new(&built_in()).await.unwrap();
        let decoy = password("decoy password for unknown emails");
        assert_eq!(
            hashing.verify(&decoy, None).await.unwrap(),
            PasswordMatch::No
        );
    }

    #[tokio::test]
    async fn a_hash_weaker_than_the_configured_cost_needs_remaking() {
        let base = PasswordHashing::new(&built_in()).await.unwrap();
        let stronger = PasswordHashing::new(&HashingConfig {
            memory_kib: built_in().memory_kib + 1024,
            ..built_in()
        })
        .await
        .unwrap();
        let hash = base.hash(&password("correct horse")).await.unwrap();
        assert!(!base.needs_rehash(&hash));
        assert!(stronger.needs_rehash(&hash));
        assert!(base.needs_rehash("not a PHC string"));
    }
}
