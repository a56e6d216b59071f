#!/usr/bin/env bash
# RFC 6455 conformance of wsgate with Autobahn|Testsuite (`wstest -m fuzzingclient`).
#
#   tests/autobahn/run.sh            # from anywhere; uses target/debug/wsgate
#   tests/autobahn/run.sh --install-only   # steps 1 and 2 only (tests/provision.sh)
#   WSGATE_BIN=target/release/wsgate tests/autobahn/run.sh
#
# What it does, by itself, on a clean machine (root, apt-get and PyPI reachable):
#  1. Finds Python 2.7 (the suite needs it): pyenv's 2.7.x, else /usr/bin/python2.7, else
#     installs Debian bullseye's python2.7 from a temporary sources file (removed again,
#     followed by `apt-get update`).
#  2. Installs the suite (pinned, $AUTOBAHN_VERSION) into target/autobahn-env, a Python 2.7
#     virtualenv; skipped when that environment is present and working.
#  3. Starts the already built gateway ($WSGATE_BIN, default target/debug/wsgate; this script
#     builds nothing) on a free 127.0.0.1 port with `--echo-path /echo`, the message limit
#     raised to 16 MiB for cases 9.*, and waits (bounded) for its listening line.
#  4. Runs cases 1-7, 9, 10 (must pass) and 12, 13 (permessage-deflate, which wsgate does
#     not offer: they must be reported UNIMPLEMENTED) in one run.
#  5. Checks target/autobahn/index.json with tests/autobahn/check.py (wstest exits 0 even
#     when cases fail or nothing connected) and exits non-zero on any failed or missing
#     case. The HTML report stays in target/autobahn/index.html.
# The gateway is stopped by PID on every exit path.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

AUTOBAHN_VERSION=${AUTOBAHN_VERSION:-25.10.1}
env_dir="$root/target/autobahn-env"
out="$root/target/autobahn"
bin=${WSGATE_BIN:-$root/target/debug/wsgate}
agent=wsgate
# Debian's sources file for bullseye's python2.7, present only while installing it.
bullseye_list=/etc/apt/sources.list.d/wsgate-autobahn-bullseye.list

log() { printf '[autobahn] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s; }

gw_pid=""
ws_pid=""
cleanup() {
    local rc=$?
    if [ -n "$ws_pid" ]; then
        kill "$ws_pid" 2>/dev/null || true
        wait "$ws_pid" 2>/dev/null || true
    fi
    if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
        kill "$gw_pid" 2>/dev/null || true
        # Bounded wait for it to go, then force.
        for _ in $(seq 50); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$gw_pid" 2>/dev/null || true
        wait "$gw_pid" 2>/dev/null || true
    fi
    if [ -f "$bullseye_list" ]; then
        rm -f "$bullseye_list"
        apt-get update -qq >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. Python 2.7 ----------------------------------------------------------------------

is_py27() { [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; }

# The Debian mirror apt already uses (deb822 `.sources` or one-line `.list` files).
debian_mirror() {
    local m
    m=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{for (i = 2; i <= NF; i++) print $i}'
           grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
               | sed 's/\[[^]]*\]//' | awk '{print $2}'
         } | grep -E '/debian/?$' | head -n 1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

install_bullseye_python27() {
    command -v apt-get >/dev/null 2>&1 || die "no Python 2.7 and no apt-get to install one"
    local mirror keyring opts=""
    mirror=$(debian_mirror)
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] && opts="[signed-by=$keyring] "
    log "installing python2.7 from Debian bullseye ($mirror), a temporary sources file"
    echo "deb ${opts}${mirror%/} bullseye main" > "$bullseye_list"
    apt-get update -qq >/dev/null
    apt_install python2.7 libpython2.7-dev
    rm -f "$bullseye_list"
    apt-get update -qq >/dev/null
}

find_py27() {
    local c pyroot
    pyroot=${PYENV_ROOT:-$HOME/.pyenv}
    if command -v pyenv >/dev/null 2>&1; then pyroot=$(pyenv root 2>/dev/null || echo "$pyroot"); fi
    for c in "$pyroot"/versions/2.7.18/bin/python2.7 "$pyroot"/versions/2.7*/bin/python2.7 \
        /usr/bin/python2.7 /usr/local/bin/python2.7; do
        if is_py27 "$c"; then echo "$c"; return 0; fi
    done
    return 1
}

# --- 2. the suite in a Python 2.7 virtualenv ---------------------------------------------

env_works() {
    [ -x "$env_dir/bin/wstest" ] && [ -x "$env_dir/bin/python" ] &&
        "$env_dir/bin/python" -c "
import sys, autobahntestsuite, wsaccel
sys.exit(autobahntestsuite.__version__ != '$AUTOBAHN_VERSION')" 2>/dev/null
}

# A pip that runs on Python 3, only to download pip itself as a py2.7 wheel
# (Debian's python2.7 has no pip and no ensurepip).
py3_pip() { # sets PIP3 (an array)
    if python3 -m pip --version >/dev/null 2>&1; then
        PIP3=(python3 -m pip)
        return
    fi
    local boot="$root/target/autobahn-boot/py3"
    if [ ! -x "$boot/bin/pip" ]; then
        if ! python3 -m venv "$boot" >/dev/null 2>&1; then
            apt-get update -qq >/dev/null && apt_install python3-venv
            rm -rf "$boot"
            python3 -m venv "$boot" >/dev/null
        fi
    fi
    PIP3=("$boot/bin/pip")
}

install_env() {
    local py2=$1 boot="$root/target/autobahn-boot"
    rm -rf "$env_dir" "$boot/wheels" "$boot/py2"
    mkdir -p "$boot"
    command -v gcc >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt_install gcc libc6-dev; }
    py3_pip
    log "pip for Python 2.7 (pip 20.3.4 wheel, downloaded with ${PIP3[*]})"
    "${PIP3[@]}" download -q --disable-pip-version-check --no-deps --python-version 2.7 \
        --only-binary=:all: -d "$boot/wheels" pip==20.3.4 setuptools==44.1.1 wheel==0.37.1
    # A wheel is importable: run that pip to install itself into a bootstrap directory.
    "$py2" "$boot/wheels/pip-20.3.4-py2.py3-none-any.whl/pip" install -q \
        --disable-pip-version-check --no-index --find-links "$boot/wheels" \
        --target "$boot/py2" pip==20.3.4 setuptools==44.1.1 wheel==0.37.1 2>&1 | grep -v DEPRECATION || true
    [ -d "$boot/py2/pip" ] || die "bootstrap pip for Python 2.7"
    log "virtualenv 20.15.1 (the last one that makes 2.7 environments)"
    PYTHONPATH="$boot/py2" "$py2" -m pip install -q --disable-pip-version-check \
        --target "$boot/py2" virtualenv==20.15.1 2>&1 | grep -v -e DEPRECATION -e 'already exists' || true
    PYTHONPATH="$boot/py2" "$py2" -m virtualenv -q --no-periodic-update "$env_dir" \
        || die "virtualenv $env_dir"
    log "autobahntestsuite==$AUTOBAHN_VERSION (builds wsaccel with gcc; about a minute)"
    "$env_dir/bin/pip" install -q --disable-pip-version-check \
        "autobahntestsuite==$AUTOBAHN_VERSION" 2>&1 | grep -v DEPRECATION || true
    env_works || die "autobahntestsuite did not install into $env_dir"
    rm -rf "$boot"
}

t0=$(now)
command -v python3 >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt_install python3; }
if env_works; then
    log "suite cached in $env_dir"
