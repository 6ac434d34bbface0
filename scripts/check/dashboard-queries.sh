#!/usr/bin/env bash
# Runs every query of the Grafana dashboard against real metrics.
#
# Starts the whole system from the binaries already in target/ (scripts/dev.sh
# with PORTICO_DEV_SKIP_BUILD=1: this script never runs cargo) on SQLite in a
# temp dir, on free ports; sends traffic through the gateway that makes every
# metric the dashboard shows (sign-ups, sign-ins good, bad and throttled,
# profile reads and writes, refresh and the reuse of a rotated refresh
# token, logout, a service token and a wrong client secret, a key rotation,
# 404s, a sign-in burst that saturates password hashing, and an upstream
# that fails: a refused connection, a connection dropped mid-request, a
# timeout, and a canary release of that upstream judged through
# Prometheus by scripts/ci/canary.py); starts a real Prometheus (Debian's `prometheus`) on a free
# 127.0.0.1 port with a temp storage dir, scraping the four admin ports
# every second and evaluating deploy/prometheus/alerts.yml; waits until the
# traffic has been scraped; then runs each panel's expression through
# /api/v1/query (Grafana's $__rate_interval as 1m, template variables as
# .*), and each template variable's label_values(), and fails listing every
# query that returns no data. Every alert rule
# must also evaluate without error. Everything it started is stopped, and
# its temp dir removed, on exit.
#
# Queries on metrics listed in PENDING_METRICS that no service exports yet
# are reported apart, as PENDING: they are expected to fail until the
# services export those metrics. Exit status: 0 every query returned data;
# 3 only PENDING ones did not; 1 anything else failed. Once a metric is
# exported, its queries are checked like any other.
#
# So that the traffic can reach every metric, the run changes a few
# settings (all through the services' own configuration keys): auth's
# refresh-token grace window is 0 (a reuse revokes at once), password
# hashing takes one at a time with a 1 ms queue (a burst of sign-ins gets
# 503s), auth knows a service client `probe` and a bootstrap admin, and
# the gateway has one more upstream, `probe` (/v1/probe → a local stand-in
# that answers, drops the connection or is slow, plus a port that refuses
# connections), with a breaker that opens on one failure and a rate limit
# on its route.
#
# Env: PORTICO_DEV_PROFILE (debug) picks the binaries;
# PORTICO_CHECK_DEADLINE_SECS (60) bounds each wait.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

# shellcheck source-path=SCRIPTDIR/../..
source scripts/lib/tools.sh

# Metrics the dashboard uses that binaries built before they were added
# (with this dashboard) do not export.
PENDING_METRICS=(
    auth_audit_events_total
    auth_password_hashes_in_flight
    auth_password_hash_queue_seconds
    auth_password_hash_rejected_total
    gateway_upstream_endpoint_ejected
    db_pool_connections
    db_pool_max_connections
    token_jwks_refreshes_total
)

DASHBOARD=deploy/grafana/dashboards/portico.json
RULES=deploy/prometheus/alerts.yml
PROFILE=${PORTICO_DEV_PROFILE:-debug}
DEADLINE=${PORTICO_CHECK_DEADLINE_SECS:-60}
started_at=$SECONDS

log() { printf '==> [%3ds] %s\n' $((SECONDS - started_at)) "$*"; }
die() {
    printf '!!! %s\n' "$*" >&2
    exit 1
}

for binary in portico-gateway portico-user portico-auth; do
    [[ -x target/$PROFILE/$binary ]] ||
        die "target/$PROFILE/$binary is missing: build the binaries first (cargo build --bins --locked)"
done
portico_apt_command prometheus prometheus

