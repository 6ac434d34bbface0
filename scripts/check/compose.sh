#!/usr/bin/env bash
# The compose path for real: builds the images (binaries from target/debug,
# stripped, copied into the same runtime stage the published images use),
# brings docker-compose.yml up with Docker Compose v2 on a private podman
# engine, waits for health, and runs a user's journey through the published
# gateway port. Then: one user replica stopped (reads keep working), `down`
# and `up` again (the account survives in the volumes), `down -v`.
# Needs root (installs podman & co. on first use); fails loudly otherwise.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

# shellcheck source=scripts/lib/containers.sh
source scripts/lib/containers.sh

step() { printf '[compose] %s\n' "$*"; }

for binary in portico-gateway portico-user portico-auth; do
    [[ -x target/debug/$binary ]] || {
        echo "!!! target/debug/$binary missing: build first (cargo build --workspace --bins)" >&2
        exit 1
    }
done

work=$(mktemp -d "${PORTICO_TEST_TMPDIR:-/tmp}/portico-compose.XXXXXX")
project=portico-ci-$$
compose() {
    "$PORTICO_COMPOSE" --project-name "$project" --env-file "$work/.env" \
        -f docker-compose.yml -f "$work/admin-port.yml" "$@"
}
cleanup() {
    local rc=$?
    if ((rc != 0)) && [[ -f $work/.env ]] && [[ -n ${PORTICO_COMPOSE:-} ]]; then
        echo "!!! compose check failed; state and last log lines:" >&2
        compose ps --all >&2 2>&1 || true
        compose logs --no-color --tail 30 >&2 2>&1 || true
    fi
    if [[ -f $work/.env ]] && [[ -n ${PORTICO_COMPOSE:-} ]]; then
        compose down -v --timeout 3 >/dev/null 2>&1 || true
    fi
    portico_engine_stop
    rm -rf -- "$work"
    return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "compose config, every profile, with .env.example"
portico_compose_install
for profile in "" observability; do
    "$PORTICO_COMPOSE" --project-directory . --env-file .env.example ${profile:+--profile "$profile"} \
        config --quiet
done
# The same check must refuse a broken file: a service key compose does not know.
sed 's/^  gateway:$/  gateway:\n    restrat: always/' docker-compose.yml >"$work/broken-compose.yml"
if "$PORTICO_COMPOSE" --project-directory . --env-file .env.example -f "$work/broken-compose.yml" \
    config --quiet 2>/dev/null; then
    echo "!!! compose config accepted a compose file with an unknown key" >&2
    exit 1
fi

step "engine"
portico_engine_start
portico_base_images

step "binaries (stripped debug builds) into target/image-bins"
mkdir -p target/image-bins
for binary in portico-gateway portico-user portico-auth; do
    objcopy --strip-debug "target/debug/$binary" "target/image-bins/$binary.tmp"
    mv "target/image-bins/$binary.tmp" "target/image-bins/$binary"
done

port=$(_portico_free_port)
admin_port=$(_portico_free_port)
# For the test only: the gateway's admin listener on loopback too, to see
# which user replicas it has found by DNS (GET /config).
printf 'services:\n  gateway:\n    ports:\n      - "127.0.0.1:%s:9080"\n' "$admin_port" \
    >"$work/admin-port.yml"
# Fresh secrets for this run, the way .env.example tells an operator to.
{
    echo "USER_DB_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    echo "AUTH_DB_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    echo "AUTH_SIGNING_KEYS_ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)"
    echo "EVENTS_WEBHOOK_SECRET=whsec_$(head -c 32 /dev/urandom | base64)"
    echo "PORTICO_BINARIES=prebuilt"
    echo "PORTICO_TAG=ci"
    echo "PORTICO_GATEWAY_PUBLISH=127.0.0.1:$port"
} >"$work/.env"

step "up --build --wait (gateway published on 127.0.0.1:$port)"
started=$SECONDS
compose up -d --build --pull never --wait --wait-timeout 240 >"$work/up.log" 2>&1 || {
    tail -n 40 "$work/up.log" >&2
    exit 1
}
step "healthy after $((SECONDS - started)) s"

gateway=http://127.0.0.1:$port
step "journey: register, login, profile read and update, refresh, logout"
python3 scripts/check/compose_journey.py journey "$gateway" "$work/account.json"

step "the gateway found both user replicas by DNS"
python3 scripts/check/compose_journey.py endpoints "http://127.0.0.1:$admin_port" 2

step "stop user-2: reads keep succeeding; the gateway follows DNS to one replica"
compose stop --timeout 3 user-2 >/dev/null 2>&1
python3 scripts/check/compose_journey.py reads "$gateway" "$work/account.json"
python3 scripts/check/compose_journey.py endpoints "http://127.0.0.1:$admin_port" 1

step "down, up again: the account still logs in (named volumes)"
compose down --timeout 3 >/dev/null 2>&1
compose up -d --pull never --wait --wait-timeout 240 >"$work/up2.log" 2>&1 || {
    tail -n 40 "$work/up2.log" >&2
    exit 1
}
python3 scripts/check/compose_journey.py login "$gateway" "$work/account.json"

step "down -v"
compose down -v --timeout 3 >/dev/null 2>&1
step "ok in $SECONDS s"
