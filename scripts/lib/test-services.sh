# shellcheck shell=bash
# Throwaway PostgreSQL and Redis servers for the Portico test suite.
#
# Source this file, then call:
#   portico_ensure_tools        installs the commands tests call (chattr)
#   portico_ensure_postgres     exports PORTICO_TEST_POSTGRES_URL
#   portico_ensure_redis        exports PORTICO_TEST_REDIS_URL
#   portico_stop_test_services  stops what the two above started (EXIT trap)
#
# If a URL variable is already set, that server is checked and reused, and
# nothing is started or stopped for it. Servers started here live in mktemp
# dirs, listen on 127.0.0.1 on a free port, keep no durable data and are
# removed again by portico_stop_test_services.
#
# Functions only, no side effects on source. Every fallible command is
# checked explicitly, so the functions behave the same whether the caller
# runs with `set -euo pipefail` or not, and errors get a readable message
# instead of a silent `set -e` exit.

# State of what this library started; empty means "nothing to clean up".
# Kept (not reset) if the file is sourced a second time.
_PORTICO_PG_DIR=${_PORTICO_PG_DIR:-}
_PORTICO_PG_BIN=${_PORTICO_PG_BIN:-}
_PORTICO_REDIS_DIR=${_PORTICO_REDIS_DIR:-}
_PORTICO_APT_UPDATED=${_PORTICO_APT_UPDATED:-}

# Where the temp dirs go. /tmp by default (not $TMPDIR) because the postgres
# system user must be able to reach the data dir, and a private TMPDIR under
# e.g. /root would not be traversable for it.
: "${PORTICO_TEST_TMPDIR:=/tmp}"

_portico_log() { printf '[test-services] %s\n' "$*" >&2; }

# Loud, unmissable failure banner on stderr.
_portico_fail() {
    {
        printf '\n'
        printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
        printf '!!! test-services: %s\n' "$*"
        printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
        printf '\n'
    } >&2
}

# Print the last lines of a log file (if it exists) to stderr.
_portico_tail_log() {
    local file=$1
    if [[ -f $file ]]; then
        printf -- '----- last 40 lines of %s -----\n' "$file" >&2
        tail -n 40 -- "$file" >&2 || true
        printf -- '----- end of %s -----\n' "$file" >&2
    fi
}

# Print the first of four consecutive TCP ports on 127.0.0.1 that are free
# right now, with the four 1000 above them free too: the layout of
# scripts/dev.sh (API ports, admin ports +1000). Same race as below.
portico_free_port_block() {
    python3 - <<'PY'
import random, socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port)); return True
        except OSError:
            return False
for _ in range(200):
    base = random.randrange(20000, 40000)
    if all(free(p) and free(p + 1000) for p in range(base, base + 4)):
        print(base); break
PY
}

# Print a TCP port on 127.0.0.1 that is free right now. There is a small race
# until the server binds it, so callers retry with a new port on failure.
_portico_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' && return 0
    fi
    # No python3: try random high ports until nothing answers on one.
    local port i
    for ((i = 0; i < 50; i++)); do
        port=$((20000 + RANDOM % 40000))
        if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

# Install Debian packages non-interactively. Runs `apt-get update` at most
# once per shell. Keeps the package's own system service from being started
# (it would otherwise keep running on the default port after the tests).
_portico_apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        _portico_fail "need to install '$*' but not running as root;" \
            "install it yourself (apt-get install $*) or set the test URL variables"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _portico_fail "need to install '$*' but apt-get is not available"
        return 1
    fi
    # apt output goes to a log that is only shown on failure, to keep the
    # test output readable.
    local log
    log=$(mktemp "$PORTICO_TEST_TMPDIR/portico-apt.XXXXXX.log") || log=/dev/null
    if [[ -z $_PORTICO_APT_UPDATED ]]; then
        _portico_log "apt-get update"
        if ! DEBIAN_FRONTEND=noninteractive apt-get update >"$log" 2>&1; then
            _portico_tail_log "$log"
            _portico_fail "apt-get update failed"
            rm -f "$log"
            return 1
        fi
        _PORTICO_APT_UPDATED=1
    fi

    # policy-rc.d exiting 101 tells invoke-rc.d "do not start services".
    # Only add one temporarily if the machine has none.
    local policy=/usr/sbin/policy-rc.d added_policy="" rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    _portico_log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
        >>"$log" 2>&1 || rc=$?
    if [[ -n $added_policy ]]; then
        rm -f "$policy"
    fi
    if ((rc != 0)); then
        _portico_tail_log "$log"
        _portico_fail "apt-get install $* failed (exit $rc)"
    fi
    [[ $log == /dev/null ]] || rm -f "$log"
    return $((rc != 0))
}

