#!/usr/bin/env bash
# Shared by scripts/ci/deploy.sh and scripts/ci/canary.sh (sourced; needs
# kustomize and kubectl).

# An error line GitHub Actions shows as an annotation.
portico_ci_error() {
    if [[ ${GITHUB_ACTIONS:-} == true ]]; then
        printf '::error::%s\n' "$*"
    else
        printf '%s: error: %s\n' "$(basename -- "$0" .sh)" "$*" >&2
    fi
}

portico_ci_require() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            portico_ci_error "$tool is not installed"
            return 1
        fi
    done
}

# portico_ci_render SERVICE IMAGE NAMESPACE OUT
#
# Renders k8s/overlays/prod with portico-SERVICE pinned to IMAGE (and the
# namespace replaced when NAMESPACE is not empty) into OUT, without the
# Namespace object (cluster-scoped: an admin makes it once; the deployer
# needs no cluster-wide rights). The overlay is copied beside itself so
# its ../../base still resolves.
portico_ci_render() {
    local service=$1 image=$2 namespace=$3 out=$4
    local root overlays work
    root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
    overlays=$root/k8s/overlays
    if [[ ! -f $overlays/prod/kustomization.yaml ]]; then
        portico_ci_error "no k8s/overlays/prod/kustomization.yaml"
        return 1
    fi
    work=$(mktemp -d "$overlays/.render-$service.XXXXXX")
    cp -R -- "$overlays/prod/." "$work/"
    if ! (
        cd -- "$work"
        kustomize edit set image "portico-$service=$image"
        if [[ -n $namespace ]]; then
            kustomize edit set namespace "$namespace"
        fi
    ); then
        rm -rf -- "$work"
        return 1
    fi
    # kustomize prints one object per document, `---` between them,
    # top-level keys at column 0.
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
    ' >"$out"
    local status=${PIPESTATUS[0]}
    rm -rf -- "$work"
    return "$status"
}

# portico_ci_namespace SERVICE FILE: the namespace the Deployment SERVICE
# lands in, as rendered in FILE (metadata's fields indented by two spaces).
portico_ci_namespace() {
    awk -v want="$1" '
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
    ' "$2"
}
