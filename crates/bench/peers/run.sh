#!/usr/bin/env bash
# Starts and stops the comparison peers (see README.md): Socket.IO and uWebSockets.js.
#
#   run.sh install                          npm ci into ./node_modules (done by every command when missing)
#   run.sh single PORT                      one Socket.IO node, in-memory adapter; prints its PID
#   run.sh cluster REDIS_PORT P1 P2 P3      three Socket.IO nodes on redis://127.0.0.1:REDIS_PORT; prints 3 PIDs
#   run.sh uws PORT                         one uWebSockets.js node; prints its PID
#   run.sh uws-cluster REDIS_PORT P1 P2 P3  three uWebSockets.js nodes with a Redis relay; prints 3 PIDs
#   run.sh redis PORT                       a throwaway redis-server (no persistence); prints its PID
#                                           (none when a Redis already answers on PORT: it is used as is)
#   run.sh stop PID...                      SIGTERM, then SIGKILL after 5 s; waits until they are gone
#
# PIDs go to stdout, one per line (they are the node/redis processes themselves, ready for
# /proc/PID/stat); everything else goes to stderr. A command returns once every process it
# started is listening. Logs: $WSGATE_PEER_LOG_DIR (default ${TMPDIR:-/tmp}), one file per port.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_DIR="${WSGATE_PEER_LOG_DIR:-${TMPDIR:-/tmp}}"
READY_TIMEOUT_S="${WSGATE_PEER_READY_TIMEOUT_S:-20}"

die() { echo "run.sh: $*" >&2; exit 1; }

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# alive PID: running and not a zombie (an unreaped child of a parent that ignores it).
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  state="${state%% *}"
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && (( $1 > 0 && $1 < 65536 )); }

ensure_installed() {
  command -v node >/dev/null || die "node is not installed (Node 20 or newer is needed)"
  # npm ci writes node_modules/.package-lock.json last; reinstall when the lock file changed.
  local marker="$HERE/node_modules/.package-lock.json"
  if [[ ! -f "$marker" || "$HERE/package-lock.json" -nt "$marker" ]]; then
    echo "run.sh: npm ci in $HERE" >&2
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}

# wait_ready PID LOGFILE PATTERN: bounded poll until PATTERN shows up in LOGFILE.
wait_ready() {
  local pid="$1" log="$2" pattern="$3" deadline=$((SECONDS + READY_TIMEOUT_S))
  while ! grep -q "$pattern" "$log" 2>/dev/null; do
    if ! alive "$pid"; then
      cat "$log" >&2 || true
      die "process $pid exited before it was ready (log: $log)"
    fi
    (( SECONDS < deadline )) || { cat "$log" >&2 || true; die "process $pid not ready after ${READY_TIMEOUT_S}s (log: $log)"; }
    sleep 0.05
  done
}

# start_node PORT [REDIS_URL]: starts one server.js in the background, prints its PID.
# PEER=uws starts uws-server.js instead.
start_node() {
  local port="$1" redis="${2:-}" peer="${PEER:-socketio}"
  local log="$LOG_DIR/wsgate-peer-$peer-$1.log" script="$HERE/server.js"
  [[ "$peer" == uws ]] && script="$HERE/uws-server.js"
  local args=(--port "$port")
  [[ -n "$redis" ]] && args+=(--redis "$redis")
  # exec-less background start: $! is the node process itself. stdin/stdout/stderr are
  # detached from the caller so `pids=$(run.sh ...)` returns at once.
  node "$script" "${args[@]}" </dev/null >"$log" 2>&1 &
  local pid=$!
  wait_ready "$pid" "$log" "^listening on "
  echo "run.sh: $peer node pid $pid on 127.0.0.1:$port${redis:+ (redis $redis)}, log $log" >&2
  echo "$pid"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  install)
    ensure_installed
    ;;
  single|uws)
    if [[ $# -ne 1 ]] || ! is_port "$1"; then usage; fi
    ensure_installed
    [[ "$cmd" == uws ]] && export PEER=uws
    start_node "$1"
    ;;
  cluster|uws-cluster)
    [[ "$cmd" == uws-cluster ]] && export PEER=uws
    [[ $# -eq 4 ]] || usage
    for p in "$@"; do is_port "$p" || usage; done
    ensure_installed
    redis_port="$1"; shift
    if command -v redis-cli >/dev/null; then
      redis-cli -p "$redis_port" ping >/dev/null 2>&1 \
        || die "no Redis answers on 127.0.0.1:$redis_port (start one with: run.sh redis $redis_port)"
    fi
    started=()
    for p in "$@"; do
      if ! pid=$(start_node "$p" "redis://127.0.0.1:$redis_port"); then
        [[ ${#started[@]} -gt 0 ]] && "${BASH_SOURCE[0]}" stop "${started[@]}" || true
        exit 1
      fi
      started+=("$pid")
      echo "$pid"
    done
    ;;
  redis)
    if [[ $# -ne 1 ]] || ! is_port "$1"; then usage; fi
    command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install -y redis-server)"
    # Already there: use it, but print no PID (`stop` must not end what this did not start).
    if command -v redis-cli >/dev/null && redis-cli -p "$1" ping >/dev/null 2>&1; then
      echo "run.sh: a Redis already answers on 127.0.0.1:$1; using it (not started here, no PID printed)" >&2
      exit 0
    fi
    log="$LOG_DIR/wsgate-peer-redis-$1.log"
    redis-server --bind 127.0.0.1 --port "$1" --save '' --appendonly no </dev/null >"$log" 2>&1 &
    pid=$!
    wait_ready "$pid" "$log" "Ready to accept connections"
    echo "run.sh: redis-server pid $pid on 127.0.0.1:$1, log $log" >&2
    echo "$pid"
    ;;
  stop)
    [[ $# -ge 1 ]] || usage
    for pid in "$@"; do
      [[ "$pid" =~ ^[0-9]+$ ]] || die "not a PID: $pid"
      kill -TERM "$pid" 2>/dev/null || echo "run.sh: $pid is not running" >&2
    done
    deadline=$((SECONDS + 5))
    for pid in "$@"; do
      while alive "$pid"; do
        if (( SECONDS >= deadline )); then
          echo "run.sh: $pid ignored SIGTERM, sending SIGKILL" >&2
          kill -KILL "$pid" 2>/dev/null || true
          break
        fi
        sleep 0.05
      done
    done
    ;;
  -h|--help|help|"")
    usage
    ;;
  *)
    usage
    ;;
esac