# ----------------------------------------------------------------------------
# PostgreSQL
# ----------------------------------------------------------------------------

# Print the dir holding initdb/pg_ctl/postgres: PATH first, then the newest
# Debian versioned dir (Debian does not put these on PATH).
_portico_find_pg_bin() {
    local initdb dir
    if initdb=$(command -v initdb 2>/dev/null); then
        # Resolve symlinks (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/..)
        # so the dir also holds the matching pg_isready.
        for dir in "$(dirname -- "$(readlink -f -- "$initdb")")" "$(dirname -- "$initdb")"; do
            if [[ -x $dir/pg_ctl && -x $dir/postgres ]]; then
                printf '%s\n' "$dir"
                return 0
            fi
        done
    fi
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null |
        sort -V | tail -n 1) || true
    if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    return 1
}

# Run a command as the postgres server owner: the `postgres` system user when
# we are root (PostgreSQL refuses to run as root), else ourselves. The cd
# avoids "could not change directory" noise from an unreadable caller cwd.
_portico_as_pg_user() {
    local dir=$1
    shift
    if [[ $(id -u) -eq 0 ]]; then
        (cd -- "$dir" && runuser -u postgres -- "$@")
    else
        (cd -- "$dir" && "$@")
    fi
}

# Is the server at $1 accepting connections? Uses whichever client exists.
_portico_pg_answers() {
    local url=$1 bin=${2:-}
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -t 5 -d "$url"
    elif [[ -n $bin && -x $bin/pg_isready ]]; then
        "$bin/pg_isready" -q -t 5 -d "$url"
    elif command -v psql >/dev/null 2>&1; then
        psql "$url" -XAtqc 'select 1' >/dev/null
    else
        _portico_log "no pg_isready/psql found; cannot check $url, assuming it works"
    fi
}

# Commands the tests call besides the servers: chattr (e2fsprogs) makes a
# database file read-only even for root in the SQLite read-only test.
portico_ensure_tools() {
    if ! command -v chattr >/dev/null 2>&1; then
        _portico_apt_install e2fsprogs || return 1
    fi
}

# A real SMTP server for the tests that send mail: aiosmtpd (PyPI, pinned)
# in a venv under target/tools. The tests start it themselves (one per test,
# on a free port, storing what it receives in a maildir) through
# PORTICO_TEST_AIOSMTPD, the venv's python; without it they fail loudly.
PORTICO_AIOSMTPD_VERSION=1.4.6
portico_ensure_smtp_server() {
    local root venv
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    venv="$root/target/tools/aiosmtpd-$PORTICO_AIOSMTPD_VERSION"
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
        _portico_log "installing aiosmtpd $PORTICO_AIOSMTPD_VERSION into $venv"
        rm -rf "$venv"
        if ! python3 -m venv "$venv" 2>/dev/null; then
            _portico_apt_install python3-venv || return 1
            python3 -m venv "$venv" || return 1
        fi
        "$venv/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$PORTICO_AIOSMTPD_VERSION" || {
            _portico_log "!!! pip install aiosmtpd failed"
            return 1
        }
    fi
    export PORTICO_TEST_AIOSMTPD="$venv/bin/python"
}

