#!/usr/bin/env bash
# The cost of the gateway's policies on the proxied path, in one run: the
# same wrk load through the release gateway configured each way, against
# one nginx upstream listening on two ports (two endpoints):
#   round_robin      plain route, round robin
#   least_request    the default policy (power of two choices)
#   consistent_hash  ring hash on a request header
#   rate_limit       round robin + a rate limit decided in Redis (a limit
#                    high enough never to refuse: the decision's cost)
#   everything       least_request + health checks + outlier detection +
#                    breaker + retries + the Redis rate limit
# and, last, a reload under load: the config file rewritten every 200 ms
# while wrk runs; failed requests must be 0. Prints a markdown table (CPU
# per request is the figure of record on two shared cores).
#
# Usage: scripts/bench/policies.sh [> report.md]
#   PORTICO_BENCH_DURATION [10s]  PORTICO_BENCH_CONNECTIONS [64]
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

# shellcheck source=scripts/lib/test-services.sh
source scripts/lib/test-services.sh

DURATION=${PORTICO_BENCH_DURATION:-10s}
CONNECTIONS=${PORTICO_BENCH_CONNECTIONS:-64}
log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '!!! policies bench: %s\n' "$*" >&2
    exit 1
}

for pair in nginx:nginx wrk:wrk curl:curl; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -x /usr/sbin/${pair%%:*} ]] ||
        _portico_apt_install "${pair#*:}" || die "cannot install ${pair#*:}"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

log "cargo build --release -p portico-gateway --locked"
cargo build --release -p portico-gateway --locked >&2 || die "release build failed"
GATEWAY=target/release/portico-gateway

WORK=$(mktemp -d "${TMPDIR:-/tmp}/portico-policies.XXXXXX")
pids=()
cleanup() {
    local rc=$?
    trap - EXIT
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    portico_stop_test_services
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

portico_ensure_redis >&2 || die "no Redis"
port() { _portico_free_port || die "no free port"; }
UP1=$(port)
UP2=$(port)

wait_200() {
    local url=$1 i
    for ((i = 0; i < 300; i++)); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$url never answered 200"
}

# One nginx, two listeners: two endpoints for the policies to choose from.
mkdir -p "$WORK/www/v1/bench" "$WORK/nginx"
printf '%s\n' '{"id":"0195f3c2-7b1e-7cc4-9a53-3f0f4a0d2e11","email":"ann@example.com","display_name":"Ann Example","version":3}' \
    >"$WORK/www/v1/bench/item.json"
printf 'ok\n' >"$WORK/www/readyz"
user_line=""
if [[ $(id -u) -eq 0 ]]; then user_line="user root;"; fi
cat >"$WORK/nginx/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    default_type application/json;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:$UP1;
        listen 127.0.0.1:$UP2;
        root $WORK/www;
    }
}
EOF
"$NGINX" -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx/out.log" 2>&1 &
pids+=($!)
wait_200 "http://127.0.0.1:$UP1/v1/bench/item.json"

# The config of each variant: one route, one upstream `bench`.
upstream_block() {
    printf '[upstreams.bench]\nendpoints = ["http://127.0.0.1:%s", "http://127.0.0.1:%s"]\n' "$UP1" "$UP2"
    case $1 in
        round_robin | rate_limit) printf 'balance = "round_robin"\n' ;;
        least_request) printf 'balance = "least_request"\n' ;;
        consistent_hash) printf 'balance = "consistent_hash"\nhash_on = "header:x-tenant"\n' ;;
        everything)
            printf 'balance = "least_request"\n'
            printf '[upstreams.bench.health]\npath = "/readyz"\ninterval_ms = 1000\n'
            printf '[upstreams.bench.outlier]\nconsecutive_5xx = 5\n'
            printf '[upstreams.bench.breaker]\nmin_requests = 20\n'
            ;;
    esac
}
route_block() {
    printf '[[routes]]\npath_prefix = "/v1/bench"\nupstream = "bench"\ntimeout_ms = 5000\nauth = "public"\n'
    case $1 in
        rate_limit | everything)
            printf '[routes.rate_limit]\nkey = "client_ip"\nrate = 1000000\nperiod_ms = 1000\n'
            ;;
    esac
}
write_config() {
    { upstream_block "$1"; route_block "$1"; } >"$2"
}

