# shellcheck shell=bash
# Pinned command-line tools for the checks in scripts/check/, installed on
# first use by the repository itself (a fresh CI machine has none of them).
#
#   portico_pip_tool NAME 'pkg==1.2.3' [more specs...]
#       makes a venv target/tools/NAME (once) and prints its bin dir.
#       NAME should carry the version so a pin change makes a new venv.
#   portico_apt_command COMMAND PACKAGE
#       installs the Debian PACKAGE unless COMMAND is already on PATH.
#
# Both fail loudly (non-zero, banner on stderr) when they cannot install.

# shellcheck source=scripts/lib/test-services.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/test-services.sh"

portico_pip_tool() {
    local name=$1
    shift
    local root venv
    root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd) || return 1
    venv=$root/target/tools/$name
    if [[ ! -f $venv/.installed ]]; then
        _portico_log "installing $* into target/tools/$name"
        rm -rf -- "$venv"
        if ! python3 -m venv "$venv"; then
            _portico_fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
            return 1
        fi
        if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" >&2; then
            _portico_fail "pip install $* failed"
            return 1
        fi
        touch "$venv/.installed"
    fi
    printf '%s\n' "$venv/bin"
}

portico_apt_command() {
    local command=$1 package=$2
    command -v "$command" >/dev/null 2>&1 && return 0
    _portico_apt_install "$package" || return 1
    if ! command -v "$command" >/dev/null 2>&1; then
        _portico_fail "installed $package but '$command' is still not on PATH"
        return 1
    fi
}
