#!/usr/bin/env bash
# Static checks of the observability files, no running system needed:
#
#   - promtool check rules / test rules on deploy/prometheus/alerts.yml and
#     its unit tests (deploy/prometheus/alerts.test.yml);
#   - every alert has a `for:`, a severity, summary and description
#     annotations, and a runbook_url whose anchor is a heading of
#     docs/operations.md; the unit tests cover every alert, firing and quiet;
#   - promtool check config on deploy/prometheus/prometheus.yml;
#   - deploy/grafana/dashboards/portico.json parses, and every panel queries
#     the datasource with uid `prometheus` with at least one expression;
#   - self-tests on temp copies: a rule file with a broken expression and a
#     changed threshold must be rejected, and so must a dashboard panel
#     without a datasource — proving the checks above can fail.
#
# Installs Debian's `prometheus` package (promtool) when missing. Runs from
# any directory. The queries themselves are run against real metrics by
# scripts/check/dashboard-queries.sh.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

# shellcheck source-path=SCRIPTDIR/../..
source scripts/lib/tools.sh

portico_apt_command promtool prometheus

RULES=deploy/prometheus/alerts.yml
TESTS=deploy/prometheus/alerts.test.yml
CONFIG=deploy/prometheus/prometheus.yml
DASHBOARD=deploy/grafana/dashboards/portico.json
RUNBOOK=docs/operations.md

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

failures=0
fail() {
    printf '!!! %s\n' "$*" >&2
    failures=$((failures + 1))
}

# Python with PyYAML for the structural checks: the system's if it has it,
# else a pinned venv in target/tools.
python=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
    python=$(portico_pip_tool pyyaml-6.0.2 'pyyaml==6.0.2')/python
fi

echo "==> promtool check rules $RULES"
promtool check rules "$RULES" || fail "promtool check rules $RULES"

echo "==> promtool test rules $TESTS"
promtool test rules "$TESTS" || fail "promtool test rules $TESTS"

echo "==> alerts: for, severity, annotations, runbook anchors, test coverage"
"$python" - "$RULES" "$TESTS" "$RUNBOOK" <<'PY' || fail "alert structure (see above)"
import re, sys, yaml

rules_path, tests_path, runbook_path = sys.argv[1:]
rules = yaml.safe_load(open(rules_path))
tests = yaml.safe_load(open(tests_path))

# GitHub's heading anchors: lower case, punctuation other than - and _
# dropped, spaces to hyphens (outside fenced code blocks).
anchors, fenced = set(), False
for line in open(runbook_path, encoding="utf-8"):
    if line.startswith("```"):
        fenced = not fenced
    elif not fenced and re.match(r"#{1,6} ", line):
        text = line.lstrip("#").strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))

problems, alerts = [], set()
for group in rules["groups"]:
    for rule in group["rules"]:
        name = rule.get("alert")
        if not name:
            continue
        alerts.add(name)
        where = f"{group['name']}/{name}"
        if "for" not in rule:
            problems.append(f"{where}: no `for:`")
        if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
            problems.append(f"{where}: severity must be warning or critical")
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not annotations.get(key):
                problems.append(f"{where}: no {key} annotation")
        url = annotations.get("runbook_url", "")
        if not url.startswith(runbook_path + "#"):
            problems.append(f"{where}: runbook_url {url!r} does not point into {runbook_path}")
        elif url.split("#", 1)[1] not in anchors:
            problems.append(f"{where}: {runbook_path} has no heading with anchor #{url.split('#', 1)[1]}")

