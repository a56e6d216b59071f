#!/usr/bin/env bash
# Runs every test of wsgate. This is the README's test command and what CI runs.
#
# It installs what the tests need by itself (Python packages into a local virtual
# environment under target/) and starts and stops every process it uses.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (the end-to-end tests run the real wsgate binary)"
cargo build --workspace --all-targets --locked

step "services the tests start themselves: redis-server, nginx"
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"
# The package may start a system instance where an init system exists; the tests never
# use it (each starts its own on a free port).

step "Python test environment (websockets, pytest, PyJWT)"
venv="$root/target/pyenv"
if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian's python3 needs python3-venv for `-m venv`.
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt

step "Rust unit and end-to-end tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

step "fuzzing: every cargo fuzz target for a minute (crashes fail the run)"
# Without AddressSanitizer: our crates forbid `unsafe`, and the ASan build alone takes
# ~8 minutes on 2 cores. `tests/fuzz/run.sh` on its own builds with ASan.
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}" FUZZ_SECONDS="${FUZZ_SECONDS:-60}" tests/fuzz/run.sh

step "RFC 6455 conformance: Autobahn|Testsuite against the echo endpoint"
WSGATE_BIN="$root/target/debug/wsgate" tests/autobahn/run.sh

step "the Docker Compose cluster, for real (starts and stops its own Docker engine)"
tests/docker/compose_test.sh

step "client.js (Node's test runner) and the demo pages in headless Chromium"
WSGATE_BIN="$root/target/debug/wsgate" tests/browser/run.sh

step "end-to-end tests with Python websockets"
WSGATE_BIN="$root/target/debug/wsgate" "$venv/bin/python" -m pytest tests/python -q
