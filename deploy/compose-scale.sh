#!/usr/bin/env bash
# Scales the `gateway` service of docker-compose.yml to N replicas and makes nginx use the
# new set:
#
#     deploy/compose-scale.sh N
#     deploy/compose-scale.sh restart     (a rolling restart: see below)
#
# 1. `up -d --no-deps --no-recreate --scale gateway=N gateway`: new replicas are created;
#    when scaling down, Compose stops the surplus ones with SIGTERM and waits for them
#    (up to `stop_grace_period`): they drain, their sessions close with 1001 and reconnect
#    through nginx, which skips a draining replica (503) for the next one. Running
#    replicas are left alone.
# 2. Waits until N gateway containers are running and healthy (GET /readyz is 200).
# 3. `nginx -s reload` in the nginx container: nginx resolves `gateway` again. The reload
#    is graceful: connections already open stay on the replica they are on.
#
# `restart` replaces the running replicas one at a time: `docker restart` sends SIGTERM
# (the replica drains: its sessions close one by one, each told when to come back, and
# reconnect through nginx to the others), starts it again, waits until it is healthy,
# and reloads nginx (a restarted container may get another address) before the next.
#
# Environment:
#   COMPOSE               the Compose command (default `docker compose`; `docker-compose`
#                         for v1)
#   COMPOSE_PROJECT_NAME  and COMPOSE_FILE, as Compose reads them (run from the repository
#                         root when COMPOSE_FILE is not set)
#   SCALE_TIMEOUT         seconds to wait for the replicas to be healthy (default 120)
# The same WSGATE_* variables as for `up` (WSGATE_PUBLISH, WSGATE_SUBNET, WSGATE_API_KEY)
# must be set, or Compose would see a changed configuration.
set -euo pipefail

usage() { echo "usage: $0 N|restart   (N >= 1: the number of gateway replicas)" >&2; exit 2; }
[ $# -eq 1 ] || usage
n=$1
[[ $n =~ ^[1-9][0-9]*$ ]] || [ "$n" = restart ] || usage

if [ -z "${COMPOSE_FILE:-}" ]; then
    cd "$(dirname "$0")/.."
fi
read -r -a compose <<< "${COMPOSE:-docker compose}"
timeout_s=${SCALE_TIMEOUT:-120}

say() { printf 'compose-scale: %s\n' "$*"; }

if [ "$n" = restart ]; then
    ids=$("${compose[@]}" ps -q gateway)
    [ -n "$ids" ] || { say "no gateway replica is running" >&2; exit 1; }
    for id in $ids; do
        short=${id:0:12}
        say "restarting $short (drains first)"
        # Longer than the gateway's shutdown timeout, as stop_grace_period is.
        docker restart --time 20 "$id" >/dev/null
        deadline=$((SECONDS + timeout_s))
        until [ "$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null)" = healthy ]; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                say "timed out after ${timeout_s}s waiting for $short to be healthy" >&2
                exit 1
            fi
            sleep 1
        done
        "${compose[@]}" exec -T nginx nginx -t -q
        "${compose[@]}" exec -T nginx nginx -s reload
        say "$short healthy again; nginx reloaded"
    done
    say "every replica restarted"
    exit 0
fi

say "scaling gateway to $n"
"${compose[@]}" up -d --no-deps --no-recreate --scale "gateway=$n" gateway

# Count running and healthy gateway containers until there are exactly N of them.
deadline=$((SECONDS + timeout_s))
while :; do
    ids=$("${compose[@]}" ps -q gateway)
    running=0 healthy=0
    for id in $ids; do
        state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null || true)
        case $state in
            "running healthy") running=$((running + 1)); healthy=$((healthy + 1)) ;;
            running*) running=$((running + 1)) ;;
        esac
    done
    if [ "$running" -eq "$n" ] && [ "$healthy" -eq "$n" ]; then
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        say "timed out after ${timeout_s}s: $healthy healthy of $running running, want $n" >&2
        say "nginx was not reloaded" >&2
        exit 1
    fi
    sleep 1
done
say "$n replicas healthy"

# nginx resolved `gateway` when it started: reload it so it resolves the name again.
"${compose[@]}" exec -T nginx nginx -t -q
"${compose[@]}" exec -T nginx nginx -s reload
sleep 1 # the master starts new workers and retires the old ones (which keep their connections)
say "nginx reloaded"
