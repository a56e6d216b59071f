#!/usr/bin/env bash
# Runs the tests of wsgate. `./tests/run.sh` (the full tier) is the README's test command
# and what CI runs; it installs what the tests need by itself and starts and stops every
# process it uses.
#
#   ./tests/run.sh          # full: every kind of test (about 7 minutes on 2 cores)
#   ./tests/run.sh quick    # the development loop: fmt, module graph, clippy, build, the
#                           # Kubernetes manifests (deploy/k8s), the Rust tests (unit,
#                           # broker conformance on memory and Redis, end to end, fuzz
#                           # corpus replay); under 3 minutes warm
#   ./tests/run.sh fuzz     # the long tier: coverage-guided cargo fuzz, FUZZ_SECONDS (60)
#                           # per target (tests/fuzz/run.sh; its header says more)
#
# The full tier compiles the workspace once (one debug build serves clippy's checks, the
# Rust tests, every end-to-end suite, Autobahn and the Docker image) while
# tests/provision.sh installs the rest in the background, then runs the Rust tests and,
# side by side, the suites that spend most of their time waiting on processes: Python
# `websockets` (pytest-xdist), Autobahn|Testsuite, the Docker Compose cluster, and the
# browser client under Node and headless Chromium. Each suite's output goes to
# target/test-logs/<suite>.log and is printed when it ends; the run fails if any did.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tier=${1:-full}
export PATH="$PATH:/usr/sbin"
logs="$root/target/test-logs"
mkdir -p "$logs"
t_start=$SECONDS

step() { printf '\n==> [%4ss] %s\n' "$((SECONDS - t_start))" "$*"; }

case "$tier" in
full | quick) ;;
fuzz) exec tests/fuzz/run.sh ;;
*)
    echo "usage: tests/run.sh [full|quick|fuzz]" >&2
    exit 2
    ;;
esac

provision_pid=""
bg_pids=()
cleanup() {
    for p in "${bg_pids[@]}" $provision_pid; do
        kill -TERM "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "provisioning ($tier) in the background: target/test-logs/provision.log"
tests/provision.sh "$tier" >"$logs/provision.log" 2>&1 &
provision_pid=$!

step "format, module graph"
cargo fmt --all -- --check
python3 tests/tools/module_graph.py

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (one debug build for every suite)"
cargo build --workspace --all-targets --locked

step "waiting for provisioning"
if ! wait "$provision_pid"; then
    provision_pid=""
    cat "$logs/provision.log"
    echo "provisioning failed" >&2
    exit 1
fi
provision_pid=""
sed 's/^/    /' "$logs/provision.log" | grep -E '\] (apt-get|done)' || true

if [ "$tier" = quick ]; then
    # The full tier runs this file with the rest of the Python suite.
    step "Kubernetes manifests (deploy/k8s): schemas, drain and sizing rules, the binary"
    WSGATE_BIN="$root/target/debug/wsgate" target/pyenv/bin/python -m pytest tests/python/test_k8s_manifests.py -q
fi

step "Rust: unit, broker conformance (memory and Redis), end to end, fuzz corpus replay"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --test-threads 4
else
    cargo test --workspace --locked --no-fail-fast
fi

if [ "$tier" = quick ]; then
    step "quick tier passed"
    exit 0
fi

bin="$root/target/debug/wsgate"
venv="$root/target/pyenv"
declare -A started=()
run_bg() { # NAME COMMAND...
    local name=$1
    shift
    (
        t=$SECONDS
        set +e
        "$@" >"$logs/$name.log" 2>&1
        rc=$?
        echo "$rc $((SECONDS - t))" >"$logs/$name.rc"
    ) &
    bg_pids+=($!)
    started[$name]=$!
}

step "side by side: Python websockets, Autobahn, Docker Compose, browser (target/test-logs/)"
rm -f "$logs"/*.rc
run_bg docker env WSGATE_DOCKER_BIN="$bin" tests/docker/compose_test.sh
run_bg autobahn env WSGATE_BIN="$bin" tests/autobahn/run.sh
run_bg browser env WSGATE_BIN="$bin" tests/browser/run.sh
run_bg python env WSGATE_BIN="$bin" "$venv/bin/python" -m pytest tests/python -q -n 3
wait "${bg_pids[@]}" 2>/dev/null || true
bg_pids=()

failed=()
for name in python autobahn docker browser; do
    read -r rc secs <"$logs/$name.rc" || { rc=1 secs=?; }
    step "$name: exit $rc after ${secs}s (target/test-logs/$name.log)"
    if [ "$rc" = 0 ]; then
        tail -n 3 "$logs/$name.log"
    else
        cat "$logs/$name.log"
        failed+=("$name")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    step "FAILED: ${failed[*]}"
    exit 1
fi
step "every suite passed"
