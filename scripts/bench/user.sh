#!/usr/bin/env bash
# User service benchmark, in one run, printed as a markdown report:
#   cached profile read  GET /v1/users/me with the Redis profile cache on,
#                        through the gateway and straight to one user
#                        replica (target: the gateway keeps >= 60% of the
#                        direct rate), in PORTICO_BENCH_PAIRS pairs of runs
#                        (the VM's speed drifts between minutes: each pair's
#                        runs are back to back, the report takes the
#                        median pair), beside redis-benchmark GET on the
#                        same Redis as the ceiling of the cache-hit path,
#                        and through nginx in front of the same replicas
#                        as the reference proxy (its share of direct on
#                        this machine beside the gateway's); and, like for
#                        like, a second gateway and nginx each in front of
#                        that one replica only (two replicas on two cores
#                        cost any proxy's path more than one: docs/
#                        benchmarks.md, eighth run)
#   outbox               PORTICO_BENCH_WRITERS users PATCH their profiles
#                        (wrk, PORTICO_BENCH_DURATION); every change is an
#                        event the relays deliver to a local webhook
#                        subscriber (scripts/bench/webhook_sink.py): events
#                        delivered per second, and the delivery lag (commit
#                        to arrival) p50 / p99
#   directory depth      the directory's page query on PostgreSQL with
#                        PORTICO_BENCH_USERS profiles (1,000,000), at depth 0,
#                        10k and 500k: keyset (what GET /v1/users runs: after
#                        the cursor's id) against OFFSET, p99 by pgbench
# The system is scripts/dev.sh with release builds (gateway, auth, two user
# replicas, SQLite) plus a throwaway Redis; the directory part loads a
# throwaway PostgreSQL with the user service's own migrations.
#
# Usage: scripts/bench/user.sh [> report.md]
# Environment: PORTICO_BENCH_DURATION [10s], PORTICO_BENCH_CONNECTIONS [64],
# PORTICO_BENCH_USERS [1000000], PORTICO_BENCH_PGBENCH_SECS [10],
# PORTICO_BENCH_WRITERS [100], PORTICO_BENCH_PAIRS [3].
# Loopback only, bounded in time; everything is stopped on exit.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

# shellcheck source=scripts/lib/test-services.sh
source scripts/lib/test-services.sh
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh

DURATION=${PORTICO_BENCH_DURATION:-10s}
CONNECTIONS=${PORTICO_BENCH_CONNECTIONS:-64}
USERS=${PORTICO_BENCH_USERS:-1000000}
PGBENCH_SECS=${PORTICO_BENCH_PGBENCH_SECS:-10}
WRITERS=${PORTICO_BENCH_WRITERS:-100}
PAIRS=${PORTICO_BENCH_PAIRS:-3}
PASSWORD="vellum otter quarry 42"


bench_tools wrk curl python3
find_tool nginx >/dev/null || _portico_apt_install nginx || die "could not install nginx"
NGINX=$(find_tool nginx) || die "nginx not found after install"

log "cargo build --release (services)"
cargo build --release --locked --bins >&2 || die "release build failed"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/portico-user-bench.XXXXXX")
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_release_system
    [[ -n ${SINK_PID:-} ]] && kill "$SINK_PID" 2>/dev/null
    [[ -n ${NGINX_PID:-} ]] && kill "$NGINX_PID" 2>/dev/null
    [[ -n ${GATEWAY_ONE_PID:-} ]] && kill "$GATEWAY_ONE_PID" 2>/dev/null
    portico_stop_test_services
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

portico_ensure_redis >&2 || die "no Redis"
portico_ensure_postgres >&2 || die "no PostgreSQL"
command -v redis-benchmark >/dev/null || die "redis-benchmark is missing (package redis-tools)"
PGBENCH=$(command -v pgbench || echo "$_PORTICO_PG_BIN/pgbench")
PSQL=$(command -v psql || echo "$_PORTICO_PG_BIN/psql")
[[ -x $PGBENCH ]] || die "pgbench not found"

