#!/usr/bin/env bash
# Auth benchmark: what sign-in, refresh and key publication cost, measured
# on the whole system (scripts/dev.sh with release builds: gateway, auth, two
# user replicas, SQLite) in one run, and printed as a markdown report:
#   ceiling        raw argon2id hashes/s at the configured cost, as many
#                  threads as auth hashes at once (examples/hash_rate.rs)
#   login storm    sign-ins through the gateway at saturation (wrk), as a
#                  share of the ceiling; then a second storm during which
#                  two paced clients (100/s each) measure the latency of
#                  GET /.well-known/jwks.json and of refresh (p50/p99)
#   refresh        rotations through the gateway alone: req/s, and auth's
#                  CPU time per refresh (so refreshes per core-second)
#   memory         auth's RSS before, its peak (VmHWM) and after the storm
#
# Usage: scripts/bench/auth.sh [> report.md]
# Environment: PORTICO_BENCH_DURATION [10s], PORTICO_BENCH_CONNECTIONS for
# the login storm [16], PORTICO_BENCH_ACCOUNTS signing in [16],
# PORTICO_BENCH_REFRESH_CONNECTIONS [32].
# Loopback only, bounded in time; everything is stopped on exit.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

# shellcheck source=scripts/lib/test-services.sh
source scripts/lib/test-services.sh
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh

DURATION=${PORTICO_BENCH_DURATION:-10s}
LOGIN_CONNECTIONS=${PORTICO_BENCH_CONNECTIONS:-16}
REFRESH_CONNECTIONS=${PORTICO_BENCH_REFRESH_CONNECTIONS:-32}
ACCOUNTS=${PORTICO_BENCH_ACCOUNTS:-16}
EMAIL=bench-0@example.com
PASSWORD="vellum otter quarry 42"


bench_tools wrk curl python3

log "cargo build --release (services and examples/hash_rate)"
cargo build --release --locked --bins >&2 || die "release build failed"
cargo build --release --locked -p portico-auth --example hash_rate >&2 || die "hash_rate build failed"
HASH_RATE=${CARGO_TARGET_DIR:-target}/release/examples/hash_rate

WORK=$(mktemp -d "${TMPDIR:-/tmp}/portico-auth-bench.XXXXXX")
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_release_system
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_release_system "$WORK"
AUTH_PID=$(cat "$WORK/logs/auth.pid")

# Resident set and its peak, in MiB, of $1.
rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
# utime + stime of $1, in clock ticks.
TICKS=$(getconf CLK_TCK)


log "registering $ACCOUNTS benchmark accounts"
for ((i = 0; i < ACCOUNTS; i++)); do
    curl -fsS -o /dev/null -X POST "$GATEWAY/v1/auth/register" -H 'content-type: application/json' \
        -d "{\"email\":\"bench-$i@example.com\",\"password\":\"$PASSWORD\",\"display_name\":\"Bench\"}" \
        || die "registration failed"
done
# Refresh tokens, one per connection that will rotate a chain.
sessions() {
    local n=$1 file=$2 i
    : >"$file"
    for ((i = 0; i < n; i++)); do
        curl -fsS -X POST "$GATEWAY/v1/auth/login" -H 'content-type: application/json' \
            -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["refresh_token"])' >>"$file" \
            || die "sign-in for a session failed"
    done
}

log "ceiling: argon2id hash rate"
CEILING_LINE=$("$HASH_RATE" "$(nproc)" 5)
CEILING=${CEILING_LINE%% *}

RSS_BEFORE=$(rss_mib "$AUTH_PID")
log "login storm: $LOGIN_CONNECTIONS connections for $DURATION"
wrk -t 2 -c "$LOGIN_CONNECTIONS" -d "$DURATION" --latency -s scripts/bench/auth/login.lua "$GATEWAY" \
    -- "$ACCOUNTS" "$PASSWORD" >"$WORK/login.txt"

