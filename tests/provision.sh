#!/usr/bin/env bash
# Installs everything the test tiers need, once, in one pass (tests/run.sh starts it in
# the background while the code compiles): apt-get is called once for every Debian
# package, then the local environments are filled. Everything is idempotent: a second
# run on a provisioned machine takes a few seconds.
#
#   tests/provision.sh            # what the full test command needs
#   tests/provision.sh quick      # only what the quick tier needs (redis-server, and
#                                 # the Python environment that checks deploy/k8s)
#
# Debian packages (apt-get): redis-server, nginx-light, curl (the end-to-end suites);
# python3-venv (the Python suite; both tiers); docker.io, docker-compose, debootstrap,
# iptables, python3-websockets (the Docker Compose test); chromium, nodejs, npm (the
# browser tests); gcc (Autobahn builds wsaccel). Into target/ and tests/browser/: the
# Python suite's virtual environment (tests/python/requirements.txt), the npm packages of
# tests/browser/package.json, the Autobahn|Testsuite environment
# (tests/autobahn/run.sh --install-only) and the Docker test's Compose plugin and Debian
# base tarball (tests/docker/compose_test.sh --prepare-only).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tier=${1:-full}
export PATH="$PATH:/usr/sbin"

log() { printf '[provision %s] %s\n' "$(date +%T)" "$*"; }
t0=$SECONDS

# --- Debian packages: one apt-get for all of them --------------------------------------
want=()
have() { command -v "$1" >/dev/null 2>&1; }
have redis-server || want+=(redis-server)
python3 -c 'import ensurepip' 2>/dev/null || want+=(python3-venv)
if [ "$tier" = full ]; then
    have nginx || [ -x /usr/sbin/nginx ] || want+=(nginx-light)
    have curl || want+=(curl)
    have dockerd || want+=(docker.io)
    have docker-compose || want+=(docker-compose)
    have debootstrap || want+=(debootstrap)
    have iptables || want+=(iptables)
    /usr/bin/python3 -c 'import websockets' 2>/dev/null || want+=(python3-websockets)
    [ -x /usr/bin/chromium ] || want+=(chromium)
    have node || want+=(nodejs)
    have npm || want+=(npm)
    have gcc || want+=(gcc libc6-dev)
fi
if [ ${#want[@]} -gt 0 ]; then
    log "apt-get install ${want[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi

# --- the Python suite's environment (the quick tier runs its deploy/k8s check) ---------
venv="$root/target/pyenv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
log "Python test environment (tests/python/requirements.txt)"
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
[ "$tier" = full ] || { log "done in $((SECONDS - t0))s"; exit 0; }

# --- npm packages of the browser tests ------------------------------------------------
if [ ! -f tests/browser/node_modules/playwright-core/package.json ] ||
    [ ! -f tests/browser/node_modules/ws/package.json ]; then
    log "npm install (tests/browser)"
    (cd tests/browser && npm install --no-audit --no-fund --silent)
fi

# --- the Docker test's Compose plugin and base image tarball (no engine needed) --------
log "Docker test: tools, Compose plugin, Debian base tarball"
tests/docker/compose_test.sh --prepare-only

# --- Autobahn|Testsuite (Python 2.7 virtualenv; last: it may add a temporary apt source)
log "Autobahn|Testsuite environment"
tests/autobahn/run.sh --install-only

log "done in $((SECONDS - t0))s"