else
    t_inst=$(now)
    py2=$(find_py27) || { install_bullseye_python27; py2=$(find_py27) || die "python2.7 after install"; }
    log "Python 2.7: $py2"
    install_env "$py2"
    log "installed the suite in $(( $(now) - t_inst )) s"
fi
"$env_dir/bin/wstest" -a 2>/dev/null | sed 's/^/[autobahn] /' >&2 || true
[ "${1:-}" = --install-only ] && exit 0

# --- 3. the gateway ---------------------------------------------------------------------

[ -x "$bin" ] || die "$bin not found: build it first (cargo build -p wsgate-gateway)"
rm -rf "$out"
mkdir -p "$out"
"$bin" --listen 127.0.0.1:0 --echo-path /echo --max-message-bytes 16777216 \
    --rate-limit 1000000 > "$out/wsgate.log" 2>&1 &
gw_pid=$!
port=""
for _ in $(seq 300); do # up to 30 s
    port=$(sed -n 's/.*wsgate listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out/wsgate.log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$gw_pid" 2>/dev/null || { tail -n 20 "$out/wsgate.log" >&2; die "wsgate exited at start"; }
    sleep 0.1
done
[ -n "$port" ] || { tail -n 20 "$out/wsgate.log" >&2; die "no listening line from wsgate within 30 s"; }
log "wsgate (pid $gw_pid) on 127.0.0.1:$port, echo at /echo"

# --- 4. the suite -----------------------------------------------------------------------

cat > "$out/spec.json" <<EOF
{
  "options": {"failByDrop": false},
  "outdir": "$out",
  "servers": [{"agent": "$agent", "url": "ws://127.0.0.1:$port/echo"}],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.*", "13.*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
# Every case id (and category) the installed suite knows, so the checker can tell a case
# that never ran from one that is not in this version.
"$env_dir/bin/python" - "$out/suite-cases.json" <<'EOF'
import json, sys
import autobahntestsuite
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories
from autobahntestsuite.caseset import CaseSet
cs = CaseSet("fuzzingclient", "Case", Cases, CaseCategories, CaseSubCategories)
json.dump({"version": autobahntestsuite.__version__,
           "categories": CaseCategories,
           "cases": [{"id": cs.caseClasstoId(c), "description": cs.caseClassToPrettyDescription(c)}
                     for c in Cases]},
          open(sys.argv[1], "w"), indent=1)
EOF
log "wstest -m fuzzingclient (log: target/autobahn/wstest.log)"
t_run=$(now)
wstest_rc=0
# In the background, so that a signal to this script is handled at once (bash runs traps
# only between foreground commands); the cleanup stops it as well.
(cd "$out" && exec timeout 900 "$env_dir/bin/wstest" -m fuzzingclient -s "$out/spec.json") \
    > "$out/wstest.log" 2>&1 &
ws_pid=$!
wait "$ws_pid" || wstest_rc=$?
ws_pid=""
log "wstest finished in $(( $(now) - t_run )) s (exit $wstest_rc)"
[ "$wstest_rc" -eq 0 ] || { tail -n 20 "$out/wstest.log" >&2; log "wstest itself failed (exit $wstest_rc)"; }

# The gateway must still be alive after all that.
kill -0 "$gw_pid" 2>/dev/null || { tail -n 20 "$out/wsgate.log" >&2; die "wsgate died during the run"; }

# --- 5. the verdict ---------------------------------------------------------------------

check_rc=0
python3 tests/autobahn/check.py --report "$out" --agent "$agent" \
    --spec "$out/spec.json" --suite-cases "$out/suite-cases.json" || check_rc=$?
log "HTML report: target/autobahn/index.html (total $(( $(now) - t0 )) s)"
[ "$wstest_rc" -eq 0 ] || exit 1
exit "$check_rc"
