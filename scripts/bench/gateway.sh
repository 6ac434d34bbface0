#!/usr/bin/env bash
# Side-by-side proxy benchmark. One upstream (nginx serving a ~200-byte JSON
# file) is loaded with the same wrk workload four ways:
#   direct   straight to the upstream (the baseline)
#   portico  through target/release/portico-gateway
#   portico+bearer  the same, on a route verifying a bearer token at the edge
#   nginx    through nginx as a reverse proxy with upstream keep-alive
#   haproxy  through HAProxy (mode http, http-reuse always)
#   portico+tls, nginx+tls  the first two with TLS on the client side
#            (TLS 1.3 with keep-alive), and each one's full-handshake rate
# and a markdown report (machine, versions, one table) goes to stdout;
# progress goes to stderr. Exits non-zero if any target answered anything
# but 2xx/3xx or had socket errors.
#
# Usage: scripts/bench/gateway.sh [> report.md]
#
# Environment (defaults in brackets):
#   PORTICO_BENCH_DURATION     measured wrk run per target [10s]
#   PORTICO_BENCH_WARMUP       unmeasured wrk run before it [2s]
#   PORTICO_BENCH_CONNECTIONS  wrk connections [64]
#   PORTICO_BENCH_THREADS      wrk threads [2]
#   PORTICO_BENCH_TIMEOUT      wrk per-request timeout [2s]
#   PORTICO_BENCH_GATEWAY      gateway binary to use instead of building one
#   PORTICO_BENCH_SCRAPE_SECS  scrape the gateway's /metrics this often while
#                              it is loaded, as Prometheus would [5]; 0: never
#   PORTICO_BENCH_HANDSHAKE_SECS  full TLS handshakes measured per proxy [5]
#   PORTICO_BENCH_IDLE_COUNTS  idle keep-alive connections held for the
#                              memory table [0,1000,10000]
# The gateway inherits the environment, so other PORTICO_GATEWAY_* variables
# (e.g. proxy.* settings) and TOKIO_WORKER_THREADS reach it; the variables
# set below win.
#
# Everything listens on 127.0.0.1 on free ports, lives in one temp dir and is
# stopped on exit, Ctrl-C included. nginx, haproxy and wrk are installed from
# Debian packages if missing, without starting their system services.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

# Reused from the test command: _portico_apt_install (apt-get update once,
# policy-rc.d so packages start no services) and _portico_free_port.
# shellcheck source=scripts/lib/test-services.sh
source scripts/lib/test-services.sh
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh

# Thousands of idle connections need as many descriptors (the proxies
# started below inherit the limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DURATION=${PORTICO_BENCH_DURATION:-10s}
IDLE_COUNTS=${PORTICO_BENCH_IDLE_COUNTS:-0,1000,10000}
WARMUP=${PORTICO_BENCH_WARMUP:-2s}
CONNECTIONS=${PORTICO_BENCH_CONNECTIONS:-64}
THREADS=${PORTICO_BENCH_THREADS:-2}
TIMEOUT=${PORTICO_BENCH_TIMEOUT:-2s}
SCRAPE_SECS=${PORTICO_BENCH_SCRAPE_SECS:-5}
BENCH_PATH=/v1/bench/item.json


# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

missing=()
for pair in nginx:nginx haproxy:haproxy wrk:wrk curl:curl pgrep:procps; do
    find_tool "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]} > 0)); then
    log "installing ${missing[*]}"
    _portico_apt_install "${missing[@]}" || die "could not install ${missing[*]}"
fi
NGINX=$(find_tool nginx) || die "nginx not found after install"
HAPROXY=$(find_tool haproxy) || die "haproxy not found after install"
WRK=$(find_tool wrk) || die "wrk not found after install"

# Release build; cargo makes this a no-op when the binary is up to date.
GATEWAY=${PORTICO_BENCH_GATEWAY:-}
if [[ -z $GATEWAY ]]; then
    log "cargo build --release -p portico-gateway --locked"
    cargo build --release -p portico-gateway --locked || die "release build failed"
    GATEWAY=${CARGO_TARGET_DIR:-target}/release/portico-gateway
fi
[[ -x $GATEWAY ]] || die "gateway binary $GATEWAY is missing"

# ---------------------------------------------------------------------------
# Process bookkeeping: everything started goes into pids and is stopped on exit
# ---------------------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/portico-bench.XXXXXX") || die "mktemp failed"
pids=()

