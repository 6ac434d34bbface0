//! A steady load of profile reads through the gateway, for the tests that
//! change the system under it (replicas killed or restarted, a canary).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use portico_testkit::eventually;

use crate::System;

/// Workers reading `GET /v1/users/me` in a loop until stopped, or a minute
/// has passed: the load is bounded whatever happens to the test.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `workers` workers; each request carries the next of `tokens` (a
    /// split is sticky per user: several users spread over its groups).
    pub fn start(system: &System, tokens: &[String], workers: usize) -> Self {
        assert!(!tokens.is_empty(), "a load needs at least one token");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let workers = (0..workers)
            .map(|worker| {
                let (stop, served, failures) = (stop.clone(), served.clone(), failures.clone());
                let (client, url, tokens) = (
                    system.client.clone(),
                    system.url("/v1/users/me"),
                    tokens.to_vec(),
                );
                tokio::spawn(async move {
                    let mut next = worker;
                    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                        let token = &tokens[next % tokens.len()];
                        next += 1;
                        let failure = match client.get(&url).bearer_auth(token).send().await {
                            Ok(response) if response.status() == 200 => {
                                served.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(response) => {
                                let status = response.status();
                                let body = response.text().await.unwrap_or_default();
                                format!("{status}: {body}")
                            }
                            Err(err) => err.to_string(),
                        };
                        if let Ok(mut failures) = failures.lock() {
                            failures.push(failure);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            served,
            failures,
            workers,
        }
    }

    /// Waits until `more` further reads have succeeded.
    pub async fn progress(&self, more: u64) {
        let target = self.served.load(Ordering::Relaxed) + more;
        eventually(Duration::from_secs(30), "the load to make progress", || {
            let reached = self.served.load(Ordering::Relaxed) >= target;
            async move { reached.then_some(()) }
        })
        .await;
    }

    /// Stops the workers: (reads served, failures).
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("a load worker panicked");
        }
        let failures = self
            .failures
            .lock()
            .map(|failures| failures.clone())
            .unwrap_or_default();
        (self.served.load(Ordering::Relaxed), failures)
    }
}
