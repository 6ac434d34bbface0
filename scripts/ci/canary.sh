#!/usr/bin/env bash
# A canary release of one upstream service of the gateway (user or auth):
# the new image runs beside the stable one and takes a growing share of the
# gateway's traffic, judged at each step; a bad step sends everyone back to
# stable. Run by .github/workflows/service.yml for a production deploy
# started with `release: canary`; by hand the same way.
#
#   scripts/ci/canary.sh SERVICE IMAGE [NAMESPACE]
#
# Needs kustomize, kubectl, python3, a KUBECONFIG, and PROMETHEUS_URL: the
# Prometheus that scrapes the gateways (PROMETHEUS_BEARER_TOKEN if it asks
# for one). Tuning, from the environment:
#   CANARY_STEPS             percentages, rising (5,25,50,100)
#   CANARY_INTERVAL          seconds each step is watched at least (120)
#   CANARY_MAX_ERROR_RATIO   share of 5xx answers that fails a step (0.01)
#   CANARY_MIN_REQUESTS      requests a step needs to be judged (100)
#   CANARY_REPLICAS          canary pods (1)
#
# 1. Makes the canary from k8s/overlays/prod as deploy.sh renders it: the
#    Deployment and headless Service SERVICE-canary (track: canary; the
#    stable Service selects track: stable), running IMAGE
#    (scripts/ci/canary.py manifests), and waits for it to be ready
#    (5 minutes; if not: deleted, exit 1). Its init container runs the new
#    release's migrations on the shared database first, so a release's
#    migrations must keep the running version working (expand now,
#    contract in a later release).
# 2. Steps the gateway's traffic file (ConfigMap gateway-traffic) through
#    the split: scripts/ci/canary.py run, each step judged by the canary's
#    share of 5xx in Prometheus. A failed step puts the file back; the
#    canary is deleted; exit 1.
# 3. Promotes: with the canary's share at the last step (all traffic, by
#    default), rolls the stable Deployment to IMAGE (scripts/ci/deploy.sh,
#    which undoes a rollout that does not complete), then puts the traffic
#    file back (everyone on stable, now IMAGE), waits until every gateway
#    runs it, and deletes the canary. If the stable rollout fails, traffic
#    returns to the undone stable release all the same, and exit 1.
set -euo pipefail

usage() {
    printf 'usage: %s user|auth IMAGE [NAMESPACE]\n' "$0" >&2
    exit 2
}
(($# == 2 || $# == 3)) || usage
service=$1 image=$2 namespace=${3:-}
case $service in
    user | auth) ;;
    gateway)
        printf 'canary: the gateway is not behind a gateway split; deploy it with deploy.sh\n' >&2
        exit 2
        ;;
    *) usage ;;
esac
[[ -n $image ]] || usage

here=$(dirname -- "${BASH_SOURCE[0]}")
# shellcheck source=scripts/ci/lib.sh
source "$here/lib.sh"

portico_ci_require kustomize kubectl python3 || exit 1
if [[ -z ${PROMETHEUS_URL:-} ]]; then
    portico_ci_error "PROMETHEUS_URL is not set: the canary is judged by what Prometheus scraped from the gateways"
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/portico-canary-$service.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
portico_ci_render "$service" "$image" "$namespace" "$work/rendered.yaml" || exit 1
target_namespace=$(portico_ci_namespace "$service" "$work/rendered.yaml")
if [[ -z $target_namespace ]]; then
    portico_ci_error "k8s/overlays/prod renders no Deployment named $service"
    exit 1
fi
kube() { kubectl --namespace "$target_namespace" "$@"; }

# 1. The canary.
kube create --dry-run=client --output json --filename "$work/rendered.yaml" |
    python3 "$here/canary.py" manifests "$service" "$image" --replicas "${CANARY_REPLICAS:-1}" \
        >"$work/canary.json"
delete_canary() {
    kube delete --filename "$work/canary.json" --ignore-not-found --wait=false ||
        portico_ci_error "could not delete $service-canary: delete it by hand"
}
echo "canary: $service-canary -> $image in namespace $target_namespace"
kube apply --filename "$work/canary.json"
if ! kube rollout status "deployment/$service-canary" --timeout=5m; then
    portico_ci_error "$service-canary did not become ready in 5 minutes"
    delete_canary
    exit 1
fi

# 2. The steps.
traffic=(--configmap gateway-traffic --namespace "$target_namespace"
    --prometheus "$PROMETHEUS_URL" --service "$service")
if ! python3 "$here/canary.py" run "${traffic[@]}" \
    --steps "${CANARY_STEPS:-5,25,50,100}" \
    --interval "${CANARY_INTERVAL:-120}" \
    --max-error-ratio "${CANARY_MAX_ERROR_RATIO:-0.01}" \
    --min-requests "${CANARY_MIN_REQUESTS:-100}"; then
    portico_ci_error "the canary of $service ($image) failed; traffic is back on the stable release"
    delete_canary
    exit 1
fi

# 3. Promote.
promoted=true
if ! bash "$here/deploy.sh" "$service" "$image" "$namespace"; then
    promoted=false
fi
python3 "$here/canary.py" restore "${traffic[@]}"
delete_canary
if [[ $promoted == false ]]; then
    portico_ci_error "the canary passed, but rolling $service to $image failed; stable runs the previous release"
    exit 1
fi
echo "canary: $service runs $image"