# True while $1 runs (a zombie child that has exited counts as gone).
alive() {
    local stat
    stat=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat%% *} != Z ]]
}

cleanup() {
    local rc=$? pid i still
    trap - EXIT INT TERM
    if ((${#pids[@]} > 0)); then
        log "stopping ${#pids[@]} processes"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        # Bounded wait, then SIGKILL whatever ignored SIGTERM.
        for ((i = 0; i < 50; i++)); do
            still=0
            for pid in "${pids[@]}"; do alive "$pid" && still=1; done
            ((still)) || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { _portico_free_port || die "no free TCP port"; }
UP_PORT=$(free_port)
PORTICO_PORT=$(free_port)
PORTICO_ADMIN_PORT=$(free_port)
PORTICO_TLS_PORT=$(free_port)
PORTICO_TLS_ADMIN_PORT=$(free_port)
NGINX_PORT=$(free_port)
NGINX_TLS_PORT=$(free_port)
HAPROXY_PORT=$(free_port)

# Waits until $url answers 200, failing early if the process died.
wait_for() {
    local name=$1 url=$2 pid=$3 logfile=$4 i
    for ((i = 0; i < 300; i++)); do
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
            return 0
        fi
        if ! alive "$pid"; then
            tail -n 20 -- "$logfile" >&2 || true
            die "$name exited during startup (log above)"
        fi
        sleep 0.1
    done
    tail -n 20 -- "$logfile" >&2 || true
    die "$name did not answer $url within 30 s"
}

# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------

# ~200 bytes: the size of a small API answer, so per-request overhead (not
# bandwidth) is what gets measured.
mkdir -p "$WORK/www/v1/bench"
printf '%s\n' '{"id":"0195f3c2-7b1e-7cc4-9a53-3f0f4a0d2e11","email":"ann@example.com","display_name":"Ann Example","created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-02T00:00:00Z","version":3,"tags":["bench"]}' \
    >"$WORK/www$BENCH_PATH"
BODY_BYTES=$(wc -c <"$WORK/www$BENCH_PATH")

# A certificate for the TLS rows (ECDSA P-256, the common choice), the same
# for Portico and nginx.
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null ||
    die "openssl cannot make a certificate"

# The upstream: one worker is plenty for a cached static file and leaves the
# second core to wrk and the proxy under test.
mkdir -p "$WORK/upstream"
{
    printf 'worker_processes 1;\n'
    nginx_common "$WORK/upstream"
    printf 'http {\n'
    # No access log: none of the others log per request here.
    nginx_http_common "$WORK/upstream" off
    cat <<EOF
    default_type application/json;
    open_file_cache max=64;
    server {
        listen 127.0.0.1:$UP_PORT;
        root $WORK/www;
        # Connections accepted so far: how many the proxy under test opened.
        location = /bench-status { stub_status; }
    }
}
EOF
} >"$WORK/upstream/nginx.conf"

# nginx as a proxy: pooled HTTP/1.1 upstream connections, one worker per core.
mkdir -p "$WORK/nginx"
{
    printf 'worker_processes auto;\n'
    nginx_common "$WORK/nginx"
    printf 'http {\n'
    nginx_http_common "$WORK/nginx" off
    cat <<EOF
    upstream bench {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$WORK/nginx/nginx.conf"

# HAProxy: one process, one thread per core (its default), no logging,
# idle server connections shared across client connections.
mkdir -p "$WORK/haproxy"
cat >"$WORK/haproxy/haproxy.cfg" <<EOF
global
    # Plenty for wrk's connections; each needs two fds, and the fd limit
    # may be as low as 20000 (haproxy refuses to start above it).
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    http-reuse always

frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend bench

backend bench
    server upstream 127.0.0.1:$UP_PORT
EOF

# Portico: defaults + this file + env. Arrays replace, tables merge, so this
# leaves exactly one route; the default auth/user upstreams stay defined but
# unrouted (their OpenAPI documents are only fetched for /openapi.json).
# openapi_path of `bench` keeps its default: TOML cannot spell None, and the
# gateway never asks for it during the benchmark.
cat >"$WORK/gateway.toml" <<EOF
[[routes]]
path_prefix = "/v1/bench"
upstream = "bench"
timeout_ms = 5000
require_auth = false

# The same file behind bearer verification at the edge (the portico+bearer
# row): a real Ed25519 token, keys and revocation feed from the upstream.
[[routes]]
path_prefix = "/v1/secure"
upstream = "bench"
timeout_ms = 5000
auth = "bearer"
rewrite_prefix = "/v1/bench"
EOF
# The TLS row's gateway: the same routes behind a TLS listener.
{
    cat "$WORK/gateway.toml"
    cat <<EOF

[tls]
enabled = true
certificates = [{ cert_file = "$WORK/tls/cert.pem", key_file = "$WORK/tls/key.pem" }]
EOF
} >"$WORK/gateway-tls.toml"

# A signing key, its JWKS and a token, made with openssl (Ed25519, as auth
# issues them), and an empty revocation feed, all served by the upstream.
base64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
openssl genpkey -algorithm ed25519 -out "$WORK/jwt.key" 2>/dev/null || die "openssl cannot make an Ed25519 key"
JWK_X=$(openssl pkey -in "$WORK/jwt.key" -pubout -outform DER | tail -c 32 | base64url)
printf '{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"bench","x":"%s"}]}\n' \
    "$JWK_X" >"$WORK/www/jwks.json"
printf '{"items":[],"now":"%s","complete":true}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    >"$WORK/www/revocations.json"
NOW=$(date +%s)
JWT_HEAD=$(printf '{"alg":"EdDSA","typ":"JWT","kid":"bench"}' | base64url)
JWT_BODY=$(printf '{"iss":"bench","aud":"bench","sub":"0195f3c2-7b1e-7cc4-9a53-3f0f4a0d2e11","sid":"0195f3c2-7b1e-7cc4-9a53-3f0f4a0d2e12","jti":"bench","roles":["user"],"iat":%d,"nbf":%d,"exp":%d}' \
    "$NOW" "$NOW" $((NOW + 86400)) | base64url)
printf '%s.%s' "$JWT_HEAD" "$JWT_BODY" >"$WORK/jwt.input"
JWT_SIG=$(openssl pkeyutl -sign -inkey "$WORK/jwt.key" -rawin -in "$WORK/jwt.input" | base64url) ||
    die "openssl cannot sign with Ed25519"
TOKEN="$JWT_HEAD.$JWT_BODY.$JWT_SIG"

# ---------------------------------------------------------------------------
# Start
# ---------------------------------------------------------------------------

start_nginx() {
    local dir=$1
    "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/stdout.log" 2>&1 &
    pids+=($!)
}

log "starting upstream nginx on 127.0.0.1:$UP_PORT"
start_nginx "$WORK/upstream"
UP_PID=$!
wait_for upstream "http://127.0.0.1:$UP_PORT$BENCH_PATH" "$UP_PID" "$WORK/upstream/error.log"

# Starts a gateway with config file $1 listening on $2 (admin on $3,
# log in $4); its pid in STARTED_PID. The allocator settings are the
# gateway image's (Dockerfile).
start_gateway() {
    local config=$1 port=$2 admin_port=$3 logfile=$4
    log "starting portico-gateway on 127.0.0.1:$port"
    # RUST_LOG would override the log filter. Logs go to a file so a startup
    # failure can be shown; at `warn` nothing is written per request.
    env -u RUST_LOG \
        PORTICO_GATEWAY_CONFIG_FILE="$config" \
        PORTICO_GATEWAY_LISTEN__API="127.0.0.1:$port" \
        PORTICO_GATEWAY_LISTEN__ADMIN="127.0.0.1:$admin_port" \
        PORTICO_GATEWAY_UPSTREAMS__BENCH__ENDPOINTS="[\"http://127.0.0.1:$UP_PORT\"]" \
        PORTICO_GATEWAY_TOKENS__ISSUER=bench \
        PORTICO_GATEWAY_TOKENS__AUDIENCE=bench \
        PORTICO_GATEWAY_TOKENS__JWKS__URL="http://127.0.0.1:$UP_PORT/jwks.json" \
        PORTICO_GATEWAY_TOKENS__REVOCATIONS__URL="http://127.0.0.1:$UP_PORT/revocations.json" \
        PORTICO_GATEWAY_CONNECTIONS__MAX=20000 \
        PORTICO_GATEWAY_CONNECTIONS__MAX_PER_CLIENT_IP=0 \
        PORTICO_GATEWAY_CONNECTIONS__HEADER_READ_TIMEOUT_MS=120000 \
        PORTICO_GATEWAY_TELEMETRY__LOG_FILTER=warn \
        PORTICO_GATEWAY_TELEMETRY__LOG_FORMAT=json \
        MIMALLOC_ARENA_EAGER_COMMIT="${MIMALLOC_ARENA_EAGER_COMMIT:-0}" \
        MIMALLOC_PURGE_DELAY="${MIMALLOC_PURGE_DELAY:-0}" \
        "$GATEWAY" >"$logfile" 2>&1 &
    pids+=($!)
    STARTED_PID=$!
    wait_for portico "http://127.0.0.1:$admin_port/readyz" "$STARTED_PID" "$logfile"
}
start_gateway "$WORK/gateway.toml" "$PORTICO_PORT" "$PORTICO_ADMIN_PORT" "$WORK/portico.log"
PORTICO_PID=$STARTED_PID
start_gateway "$WORK/gateway-tls.toml" "$PORTICO_TLS_PORT" "$PORTICO_TLS_ADMIN_PORT" "$WORK/portico-tls.log"
PORTICO_TLS_PID=$STARTED_PID

log "starting nginx proxy on 127.0.0.1:$NGINX_PORT"
start_nginx "$WORK/nginx"
NGINX_PID=$!
wait_for nginx "http://127.0.0.1:$NGINX_PORT$BENCH_PATH" "$NGINX_PID" "$WORK/nginx/error.log"

log "starting haproxy on 127.0.0.1:$HAPROXY_PORT"
"$HAPROXY" -db -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/haproxy.log" 2>&1 &
pids+=($!)
HAPROXY_PID=$!
wait_for haproxy "http://127.0.0.1:$HAPROXY_PORT$BENCH_PATH" "$HAPROXY_PID" "$WORK/haproxy/haproxy.log"

TARGETS=(direct portico portico+bearer nginx haproxy portico+tls nginx+tls)
declare -A URL=(
    [direct]="http://127.0.0.1:$UP_PORT$BENCH_PATH"
    [portico]="http://127.0.0.1:$PORTICO_PORT$BENCH_PATH"
    [portico+bearer]="http://127.0.0.1:$PORTICO_PORT/v1/secure/item.json"
    [nginx]="http://127.0.0.1:$NGINX_PORT$BENCH_PATH"
    [haproxy]="http://127.0.0.1:$HAPROXY_PORT$BENCH_PATH"
    [portico+tls]="https://127.0.0.1:$PORTICO_TLS_PORT$BENCH_PATH"
    [nginx+tls]="https://127.0.0.1:$NGINX_TLS_PORT$BENCH_PATH"
)
declare -A PROXY_PID=([portico]=$PORTICO_PID [portico+bearer]=$PORTICO_PID [nginx]=$NGINX_PID
    [haproxy]=$HAPROXY_PID [portico+tls]=$PORTICO_TLS_PID [nginx+tls]=$NGINX_PID)
declare -A ADMIN_PORT=([portico]=$PORTICO_ADMIN_PORT [portico+bearer]=$PORTICO_ADMIN_PORT
    [portico+tls]=$PORTICO_TLS_ADMIN_PORT)
# Request headers per target (wrk -H, curl -H).
declare -A HEADER=([portico+bearer]="Authorization: Bearer $TOKEN")

# Every target must hand back the upstream's file unchanged, with a 200.
for target in "${TARGETS[@]}"; do
    headers=()
    if [[ -n ${HEADER[$target]:-} ]]; then headers=(-H "${HEADER[$target]}"); fi
    status=$(curl -sS --cacert "$WORK/tls/cert.pem" -o "$WORK/$target.body" -w '%{http_code}' --max-time 5 \
        "${headers[@]}" "${URL[$target]}") ||
        die "$target: request failed"
    [[ $status == 200 ]] || die "$target answered $status, not 200"
    cmp -s "$WORK/$target.body" "$WORK/www$BENCH_PATH" || die "$target changed the body"
done
# A forged token (another signature) never passes.
forged_status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
    -H "Authorization: Bearer $JWT_HEAD.$JWT_BODY.${JWT_SIG%??}AA" "${URL[portico+bearer]}") ||
    die "portico+bearer: request with a forged token failed"
[[ $forged_status == 401 ]] || die "a forged token got $forged_status, not 401"

# ---------------------------------------------------------------------------
# Measure
# ---------------------------------------------------------------------------

# The process and, for nginx, its workers.
process_tree() {
    printf '%s\n' "$1"
    pgrep -P "$1" || true
}

# Busy ticks of the whole machine, steal included (time we did not get).
machine_busy_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# CPU milliseconds used by finished children of this shell (wrk), from
# `times`. Not called in $(...): a subshell would report its own children.
children_cpu_ms() {
    times >"$WORK/times"
    awk 'NR == 2 {
        total = 0
        for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); total += t[1] * 60 + t[2] }
        printf "%d\n", total * 1000
    }' "$WORK/times"
}

# Sum of a /proc/PID/status field (kB) over the given pids.
status_kib() {
    local field=$1 total=0 pid value
    shift
    for pid in "$@"; do
        value=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${value:-0}))
    done
    printf '%s\n' "$total"
}

