#!/usr/bin/env bash
# Runs the whole system locally on SQLite: the gateway on 127.0.0.1:8080,
# two user replicas and one auth replica, data under ./data/. Needs only the
# Rust toolchain. Ctrl-C stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

# Ports: gateway BASE, user-1 BASE+1, auth BASE+2, user-2 BASE+3; each
# admin listener is its API port + 1000. Data and logs go where asked;
# each service's pid is written next to its log. PORTICO_DEV_PROFILE=release
# runs optimised builds (the benchmarks do).
BASE=${PORTICO_DEV_BASE_PORT:-8080}
DATA=${PORTICO_DEV_DATA_DIR:-data}
LOGS=${PORTICO_DEV_LOG_DIR:-logs}
GATEWAY_PORT=$BASE USER1_PORT=$((BASE + 1)) AUTH_PORT=$((BASE + 2)) USER2_PORT=$((BASE + 3))
mkdir -p "$DATA" "$LOGS"

PROFILE=${PORTICO_DEV_PROFILE:-debug}
# PORTICO_DEV_SKIP_BUILD=1 runs the binaries already in target/ (a caller
# that built them, e.g. the test command, saves a cargo invocation).
if [ "${PORTICO_DEV_SKIP_BUILD:-0}" = 1 ]; then
    echo "==> using the $PROFILE binaries already built"
elif [ "$PROFILE" = release ]; then
    echo "==> building ($PROFILE)"
    cargo build --bins --locked --release
else
    echo "==> building ($PROFILE)"
    cargo build --bins --locked
fi

pids=()
# shellcheck disable=SC2317  # reached through the EXIT trap
stop_all() {
    trap - INT TERM EXIT
    if [ ${#pids[@]} -gt 0 ]; then
        echo
        echo "==> stopping (SIGTERM, waiting for in-flight requests)"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    echo "==> stopped"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# GET a path on an admin port with bash's /dev/tcp (no curl needed): 200?
answers_200() {
    local port=$1 path=$2 status
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    IFS= read -r -t 2 status <&3 || status=""
    exec 3<&- 3>&-
    [[ $status == *" 200 "* ]]
}

# wait_for NAME ADMIN_PORT PID PATH: /healthz = serving (migrations done),
# /readyz = ready (its dependencies are usable too).
wait_for() {
    local name=$1 port=$2 pid=$3 path=$4
    for _ in $(seq 1 300); do
        if answers_200 "$port" "$path"; then
            echo "    $name ${path#/} ok (admin :$port)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "!!! $name exited during startup; see $LOGS/$name.log" >&2
            tail -n 20 "$LOGS/$name.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "!!! $name not answering on $path after 30 s; see $LOGS/$name.log" >&2
    exit 1
}

# start NAME BINARY ADMIN_PORT WAIT_PATH ENV...
start() {
    local name=$1 binary=$2 admin_port=$3 path=$4
    shift 4
    env "$@" "target/$PROFILE/$binary" >"$LOGS/$name.log" 2>&1 &
    pids+=($!)
    echo "$!" >"$LOGS/$name.pid"
    wait_for "$name" "$admin_port" "$!" "$path"
}

echo "==> starting services (logs in $LOGS/)"
# Where each service finds the others comes from deploy/topology.toml (the
# same wiring compose and Kubernetes are checked against): here one auth
# and two user replicas on loopback.
wiring() {
    python3 scripts/topology.py env "$1" --url "auth=http://127.0.0.1:$AUTH_PORT" \
        --replicas "user=http://127.0.0.1:$USER1_PORT,http://127.0.0.1:$USER2_PORT"
}
# (Assignments first, so that a failing wiring stops the script under set -e.)
wiring_text=$(wiring user) && mapfile -t user_wiring <<<"$wiring_text"
wiring_text=$(wiring auth) && mapfile -t auth_wiring <<<"$wiring_text"
wiring_text=$(wiring gateway) && mapfile -t gateway_wiring <<<"$wiring_text"
# The first user replica creates and migrates the database before the
# second shares the file; the users are ready only once auth serves its keys.
# create_if_missing: this is the local run, where a first start makes the
# databases (in production a missing file is an error).
# The secret the user service signs its events to auth with: made once
# per data directory, readable by this user only.
webhook_secret_file="$DATA/events-webhook.secret"
if [ ! -s "$webhook_secret_file" ]; then
    (umask 077 && echo "whsec_$(head -c 32 /dev/urandom | base64)" >"$webhook_secret_file")
fi
webhook_secret=$(cat "$webhook_secret_file")
for replica in 1 2; do
    port_var=USER${replica}_PORT
    port=${!port_var}
    start "user-$replica" portico-user $((port + 1000)) /healthz \
        PORTICO_USER_EVENTS__SUBSCRIBERS="[{name = \"auth\", url = \"http://127.0.0.1:$AUTH_PORT/internal/events\", secret = \"$webhook_secret\", types = [\"user.deleted\"]}${PORTICO_DEV_EXTRA_SUBSCRIBERS:+, $PORTICO_DEV_EXTRA_SUBSCRIBERS}]" \
        PORTICO_USER_LISTEN__API="127.0.0.1:$port" PORTICO_USER_LISTEN__ADMIN="127.0.0.1:$((port + 1000))" \
        PORTICO_USER_DATABASE__URL="sqlite://$DATA/user.db" PORTICO_USER_DATABASE__CREATE_IF_MISSING=true \
        "${user_wiring[@]}"
done
# The key-encryption key that seals auth's signing keys: made once per data
# directory, readable by this user only (production passes a managed secret).
kek="$DATA/auth-signing.kek"
if [ ! -s "$kek" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$kek")
fi
start auth portico-auth $((AUTH_PORT + 1000)) /readyz \
    PORTICO_AUTH_LISTEN__API="127.0.0.1:$AUTH_PORT" PORTICO_AUTH_LISTEN__ADMIN="127.0.0.1:$((AUTH_PORT + 1000))" \
    PORTICO_AUTH_DATABASE__URL="sqlite://$DATA/auth.db" PORTICO_AUTH_DATABASE__CREATE_IF_MISSING=true \
    PORTICO_AUTH_SIGNING_KEYS__ENCRYPTION_KEY_FILE="$kek" \
    PORTICO_AUTH_MAIL__FILE_DIR="$DATA/mail" \
    PORTICO_AUTH_EVENTS__SECRETS="[\"$webhook_secret\"]" \
    "${auth_wiring[@]}"
for replica in 1 2; do
    port_var=USER${replica}_PORT
    wait_for "user-$replica" $((${!port_var} + 1000)) "${pids[$((replica - 1))]}" /readyz
done
start gateway portico-gateway $((GATEWAY_PORT + 1000)) /readyz \
    PORTICO_GATEWAY_LISTEN__API="127.0.0.1:$GATEWAY_PORT" PORTICO_GATEWAY_LISTEN__ADMIN="127.0.0.1:$((GATEWAY_PORT + 1000))" \
    "${gateway_wiring[@]}"

echo
echo "Portico is up: http://127.0.0.1:$GATEWAY_PORT  (API reference: http://127.0.0.1:$GATEWAY_PORT/docs)"
echo "Press Ctrl-C to stop."
# Wake on Ctrl-C or when any service exits.
wait -n "${pids[@]}" || true
echo "!!! a service exited; stopping the rest" >&2
exit 1
