#!/usr/bin/env bash
# Tests of the browser client (crates/gateway/static): client.js under Node's built-in
# test runner against real gateways (tests/js), and a real headless Chromium driving the
# demo chat and the /feed page (tests/browser).
#
# Installs what it needs: Debian's chromium and redis-server when missing, and the
# pinned npm packages of tests/browser/package.json (playwright-core, ws) into
# tests/browser/node_modules. The tests start and stop their own wsgate and
# redis-server processes (by PID, free ports, 127.0.0.1). The last line is the summary
# of Node's test runner; the exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -f tests/browser/node_modules/playwright-core/package.json ] || [ ! -f tests/browser/node_modules/ws/package.json ]; then
    (cd tests/browser && npm install --no-audit --no-fund --silent) >&2
fi

# The static files are built into the binary (include_str!): build it fresh.
if [ -z "${WSGATE_BIN:-}" ]; then
    cargo build -q -p wsgate-gateway >&2
fi

exec timeout 300 node --test tests/js/ tests/browser/
