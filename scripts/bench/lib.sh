# shellcheck shell=bash
# Shared by the benchmarks (gateway.sh, auth.sh, user.sh): logging, CPU
# ticks of processes, the release system started with scripts/dev.sh on a
# free port block (auth.sh, user.sh), and reading wrk's summary. Source it after scripts/lib/test-services.sh.

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '\n!!! bench: %s\n\n' "$*" >&2
    exit 1
}

# The path of tool $1; nginx and haproxy live in /usr/sbin, which a
# non-root PATH may lack.
find_tool() {
    command -v "$1" 2>/dev/null && return 0
    [[ -x /usr/sbin/$1 ]] && printf '%s\n' "/usr/sbin/$1"
}

# nginx config for a throwaway nginx whose files (pid, logs, temp files)
# all stay in $1: the top of nginx.conf, then (nginx_http_common $1 LOG,
# LOG being `off` or an access_log target) the start of its http block. A
# huge keepalive_requests so no target pays for reconnects the others
# don't. Workers run as `nobody` by default and could not read a 0700 temp
# dir; as root they stay root (loopback-only, throwaway); as another user
# the directive is meaningless and nginx would warn.
nginx_common() {
    local dir=$1
    [[ $(id -u) -eq 0 ]] && echo "user root;"
    cat <<EOF
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
EOF
}
nginx_http_common() {
    local dir=$1 access_log=$2
    cat <<EOF
    access_log $access_log;
    keepalive_requests 1000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
EOF
}

# Installs each tool from Debian's packages if it is missing.
bench_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || _portico_apt_install "$tool" || die "could not install $tool"
    done
}

# Starts scripts/dev.sh with release builds on a free block of four ports
# (admin ones 1000 above), data and logs under $1; sets BASE, GATEWAY and
# BENCH_DEV_PID. The caller's environment reaches the services.
start_release_system() {
    local work=$1
    BASE=$(portico_free_port_block)
    [[ -n $BASE ]] || die "no free port block"
    # shellcheck disable=SC2034 # read by the scripts that source this
    GATEWAY="http://127.0.0.1:$BASE"
    log "starting the system (release) on ports $BASE-$((BASE + 3))"
    PORTICO_DEV_PROFILE=release PORTICO_DEV_BASE_PORT=$BASE PORTICO_DEV_DATA_DIR="$work/data" \
        PORTICO_DEV_LOG_DIR="$work/logs" bash scripts/dev.sh >"$work/dev.log" 2>&1 &
    BENCH_DEV_PID=$!
    for _ in $(seq 1 600); do
        grep -q "Portico is up" "$work/dev.log" && return 0
        kill -0 "$BENCH_DEV_PID" 2>/dev/null || { cat "$work/dev.log" >&2; die "the system did not start"; }
        sleep 0.1
    done
    die "the system was not up after 60 s"
}

# user+system CPU ticks of the given pids (fields 14 and 15 of /proc/PID/stat,
# counted after the command name, which ends with ") ").
cpu_ticks() {
    local total=0 pid stat fields
    for pid in "$@"; do
        stat=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a fields <<<"$stat"
        total=$((total + fields[11] + fields[12]))
    done
    printf '%s\n' "$total"
}

# Microseconds of CPU per request from a tick delta and a request count.
us_per_request() {
    python3 -c "import os,sys; print(f'{int(sys.argv[1]) * 1e6 / os.sysconf(\"SC_CLK_TCK\") / max(int(sys.argv[2]), 1):.1f}')" "$1" "$2"
}

# Stops what start_release_system started.
stop_release_system() {
    if [[ -n ${BENCH_DEV_PID:-} ]]; then
        kill -TERM "$BENCH_DEV_PID" 2>/dev/null || true
        wait "$BENCH_DEV_PID" 2>/dev/null || true
    fi
}

# A field of wrk's summary in file $1: rps, requests, 50 / 99 (ms), or bad
# (non-2xx responses plus socket errors).
wrk_field() {
    python3 - "$1" "$2" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\b" % label, text, re.M)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
field = sys.argv[2]
if field == "rps":
    print(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
elif field == "requests":
    print(re.search(r"(\d+) requests in", text).group(1))
elif field in ("50", "99"):
    print("%.2f" % ms(field))
elif field == "bad":
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    print((int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0))
PY
}
