#!/usr/bin/env bash
# Builds, from Debian's packages alone, the base images crewq's Dockerfile and compose.yaml
# need, for machines that can reach Debian's archive but no image registry. Nothing here
# asks a registry: a minimal Debian is bootstrapped into a folder (debootstrap) and
# imported (`docker import`); the other images are built on it with the legacy builder,
# whose FROM is that local tag.
#
#   deploy/docker/build-base-images.sh          # installs Docker (docker.io) if missing
#
# Prints, one per line, the variables that point the Dockerfile and compose.yaml at them:
#   PYTHON_IMAGE=crewq-base/python:bookworm    (stands in for python:3.12-slim; Python 3.11)
#   POSTGRES_IMAGE=crewq-base/postgres:bookworm (for postgres:16; Debian's PostgreSQL 15)
#   REDIS_IMAGE=crewq-base/redis:bookworm       (for redis:7; Debian's Redis 7.0)
# An image that exists already is kept (CREWQ_BASE_REBUILD=1 builds them again). The Debian
# mirror is the one this machine's apt uses.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${CREWQ_BASE_PREFIX:-crewq-base}"
suite=bookworm
debian="$prefix/debian:$suite"
log() { printf '%s build-base-images: %s\n' "$(date +%T)" "$*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "$1 needs root"
        exit 1
    fi
}

# --- a Docker engine: Debian's, installed and started when there is none ---------------
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    need_root "installing docker.io and debootstrap"
    log "installing docker.io and debootstrap from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >&2
fi
if ! docker info >/dev/null 2>&1; then
    need_root "starting dockerd"
    log "starting dockerd"
    # No init system runs on these machines: dockerd runs in the background, logging to a
    # file, and outlives this script (the tests and compose need it after).
    nohup dockerd >/var/log/crewq-dockerd.log 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd did not start: see /var/log/crewq-dockerd.log"; exit 1; }
fi

exists() { [ -z "${CREWQ_BASE_REBUILD:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

# --- the minimal Debian every other image starts from ----------------------------------
if ! exists "$debian"; then
    need_root "debootstrap"
    mirror="$(apt-get indextargets --format '$(REPO_URI)' "Codename: $suite" 'Label: Debian' | head -n 1)"
    [ -n "$mirror" ] || { log "no Debian $suite mirror in this machine's apt sources"; exit 1; }
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    log "debootstrap $suite (minbase)"
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >/dev/null
    # This machine's own certificate authorities (where it reaches the package registries
    # through a TLS-inspecting proxy, that proxy's): the images built on this one trust
    # what the machine trusts, once ca-certificates is installed in them.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        mkdir -p "$root/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    fi
    # apt's lists and caches are rebuilt by whatever installs on top; leave them out.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$debian" >/dev/null
    rm -rf "$root"
    trap - EXIT
    log "imported $debian"
fi

build() {  # build IMAGE DOCKERFILE
    if exists "$1"; then
        return
    fi
    log "building $1"
    DOCKER_BUILDKIT=0 docker build --quiet --build-arg "DEBIAN_IMAGE=$debian" \
        -f "$here/$2" -t "$1" "$here" >/dev/null
}
build "$prefix/python:$suite" python.Dockerfile
build "$prefix/postgres:$suite" postgres.Dockerfile
build "$prefix/redis:$suite" redis.Dockerfile

echo "PYTHON_IMAGE=$prefix/python:$suite"
echo "POSTGRES_IMAGE=$prefix/postgres:$suite"
echo "REDIS_IMAGE=$prefix/redis:$suite"
