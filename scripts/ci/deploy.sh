#!/usr/bin/env bash
# Deploys one service's image to one environment and rolls the Deployment
# back when its rollout does not complete. Run by .github/workflows/service.yml
# (needs kustomize, kubectl and a KUBECONFIG for the cluster).
#
#   scripts/ci/deploy.sh SERVICE IMAGE [NAMESPACE]
#
#   SERVICE    gateway, user or auth: the Deployment SERVICE, the image
#              portico-SERVICE, the objects labelled app.kubernetes.io/name=SERVICE
#   IMAGE      what to run, e.g. ghcr.io/acme/portico-user:<git sha>
#   NAMESPACE  deploy into this namespace instead of the prod overlay's own
#              (staging). It must exist: the deployer creates no namespace.
#
# 1. Copies k8s/overlays/prod beside itself (so its ../../base still
#    resolves) and pins the image there: `kustomize edit set image`, and the
#    namespace if one is given: `kustomize edit set namespace`.
# 2. Renders it and leaves out the Namespace object (cluster-scoped: an
#    admin makes it once; the deployer needs no cluster-wide rights).
#    (Steps 1 and 2: portico_ci_render in scripts/ci/lib.sh.)
# 3. Applies the objects no single service owns, those without an
#    app.kubernetes.io/name label: the generated ConfigMaps (the service's
#    own <service>-config-<hash> is one of them, and its Deployment refers to
#    it by that hashed name; another service's, when its content changed,
#    only adds an object nothing uses yet) and the shared NetworkPolicies.
# 4. Applies the service's own objects (label app.kubernetes.io/name=SERVICE);
#    the other services' Deployments are not touched.
# 5. Waits for the rollout (5 minutes). If it does not complete:
#    `kubectl rollout undo`, and exit 1. The undo restores the Deployment's
#    previous pod template (image and ConfigMap reference); what step 3 and 4
#    changed besides it (a Service, a NetworkPolicy) stays as applied.
set -euo pipefail

usage() {
    printf 'usage: %s gateway|user|auth IMAGE [NAMESPACE]\n' "$0" >&2
    exit 2
}
(($# == 2 || $# == 3)) || usage
service=$1 image=$2 namespace=${3:-}
case $service in
    gateway | user | auth) ;;
    *) usage ;;
esac
[[ -n $image ]] || usage

# shellcheck source=scripts/ci/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
error() { portico_ci_error "$@"; }

portico_ci_require kustomize kubectl || exit 1

rendered=$(mktemp "${TMPDIR:-/tmp}/portico-deploy-$service.XXXXXX.yaml")
trap 'rm -f -- "$rendered"' EXIT
portico_ci_render "$service" "$image" "$namespace" "$rendered" || exit 1
target_namespace=$(portico_ci_namespace "$service" "$rendered")
if [[ -z $target_namespace ]]; then
    error "k8s/overlays/prod renders no Deployment named $service"
    exit 1
fi
if ! grep -q -F -- "image: $image" "$rendered"; then
    error "the rendered overlay does not run $image: is the base's image named portico-$service?"
    exit 1
fi

# The gateway's traffic file (ConfigMap gateway-traffic, the gateway's own)
# is rewritten step by step while a canary runs: applying git's copy now
# would undo the canary's split under it.
if [[ $service == gateway ]]; then
    canary_of=$(kubectl --namespace "$target_namespace" get configmap gateway-traffic \
        --ignore-not-found --output 'jsonpath={.metadata.annotations.portico\.dev/canary}')
    if [[ -n $canary_of ]]; then
        error "a canary release of $canary_of is in progress (configmap gateway-traffic); deploy the gateway after it ends"
        exit 1
    fi
fi

echo "deploy: $service -> $image in namespace $target_namespace"
kubectl apply --filename "$rendered" --selector '!app.kubernetes.io/name'
kubectl apply --filename "$rendered" --selector "app.kubernetes.io/name=$service"

if kubectl --namespace "$target_namespace" rollout status "deployment/$service" --timeout=5m; then
    echo "deploy: $service is rolled out"
    exit 0
fi
error "the rollout of $service in $target_namespace did not complete in 5 minutes; rolling back"
kubectl --namespace "$target_namespace" rollout undo "deployment/$service" ||
    error "rollout undo failed (a first deploy has no earlier revision to go back to)"
kubectl --namespace "$target_namespace" rollout status "deployment/$service" --timeout=5m || true
exit 1
