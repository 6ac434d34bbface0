#!/usr/bin/env bash
# The one command that runs all Portico checks and tests:
#   fmt check, clippy (warnings are errors), build binaries, test suite.
# Starts throwaway PostgreSQL and Redis servers unless PORTICO_TEST_POSTGRES_URL
# / PORTICO_TEST_REDIS_URL are already set. Extra arguments go to the test
# runner (cargo nextest run / cargo test), e.g. `scripts/test.sh -p auth`.
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/test-services.sh
source scripts/lib/test-services.sh

START=$SECONDS
CURRENT="startup"
section() {
    CURRENT=$*
    printf '\n==> [%4ds] %s\n' "$((SECONDS - START))" "$*"
}

# Always stop the servers we started, and say which step failed.
on_exit() {
    local rc=$?
    portico_stop_test_services
    if ((rc != 0)); then
        printf '\n==> [%4ds] FAILED in step "%s" (exit %d)\n' \
            "$((SECONDS - START))" "$CURRENT" "$rc" >&2
    fi
    return "$rc"
}
trap on_exit EXIT
# Turning Ctrl-C / kill into a normal exit makes bash run the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

section "test services"
portico_ensure_tools
portico_ensure_postgres
portico_ensure_redis
portico_ensure_smtp_server
printf 'PORTICO_TEST_POSTGRES_URL=%s\n' "$PORTICO_TEST_POSTGRES_URL"
printf 'PORTICO_TEST_REDIS_URL=%s\n' "$PORTICO_TEST_REDIS_URL"

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The end-to-end tests spawn the service binaries from target/debug, so they
# must be built (and current) before the tests run.
section "cargo build (binaries)"
cargo build --workspace --bins --locked

if cargo nextest --version >/dev/null 2>&1; then
    section "cargo nextest run"
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    section "cargo test (cargo-nextest not installed)"
    cargo test --workspace --locked --no-fail-fast "$@"
fi

# The public OpenAPI document against the running system.
section "contract test (schemathesis)"
# The binaries were built above: the local run need not build again.
PORTICO_DEV_SKIP_BUILD=1 bash scripts/contract-test.sh

# The deployment files, each check failing on a broken file (scripts/check/).
section "deployment lint (actionlint, shellcheck, hadolint)"
bash scripts/check/lint.sh

section "release tooling unit tests (scripts/ci/test_*.py)"
PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s scripts/ci -p 'test_*.py'

section "kubernetes manifests (kustomize, schema, checkov)"
bash scripts/check/kubernetes.sh

section "deployment files agree with deploy/topology.toml and the services' config"
bash scripts/check/topology.sh

section "prometheus rules and dashboard (promtool check/test rules)"
bash scripts/check/prometheus-rules.sh

section "a real Prometheus scrapes the running system; every dashboard query has data"
bash scripts/check/dashboard-queries.sh

section "docker compose for real (images, up, journey, failover, volumes)"
bash scripts/check/compose.sh

section "all checks passed"