work=$(mktemp -d)
dev_pid="" probe_pid="" prometheus_pid="" canary_load_pid=""
# The services' last log lines help when starting or the traffic failed,
# not when a query found no data.
show_logs=1
# Both only run from the EXIT trap (shellcheck 0.9 cannot tell).
# shellcheck disable=SC2317
stop() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317
cleanup() {
    local rc=$?
    trap - EXIT
    if ((rc != 0 && show_logs)) && [[ -d $work/logs ]]; then
        printf -- '----- last lines of the service logs -----\n' >&2
        tail -n 5 "$work"/logs/*.log >&2 2>/dev/null || true
        tail -n 5 "$work/prometheus.log" "$work/probe.log" >&2 2>/dev/null || true
    fi
    stop "$canary_load_pid"
    stop "$prometheus_pid"
    stop "$dev_pid"
    stop "$probe_pid"
    rm -rf -- "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# The `probe` upstream: a stand-in on a port of its own (written to a file,
# so there is no race for it) and a second port it holds bound without
# listening, so connections to it are refused.
# ---------------------------------------------------------------------------
python3 - "$work/probe.ports" >"$work/probe.log" 2>&1 <<'PY' &
import http.server, os, socket, sys, time

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        try:
            if self.path.startswith("/v1/probe/drop"):
                # Read the request, then close without a word: a failure
                # after the request was sent.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if self.path.startswith("/v1/probe/slow"):
                time.sleep(2)
            body = b'{"probe":"ok"}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
refusing = socket.socket()
refusing.bind(("127.0.0.1", 0))
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(f"{server.server_address[1]} {refusing.getsockname()[1]}\n")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
PY
probe_pid=$!

wait_for_file() {
    local file=$1 pid=$2 what=$3 deadline=$((SECONDS + DEADLINE))
    until [[ -s $file ]]; do
        kill -0 "$pid" 2>/dev/null || die "$what exited"
        ((SECONDS < deadline)) || die "$what not up after ${DEADLINE}s"
        sleep 0.1
    done
}
wait_for_file "$work/probe.ports" "$probe_pid" "the probe upstream"
read -r probe_port refused_port <"$work/probe.ports"

# The gateway's routes: the built-in three (services/gateway/config/
# defaults.toml) and /v1/probe. A config file replaces the routes array.
cat >"$work/gateway.toml" <<EOF
[upstreams.probe]
endpoints = ["http://127.0.0.1:$probe_port", "http://127.0.0.1:$refused_port"]
# One failed request in the window opens a breaker: the refusing port's
# opens at its first refusal (the stand-in's stays closed: at most 3 of its
# 7 answers fail).
breaker = { min_requests = 1, error_percent = 50 }

[[routes]]
path_prefix = "/v1/auth"
upstream = "auth"
timeout_ms = 15000
require_auth = false

[[routes]]
path_prefix = "/.well-known"
upstream = "auth"
timeout_ms = 5000
require_auth = false

[[routes]]
path_prefix = "/v1/users"
upstream = "user"
timeout_ms = 15000
require_auth = true

[[routes]]
path_prefix = "/v1/probe"
upstream = "probe"
timeout_ms = 500
require_auth = false
rate_limit = { key = "client_ip", rate = 1000, period_ms = 1000 }
EOF

# ---------------------------------------------------------------------------
# The system.
# ---------------------------------------------------------------------------
base=$(portico_free_port_block)
[[ -n $base ]] || die "no free block of ports"
client_secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
client_digest=$(printf %s "$client_secret" | sha256sum | cut -d' ' -f1)

log "starting Portico from target/$PROFILE on 127.0.0.1:$base (admin $((base + 1000))-$((base + 1003)))"
PORTICO_DEV_SKIP_BUILD=1 PORTICO_DEV_PROFILE=$PROFILE PORTICO_DEV_BASE_PORT=$base \
    PORTICO_DEV_DATA_DIR="$work/data" PORTICO_DEV_LOG_DIR="$work/logs" \
    PORTICO_GATEWAY_CONFIG_FILE="$work/gateway.toml" \
    PORTICO_AUTH_TOKENS__REFRESH_REUSE_GRACE_SECS=0 \
    PORTICO_AUTH_PASSWORD_HASHING__MAX_CONCURRENT=1 \
    PORTICO_AUTH_PASSWORD_HASHING__QUEUE_TIMEOUT_MS=1 \
    PORTICO_AUTH_ADMIN__BOOTSTRAP_EMAIL=ops@example.com \
    PORTICO_AUTH_SERVICE_CLIENTS__PROBE__SECRET_SHA256="$client_digest" \
    PORTICO_AUTH_SERVICE_CLIENTS__PROBE__AUDIENCES='["portico-user"]' \
    PORTICO_AUTH_SERVICE_CLIENTS__PROBE__SCOPES='["users:write"]' \
    bash scripts/dev.sh >"$work/dev.log" 2>&1 &
dev_pid=$!

deadline=$((SECONDS + DEADLINE))
until grep -q "Portico is up" "$work/dev.log"; do
    if ! kill -0 "$dev_pid" 2>/dev/null; then
        cat "$work/dev.log" >&2
        die "the system did not start"
    fi
    ((SECONDS < deadline)) || {
        cat "$work/dev.log" >&2
        die "the system is not up after ${DEADLINE}s"
    }
    sleep 0.1
done
log "Portico is up"

# ---------------------------------------------------------------------------
# Prometheus: every second, the four admin ports, the alert rules.
# ---------------------------------------------------------------------------
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/$RULES
scrape_configs:
  - job_name: gateway
    static_configs:
      - targets: ["127.0.0.1:$((base + 1000))"]
  - job_name: user
    static_configs:
      - targets: ["127.0.0.1:$((base + 1001))", "127.0.0.1:$((base + 1003))"]
  - job_name: auth
    static_configs:
      - targets: ["127.0.0.1:$((base + 1002))"]
EOF
# A free port can be taken before Prometheus binds it: try a few.
for attempt in 1 2 3; do
    prometheus_port=$(_portico_free_port) || die "no free port for Prometheus"
    prometheus \
        --config.file="$work/prometheus.yml" \
        --storage.tsdb.path="$work/tsdb" \
        --web.listen-address="127.0.0.1:$prometheus_port" \
        --log.level=warn >"$work/prometheus.log" 2>&1 &
    prometheus_pid=$!
    deadline=$((SECONDS + DEADLINE))
    until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
        "http://127.0.0.1:$prometheus_port/-/ready" 2>/dev/null; do
        kill -0 "$prometheus_pid" 2>/dev/null || break
        ((SECONDS < deadline)) || die "Prometheus not ready after ${DEADLINE}s"
        sleep 0.2
    done
    kill -0 "$prometheus_pid" 2>/dev/null && break
    wait "$prometheus_pid" 2>/dev/null || true
    prometheus_pid=""
    grep -q 'address already in use' "$work/prometheus.log" || {
        cat "$work/prometheus.log" >&2
        die "Prometheus did not start"
    }
    log "Prometheus port $prometheus_port was taken (attempt $attempt)"
done
[[ -n $prometheus_pid ]] || die "Prometheus did not start"
api="http://127.0.0.1:$prometheus_port/api/v1"
log "Prometheus on 127.0.0.1:$prometheus_port"

# query EXPR: prints the first value of an instant query (empty if none).
query() {
    python3 - "$api" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
try:
    result = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
except Exception:
    result = []
print(result[0]["value"][1] if result else "")
PY
}

deadline=$((SECONDS + DEADLINE))
until [[ $(query 'count(up{job=~"gateway|user|auth"} == 1)') == 4 ]]; do
    ((SECONDS < deadline)) || die "Prometheus does not see the four targets up after ${DEADLINE}s"
    sleep 0.2
done
log "all four targets scraped"

# ---------------------------------------------------------------------------
# Traffic through the gateway; every answer is checked.
# ---------------------------------------------------------------------------
log "traffic through the gateway"
python3 - "http://127.0.0.1:$base" "$client_secret" <<'PY'
import base64, json, sys, threading, urllib.error, urllib.parse, urllib.request

gateway, client_secret = sys.argv[1], sys.argv[2]
wrong = []

def call(method, path, body=None, token=None, form=None, expect=None, if_match=None):
    headers = {}
    if if_match is not None:
        headers["if-match"] = if_match
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
    if token:
        headers["authorization"] = "Bearer " + token
    request = urllib.request.Request(gateway + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    if expect is not None and status not in (expect if isinstance(expect, tuple) else (expect,)):
        wrong.append(f"{method} {path}: {status}, expected {expect}: {raw[:200]!r}")
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, {}

password = "vellum otter quarry"
def account(email):
    return {"email": email, "password": password, "display_name": email.split("@")[0]}

# Sign-up, profile reads (spread over both user replicas) and a write.
_, alice = call("POST", "/v1/auth/register", account("alice@example.com"), expect=201)
for _ in range(4):
    call("GET", "/v1/users/me", token=alice.get("access_token"), expect=200)
call("PATCH", "/v1/users/me", {"display_name": "Alice A"}, token=alice.get("access_token"), expect=200, if_match="*")

# Sign-ins: wrong password, right one; refresh; the spent token again
# (grace 0: reuse, the session is revoked, its successor too).
call("POST", "/v1/auth/login", {"email": "alice@example.com", "password": "not her password"}, expect=401)
_, first = call("POST", "/v1/auth/login", {"email": "alice@example.com", "password": password}, expect=200)
_, second = call("POST", "/v1/auth/refresh", {"refresh_token": first.get("refresh_token")}, expect=200)
call("POST", "/v1/auth/refresh", {"refresh_token": first.get("refresh_token")}, expect=401)
call("POST", "/v1/auth/refresh", {"refresh_token": second.get("refresh_token")}, expect=401)

# Logout.
_, third = call("POST", "/v1/auth/login", {"email": "alice@example.com", "password": password}, expect=200)
call("POST", "/v1/auth/logout", token=third.get("access_token"), expect=204)

# 404s: one the gateway answers, one auth answers.
call("GET", "/no/such/route", expect=404)
call("GET", "/v1/auth/no-such-operation", expect=404)

# Guessing: failures on one account from one address until it is throttled.
statuses = [call("POST", "/v1/auth/login", {"email": "mallory@example.com", "password": "guess guess guess"})[0]
            for _ in range(10)]
if 429 not in statuses:
    wrong.append(f"no 429 after 10 failed sign-ins: {statuses}")

# Service clients: a token, then a wrong secret.
call("POST", "/v1/auth/token", form={"grant_type": "client_credentials", "client_id": "probe",
                                     "client_secret": client_secret}, expect=200)
call("POST", "/v1/auth/token", form={"grant_type": "client_credentials", "client_id": "probe",
                                     "client_secret": "wrong"}, expect=401)

# An admin rotates the signing keys.
call("POST", "/v1/auth/register", account("ops@example.com"), expect=201)
_, ops = call("POST", "/v1/auth/login", {"email": "ops@example.com", "password": password}, expect=200)
call("POST", "/v1/auth/admin/keys/rotate", token=ops.get("access_token"), expect=202)

# Public documents.
call("GET", "/.well-known/jwks.json", expect=200)
call("GET", "/.well-known/openid-configuration", expect=200)
call("GET", "/openapi.json", expect=200)

# A burst of sign-ins against one hashing slot with a 1 ms queue. Distinct
# accounts: checks of one account's password take turns before hashing.
burst, accounts = [], [f"burst-{i}@example.com" for i in range(8)]
for email in accounts:
    call("POST", "/v1/auth/register", account(email), expect=201)
ready = threading.Barrier(len(accounts))
def sign_in(email):
    ready.wait()
    burst.append(call("POST", "/v1/auth/login", {"email": email, "password": password})[0])
threads = [threading.Thread(target=sign_in, args=(email,)) for email in accounts]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
if 503 not in burst or set(burst) - {200, 503}:
    wrong.append(f"sign-in burst: expected 503s (hashing busy) besides 200s, got {sorted(burst)}")

# The probe upstream: answers (one replica refuses connections), a
# connection dropped mid-request (then the refusing one: 502), too slow (504).
for _ in range(4):
    call("GET", "/v1/probe/ok", expect=200)
for _ in range(2):
    call("GET", "/v1/probe/drop", expect=502)
call("GET", "/v1/probe/slow", expect=504)

if wrong:
    print("!!! unexpected answers:", *wrong, sep="\n    ", file=sys.stderr)
    sys.exit(1)
PY

# ---------------------------------------------------------------------------
# A canary release of the probe upstream, judged through this Prometheus as
# scripts/ci/canary.sh judges one in a cluster (the canary group is the
# healthy stand-in alone: it must pass every step), then restored. It also
# gives the dashboard's release panels their data.
# ---------------------------------------------------------------------------
log "a canary of the probe upstream (scripts/ci/canary.py, judged by Prometheus)"
python3 - "http://127.0.0.1:$base/v1/probe/ok" >/dev/null 2>&1 <<'PY' &
import sys, time, urllib.request
# Anonymous and cookie-less: each request falls in a group afresh. Bounded
# in time whatever happens to the script.
end = time.monotonic() + 90
while time.monotonic() < end:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2).read()
    except Exception:
        pass
    time.sleep(0.02)
PY
canary_load_pid=$!
canary_args=(--traffic-file "$work/gateway.toml" --prometheus "http://127.0.0.1:$prometheus_port"
    --service probe --settle-timeout "$DEADLINE")
python3 scripts/ci/canary.py run "${canary_args[@]}" --canary-endpoints "http://127.0.0.1:$probe_port" \
    --steps 50,100 --interval 3 --min-requests 20 --max-error-ratio 0.05 ||
    die "a canary of the healthy probe stand-in was rolled back"
python3 scripts/ci/canary.py restore "${canary_args[@]}" || die "the canary's traffic file was not restored"
stop "$canary_load_pid"
canary_load_pid=""
traffic_done=$(date +%s.%N)

# Two scrapes of every target after the traffic: rates over 1m need two
# samples of a series, and some series were born during the traffic.
deadline=$((SECONDS + DEADLINE))
while :; do
    oldest=$(query 'min(timestamp(up{job=~"gateway|user|auth"}))')
    if [[ -n $oldest ]] && python3 -c 'import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]) + 2.2)' \
        "$oldest" "$traffic_done"; then
        break
    fi
    ((SECONDS < deadline)) || die "Prometheus has not scraped the traffic after ${DEADLINE}s"
    sleep 0.2
done
log "traffic scraped"

# ---------------------------------------------------------------------------
# Every dashboard query, and the health of every alert rule.
# ---------------------------------------------------------------------------
log "running the dashboard's queries"
show_logs=0
rc=0
python3 - "$api" "$DASHBOARD" "${PENDING_METRICS[@]}" <<'PY' || rc=$?
import json, re, sys, urllib.error, urllib.parse, urllib.request

api, dashboard_path, pending = sys.argv[1], sys.argv[2], sys.argv[3:]

def get(path, **params):
    url = api + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        return json.load(err)

def grafana_to_promql(expr):
    # Grafana's interval variables to a fixed window, template variables
    # (used as regex matchers, allValue ".*") to ".*".
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "1m", expr)
    expr = re.sub(r"\$\{\w+(:\w+)?\}|\[\[\w+\]\]|\$\w+", ".*", expr)
    return expr

exported = set(get("/label/__name__/values").get("data", []))
def missing_pending(expr):
    return [name for name in pending
            if re.search(rf"\b{name}(_bucket|_sum|_count)?\b", expr)
            and not any(m in exported for m in (name, name + "_bucket", name + "_count", name + "_sum"))]

def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))

dashboard = json.load(open(dashboard_path))
passed, failed, waiting = [], [], []
for panel in panels(dashboard["panels"]):
    for target in panel.get("targets", []):
        raw = target.get("expr", "")
        expr = grafana_to_promql(raw)
        name = f"{panel['title']!r} [{target.get('refId')}]"
        answer = get("/query", query=expr)
        if answer.get("status") != "success":
            failed.append((name, expr, "query error: " + answer.get("error", "?")))
            continue
        series = answer["data"]["result"]
        if series:
            passed.append((name, len(series)))
        elif missing_pending(expr):
            waiting.append((name, expr, ", ".join(missing_pending(expr))))
        else:
            failed.append((name, expr, "no data"))

# Template variables: label_values(SELECTOR, LABEL) must list something.
for variable in dashboard.get("templating", {}).get("list", []):
    query = variable.get("query")
    query = query.get("query", "") if isinstance(query, dict) else query or ""
    match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", query)
    if variable.get("type") != "query":
        continue
    name = f"variable ${variable.get('name')}"
    if not match:
        failed.append((name, query, "not a label_values(selector, label) query"))
        continue
    expr = grafana_to_promql(f"count by ({match.group(2)}) ({match.group(1)})")
    answer = get("/query", query=expr)
    series = answer.get("data", {}).get("result", []) if answer.get("status") == "success" else []
    if series:
        passed.append((name, len(series)))
    elif missing_pending(expr):
        waiting.append((name, expr, ", ".join(missing_pending(expr))))
    else:
        failed.append((name, expr, answer.get("error") or "no values"))

for name, count in passed:
    print(f"    PASS     {name}: {count} series")
for name, expr, names in waiting:
    print(f"    PENDING  {name}: no data; not exported yet: {names}\n             {expr}")
for name, expr, why in failed:
    print(f"    FAIL     {name}: {why}\n             {expr}")

rules = get("/rules").get("data", {}).get("groups", [])
broken = [(r["name"], r.get("lastError", "")) for g in rules for r in g["rules"] if r.get("health") != "ok"]
active = sorted({f"{r['name']} ({r['state']})" for g in rules for r in g["rules"]
                 if r.get("type") == "alerting" and r.get("state") != "inactive"})
count = sum(len(g["rules"]) for g in rules)
print(f"    alert rules: {count} loaded, {count - len(broken)} evaluate cleanly"
      + (f"; active now: {', '.join(active)}" if active else ""))
for name, error in broken:
    print(f"    FAIL     rule {name}: {error}")

total = len(passed) + len(waiting) + len(failed)
print(f"\n    {total} queries (panels and variables): {len(passed)} pass, {len(failed)} fail,"
      f" {len(waiting)} pending on metrics not exported yet")
if waiting:
    print(f"    pending metrics: {', '.join(sorted({n for _, _, ns in waiting for n in ns.split(', ')}))}")
if failed or broken or count == 0:
    sys.exit(1)
if waiting:
    sys.exit(3)
PY
if ((rc == 0)); then
    log "every dashboard query returned data"
elif ((rc == 3)); then
    log "FAILED: only queries on metrics not exported yet returned no data (PENDING above)"
else
    log "FAILED: see FAIL above"
fi
exit "$rc"
