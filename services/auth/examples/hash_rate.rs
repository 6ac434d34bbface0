//! The raw argon2id hash rate at the configured cost: the ceiling of login
//! throughput. `scripts/bench/auth.sh` runs it beside the real service.
//!
//! Usage: hash_rate [threads] [seconds]; threads default to the CPU count
//! (auth's default `password_hashing.max_concurrent`). The cost is auth's
//! built-in `password_hashing` unless PORTICO_AUTH_PASSWORD_HASHING__*
//! variables say otherwise, exactly as the service reads it.
#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, PasswordHasher};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        |n| n.parse().expect("threads"),
    );
    let seconds: u64 = args.next().map_or(5, |s| s.parse().expect("seconds"));
    let config = portico_common::config::load::<portico_auth::Config>(
        portico_auth::config::ENV_PREFIX,
        portico_auth::config::DEFAULTS,
    )
    .expect("config")
    .password_hashing;
    let params = Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        None,
    )
    .expect("argon2 parameters");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let params = params.clone();
            std::thread::spawn(move || {
                let argon2 = Argon2::new(Algorithm::Argon2id, argon2::Version::V0x13, params);
                let mut done = 0u64;
                while Instant::now() < deadline {
                    argon2
                        .hash_password(b"correct horse battery staple")
                        .expect("hash");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let hashes: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let rate = hashes as f64 / started.elapsed().as_secs_f64();
    println!(
        "{rate:.1} hashes/s with {threads} threads (m={} KiB, t={}, p={})",
        config.memory_kib, config.iterations, config.parallelism
    );
}