fired, quiet = set(), set()
for case in tests["tests"]:
    for check in case.get("alert_rule_test", []):
        (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
for name in sorted(alerts - fired):
    problems.append(f"{tests_path}: no case where {name} fires")
for name in sorted(alerts - quiet):
    problems.append(f"{tests_path}: no case where {name} must stay quiet")
for name in sorted((fired | quiet) - alerts):
    problems.append(f"{tests_path}: tests an alert that does not exist: {name}")

for problem in problems:
    print("    " + problem, file=sys.stderr)
print(f"    {len(alerts)} alerts, each with a runbook section and fire/quiet tests"
      if not problems else f"    {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY

echo "==> promtool check config $CONFIG"
# promtool does not resolve scrape targets today; should a version do so,
# the compose service names (gateway, user-1…) do not resolve outside the
# compose network: then check a copy with every target on 127.0.0.1.
if ! promtool check config "$CONFIG" >"$work/check-config.log" 2>&1; then
    cat "$work/check-config.log"
    if grep -qiE 'no such host|lookup |name resolution' "$work/check-config.log"; then
        echo "    failed only on names that resolve inside compose; checking a copy with the targets on 127.0.0.1"
        cp "$RULES" "$work/"
        sed -E 's/"[a-z0-9-]+:([0-9]+)"/"127.0.0.1:\1"/g' "$CONFIG" >"$work/prometheus.yml"
        promtool check config "$work/prometheus.yml" || fail "promtool check config $CONFIG"
    else
        fail "promtool check config $CONFIG"
    fi
else
    cat "$work/check-config.log"
fi

# Every panel (rows are layout only) queries the provisioned datasource
# and has an expression; so does every template variable.
validate_dashboard() {
    python3 - "$1" <<'PY'
import json, sys

path = sys.argv[1]
try:
    dashboard = json.load(open(path, encoding="utf-8"))
except (OSError, ValueError) as err:
    sys.exit(f"    {path}: not JSON: {err}")
problems, count = [], 0

def uid(obj):
    ds = obj.get("datasource")
    return ds.get("uid") if isinstance(ds, dict) else None

def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))

ids = set()
for panel in panels(dashboard.get("panels", [])):
    title = f"panel {panel.get('id')} {panel.get('title')!r}"
    if panel.get("id") in ids:
        problems.append(f"{title}: duplicate id")
    ids.add(panel.get("id"))
    if panel.get("type") == "row":
        if panel.get("targets"):
            problems.append(f"{title}: a row has queries")
        continue
    count += 1
    if uid(panel) != "prometheus":
        problems.append(f"{title}: datasource uid is {uid(panel)!r}, not 'prometheus'")
    targets = panel.get("targets") or []
    if not any((t.get("expr") or "").strip() for t in targets):
        problems.append(f"{title}: no target with an expr")
    for target in targets:
        if "datasource" in target and uid(target) != "prometheus":
            problems.append(f"{title} target {target.get('refId')}: datasource uid is not 'prometheus'")
        if not (target.get("expr") or "").strip():
            problems.append(f"{title} target {target.get('refId')}: empty expr")
for variable in dashboard.get("templating", {}).get("list", []):
    if variable.get("type") == "query" and uid(variable) != "prometheus":
        problems.append(f"variable {variable.get('name')}: datasource uid is not 'prometheus'")
if count == 0:
    problems.append("no panels")
for problem in problems:
    print(f"    {path}: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"    {count} panels, all on datasource uid 'prometheus' with queries")
PY
}

echo "==> dashboard $DASHBOARD"
validate_dashboard "$DASHBOARD" || fail "dashboard $DASHBOARD"

# ---------------------------------------------------------------------------
# Self-tests: the checks above must reject broken input.
# ---------------------------------------------------------------------------
echo "==> self-test: a broken rule file is rejected"
mkdir -p "$work/broken"
# An unbalanced parenthesis in the first alert's expression.
sed '0,/expr: up{job=~"gateway|user|auth"} == 0/s//expr: (up{job=~"gateway|user|auth"} == 0/' \
    "$RULES" >"$work/broken/alerts.yml"
if cmp -s "$RULES" "$work/broken/alerts.yml"; then
    fail "self-test: could not break $RULES (its first expression changed?)"
elif promtool check rules "$work/broken/alerts.yml" >"$work/broken.log" 2>&1; then
    fail "self-test: promtool accepted a rule file with a broken expression"
else
    echo "    rejected: $(grep -m1 -iE 'error|parse' "$work/broken.log" || head -n1 "$work/broken.log")"
fi

echo "==> self-test: a changed threshold fails the unit tests"
mkdir -p "$work/threshold"
# The 5xx warning threshold 5% -> 50%: its firing cases must now fail.
sed '0,/) > 0.05$/s//) > 0.5/' "$RULES" >"$work/threshold/alerts.yml"
cp "$TESTS" "$work/threshold/alerts.test.yml"
if cmp -s "$RULES" "$work/threshold/alerts.yml"; then
    fail "self-test: could not change a threshold in $RULES (the 5xx rule changed?)"
elif promtool test rules "$work/threshold/alerts.test.yml" >"$work/threshold.log" 2>&1; then
    fail "self-test: the unit tests pass with a wrong threshold"
else
    echo "    rejected: $(grep -m1 'alertname:' "$work/threshold.log" | sed 's/^ *//')"
fi

echo "==> self-test: a panel without the datasource is rejected"
python3 - "$DASHBOARD" "$work/dashboard.json" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
panel = next(p for p in dashboard["panels"] if p.get("type") != "row")
panel.pop("datasource")
json.dump(dashboard, open(sys.argv[2], "w"))
PY
if validate_dashboard "$work/dashboard.json" 2>"$work/dashboard.log" >/dev/null; then
    fail "self-test: a panel without a datasource was accepted"
else
    echo "    rejected: $(head -n1 "$work/dashboard.log" | sed 's/^ *//')"
fi

if ((failures > 0)); then
    printf '\n!!! prometheus-rules: %d check(s) failed\n' "$failures" >&2
    exit 1
fi
echo "==> prometheus-rules: all checks passed"
