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

# An error line GitHub Actions shows as an annotation.
error() {
    if [[ ${GITHUB_ACTIONS:-} == true ]]; then
        printf '::error::%s\n' "$*"
    else
        printf 'deploy: error: %s\n' "$*" >&2
    fi
}

for tool in kustomize kubectl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        error "$tool is not installed"
        exit 1
    fi
done

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
overlays=$root/k8s/overlays
if [[ ! -f $overlays/prod/kustomization.yaml ]]; then
    error "no k8s/overlays/prod/kustomization.yaml"
    exit 1
fi

work=$(mktemp -d "$overlays/.deploy-$service.XXXXXX")
rendered=$(mktemp "${TMPDIR:-/tmp}/portico-deploy-$service.XXXXXX.yaml")
trap 'rm -rf -- "$work" "$rendered"' EXIT

cp -R -- "$overlays/prod/." "$work/"
(
    cd -- "$work"
    kustomize edit set image "portico-$service=$image"
    if [[ -n $namespace ]]; then
        kustomize edit set namespace "$namespace"
    fi
)
# kustomize prints one object per document, `---` between them, top-level
# keys at column 0 and metadata's fields indented by two spaces.
kustomize build "$work" | awk '
    function flush() {
        if (doc != "" && !namespace_object) {
            printf "%s%s", (printed++ ? "---\n" : ""), doc
        }
        doc = ""
        namespace_object = 0
    }
    /^---$/ { flush(); next }
    /^kind: Namespace$/ { namespace_object = 1 }
    { doc = doc $0 "\n" }
    END { flush() }
' >"$rendered"

# The namespace the Deployment lands in, as rendered.
target_namespace=$(awk -v want="$service" '
    function flush() {
        if (kind == "Deployment" && name == want) print (ns == "" ? "default" : ns)
        kind = name = ns = ""
        in_metadata = 0
    }
    /^---$/ { flush(); next }
    /^kind: / { kind = $2 }
    /^metadata:$/ { in_metadata = 1; next }
    /^[^ ]/ { in_metadata = 0 }
    in_metadata && /^  name: / { name = $2 }
    in_metadata && /^  namespace: / { ns = $2 }
    END { flush() }
' "$rendered")
if [[ -z $target_namespace ]]; then
    error "k8s/overlays/prod renders no Deployment named $service"
    exit 1
fi
if ! grep -q -F -- "image: $image" "$rendered"; then
    error "the rendered overlay does not run $image: is the base's image named portico-$service?"
    exit 1
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