# The same storm again, with two paced probes (100 requests/s each): what a
# client of the JWKS and of refresh sees while sign-ins saturate hashing.
sessions 1 "$WORK/latency-token"
cat scripts/bench/auth/refresh.lua scripts/bench/auth/probe.lua >"$WORK/refresh-probe.lua"
log "login storm again, with jwks and refresh latency probes"
wrk -t 1 -c 1 -d "$DURATION" --latency -s scripts/bench/auth/probe.lua \
    "$GATEWAY/.well-known/jwks.json" >"$WORK/jwks.txt" &
jwks_pid=$!
wrk -t 1 -c 1 -d "$DURATION" --latency -s "$WORK/refresh-probe.lua" "$GATEWAY" \
    -- "$WORK/latency-token" 1 >"$WORK/refresh-latency.txt" &
refresh_probe_pid=$!
wrk -t 2 -c "$LOGIN_CONNECTIONS" -d "$DURATION" -s scripts/bench/auth/login.lua "$GATEWAY" \
    -- "$ACCOUNTS" "$PASSWORD" >"$WORK/login-probed.txt"
wait "$jwks_pid" "$refresh_probe_pid"
RSS_PEAK=$(hwm_mib "$AUTH_PID")
# Idle for a while after the storm: what stays resident.
sleep 10
RSS_AFTER=$(rss_mib "$AUTH_PID")

sessions "$REFRESH_CONNECTIONS" "$WORK/refresh-tokens"
log "refresh: $REFRESH_CONNECTIONS rotation chains for $DURATION"
cpu_before=$(cpu_ticks "$AUTH_PID")
wrk -t 2 -c "$REFRESH_CONNECTIONS" -d "$DURATION" --latency -s scripts/bench/auth/refresh.lua "$GATEWAY" \
    -- "$WORK/refresh-tokens" 2 >"$WORK/refresh.txt"
cpu_after=$(cpu_ticks "$AUTH_PID")

LOGIN_RPS=$(wrk_field "$WORK/login.txt" rps)
REFRESH_RPS=$(wrk_field "$WORK/refresh.txt" rps)
REFRESH_REQUESTS=$(wrk_field "$WORK/refresh.txt" requests)
CPU_US_PER_REFRESH=$(python3 -c "print(round(($cpu_after - $cpu_before) / $TICKS * 1e6 / max($REFRESH_REQUESTS, 1)))")
REFRESH_PER_CORE=$(python3 -c "print(round(1e6 / max($CPU_US_PER_REFRESH, 1)))")
SHARE=$(python3 -c "print(round(100 * $LOGIN_RPS / $CEILING))")

# Failed requests (non-2xx, socket errors, wrk's 2 s timeouts) are shown,
# not hidden: a refresh chain that failed stops rotating.
failed() { wrk_field "$WORK/$1.txt" bad; }

cat <<EOF
## Auth benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))

argon2id ceiling: $CEILING_LINE

| measure | value | target |
|---|---|---|
| login through the gateway at saturation | $LOGIN_RPS/s (${SHARE}% of the ceiling), p99 $(wrk_field "$WORK/login.txt" 99) ms, $(failed login) failed | ≥ 90% of the ceiling |
| \`GET /.well-known/jwks.json\` during the storm | p50 $(wrk_field "$WORK/jwks.txt" 50) ms, p99 $(wrk_field "$WORK/jwks.txt" 99) ms, $(failed jwks) failed | p99 < 20 ms |
| refresh during the storm | p50 $(wrk_field "$WORK/refresh-latency.txt" 50) ms, p99 $(wrk_field "$WORK/refresh-latency.txt" 99) ms, $(failed refresh-latency) failed | p99 < 20 ms |
| refresh alone ($REFRESH_CONNECTIONS chains) | $REFRESH_RPS/s, p99 $(wrk_field "$WORK/refresh.txt" 99) ms, $(failed refresh) failed; auth CPU ${CPU_US_PER_REFRESH} µs per refresh = **$REFRESH_PER_CORE per core-second** | ≥ 1,200 per core |
| auth RSS | before ${RSS_BEFORE} MiB, peak ${RSS_PEAK} MiB, 10 s after the storm ${RSS_AFTER} MiB | near hashing slots × m + base, back down after |

Command: \`scripts/bench/auth.sh\` (login storm $LOGIN_CONNECTIONS connections, $DURATION per run; SQLite; wrk, loopback).
EOF