portico_ensure_postgres() {
    # Reuse a server the caller provided.
    if [[ -n ${PORTICO_TEST_POSTGRES_URL:-} ]]; then
        if _portico_pg_answers "$PORTICO_TEST_POSTGRES_URL"; then
            _portico_log "using given PORTICO_TEST_POSTGRES_URL"
            return 0
        fi
        _portico_fail "PORTICO_TEST_POSTGRES_URL is set but the server does not answer:" \
            "$PORTICO_TEST_POSTGRES_URL"
        return 1
    fi
    # Already started by us in this shell.
    if [[ -n $_PORTICO_PG_DIR ]]; then
        _portico_fail "postgres already started in $_PORTICO_PG_DIR but the URL variable was unset"
        return 1
    fi

    local bin
    if ! bin=$(_portico_find_pg_bin); then
        _portico_log "PostgreSQL server binaries not found; installing"
        _portico_apt_install postgresql || return 1
        if ! bin=$(_portico_find_pg_bin); then
            _portico_fail "installed postgresql but still cannot find initdb/pg_ctl/postgres"
            return 1
        fi
    fi
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        _portico_fail "running as root but there is no 'postgres' user to run the server as"
        return 1
    fi

    local dir
    if ! dir=$(mktemp -d "$PORTICO_TEST_TMPDIR/portico-pg.XXXXXX"); then
        _portico_fail "mktemp failed in $PORTICO_TEST_TMPDIR"
        return 1
    fi
    # Record it right away so the EXIT trap cleans up even a half-done start.
    _PORTICO_PG_DIR=$dir
    _PORTICO_PG_BIN=$bin
    if [[ $(id -u) -eq 0 ]] && ! chown postgres: "$dir"; then
        _portico_fail "chown postgres $dir failed"
        return 1
    fi

    # --locale=C: no dependency on which locales the machine has generated.
    _portico_log "initdb in $dir/data ($bin)"
    if ! _portico_as_pg_user "$dir" "$bin/initdb" -D "$dir/data" --auth=trust -U postgres \
        --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
        _portico_tail_log "$dir/initdb.log"
        _portico_fail "initdb failed"
        return 1
    fi

    # Durability is irrelevant for a throwaway test DB; turn it off for speed.
    # Retry with a new port in case another process grabbed ours meanwhile.
    # (pg_ctl hands -o to /bin/sh, so it must stay on one line.)
    local port attempt opts
    for attempt in 1 2 3; do
        if ! port=$(_portico_free_port); then
            _portico_fail "could not find a free TCP port"
            return 1
        fi
        opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off"
        opts+=" -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        _portico_log "starting postgres on 127.0.0.1:$port (attempt $attempt)"
        if _portico_as_pg_user "$dir" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
            -w -t 60 -o "$opts" start >"$dir/pg_ctl.log" 2>&1; then
            export PORTICO_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
            if _portico_pg_answers "$PORTICO_TEST_POSTGRES_URL" "$bin"; then
                return 0
            fi
            unset PORTICO_TEST_POSTGRES_URL
            _portico_tail_log "$dir/postgres.log"
            _portico_fail "postgres started but does not answer on 127.0.0.1:$port"
            return 1
        fi
        # A port clash shows up in the log; anything else is a real failure.
        if ! grep -q 'could not bind' "$dir/postgres.log" 2>/dev/null; then
            break
        fi
        # Keep the old log aside so the next attempt's check starts clean.
        mv -f "$dir/postgres.log" "$dir/postgres.log.$attempt" 2>/dev/null || true
    done
    _portico_tail_log "$dir/pg_ctl.log"
    _portico_tail_log "$dir/postgres.log"
    _portico_fail "could not start postgres (data dir $dir/data)"
    return 1
}

# ----------------------------------------------------------------------------
# Redis
# ----------------------------------------------------------------------------

