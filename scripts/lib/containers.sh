# shellcheck shell=bash
# A private container engine for the compose test: podman behind its Docker
# API socket, driven by Docker Compose v2, on a machine with no registry and
# no systemd (see ARCHITECTURE.md, "Containers in the test command").
#
# Source this file, then:
#   portico_compose_install   exports PORTICO_COMPOSE (Docker Compose v2)
#   portico_engine_start      installs what is missing, starts the engine;
#                             exports DOCKER_HOST, DOCKER_CONFIG, DOCKER_BUILDKIT
#                             and PORTICO_COMPOSE (the compose binary)
#   portico_base_images       makes the images the compose file names that
#                             would come from a registry (debian, postgres,
#                             redis), from Debian's packages, unless present
#   portico_engine_stop       stops the engine and the health-check pump
#
# The image store lives in target/containers (kept between runs, so a second
# run skips the base images); everything that only lives while the engine
# runs goes to a temp dir. Functions fail loudly, like test-services.sh.

# shellcheck source=scripts/lib/test-services.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/test-services.sh"

_PORTICO_ENGINE_DIR=${_PORTICO_ENGINE_DIR:-}
_PORTICO_ENGINE_PID=${_PORTICO_ENGINE_PID:-}
_PORTICO_PUMP_PID=${_PORTICO_PUMP_PID:-}

