//! The raw argon2id hash rate at the configured cost: the ceiling of login
//! throughput. `scripts/bench/auth.sh` runs it beside the real service.
//!
//! Usage: hash_rate [threads] [seconds]; threads default to the CPU count
//! (auth's default `password_hashing.max_concurrent`). The cost is auth's
//! built-in `password_hashing` unless PORTICO_AUTH_PASSWORD_HASHING__*
//! variables say otherwise, exactly as the service reads it.
#![allow(clippy::print_stdout)] // a command-line tool: its report is stdout

use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::{Algorithm, Argon2, Params, PasswordHasher};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let threads: usize = match args.next() {
        Some(n) => n.parse().context("threads must be a number")?,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let seconds: u64 = match args.next() {
        Some(s) => s.parse().context("seconds must be a number")?,
        None => 5,
    };
    let config = portico_common::config::load::<portico_auth::Config>(
        portico_auth::config::ENV_PREFIX,
        portico_auth::config::DEFAULTS,
    )
    .context("auth configuration")?
    .password_hashing;
    let params = Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        None,
    )
    .map_err(|err| anyhow::anyhow!("argon2 parameters: {err}"))?;
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
                        .map_err(|err| anyhow::anyhow!("hashing: {err}"))?;
                    done += 1;
                }
                Ok::<u64, anyhow::Error>(done)
            })
        })
        .collect();
    let mut hashes = 0;
    for worker in workers {
        hashes += worker
            .join()
            .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))??;
    }
    let rate = hashes as f64 / started.elapsed().as_secs_f64();
    println!(
        "{rate:.1} hashes/s with {threads} threads (m={} KiB, t={}, p={})",
        config.memory_kib, config.iterations, config.parallelism
    );
    Ok(())
}
