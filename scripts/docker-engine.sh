#!/usr/bin/env bash
# A Docker engine on this machine, and a Debian base image made without Docker Hub, for building
# the images in docker/ and for the tests.
#   bash scripts/docker-engine.sh          install docker.io + debootstrap if missing (apt-get, root),
#                                          start dockerd unless one already answers
#   bash scripts/docker-engine.sh base     (after start) print the name of a local Python 3.11 base
#                                          image, making it with debootstrap if it is not there yet
#   bash scripts/docker-engine.sh stop     stop the dockerd this script started (never another one)
#   bash scripts/docker-engine.sh status   exit 0 when a Docker engine answers
# dockerd runs with --iptables=false: containers that need the network use --network host, which
# is also what makes the host's package mirrors reachable from a build (docker/README.md).
set -euo pipefail

mode=${1:-start}
run=/run/zoo-docker
logs=/var/log/zoo-docker
# The base image: what debootstrap installs. Its tag is a hash of these inputs (and of the mirror
# and the CA certificates), so a change makes a new image and an unchanged one is reused. Bump
# base_version when base() changes what it puts in the image.
suite=bookworm
packages=python3,python3-venv,ca-certificates
base_version=1
base_repo=zoo-launch-base

say() { echo "[docker-engine] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

answers() { timeout 20 docker info >/dev/null 2>&1; }

install() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "${missing[*]} not installed and installing needs root: run this script as root (apt-get install ${missing[*]})"
    command -v apt-get >/dev/null || die "${missing[*]} not installed and there is no apt-get here: install Docker and debootstrap by hand"
    say "installing ${missing[*]} with apt-get (once; about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start() {
    if answers; then
        say "already running"
        command -v debootstrap >/dev/null || install
        return 0
    fi
    install
    [ "$(id -u)" -eq 0 ] || die "starting dockerd needs root"
    mkdir -p "$run" "$logs"
    # containerd is started by dockerd itself when none runs.
    nohup dockerd --iptables=false --pidfile "$run/dockerd.pid" >"$logs/dockerd.log" 2>&1 &
    echo $! >"$run/dockerd.ours"  # so `stop` stops only a dockerd this script started
    for _ in $(seq 150); do
        answers && { say "started dockerd ($(cat "$run/dockerd.ours"))"; return 0; }
        kill -0 "$(cat "$run/dockerd.ours")" 2>/dev/null || break
        sleep 0.2
    done
    die "dockerd did not start (see $logs/dockerd.log)"
}

stop() {
    [ -f "$run/dockerd.ours" ] || return 0
    local pid
    pid=$(cat "$run/dockerd.ours")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        say "stopped dockerd ($pid)"
    fi
    rm -f "$run/dockerd.ours"
}

# The Debian mirror apt uses here, read from apt's own sources (one-line or deb822 format).
mirror() {
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk -v s="$suite" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i == s) { print ($2 ~ /^\[/ ? $3 : $2); exit } }')
    if [ -z "$uri" ]; then
        uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$suite" '
            /^[[:space:]]*$/ { if (u != "" && hit) { print u; exit } u = ""; hit = 0; next }
            tolower($1) == "uris:" { u = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
            END { if (u != "" && hit) print u }' | head -n1)
    fi
    [ -n "$uri" ] || die "no Debian $suite mirror in /etc/apt/sources.list*; debootstrap needs one"
    echo "$uri"
}

# A Debian $suite root with Python 3.11 and venv, as `docker import` makes it. It trusts the CA
# certificates this machine trusts (a TLS-inspecting proxy's among them), so pip and apt inside a
# build reach the same package indexes as the host.
base() {
    answers || die "no Docker engine answers: run 'bash scripts/docker-engine.sh' first"
    local url certs tag image
    # rootfs is global: the EXIT trap removes it whichever way the script ends.
    url=$(mirror)
    certs=/etc/ssl/certs/ca-certificates.crt
    [ -f "$certs" ] || die "$certs is missing: install ca-certificates on this machine"
    tag=$(printf '%s\n' "$suite" "$packages" "$url" "$(sha256sum <"$certs")" "$base_version" | sha256sum | cut -c1-12)
    image="$base_repo:$suite-$tag"
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "$image"
        return 0
    fi
    command -v debootstrap >/dev/null || install
    rootfs=$(mktemp -d /var/tmp/zoo-base.XXXXXX)
    trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
    say "making $image with debootstrap (once; about a minute)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$url" >"$rootfs.log" 2>&1 \
        || { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed (log above)"; }
    cp "$certs" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import --change 'CMD ["python3"]' - "$image" >/dev/null
    echo "$image"
}

case $mode in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    base) base ;;
    *) die "unknown mode '$mode': use start, base, stop or status" ;;
esac