portico_ensure_redis() {
    # Reuse a server the caller provided.
    if [[ -n ${PORTICO_TEST_REDIS_URL:-} ]]; then
        if ! command -v redis-cli >/dev/null 2>&1; then
            _portico_log "redis-cli not found; cannot check PORTICO_TEST_REDIS_URL, assuming it works"
            return 0
        fi
        if [[ $(redis-cli -u "$PORTICO_TEST_REDIS_URL" ping 2>/dev/null) == PONG ]]; then
            _portico_log "using given PORTICO_TEST_REDIS_URL"
            return 0
        fi
        _portico_fail "PORTICO_TEST_REDIS_URL is set but the server does not answer PING:" \
            "$PORTICO_TEST_REDIS_URL"
        return 1
    fi
    if [[ -n $_PORTICO_REDIS_DIR ]]; then
        _portico_fail "redis already started in $_PORTICO_REDIS_DIR but the URL variable was unset"
        return 1
    fi

    # The Debian package ships both redis-server and redis-cli (via redis-tools).
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        _portico_log "redis-server/redis-cli not found; installing"
        _portico_apt_install redis-server || return 1
        if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
            _portico_fail "installed redis-server but redis-server/redis-cli still not on PATH"
            return 1
        fi
    fi

    local dir
    if ! dir=$(mktemp -d "$PORTICO_TEST_TMPDIR/portico-redis.XXXXXX"); then
        _portico_fail "mktemp failed in $PORTICO_TEST_TMPDIR"
        return 1
    fi
    _PORTICO_REDIS_DIR=$dir

    local port attempt deadline
    for attempt in 1 2 3; do
        if ! port=$(_portico_free_port); then
            _portico_fail "could not find a free TCP port"
            return 1
        fi
        _portico_log "starting redis on 127.0.0.1:$port (attempt $attempt)"
        # No persistence at all: nothing to fsync, nothing left behind.
        if ! redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" \
            --logfile "$dir/redis.log" >"$dir/start.log" 2>&1; then
            _portico_tail_log "$dir/start.log"
            _portico_tail_log "$dir/redis.log"
            _portico_fail "redis-server failed to start"
            return 1
        fi
        # daemonize returns before the server listens; poll until PONG.
        deadline=$((SECONDS + 20))
        while ((SECONDS < deadline)); do
            if [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]]; then
                export PORTICO_TEST_REDIS_URL="redis://127.0.0.1:$port"
                return 0
            fi
            # Stop waiting early if the server already died (e.g. port clash).
            if grep -q -e 'Could not create server TCP' -e 'Address already in use' \
                "$dir/redis.log" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        _portico_stop_redis_process "$dir"
        if ! grep -q -e 'Could not create server TCP' -e 'Address already in use' \
            "$dir/redis.log" 2>/dev/null; then
            break
        fi
        mv -f "$dir/redis.log" "$dir/redis.log.$attempt" 2>/dev/null || true
    done
    _portico_tail_log "$dir/redis.log"
    _portico_fail "redis-server did not answer PING on 127.0.0.1:$port within 20 s"
    return 1
}

# Kill the redis-server whose pidfile is in $1 and wait for it to exit.
_portico_stop_redis_process() {
    local dir=$1 pid i
    [[ -f $dir/redis.pid ]] || return 0
    pid=$(<"$dir/redis.pid") || return 0
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || { rm -f "$dir/redis.pid"; return 0; }
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/redis.pid"
}

# ----------------------------------------------------------------------------
# Cleanup
# ----------------------------------------------------------------------------

# Stop only what this library started and remove its temp dirs. Idempotent.
# Preserves the caller's exit status so it can be used directly as an EXIT trap.
portico_stop_test_services() {
    local rc=$?

    if [[ -n $_PORTICO_PG_DIR ]]; then
        if [[ -f $_PORTICO_PG_DIR/data/postmaster.pid ]]; then
            _portico_as_pg_user "$_PORTICO_PG_DIR" "$_PORTICO_PG_BIN/pg_ctl" \
                -D "$_PORTICO_PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
                _portico_log "pg_ctl stop failed for $_PORTICO_PG_DIR"
        fi
        rm -rf -- "$_PORTICO_PG_DIR"
        _PORTICO_PG_DIR=""
        unset PORTICO_TEST_POSTGRES_URL
    fi

    if [[ -n $_PORTICO_REDIS_DIR ]]; then
        _portico_stop_redis_process "$_PORTICO_REDIS_DIR"
        rm -rf -- "$_PORTICO_REDIS_DIR"
        _PORTICO_REDIS_DIR=""
        unset PORTICO_TEST_REDIS_URL
    fi

    return "$rc"
}