log "profile cache on $PORTICO_TEST_REDIS_URL"
export PORTICO_USER_REDIS__URL=$PORTICO_TEST_REDIS_URL PORTICO_USER_REDIS__KEY_PREFIX="bench:$$:"
# The outbox's subscriber: a local sink that logs each delivery's arrival.
SINK_PORT=$(portico_free_port_block)
[[ -n $SINK_PORT ]] || die "no free port for the webhook sink"
python3 scripts/bench/webhook_sink.py "$SINK_PORT" "$WORK/deliveries.log" &
SINK_PID=$!
SINK_SECRET="whsec_$(head -c 32 /dev/urandom | base64)"
export PORTICO_DEV_EXTRA_SUBSCRIBERS="{name = \"bench\", url = \"http://127.0.0.1:$SINK_PORT/\", secret = \"$SINK_SECRET\", types = [\"user.updated\"]}"
start_release_system "$WORK"
USER1="http://127.0.0.1:$((BASE + 1))"

log "registering the reader"
TOKEN=$(curl -fsS -X POST "$GATEWAY/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"reader@example.com\",\"password\":\"$PASSWORD\",\"display_name\":\"Reader\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])') || die "registration failed"
curl -fsS -o /dev/null -H "authorization: Bearer $TOKEN" "$USER1/v1/users/me" || die "the profile cannot be read"

# The reference proxy: nginx in front of the same two replicas, as the
# gateway is (HTTP/1.1 keep-alive pool, one worker per core, an access log
# buffered as the gateway's is). It only forwards: no token checked, no
# rate limit, no request id or trace context added.
mkdir -p "$WORK/nginx"
NGINX_PORT=$(portico_free_port_block)
[[ -n $NGINX_PORT ]] || die "no free port for nginx"
{
    printf 'worker_processes auto;\n'
    nginx_common "$WORK/nginx"
    printf 'http {\n'
    nginx_http_common "$WORK/nginx" "$WORK/nginx/access.log combined buffer=32k flush=100ms"
    cat <<EOF
    upstream user {
        server 127.0.0.1:$((BASE + 1));
        server 127.0.0.1:$((BASE + 3));
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream user_one {
        server 127.0.0.1:$((BASE + 1));
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://user;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:$((NGINX_PORT + 1));
        location / {
            proxy_pass http://user_one;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$WORK/nginx/nginx.conf"
"$NGINX" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' \
    >"$WORK/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
NGINX_ONE_URL="http://127.0.0.1:$((NGINX_PORT + 1))"
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null -H "authorization: Bearer $TOKEN" "$NGINX_URL/v1/users/me" 2>/dev/null && break
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx did not start: $(cat "$WORK/nginx/stdout.log")"
    sleep 0.1
done
curl -fsS -o /dev/null -H "authorization: Bearer $TOKEN" "$NGINX_URL/v1/users/me" || die "nginx does not answer"
curl -fsS -o /dev/null -H "authorization: Bearer $TOKEN" "$NGINX_ONE_URL/v1/users/me" ||
    die "nginx (one replica) does not answer"
mapfile -t NGINX_PIDS < <(pgrep -P "$NGINX_PID")
NGINX_PIDS+=("$NGINX_PID")

# CPU per request, per process (the figure of record on shared cores).
# The system's own processes, by the pid files dev.sh writes (another
# Portico running on the machine must not be taken for them).
GATEWAY_PID=$(cat "$WORK/logs/gateway.pid" 2>/dev/null)
[[ -n $GATEWAY_PID ]] || die "the gateway's process was not found"

# Like for like: a second gateway, configured as the first (its environment
# as dev.sh set it) but for its addresses and its user upstream, which is
# replica 1 alone.
GATEWAY_ONE_PORT=$(portico_free_port_block)
[[ -n $GATEWAY_ONE_PORT ]] || die "no free port for the second gateway"
mapfile -d '' -t GATEWAY_ENV <"/proc/$GATEWAY_PID/environ"
env -i "${GATEWAY_ENV[@]}" \
    PORTICO_GATEWAY_LISTEN__API="127.0.0.1:$GATEWAY_ONE_PORT" \
    PORTICO_GATEWAY_LISTEN__ADMIN="127.0.0.1:$((GATEWAY_ONE_PORT + 1))" \
    PORTICO_GATEWAY_UPSTREAMS__USER__ENDPOINTS="[\"$USER1\"]" \
    target/release/portico-gateway >"$WORK/gateway-one.log" 2>&1 &
GATEWAY_ONE_PID=$!
GATEWAY_ONE="http://127.0.0.1:$GATEWAY_ONE_PORT"
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null -H "authorization: Bearer $TOKEN" "$GATEWAY_ONE/v1/users/me" 2>/dev/null && break
    kill -0 "$GATEWAY_ONE_PID" 2>/dev/null || die "the second gateway did not start: $(tail -5 "$WORK/gateway-one.log")"
    sleep 0.1
done
curl -fsS -o /dev/null -H "authorization: Bearer $TOKEN" "$GATEWAY_ONE/v1/users/me" ||
    die "the second gateway does not answer"
USER_PIDS=()
for replica in 1 2; do
    USER_PIDS+=("$(cat "$WORK/logs/user-$replica.pid" 2>/dev/null)")
done
REDIS_PID=$(pgrep -f "redis-server.*:${PORTICO_TEST_REDIS_URL##*:}" | head -1)
[[ -n ${USER_PIDS[0]} && -n ${USER_PIDS[1]} && -n $REDIS_PID ]] || die "the processes were not found"
# Idle time of all cores (idle + iowait ticks, the first line of /proc/stat).
idle_ticks() { awk '/^cpu / { print $5 + $6 }' /proc/stat; }
declare -A PROXY_US USER_US REDIS_US IDLE_US SHARES NGINX_SHARES ONE_SHARES NGINX_ONE_SHARES
for pair in $(seq 1 "$PAIRS"); do
    for target in gateway direct nginx gateway-one nginx-one; do
        case $target in
            gateway) url=$GATEWAY proxy_pids=("$GATEWAY_PID") ;;
            direct) url=$USER1 proxy_pids=() ;;
            nginx) url=$NGINX_URL proxy_pids=("${NGINX_PIDS[@]}") ;;
            gateway-one) url=$GATEWAY_ONE proxy_pids=("$GATEWAY_ONE_PID") ;;
            nginx-one) url=$NGINX_ONE_URL proxy_pids=("${NGINX_PIDS[@]}") ;;
        esac
        run="$target-$pair"
        log "cached GET /v1/users/me, $target (pair $pair of $PAIRS): warm-up, then $DURATION"
        wrk -t 2 -c "$CONNECTIONS" -d 2s -H "authorization: Bearer $TOKEN" "$url/v1/users/me" >/dev/null
        proxy0=$(cpu_ticks "${proxy_pids[@]}")
        user0=$(cpu_ticks "${USER_PIDS[@]}")
        redis0=$(cpu_ticks "$REDIS_PID")
        idle0=$(idle_ticks)
        wrk -t 2 -c "$CONNECTIONS" -d "$DURATION" --latency -H "authorization: Bearer $TOKEN" \
            "$url/v1/users/me" >"$WORK/$run.txt"
        served=$(wrk_field "$WORK/$run.txt" requests)
        PROXY_US[$run]=$(us_per_request $(($(cpu_ticks "${proxy_pids[@]}") - proxy0)) "$served")
        USER_US[$run]=$(us_per_request $(($(cpu_ticks "${USER_PIDS[@]}") - user0)) "$served")
        REDIS_US[$run]=$(us_per_request $(($(cpu_ticks "$REDIS_PID") - redis0)) "$served")
        IDLE_US[$run]=$(us_per_request $(($(idle_ticks) - idle0)) "$served")
    done
    for target in gateway nginx gateway-one nginx-one; do
        share=$(python3 -c "print(round(100 * $(wrk_field "$WORK/$target-$pair.txt" rps) / $(wrk_field "$WORK/direct-$pair.txt" rps), 1))")
        case $target in
            gateway) SHARES[$pair]=$share ;;
            nginx) NGINX_SHARES[$pair]=$share ;;
            gateway-one) ONE_SHARES[$pair]=$share ;;
            nginx-one) NGINX_ONE_SHARES[$pair]=$share ;;
        esac
    done
