#!/usr/bin/env bash
# The fan-out comparison of docs/benchmarks.md ("Round 2, issue 17"): wsgate against the
# uWebSockets.js peer, one node and three nodes on Redis, one room of 3,000 subscribers.
#
#   crates/bench/compare17.sh run [ROUNDS]       # 60k/s, 300k/s and a 400-message burst,
#                                                # wsgate and uWS alternating, ROUNDS (3) times
#   crates/bench/compare17.sh summary            # medians of what `run` wrote
#   crates/bench/compare17.sh profile single|cluster r20|r100|burst NAME
#                                                # perf record -F 4000 on the gateway(s)
#
# Needs release builds (cargo build --release -p wsgate-gateway -p wsgate-bench), Node 20
# and redis-server (crates/bench/peers/run.sh installs the peers' packages). Every
# process is started here and stopped by PID. Results: $OUT (target/bench17).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=target/release/wsgate-bench
GW=${WSGATE:-target/release/wsgate}
OUT=${OUT:-target/bench17}
PEERS=crates/bench/peers/run.sh
LOAD="--rate-limit 100000 --max-connections 20000 --send-queue 1024"
mkdir -p "$OUT"

scenario_args() {
  case "$1" in
    r20) echo "-s 3000 -r 20 --duration 10s" ;;
    r100) echo "-s 3000 -r 100 --duration 10s" ;;
    burst) echo "-s 3000 -r 10 --burst 400" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

# start_servers KIND(wsgate|uws) MODE(single|cluster): sets URLS, PIDS, REDIS_PID
start_servers() {
  local kind=$1 mode=$2
  PIDS=() REDIS_PID=""
  if [[ $mode == single ]]; then
    if [[ $kind == wsgate ]]; then
      $GW --listen 127.0.0.1:18555 $LOAD >"$OUT/gw.log" 2>&1 & PIDS=($!)
      URLS=ws://127.0.0.1:18555
      wait_port 18555
    else
      PIDS=($($PEERS uws 19201 2>/dev/null)); URLS=ws://127.0.0.1:19201
    fi
  else
    REDIS_PID=$($PEERS redis 19300 2>/dev/null)
    if [[ $kind == wsgate ]]; then
      for i in 1 2 3; do
        $GW --listen 127.0.0.1:1930$i $LOAD --redis-url redis://127.0.0.1:19300 --node-id gw-$i \
          >"$OUT/gw$i.log" 2>&1 &
        PIDS+=($!)
      done
      for i in 1 2 3; do wait_port 1930$i; done
      URLS=ws://127.0.0.1:19301,ws://127.0.0.1:19302,ws://127.0.0.1:19303
    else
      PIDS=($($PEERS uws-cluster 19300 19211 19212 19213 2>/dev/null))
      URLS=ws://127.0.0.1:19211,ws://127.0.0.1:19212,ws://127.0.0.1:19213
    fi
  fi
}

wait_port() {
  for _ in $(seq 1 100); do
    (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}

stop_servers() {
  kill "${PIDS[@]}" 2>/dev/null || true
  for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  if [[ -n $REDIS_PID ]]; then $PEERS stop "$REDIS_PID" 2>/dev/null || true; fi
}

pid_args() { for p in "${PIDS[@]}"; do printf -- '--pid %s ' "$p"; done; }

case "${1:-}" in
  run)
    rounds=${2:-3}
    for r in $(seq 1 "$rounds"); do
      for mode in single cluster; do
        for kind in wsgate uws; do
          start_servers $kind $mode
          for s in r20 r100 burst; do
            # shellcheck disable=SC2046
            $B fanout --json --no-progress --url "$URLS" $(pid_args) $(scenario_args $s) \
              > "$OUT/$r-$kind-$mode-$s.json" 2>>"$OUT/bench.err"
          done
          stop_servers
        done
      done
    done
    ;;
  summary)
    python3 - "$OUT" <<'PY'
import glob, json, os, statistics as st, sys
rows = {}
for f in glob.glob(os.path.join(sys.argv[1], "[0-9]*-*.json")):
    r = json.load(open(f))["results"]
    key = os.path.basename(f)[:-5].split("-", 1)[1]
    rows.setdefault(key, []).append(r)
for k in sorted(rows):
    v = rows[k]
    med = lambda g: st.median(g(x) for x in v)
    print(f"{k:24} n={len(v)} deliveries/s {med(lambda r: r['deliveries_per_s']):>10,.0f}"
          f"  p50 {med(lambda r: r['latency_ms']['p50']):7.1f}  p99 {med(lambda r: r['latency_ms']['p99']):7.1f} ms"
          f"  cpu {med(lambda r: r['cpu']['gateway_cpu_us_per_delivery']):5.2f} us/delivery"
          f"  lost {sum(r['lost'] for r in v)}")
PY
    ;;
  profile)
    mode=$2 s=$3 name=$4
    start_servers wsgate "$mode"
    pids=$(IFS=,; echo "${PIDS[*]}")
    # A longer burst and warm-up, so the recording covers the delivery.
    args=$(scenario_args "$s")
    [[ $s == burst ]] && args="-s 3000 -r 10 --burst 1000 --warmup 7s" || args="$args --warmup 4s"
    (sleep 5; perf record -F 4000 -o "$OUT/$name.perf" -p "$pids" -- sleep 8 >/dev/null 2>&1) &
    perf_pid=$!
    # shellcheck disable=SC2086
    $B fanout --json --no-progress --url "$URLS" $(pid_args) $args > "$OUT/$name.json"
    wait $perf_pid || true
    stop_servers
    perf report -i "$OUT/$name.perf" --no-children --sort sym 2>/dev/null | grep '%' | head -40
    ;;
  *)
    sed -n 2,12p "$0"; exit 2 ;;
esac