_portico_repo_root() {
    (cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
}

# Docker Compose v2 is not in bookworm: take the static plugin binary out of
# trixie's docker-compose package, through a private apt configuration that
# leaves the machine's own sources alone.
_portico_install_compose() {
    local dest=$1
    [[ -x $dest ]] && return 0
    local work
    work=$(mktemp -d "$PORTICO_TEST_TMPDIR/portico-compose.XXXXXX") || return 1
    mkdir -p "$work/etc" "$work/lists/partial" "$work/cache/archives/partial"
    cat >"$work/etc/trixie.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    local apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/etc"
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache")
    _portico_log "fetching docker-compose (v2) from Debian trixie"
    if ! apt-get "${apt_opts[@]}" update >"$work/apt.log" 2>&1 ||
        ! (cd -- "$work" && apt-get "${apt_opts[@]}" download docker-compose >>"$work/apt.log" 2>&1); then
        _portico_tail_log "$work/apt.log"
        _portico_fail "could not download docker-compose from Debian trixie"
        rm -rf -- "$work"
        return 1
    fi
    if ! dpkg-deb -x "$work"/docker-compose_*.deb "$work/root" ||
        ! mkdir -p "$(dirname -- "$dest")" ||
        ! cp "$work/root/usr/libexec/docker/cli-plugins/docker-compose" "$dest"; then
        _portico_fail "docker-compose package had no cli plugin binary"
        rm -rf -- "$work"
        return 1
    fi
    rm -rf -- "$work"
}

# Exports PORTICO_COMPOSE, the Docker Compose v2 binary (installed once
# into target/tools); `config` needs nothing else.
portico_compose_install() {
    local root
    root=$(_portico_repo_root) || return 1
    PORTICO_COMPOSE=$root/target/tools/docker-compose/docker-compose
    _portico_install_compose "$PORTICO_COMPOSE" || return 1
    export PORTICO_COMPOSE
}

portico_engine_start() {
    local root
    root=$(_portico_repo_root) || return 1
    local missing=() cmd
    # netavark sets up container networks with iptables; without it every
    # build step or container with a network fails with a bare ENOENT.
    for cmd in podman runc newuidmap mmdebstrap netavark aardvark-dns catatonit iptables; do
        command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/lib/podman/$cmd || -x /usr/sbin/$cmd ]] ||
            missing+=("$cmd")
    done
    if ((${#missing[@]} > 0)); then
        _portico_apt_install podman runc uidmap mmdebstrap netavark aardvark-dns catatonit iptables ||
            return 1
    fi
    portico_compose_install || return 1

    _PORTICO_ENGINE_DIR=$(mktemp -d "$PORTICO_TEST_TMPDIR/portico-engine.XXXXXX") || return 1
    local store=$root/target/containers
    # The store records its run root, so that is fixed beside it; emptied
    # here, it looks to podman like a fresh boot (no stale container state).
    rm -rf -- "$store/run"
    mkdir -p "$store/storage" "$store/run" "$_PORTICO_ENGINE_DIR/docker"
    # cgroups v1 and no systemd: cgroupfs; crun fails here, runc works; the
    # default ulimits cannot be set inside this sandbox.
    cat >"$_PORTICO_ENGINE_DIR/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[network]
network_backend = "netavark"
EOF
    cat >"$_PORTICO_ENGINE_DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$store/storage"
runroot = "$store/run"
EOF
    export CONTAINERS_CONF=$_PORTICO_ENGINE_DIR/containers.conf
    export CONTAINERS_STORAGE_CONF=$_PORTICO_ENGINE_DIR/storage.conf

    local sock=$_PORTICO_ENGINE_DIR/podman.sock
    podman system service --time=0 "unix://$sock" >"$_PORTICO_ENGINE_DIR/engine.log" 2>&1 &
    _PORTICO_ENGINE_PID=$!
    export DOCKER_HOST=unix://$sock
    # No BuildKit (it would want a moby/buildkit image); a private client
    # config so nothing of the machine's docker login is used.
    export DOCKER_BUILDKIT=0 DOCKER_CONFIG=$_PORTICO_ENGINE_DIR/docker
    echo '{}' >"$DOCKER_CONFIG/config.json"
    local deadline=$((SECONDS + 30))
    until podman --remote --url "unix://$sock" version >/dev/null 2>&1; do
        if ! kill -0 "$_PORTICO_ENGINE_PID" 2>/dev/null || ((SECONDS > deadline)); then
            _portico_tail_log "$_PORTICO_ENGINE_DIR/engine.log"
            _portico_fail "the podman API service did not start"
            return 1
        fi
        sleep 0.2
    done
    _portico_log "container engine up: podman $(podman version --format '{{.Client.Version}}'), $("$PORTICO_COMPOSE" version --short)"

    # podman runs health checks from systemd timers, which do not exist
    # here: run every running container's check once a second instead, or
    # `depends_on: condition: service_healthy` would wait for ever.
    (
        while true; do
            podman ps --filter health=starting --filter health=healthy --filter health=unhealthy \
                --format '{{.ID}}' 2>/dev/null | while read -r id; do
                # </dev/null: it would otherwise eat the rest of the list.
                podman healthcheck run "$id" </dev/null >/dev/null 2>&1 || true
            done
            sleep 1
        done
    ) &
    _PORTICO_PUMP_PID=$!
}

portico_engine_stop() {
    if [[ -n $_PORTICO_PUMP_PID ]]; then
        kill "$_PORTICO_PUMP_PID" 2>/dev/null || true
        wait "$_PORTICO_PUMP_PID" 2>/dev/null || true
        _PORTICO_PUMP_PID=
    fi
    if [[ -n $_PORTICO_ENGINE_PID ]]; then
        # Containers of an aborted run must not outlive it.
        podman rm --all --force --time 2 >/dev/null 2>&1 || true
        podman network prune --force >/dev/null 2>&1 || true
        kill "$_PORTICO_ENGINE_PID" 2>/dev/null || true
        wait "$_PORTICO_ENGINE_PID" 2>/dev/null || true
        _PORTICO_ENGINE_PID=
    fi
    if [[ -n $_PORTICO_ENGINE_DIR ]]; then
        rm -rf -- "$_PORTICO_ENGINE_DIR"
        _PORTICO_ENGINE_DIR=
    fi
}

_portico_image_exists() {
    podman image exists "$1" 2>/dev/null
}

# debian:bookworm-slim from Debian's own packages, and stand-ins for the
# official postgres and redis images built on it (deploy/offline-images).
portico_base_images() {
    local root
    root=$(_portico_repo_root) || return 1
    if ! _portico_image_exists docker.io/library/debian:bookworm-slim; then
        local tar
        tar=$(mktemp "$PORTICO_TEST_TMPDIR/portico-rootfs.XXXXXX.tar") || return 1
        _portico_log "building debian:bookworm-slim with mmdebstrap"
        if ! mmdebstrap --variant=minbase --quiet \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            bookworm "$tar" \
            "deb http://deb.debian.org/debian bookworm main" \
            "deb http://deb.debian.org/debian bookworm-updates main" \
            "deb http://deb.debian.org/debian-security bookworm-security main" >"$tar.log" 2>&1; then
            _portico_tail_log "$tar.log"
            _portico_fail "mmdebstrap could not build a bookworm root file system"
            rm -f -- "$tar" "$tar.log"
            return 1
        fi
        podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' "$tar" docker.io/library/debian:bookworm-slim >/dev/null || {
            _portico_fail "podman import of the bookworm root file system failed"
            rm -f -- "$tar" "$tar.log"
            return 1
        }
        rm -f -- "$tar" "$tar.log"
    fi
    local name tag
    for name in postgres redis; do
        tag=$(sed -n 's/^# tag: //p' "$root/deploy/offline-images/$name/Dockerfile")
        _portico_image_exists "$tag" && continue
        _portico_log "building the stand-in for $tag from Debian packages"
        podman build --quiet --format docker --pull=never -t "$tag" \
            "$root/deploy/offline-images/$name" >/dev/null || {
            _portico_fail "building the $name stand-in image failed"
            return 1
        }
    done
}