# wrk latency ("812.00us", "1.20ms", "1.01s") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; unit = v; sub(/^[0-9.]+/, "", unit)
        if (unit == "us") n /= 1000; else if (unit == "s") n *= 1000; else if (unit == "m") n *= 60000
        printf "%.2f", n
    }'
}

# wrk runs in the background and is waited for, so that Ctrl-C reaches the
# INT trap at once: wrk handles SIGINT itself (prints its results and exits
# 0), and bash drops a SIGINT that its foreground child handled.
run_wrk() {
    "$WRK" "$@" &
    pids+=($!)
    wait "$!" || die "wrk $* failed"
    unset 'pids[-1]' # reaped: its pid may be reused, never signal it again
}

TICKS=$(getconf CLK_TCK)
CORES=$(nproc)
declare -A ROW
failures=()

# Connections the upstream has accepted so far (nginx's stub_status; the
# status request's own connection included).
upstream_accepts() {
    curl -fsS --max-time 2 "http://127.0.0.1:$UP_PORT/bench-status" | awk 'NR == 3 { print $1 }'
}

measure() {
    local target=$1 url=${URL[$1]} out="$WORK/$1.wrk" tree=() upstream_tree=()
    local t0 t1 cpu0 cpu1 up0 up1 busy0 busy1 wrk0 wrk1 elapsed
    local rps p50 p99 requests non2xx socket cpu_us rss other accepts0 accepts1 reconnects
    local headers=()
    if [[ -n ${HEADER[$1]:-} ]]; then headers=(-H "${HEADER[$1]}"); fi
    log "$target: warm-up $WARMUP, then $DURATION ($THREADS threads, $CONNECTIONS connections)"
    run_wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" --timeout "$TIMEOUT" "${headers[@]}" "$url" >/dev/null

    if [[ $target != direct ]]; then mapfile -t tree < <(process_tree "${PROXY_PID[$target]}"); fi
    mapfile -t upstream_tree < <(process_tree "$UP_PID")
    cpu0=$(cpu_ticks "${tree[@]}")
    up0=$(cpu_ticks "${upstream_tree[@]}")
    busy0=$(machine_busy_ticks)
    accepts0=$(upstream_accepts)
    children_cpu_ms >"$WORK/wrk0"
    t0=$EPOCHREALTIME
    run_wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout "$TIMEOUT" --latency "${headers[@]}" "$url" >"$out"
    t1=$EPOCHREALTIME
    children_cpu_ms >"$WORK/wrk1"
    accepts1=$(upstream_accepts)
    busy1=$(machine_busy_ticks)
    up1=$(cpu_ticks "${upstream_tree[@]}")
    cpu1=$(cpu_ticks "${tree[@]}")
    wrk0=$(<"$WORK/wrk0")
    wrk1=$(<"$WORK/wrk1")

    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    requests=$(awk '/ requests in / { print $1 }' "$out")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
    socket=$(grep -o 'Socket errors:.*' "$out" || true)
    if [[ -z $requests || $requests -eq 0 || -n $non2xx || -n $socket ]]; then
        failures+=("$target: ${requests:-0} requests; non-2xx/3xx: ${non2xx:-0}; ${socket:-no socket errors}")
    fi

    # CPU the other processes on the machine took while this ran, as a share
    # of all cores: how disturbed this row is.
    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    other=$(awk -v busy=$((busy1 - busy0)) -v ours=$((cpu1 - cpu0 + up1 - up0)) \
        -v wrk_ms=$((wrk1 - wrk0)) -v hz="$TICKS" -v t="$elapsed" -v n="$CORES" \
        'BEGIN { x = ((busy - ours) / hz - wrk_ms / 1000) / (t * n) * 100; if (x < 0) x = 0; printf "%.0f%%", x }')

    if [[ $target == direct ]]; then
        cpu_us="–"
        rss="–"
        reconnects="–"
    else
        # New upstream connections during the run (less the second status
        # request's own) per 1,000 requests: 0 is perfect reuse.
        reconnects=$(awk -v a="${accepts0:-0}" -v b="${accepts1:-0}" -v r="${requests:-0}" \
            'BEGIN { if (r > 0) printf "%.2f", (b - a - 1) * 1000 / r; else print "?" }')
        cpu_us=$(awk -v d=$((cpu1 - cpu0)) -v hz="$TICKS" -v r="${requests:-0}" \
            'BEGIN { if (r > 0) printf "%.1f", d / hz * 1e6 / r; else print "?" }')
        rss=$(awk -v k="$(status_kib VmHWM "${tree[@]}")" 'BEGIN { printf "%.1f MiB", k / 1024 }')
        if ((${#tree[@]} > 1)); then rss+=" (${#tree[@]} procs)"; fi
    fi
    ROW[$target]="| $target | $rps | $p50 | $p99 | $cpu_us | $reconnects | $rss | $other |"
    log "$target: $rps req/s, p50 $p50 ms, p99 $p99 ms"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_BEFORE%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    log "warning: load average is $LOAD_BEFORE before starting; if something else is running, numbers will be disturbed (see the other CPU column)"
fi
# The gateway keeps every histogram sample until /metrics is scraped (or
# upkeep runs), so an unscraped gateway grows without bound under load. A
# deployed one is scraped; do the same so its memory figure is comparable.
scrape_metrics() {
    local admin_port=$1 nap=""
    # Ctrl-C reaches this subshell too; either way take the sleep along.
    trap 'kill "$nap" 2>/dev/null || true; wait "$nap" 2>/dev/null || true; exit 0' TERM INT
    while :; do
        curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$admin_port/metrics" || true
        # sleep in the background so the trap runs at once.
        sleep "$SCRAPE_SECS" &
        nap=$!
        wait "$nap"
    done
}

for target in "${TARGETS[@]}"; do
    scraper=""
    if [[ $target == portico* && $SCRAPE_SECS != 0 ]]; then
        scrape_metrics "${ADMIN_PORT[$target]}" &
        scraper=$!
        pids+=("$scraper")
    fi
    measure "$target"
    if [[ -n $scraper ]]; then
        kill -TERM "$scraper" 2>/dev/null || true
        wait "$scraper" 2>/dev/null || true
        unset 'pids[-1]' # reaped: its pid may be reused, never signal it again
    fi
done

# ---------------------------------------------------------------------------
# Full TLS handshakes: one client making new connections back to back
# ---------------------------------------------------------------------------

HANDSHAKE_SECS=${PORTICO_BENCH_HANDSHAKE_SECS:-5}
declare -A HANDSHAKE_ROW
for target in portico+tls nginx+tls; do
    port=${URL[$target]#https://127.0.0.1:}
    port=${port%%/*}
    mapfile -t tree < <(process_tree "${PROXY_PID[$target]}")
    log "$target: full TLS 1.3 handshakes for ${HANDSHAKE_SECS}s"
    cpu0=$(cpu_ticks "${tree[@]}")
    openssl s_time -connect "127.0.0.1:$port" -new -tls1_3 -time "$HANDSHAKE_SECS" \
        >"$WORK/$target.s_time" 2>&1 || die "$target: openssl s_time failed"
    cpu1=$(cpu_ticks "${tree[@]}")
    # "N connections in T real seconds, B bytes read per connection"
    HANDSHAKE_ROW[$target]=$(awk -v d=$((cpu1 - cpu0)) -v hz="$TICKS" -v t="$target" '
        / connections in .* real seconds/ { n = $1; s = $4 }
        END {
            if (n > 0) printf "| %s | %.0f | %.0f |\n", t, n / s, d / hz * 1e6 / n
            else print "| " t " | ? | ? |"
        }' "$WORK/$target.s_time")
done

# ---------------------------------------------------------------------------
# Idle keep-alive client connections: resident memory as they pile up
# ---------------------------------------------------------------------------

declare -A IDLE_PORT=([portico]=$PORTICO_PORT [nginx]=$NGINX_PORT)
declare -A IDLE_ROW
for target in portico nginx; do
    mapfile -t tree < <(process_tree "${PROXY_PID[$target]}")
    log "$target: holding $IDLE_COUNTS idle keep-alive connections"
    IDLE_ROW[$target]=$(python3 scripts/bench/hold_connections.py --port "${IDLE_PORT[$target]}" \
        --path "$BENCH_PATH" --pids "$(
            IFS=,
            printf '%s' "${tree[*]}"
        )" --counts "$IDLE_COUNTS" |
        awk -v t="$target" '{ row = row sprintf(" %.1f MiB |", $2 / 1024) } END { print "| " t " |" row }') ||
        die "$target: holding idle connections failed"
done

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

# First line of `$@` (version banners go to stdout or stderr), field $1.
version() { "${@:2}" 2>&1 | awk -v f="$1" 'NR == 1 { print $f }' || true; }
cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_total=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
gateway_log_bytes=$(wc -c <"$WORK/portico.log")
scrape_note="every ${SCRAPE_SECS} s"
if [[ $SCRAPE_SECS == 0 ]]; then scrape_note="never"; fi

cat <<EOF
### Gateway benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $CORES cores (${cpu_model:-unknown CPU}), $mem_total RAM, Linux $(uname -r);
  wrk, the upstream and the proxy under test all share these cores
- load average before the run: $LOAD_BEFORE
- workload: \`GET $BENCH_PATH\` ($BODY_BYTES-byte JSON from nginx), \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency --timeout $TIMEOUT\` after a $WARMUP warm-up, targets one after another
- portico: \`$GATEWAY\` built from $(git describe --always --dirty 2>/dev/null || echo unknown), log filter \`warn\` ($gateway_log_bytes bytes of log written), /metrics scraped $scrape_note
- $(version 3 "$NGINX" -v), HAProxy $(version 3 "$HAPROXY" -v), wrk $(version 2 "$WRK" -v)

| target | req/s | p50 (ms) | p99 (ms) | proxy CPU per request (µs) | new upstream connections per 1k requests | proxy peak RSS | other CPU |
|---|---:|---:|---:|---:|---:|---:|---:|
EOF
for target in "${TARGETS[@]}"; do
    printf '%s\n' "${ROW[$target]}"
done
cat <<'EOF'

portico+bearer: the same file through a route that verifies an Ed25519
bearer token at the edge (the same token on every request, as a client
sends it; the gateway keeps verified tokens for up to 30 s and still checks
expiry and revocation each time; a forged token is checked to get 401).

Proxy CPU: user+system time of the proxy's processes during the measured run
divided by the requests served. New upstream connections: connections the
upstream accepted during the run per 1,000 requests (0 = every request on a
reused connection; an upstream that closes a connection after N requests
sets a floor of 1000/N). Peak RSS: VmHWM summed over the proxy's
processes (nginx: master and workers, so shared pages count more than once).
Other CPU: busy time of the machine not used by wrk, the upstream or the
proxy, as a share of all cores (steal included); high values mean the row
was disturbed.
EOF

cat <<'EOF'

portico+tls, nginx+tls: the same file over TLS 1.3 (ECDSA P-256
certificate, keep-alive: wrk's connections each make one handshake).

Full TLS 1.3 handshakes (`openssl s_time -new`: one client, each connection
a full handshake, closed at once; no resumption), and the proxy's CPU per
handshake, the figure that does not depend on the client:

| proxy | handshakes/s | proxy CPU per handshake (µs) |
|---|---:|---:|
EOF
for target in portico+tls nginx+tls; do
    printf '%s\n' "${HANDSHAKE_ROW[$target]}"
done

idle_header=$(awk -v c="$IDLE_COUNTS" 'BEGIN { n = split(c, a, ","); h = "| proxy |"; r = "|---|"; for (i = 1; i <= n; i++) { h = h " RSS, " a[i] " idle |"; r = r "---:|" } print h; print r }')
cat <<EOF

Resident memory (VmRSS, summed over the proxy's processes) with that many
idle keep-alive client connections open at once, each having made one
request (\`scripts/bench/hold_connections.py\`), measured after the run
above:

$idle_header
EOF
for target in portico nginx; do
    printf '%s\n' "${IDLE_ROW[$target]}"
done

if ((${#failures[@]} > 0)); then
    printf '\n' >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    for failure in "${failures[@]}"; do
        printf '!!! bench: %s\n' "$failure" >&2
    done
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    exit 1
fi