done
# The median pair (by share) is the one reported in full.
MEDIAN=$(for pair in "${!SHARES[@]}"; do echo "${SHARES[$pair]} $pair"; done | sort -n |
    awk '{ line[NR] = $2 } END { print line[int((NR + 1) / 2)] }')
ALL_SHARES=$(for pair in $(seq 1 "$PAIRS"); do printf '%s%% ' "${SHARES[$pair]}"; done)
ALL_NGINX_SHARES=$(for pair in $(seq 1 "$PAIRS"); do printf '%s%% ' "${NGINX_SHARES[$pair]}"; done)
ALL_ONE_SHARES=$(for pair in $(seq 1 "$PAIRS"); do printf '%s%% ' "${ONE_SHARES[$pair]}"; done)
ALL_NGINX_ONE_SHARES=$(for pair in $(seq 1 "$PAIRS"); do printf '%s%% ' "${NGINX_ONE_SHARES[$pair]}"; done)
HITS=$(curl -fsS "http://127.0.0.1:$((BASE + 1001))/metrics" |
    awk '/^user_profile_cache_lookups_total\{outcome="hit"\}/ { print $2 }')
log "redis-benchmark GET (the cache-hit ceiling)"
redis_port=${PORTICO_TEST_REDIS_URL##*:}
redis-benchmark -h 127.0.0.1 -p "$redis_port" -t get -n 200000 -c "$CONNECTIONS" -q >"$WORK/redis.txt"
REDIS_RPS=$(grep -oE 'GET: [0-9.]+' "$WORK/redis.txt" | awk '{ print $2 }')

log "outbox: registering $WRITERS writers"
: >"$WORK/tokens.txt"
for n in $(seq 1 "$WRITERS"); do
    curl -fsS -X POST "$GATEWAY/v1/auth/register" -H 'content-type: application/json' \
        -d "{\"email\":\"writer$n@example.com\",\"password\":\"$PASSWORD\",\"display_name\":\"Writer $n\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' >>"$WORK/tokens.txt" ||
        die "registering writer $n failed"
done
log "outbox: $WRITERS users changing their profiles for $DURATION"
wrk -t 2 -c 16 -d "$DURATION" -s scripts/bench/patch_profiles.lua "$GATEWAY" -- "$WORK/tokens.txt" \
    >"$WORK/patch.txt"
USER_DB="$WORK/data/user.db"
outbox_count() {
    python3 - "$USER_DB" "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
where = "subscriber = 'bench'" + (" AND status = 'delivered'" if sys.argv[2] == "delivered" else "")
print(db.execute(f"SELECT COUNT(*) FROM deliveries WHERE {where}").fetchone()[0])
PY
}
EVENTS=$(outbox_count all)
log "outbox: waiting for the relays to deliver all $EVENTS events"
for _ in $(seq 1 1200); do
    [[ $(outbox_count delivered) -ge $EVENTS ]] && break
    sleep 0.1
done
DELIVERED=$(outbox_count delivered)
read -r OUTBOX_RATE LAG_P50 LAG_P99 LAG_MAX < <(python3 - "$WORK/deliveries.log" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
arrived = sorted(float(r[0]) for r in rows)
lags = sorted((float(r[0]) - float(r[1])) * 1000 for r in rows)
span = max(arrived[-1] - arrived[0], 1e-9)
pick = lambda q: lags[min(len(lags) - 1, int(len(lags) * q))]
print(f"{len(rows) / span:.0f} {pick(0.5):.1f} {pick(0.99):.1f} {lags[-1]:.1f}")
PY
)

log "directory: $USERS profiles in PostgreSQL"
"$PSQL" "$PORTICO_TEST_POSTGRES_URL" -q -v ON_ERROR_STOP=1 >&2 <<SQL || die "could not load the directory"
CREATE DATABASE bench_users;
SQL
DB_URL="${PORTICO_TEST_POSTGRES_URL%/*}/bench_users"
for migration in services/user/migrations/postgres/*.sql; do
    "$PSQL" "$DB_URL" -q -v ON_ERROR_STOP=1 -f "$migration" >&2 || die "migration $migration failed"
done
# UUIDv7-like ids in creation order: a time prefix from the row number.
"$PSQL" "$DB_URL" -q -v ON_ERROR_STOP=1 >&2 <<SQL || die "could not load the directory"
INSERT INTO users (id, email, email_lower, display_name, created_at, updated_at)
SELECT (lpad(to_hex(n), 12, '0') || '7000' || '8000' || lpad(to_hex(n), 12, '0'))::uuid,
       'user' || n || '@example.com', 'user' || n || '@example.com', 'User ' || n, now(), now()
FROM generate_series(1, $USERS) AS n;
ANALYZE users;
SQL
COLUMNS="id, email, display_name, locale, time_zone, status, version, created_at, updated_at"
page_p99() {
    local name=$1 sql=$2
    printf '%s\n' "$sql" >"$WORK/$name.sql"
    "$PGBENCH" -n -c 4 -j 2 -T "$PGBENCH_SECS" -f "$WORK/$name.sql" -l --log-prefix="$WORK/log-$name" \
        "$DB_URL" >"$WORK/$name.out" 2>&1 || die "pgbench $name failed: $(cat "$WORK/$name.out")"
    # Per-transaction log lines: client tx latency(us) ...; p99 in ms.
    cat "$WORK/log-$name".* | awk '{ print $3 }' | sort -n |
        awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f ms", v[i] / 1000 }'
}
declare -A KEYSET OFFSET
for depth in 0 10000 500000; do
    if ((depth >= USERS)); then
        KEYSET[$depth]="n/a" OFFSET[$depth]="n/a"
        continue
    fi
    after=$("$PSQL" "$DB_URL" -tA -c "SELECT id FROM users ORDER BY id OFFSET $depth LIMIT 1")
    log "directory page at depth $depth (keyset, then OFFSET)"
    KEYSET[$depth]=$(page_p99 "keyset-$depth" \
        "SELECT $COLUMNS FROM users WHERE id > '$after' ORDER BY id LIMIT 50;")
    OFFSET[$depth]=$(page_p99 "offset-$depth" \
        "SELECT $COLUMNS FROM users ORDER BY id OFFSET $depth LIMIT 50;")
done

GATEWAY_RUN="gateway-$MEDIAN" DIRECT_RUN="direct-$MEDIAN" NGINX_RUN="nginx-$MEDIAN"
ONE_RUN="gateway-one-$MEDIAN" NGINX_ONE_RUN="nginx-one-$MEDIAN"
GATEWAY_RPS=$(wrk_field "$WORK/$GATEWAY_RUN.txt" rps)
DIRECT_RPS=$(wrk_field "$WORK/$DIRECT_RUN.txt" rps)
SHARE=${SHARES[$MEDIAN]}

cat <<EOF
## User service benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))

| measure | value | target |
|---|---|---|
| cached \`GET /v1/users/me\` through the gateway (median of $PAIRS pairs) | $GATEWAY_RPS/s, p99 $(wrk_field "$WORK/$GATEWAY_RUN.txt" 99) ms, $(wrk_field "$WORK/$GATEWAY_RUN.txt" bad) failed | ≥ 60% of direct: **${SHARE}%** (pairs: ${ALL_SHARES% }) |
| the same, straight to one user replica (that pair) | $DIRECT_RPS/s, p99 $(wrk_field "$WORK/$DIRECT_RUN.txt" 99) ms, $(wrk_field "$WORK/$DIRECT_RUN.txt" bad) failed | |
| the same, through nginx in front of the two replicas (that pair; the reference) | $(wrk_field "$WORK/$NGINX_RUN.txt" rps)/s, p99 $(wrk_field "$WORK/$NGINX_RUN.txt" 99) ms, $(wrk_field "$WORK/$NGINX_RUN.txt" bad) failed | nginx's share: **${NGINX_SHARES[$MEDIAN]}%** (pairs: ${ALL_NGINX_SHARES% }) |
| like for like: through a second gateway in front of that one replica only (that pair) | $(wrk_field "$WORK/$ONE_RUN.txt" rps)/s, p99 $(wrk_field "$WORK/$ONE_RUN.txt" 99) ms, $(wrk_field "$WORK/$ONE_RUN.txt" bad) failed | share: **${ONE_SHARES[$MEDIAN]}%** (pairs: ${ALL_ONE_SHARES% }) |
| like for like: through nginx in front of that one replica only (that pair) | $(wrk_field "$WORK/$NGINX_ONE_RUN.txt" rps)/s, p99 $(wrk_field "$WORK/$NGINX_ONE_RUN.txt" 99) ms, $(wrk_field "$WORK/$NGINX_ONE_RUN.txt" bad) failed | nginx's share: **${NGINX_ONE_SHARES[$MEDIAN]}%** (pairs: ${ALL_NGINX_ONE_SHARES% }) |
| \`redis-benchmark\` GET, same Redis ($CONNECTIONS connections) | $REDIS_RPS/s | the ceiling of a cache hit |
| cache hits counted by replica 1 | $HITS | every read after the first |

CPU per request in the median pair (user + system, from /proc), the figure of record on shared cores:

| path | proxy | user replicas | together | Redis | cores idle |
|---|---|---|---|---|---|
| through the gateway | ${PROXY_US[$GATEWAY_RUN]} µs | ${USER_US[$GATEWAY_RUN]} µs | $(python3 -c "print(round(${PROXY_US[$GATEWAY_RUN]} + ${USER_US[$GATEWAY_RUN]}, 1))") µs | ${REDIS_US[$GATEWAY_RUN]} µs | ${IDLE_US[$GATEWAY_RUN]} µs |
| straight to one replica | – | ${USER_US[$DIRECT_RUN]} µs | ${USER_US[$DIRECT_RUN]} µs | ${REDIS_US[$DIRECT_RUN]} µs | ${IDLE_US[$DIRECT_RUN]} µs |
| through nginx (master and workers) | ${PROXY_US[$NGINX_RUN]} µs | ${USER_US[$NGINX_RUN]} µs | $(python3 -c "print(round(${PROXY_US[$NGINX_RUN]} + ${USER_US[$NGINX_RUN]}, 1))") µs | ${REDIS_US[$NGINX_RUN]} µs | ${IDLE_US[$NGINX_RUN]} µs |
| through the second gateway (one replica) | ${PROXY_US[$ONE_RUN]} µs | ${USER_US[$ONE_RUN]} µs | $(python3 -c "print(round(${PROXY_US[$ONE_RUN]} + ${USER_US[$ONE_RUN]}, 1))") µs | ${REDIS_US[$ONE_RUN]} µs | ${IDLE_US[$ONE_RUN]} µs |
| through nginx (one replica) | ${PROXY_US[$NGINX_ONE_RUN]} µs | ${USER_US[$NGINX_ONE_RUN]} µs | $(python3 -c "print(round(${PROXY_US[$NGINX_ONE_RUN]} + ${USER_US[$NGINX_ONE_RUN]}, 1))") µs | ${REDIS_US[$NGINX_ONE_RUN]} µs | ${IDLE_US[$NGINX_ONE_RUN]} µs |

(Redis: the server's CPU per request; cores idle: the time both cores
sat idle during the run, per request — what neither side used.)

Outbox: $WRITERS users changing their profiles through the gateway for $DURATION (wrk, 16 connections): $(wrk_field "$WORK/patch.txt" rps) changes/s; every change an event for a local webhook subscriber, delivered by the two replicas' relays.

| measure | value |
|---|---|
| events delivered | $DELIVERED of $EVENTS |
| delivery rate (first to last arrival) | $OUTBOX_RATE events/s |
| delivery lag (commit to arrival) p50 / p99 / max | $LAG_P50 / $LAG_P99 / $LAG_MAX ms |

Directory page (50 profiles) on PostgreSQL with $USERS profiles, p99 over ${PGBENCH_SECS} s of pgbench (4 clients):

| depth | keyset (\`id > cursor\`) | OFFSET |
|---|---|---|
| 0 | ${KEYSET[0]} | ${OFFSET[0]} |
| 10,000 | ${KEYSET[10000]} | ${OFFSET[10000]} |
| 500,000 | ${KEYSET[500000]} | ${OFFSET[500000]} |

Command: \`scripts/bench/user.sh\` (wrk $CONNECTIONS connections, $DURATION per run, $PAIRS pairs; gateway, auth and two user replicas on SQLite with the Redis profile cache; $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') as the reference proxy; loopback).
EOF
