#!/usr/bin/env bash
# Contract test: runs the whole system (scripts/dev.sh on SQLite in a temp
# dir, on free ports) and lets schemathesis check every operation of the
# gateway's public OpenAPI document against what the services really answer
# (status codes, content types, bodies, and that schema-valid requests are
# accepted). Installs a pinned schemathesis into target/tools on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/test-services.sh
source scripts/lib/test-services.sh

SCHEMATHESIS_VERSION=4.32.5
VENV=target/tools/schemathesis-$SCHEMATHESIS_VERSION
if [ ! -x "$VENV/bin/schemathesis" ]; then
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || { echo "!!! python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
# A free block of four ports (and the admin ones 1000 above).
base=$(portico_free_port_block)
[ -n "$base" ] || { echo "!!! no free port block" >&2; exit 1; }

PORTICO_DEV_BASE_PORT=$base PORTICO_DEV_DATA_DIR="$work/data" PORTICO_DEV_LOG_DIR="$work/logs" \
    bash scripts/dev.sh >"$work/dev.log" 2>&1 &
dev_pid=$!
cleanup() {
    kill -TERM "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 600); do
    grep -q "Portico is up" "$work/dev.log" && break
    if ! kill -0 "$dev_pid" 2>/dev/null; then
        echo "!!! the system did not start:" >&2
        cat "$work/dev.log" >&2
        tail -n 20 "$work"/logs/*.log >&2 || true
        exit 1
    fi
    sleep 0.1
done
grep -q "Portico is up" "$work/dev.log" || { echo "!!! system not up after 60 s" >&2; cat "$work/dev.log" >&2; exit 1; }

gateway="http://127.0.0.1:$base"
# A token for the bearer operations, from a new account named by $1:
# registering is never throttled, while by now schemathesis's failed
# sign-ins from this address may have locked it out of logging in.
fresh_token() {
    python3 - "$gateway" "$1" <<'PY'
import json, sys, urllib.request
body = {"email": sys.argv[2], "password": "correct horse battery", "display_name": "Contract"}
request = urllib.request.Request(sys.argv[1] + "/v1/auth/register", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
print(json.load(urllib.request.urlopen(request))["access_token"])
PY
}
token=$(fresh_token contract@example.com)

# The merged document must describe every public operation: an upstream
# whose document could not be fetched would silently shrink what
# schemathesis checks.
python3 - "$gateway" <<'PY' || exit 1
import json, sys, urllib.request
document = json.load(urllib.request.urlopen(sys.argv[1] + "/openapi.json"))
expected = {
    ("post", "/v1/auth/register"), ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"), ("post", "/v1/auth/logout"),
    ("get", "/.well-known/jwks.json"), ("get", "/.well-known/openid-configuration"),
    ("get", "/v1/users/me"), ("patch", "/v1/users/me"), ("get", "/v1/users/{id}"),
}
present = {(method, path) for path, item in document.get("paths", {}).items() for method in item}
missing = sorted(expected - present)
if missing:
    sys.exit(f"!!! the public document lacks {missing}")
leaked = sorted(path for path in document.get("paths", {}) if path.startswith("/internal"))
if leaked:
    sys.exit(f"!!! the public document exposes {leaked}")
print(f"==> public document: {len(present)} operations, all expected ones present")
PY

# Logout ends the session the token belongs to, and deleting the account
# ends every session: each runs last, on its own token, or every bearer
# operation after it would only ever see 401s.
schemathesis() {
    "$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml run "$gateway/openapi.json" \
        --url "$gateway" --header "Authorization: Bearer $token" \
        --checks all --max-examples 50 --seed 1 --no-color "$@"
}
echo "==> schemathesis against $gateway/openapi.json (all but logout and account deletion)"
schemathesis --exclude-path /v1/auth/logout --exclude-name "DELETE /v1/users/me"
echo "==> schemathesis: account deletion"
token=$(fresh_token contract-delete@example.com)
schemathesis --include-name "DELETE /v1/users/me"
echo "==> schemathesis: logout"
token=$(fresh_token contract-logout@example.com)
schemathesis --include-path /v1/auth/logout