# CPU ticks (user+system) of one pid.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_MS=$((1000 / $(getconf CLK_TCK)))

declare -A CPU_US P99 RPS ERRORS
run_variant() {
    local name=$1 api admin config="$WORK/$1.toml" pid before after out requests
    api=$(port)
    admin=$(port)
    write_config "$name" "$config"
    env -u RUST_LOG \
        PORTICO_GATEWAY_CONFIG_FILE="$config" \
        PORTICO_GATEWAY_LISTEN__API="127.0.0.1:$api" \
        PORTICO_GATEWAY_LISTEN__ADMIN="127.0.0.1:$admin" \
        PORTICO_GATEWAY_REDIS__URL="$PORTICO_TEST_REDIS_URL" \
        PORTICO_GATEWAY_REDIS__KEY_PREFIX="portico:bench:$$:$name:" \
        PORTICO_GATEWAY_TELEMETRY__LOG_FILTER=warn \
        "$GATEWAY" >"$WORK/$name.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_200 "http://127.0.0.1:$admin/readyz"
    wait_200 "http://127.0.0.1:$api/v1/bench/item.json"
    log "$name: warm-up, then $DURATION with $CONNECTIONS connections"
    wrk -t2 -c"$CONNECTIONS" -d2s -H 'x-tenant: acme' "http://127.0.0.1:$api/v1/bench/item.json" >/dev/null
    before=$(ticks "$pid")
    out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H 'x-tenant: acme' \
        "http://127.0.0.1:$api/v1/bench/item.json")
    after=$(ticks "$pid")
    requests=$(awk '/requests in/ { print $1 }' <<<"$out")
    RPS[$name]=$(awk '/Requests\/sec/ { printf "%d", $2 }' <<<"$out")
    P99[$name]=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    ERRORS[$name]=$(awk '/Non-2xx|Socket errors/ { n++ } END { print n + 0 }' <<<"$out")
    CPU_US[$name]=$(awk -v t=$(((after - before) * TICK_MS)) -v n="$requests" \
        'BEGIN { printf "%.1f", t * 1000 / n }')
    if [[ $name == round_robin ]]; then
        RELOAD_API=$api
        RELOAD_CONFIG=$config
        return
    fi
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

VARIANTS=(round_robin least_request consistent_hash rate_limit everything)
for variant in "${VARIANTS[@]}"; do
    run_variant "$variant"
done

# Reload under load: the round_robin gateway is still up; its config file
# alternates between two valid versions every 200 ms.
log "reload under load: $DURATION, config rewritten every 200 ms"
write_config least_request "$WORK/alt.toml"
cp "$RELOAD_CONFIG" "$WORK/base.toml"
(
    while true; do
        cp "$WORK/alt.toml" "$RELOAD_CONFIG.next" && mv "$RELOAD_CONFIG.next" "$RELOAD_CONFIG"
        sleep 0.2
        cp "$WORK/base.toml" "$RELOAD_CONFIG.next" && mv "$RELOAD_CONFIG.next" "$RELOAD_CONFIG"
        sleep 0.2
    done
) &
flipper=$!
pids+=("$flipper")
reload_out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$RELOAD_API/v1/bench/item.json")
kill "$flipper" 2>/dev/null || true
reload_requests=$(awk '/requests in/ { print $1 }' <<<"$reload_out")
reload_failed=$(awk '/Non-2xx or 3xx responses/ { f += $NF } /Socket errors/ { f += 1 } END { print f + 0 }' <<<"$reload_out")

base=${CPU_US[round_robin]}
echo "## Gateway policies ($(date -u +%Y-%m-%d), $(nproc) cores, $CONNECTIONS connections, $DURATION each)"
echo
echo "| variant | req/s | CPU µs/request | vs round_robin | p99 | runs with errors |"
echo "|---|---:|---:|---:|---:|---:|"
for variant in "${VARIANTS[@]}"; do
    ratio=$(awk -v a="${CPU_US[$variant]}" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
    echo "| $variant | ${RPS[$variant]} | ${CPU_US[$variant]} | $ratio | ${P99[$variant]} | ${ERRORS[$variant]} |"
done
echo
echo "Reload under load: $reload_requests requests while the config file changed every 200 ms; failed: $reload_failed."
if ((reload_failed > 0)); then
    die "requests failed across reloads"
fi
