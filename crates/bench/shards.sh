#!/usr/bin/env bash
# The Redis Cluster shard comparison of docs/benchmarks.md ("Round 2, issue 18: Redis
# Cluster shards"): 3 gateways on one plain Redis, then on a Redis Cluster of 1, 3 and 6
# masters (no replicas), the same many-room load on each, alternating.
#
#   crates/bench/shards.sh run [ROUNDS]    # plain, 1, 3, 6 shards, plain, 1, … ROUNDS (3) times
#   crates/bench/shards.sh summary         # medians of what `run` wrote (a Markdown table)
#
# Load (wsgate-bench rooms): $ROOMS (500) rooms of $MEMBERS (4) members, each member its own
# user; members spread round-robin over the 3 gateways, so every room spans nodes. Every
# member publishes into its room (open loop, 2 s warm-up), each message reaching 3 others:
#   steady: $RATE (2) messages/s per member (500 × 4 × 2 = 4,000 published/s offered,
#           12,000 deliveries/s), $DURATION (10s) measured;
#   steps:  $STEPS (4 6 10 14) messages/s per member (8,000 … 28,000 published/s),
#           $STEP_DURATION (5s) each, up to the first one not held (held: everything
#           delivered, nothing lost, duplicated or closed, p99 ≤ $P99_MAX_MS (50) ms,
#           publishers on schedule); the highest held is the most the configuration
#           sustains here;
#   burst:  $BURST (10) messages per member at once after the warm-up (20,000 published,
#           60,000 deliveries), closed loop: the ceiling of the whole setup, on fresh servers
#           when a step was not held (a failed run leaves messages in flight). (With one plain
#           Redis a burst of 15 per member is answered `unavailable`: each node's 16 pooled
#           connections cannot take 10,000 publishes within the 2 s operation timeout.)
# Room names room-0 … room-499 are their own hash tags ({room-N}), so the rooms spread over
# the slots and therefore the shards (the summary counts the rooms per shard).
#
# CPU: the bench samples /proc/PID/stat (utime + stime) of every gateway and every Redis
# process at the start and end of its measured window (--pid): % of one core, and here also
# µs per published message. Lost / duplicated / out-of-order deliveries are counted per
# member (must be 0).
#
# Before each configuration the machine must be quiet of other benchmarks:
# `pgrep -f 'hold50k|wsgate-bench'` empty, polled every 30 s for up to 20 minutes (then the
# run goes on and the log says so). Every process is started here and stopped by its PID.
# Needs redis-server/redis-cli 7+ and release builds (built when missing:
# cargo build --release -p wsgate-gateway -p wsgate-bench); WSGATE and BENCH choose other
# binaries. Results: $OUT (target/bench-shards): one JSON per run, loads.txt, cluster layouts.
set -euo pipefail
cd "$(dirname "$0")/../.."
GW=${WSGATE:-target/release/wsgate}
B=${BENCH:-target/release/wsgate-bench}
OUT=${OUT:-target/bench-shards}
ROOMS=${ROOMS:-500} MEMBERS=${MEMBERS:-4} RATE=${RATE:-2} BURST=${BURST:-10}
DURATION=${DURATION:-10s} STEPS=${STEPS:-4 6 10 14} STEP_DURATION=${STEP_DURATION:-5s}
P99_MAX_MS=${P99_MAX_MS:-50}
LOAD="--rate-limit 100000 --max-connections 20000 --send-queue 1024"
REDIS_BASE=17100   # plain Redis on 17100, cluster nodes on 17101…17106 (bus ports 27101…)
GW_BASE=17110      # gateways on 17111…17113
read -r -a CONFIGS <<<"${CONFIGS:-plain 1 3 6}"   # which configurations, in order
mkdir -p "$OUT"

if [[ ! -x $GW || ! -x $B ]]; then
  cargo build --release -p wsgate-gateway -p wsgate-bench
fi

REDIS_PIDS=() REDIS_PORTS=() GW_PIDS=() SEEDS="" GWLOG=""
RUNDIR=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-shards.XXXXXX")

log() { echo "shards.sh: $*" >&2; }

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND…
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { log "timed out waiting for $what"; return 1; }
    sleep 0.1
  done
}

pong() { [[ $(redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null) == PONG ]]; }
cluster_ok() {
  local p
  for p in "$@"; do
    redis-cli -h 127.0.0.1 -p "$p" CLUSTER INFO 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
}
ready() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz") == 200 ]]; }

# start_redis CONFIG(plain|N): sets REDIS_PIDS, REDIS_PORTS and SEEDS (--redis-… flag)
start_redis() {
  local cfg=$1 p
  REDIS_PIDS=() REDIS_PORTS=()
  if [[ $cfg == plain ]]; then
    REDIS_PORTS=($REDIS_BASE)
  else
    for i in $(seq 1 "$cfg"); do REDIS_PORTS+=($((REDIS_BASE + i))); done
  fi
  for p in "${REDIS_PORTS[@]}"; do
    local args=(--port "$p" --bind 127.0.0.1 --save '' --appendonly no --protected-mode no)
    [[ $cfg != plain ]] && args+=(--cluster-enabled yes --cluster-config-file "nodes-$p.conf"
                                  --cluster-node-timeout 5000)
    (cd "$RUNDIR" && rm -f "nodes-$p.conf" && exec redis-server "${args[@]}" \
      </dev/null >"$RUNDIR/redis-$p.log" 2>&1) &
    REDIS_PIDS+=($!)
  done
  for p in "${REDIS_PORTS[@]}"; do wait_until 20 "redis on $p" pong "$p"; done
  if [[ $cfg == plain ]]; then
    SEEDS="--redis-url redis://127.0.0.1:$REDIS_BASE"
    return
  fi
  if [[ $cfg == 1 ]]; then
    # redis-cli --cluster create wants 3 masters or more: one node takes every slot itself.
    redis-cli -h 127.0.0.1 -p "${REDIS_PORTS[0]}" CLUSTER ADDSLOTSRANGE 0 16383 >/dev/null
  else
    local nodes=()
    for p in "${REDIS_PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
      >"$RUNDIR/create.log" 2>&1 || { cat "$RUNDIR/create.log" >&2; return 1; }
  fi
  wait_until 30 "cluster_state:ok" cluster_ok "${REDIS_PORTS[@]}"
  SEEDS="--redis-cluster-nodes $(printf '127.0.0.1:%s,' "${REDIS_PORTS[@]}")"
  SEEDS=${SEEDS%,}
}

start_gateways() {
  GW_PIDS=()
  for i in 1 2 3; do
    # shellcheck disable=SC2086
    $GW --listen 127.0.0.1:$((GW_BASE + i)) $LOAD $SEEDS --node-id gw-$i \
      >>"$GWLOG-gw$i.log" 2>&1 &
    GW_PIDS+=($!)
  done
  for i in 1 2 3; do wait_until 30 "gateway $i ready" ready $((GW_BASE + i)); done
}

stop_pids() { # SIGTERM, SIGKILL after 10 s; waits until each is gone
  local p
  kill "$@" 2>/dev/null || true
  for p in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
  done
  wait "$@" 2>/dev/null || true
}

cleanup() {
  (( ${#GW_PIDS[@]} )) && stop_pids "${GW_PIDS[@]}"
  (( ${#REDIS_PIDS[@]} )) && stop_pids "${REDIS_PIDS[@]}"
  GW_PIDS=() REDIS_PIDS=()
}
trap 'cleanup; rm -rf "$RUNDIR"' EXIT
trap 'exit 130' INT TERM

# Another benchmark running? (not counting this script and its parents)
others() {
  local mine=" $$ $PPID " p out=""
  for p in $(pgrep -f 'hold50k|wsgate-bench' || true); do
    [[ $mine == *" $p "* ]] || out+="$p "
  done
  echo "$out"
}
wait_quiet() {
  local deadline=$((SECONDS + 1200)) busy
  while busy=$(others) && [[ -n $busy ]]; do
    if (( SECONDS >= deadline )); then
      log "still busy after 20 minutes (PIDs $busy), measuring anyway"
      echo "$(date -u +%FT%TZ) $1 BUSY: $(ps -o pid=,args= -p ${busy// /,} | cut -c1-120 | tr '\n' ';')" \
        >>"$OUT/loads.txt"
      return
    fi
    log "another benchmark runs (PIDs $busy), waiting 30 s"
    sleep 30
  done
}

pid_args() { local p; for p in "${GW_PIDS[@]}" "${REDIS_PIDS[@]}"; do printf -- '--pid %s ' "$p"; done; }

# held FILE: the run completed with everything delivered, nothing lost, duplicated, out of
# order or closed, p99 ≤ P99_MAX_MS and the publishers on schedule (lag ≤ 250 ms).
held() {
  python3 - "$1" "$P99_MAX_MS" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))["results"]
except (ValueError, KeyError, OSError):
    sys.exit(1)
ok = (r["drained"] and r["lost"] + r["duplicated"] + r["out_of_order"] + r["closed"] == 0
      and r["latency_ms"]["p99"] <= float(sys.argv[2]) and r["publisher_lag_max_ms"] <= 250)
sys.exit(0 if ok else 1)
PY
}

# gw_marks: each gateway log's length; warnings N1 N2 N3: their WARN/ERROR lines after
# those, counted by message
gw_marks() { local i; for i in 1 2 3; do wc -l <"$GWLOG-gw$i.log"; done; }
warnings() {
  local i=1 n
  for n in "$@"; do tail -n +"$((n + 1))" "$GWLOG-gw$i.log"; i=$((i + 1)); done |
    sed 's/\x1b\[[0-9;]*m//g' | grep -E ' (WARN|ERROR) ' |
    sed -E 's/^[^ ]+ +//; s/\{[^}]*\}//g' | sort | uniq -c | sort -rn || true
}

run_config() { # run_config ROUND CONFIG
  local r=$1 cfg=$2 urls mode args step steps=() restart=0 from=()
  GWLOG="$OUT/$r-$cfg"
  wait_quiet "$r-$cfg"
  start_redis "$cfg"
  start_gateways
  urls=$(printf 'ws://127.0.0.1:%s,' $((GW_BASE + 1)) $((GW_BASE + 2)) $((GW_BASE + 3)))
  urls=${urls%,}
  if [[ $cfg != plain ]]; then
    redis-cli -h 127.0.0.1 -p "${REDIS_PORTS[0]}" CLUSTER NODES >"$OUT/$r-$cfg.layout"
  fi
  for step in $STEPS; do steps+=("r$step"); done
  for mode in steady "${steps[@]}" burst; do
    if [[ $mode == r* && $restart == 1 ]]; then continue; fi   # a step was not held: no higher one
    if [[ $mode == burst && $restart == 1 ]]; then
      # A step that failed leaves messages in flight into rooms of the same names, and an
      # overloaded one its repairs: the burst gets fresh servers.
      cleanup; start_redis "$cfg"; start_gateways
    fi
    echo "$(date -u +%FT%TZ) $r-$cfg-$mode load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loads.txt"
    # which PIDs are gateways and which Redis (port, pid)
    { echo "gateways ${GW_PIDS[*]}"
      for i in "${!REDIS_PORTS[@]}"; do echo "redis ${REDIS_PORTS[$i]} ${REDIS_PIDS[$i]}"; done
    } >"$OUT/$r-$cfg-$mode.pids"
    case $mode in
      steady) args="--duration $DURATION --member-rate $RATE" ;;
      burst) args="--member-rate $RATE --burst $BURST --drain 30s" ;;
      *) args="--duration $STEP_DURATION --member-rate ${mode#r}" ;;
    esac
    log "round $r, $cfg, $mode"
    read -r -a from <<<"$(gw_marks | tr '\n' ' ')"
    # shellcheck disable=SC2046,SC2086
    $B rooms --json --no-progress --url "$urls" $(pid_args) --rooms "$ROOMS" \
      --members "$MEMBERS" $args >"$OUT/$r-$cfg-$mode.json" 2>>"$OUT/bench.err" ||
      log "bench failed ($r-$cfg-$mode): see $OUT/bench.err"
    sleep 1   # let the gateways log what the end of the run did
    warnings "${from[@]}" >"$OUT/$r-$cfg-$mode.warn"
    if [[ $mode == r* ]] && ! held "$OUT/$r-$cfg-$mode.json"; then restart=1; fi
  done
  for p in "${REDIS_PORTS[@]}"; do
    echo "dbsize $p $(redis-cli -h 127.0.0.1 -p "$p" DBSIZE)"
  done >>"$OUT/$r-$cfg.dbsize"
  cleanup
}

case "${1:-}" in
  run)
    rounds=${2:-3}
    command -v redis-server >/dev/null || { log "redis-server is not installed"; exit 1; }
    echo "$(date -u +%FT%TZ) start: $0 $* ROOMS=$ROOMS MEMBERS=$MEMBERS RATE=$RATE STEPS=$STEPS BURST=$BURST" \
      >>"$OUT/loads.txt"
    for r in $(seq 1 "$rounds"); do
      for cfg in "${CONFIGS[@]}"; do run_config "$r" "$cfg"; done
    done
    echo "$(date -u +%FT%TZ) end" >>"$OUT/loads.txt"
    ;;
  summary)
    P99_MAX_MS=$P99_MAX_MS python3 - "$OUT" <<'PY'
import glob, json, os, statistics as st, sys
out, p99_max = sys.argv[1], float(os.environ["P99_MAX_MS"])

def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc

def layout(path):
    """Gateway PIDs, Redis PID -> port, and each master's slot ranges."""
    gws, redis, ranges = [], {}, {}
    for line in open(path):
        f = line.split()
        if f[0] == "gateways":
            gws = [int(x) for x in f[1:]]
        elif f[0] == "redis":
            redis[int(f[2])] = int(f[1])
        elif len(f) > 8 and "master" in f[2]:
            port = int(f[1].split(":")[1].split("@")[0])
            ranges[port] = [tuple(int(x) for x in (r.split("-") * 2)[:2])
                            for r in f[8:] if r[0].isdigit()]
    return gws, redis, ranges

runs = {}  # (cfg, mode) -> [run]
rooms_per_shard = {}
for f in sorted(glob.glob(os.path.join(out, "[0-9]*-*-*.json"))):
    r, cfg, mode = os.path.basename(f)[:-5].split("-")
    gws, redis, _ = layout(os.path.join(out, f"{r}-{cfg}-{mode}.pids"))
    lay = os.path.join(out, f"{r}-{cfg}.layout")
    ranges = layout(lay)[2] if os.path.exists(lay) else {}
    warn = open(os.path.join(out, f"{r}-{cfg}-{mode}.warn")).read().split("\n")
    repairs = sum(int(w.split()[0]) for w in warn if "overflowed" in w)
    warns = sum(int(w.split()[0]) for w in warn if w.strip())
    try:
        rep = json.load(open(f))
    except ValueError:
        rep = {"error": "no JSON"}
    if "results" not in rep:
        runs.setdefault((cfg, mode), []).append(dict(ok=False, error=rep.get("error", "?")[:90],
                                                     repairs=repairs, warns=warns, round=r))
        continue
    res = rep["results"]
    cpu = {g["pid"]: g for g in res["cpu"]["gateways"]}
    msgs = res["messages_sent"]
    if ranges and cfg not in rooms_per_shard:
        slots = [crc16(f"room-{i}".encode()) % 16384 for i in range(res["rooms"])]
        rooms_per_shard[cfg] = [sum(1 for x in slots if any(a <= x <= b for a, b in ranges[p]))
                                for p in sorted(ranges)]
    bad = res["lost"] + res["duplicated"] + res["out_of_order"] + res["closed"]
    x = dict(
        pub=res["published_per_s"], dps=res["deliveries_per_s"],
        p50=res["latency_ms"]["p50"], p99=res["latency_ms"]["p99"],
        lost=res["lost"], dup=res["duplicated"], ooo=res["out_of_order"], closed=res["closed"],
        lag=res["publisher_lag_max_ms"], burst_s=res.get("burst_s"),
        r_pct=[cpu[p]["cpu_pct"] for p in redis], r_us=[cpu[p]["cpu_s"] * 1e6 / msgs for p in redis],
        g_pct=sum(cpu[p]["cpu_pct"] for p in gws),
        g_us=sum(cpu[p]["cpu_s"] for p in gws) * 1e6 / msgs,
        bench_pct=res["cpu"]["bench_cpu_pct"], repairs=repairs, warns=warns, round=r)
    x["ok"] = bad == 0 and res["drained"]
    x["held"] = x["ok"] and x["p99"] <= p99_max and x["lag"] <= 250
    runs.setdefault((cfg, mode), []).append(x)

def med(v, k, fmt="{:,.0f}", spread=True):
    v = [x[k] for x in v if x.get("ok")]
    if not v:
        return "—"
    m = fmt.format(st.median(v))
    return m + (f" ({fmt.format(min(v))}–{fmt.format(max(v))})" if spread and len(v) > 1 else "")

def loss(v):
    ok = [x for x in v if "lost" in x]
    failed = len(v) - len(ok)
    t = "/".join(str(sum(x[k] for x in ok)) for k in ("lost", "dup", "ooo", "closed"))
    return t + (f", {failed} failed" if failed else "")

order = [c for c in ("plain", "1", "3", "6") if any(k[0] == c for k in runs)]
name = lambda c: "one plain Redis" if c == "plain" else f"cluster, {c} shard" + ("s" if c != "1" else "")
steps = sorted({int(m[1:]) for _, m in runs if m.startswith("r")})

def shard_cols(v):
    ok = [x for x in v if x.get("ok")]
    if not ok:
        return "— | —"
    pct = st.median(st.mean(x["r_pct"]) for x in ok)
    us = st.median(st.mean(x["r_us"]) for x in ok)
    tot = st.median(sum(x["r_us"]) for x in ok)
    return f"{pct:.1f} | {us:.2f} ({tot:.2f})"

print("Fixed offered rate (steady), medians of the runs (spread):\n")
print("| config | rooms per shard | published/s | deliveries/s | p50 ms | p99 ms "
      "| lost/dup/ooo/closed | Redis CPU per shard, % of a core | Redis µs per published message, "
      "per shard (all shards) | 3 gateways, % of a core | gateways µs per message | bench % |")
print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
for c in order:
    v = runs.get((c, "steady"), [])
    print(f"| {name(c)} | {'/'.join(map(str, rooms_per_shard.get(c, []))) or '500'} "
          f"| {med(v, 'pub', spread=False)} | {med(v, 'dps', spread=False)} | {med(v, 'p50', '{:.1f}')} "
          f"| {med(v, 'p99', '{:.1f}')} | {loss(v)} | {shard_cols(v)} | {med(v, 'g_pct')} "
          f"| {med(v, 'g_us', '{:.1f}')} | {med(v, 'bench_pct', spread=False)} |")

print(f"\nSteps (p99 ms, medians; held: everything delivered, p99 ≤ {p99_max:g} ms, on schedule):\n")
print("| config | " + " | ".join(f"{s}/s per member: p99 ms (held)" for s in steps)
      + " | most sustained, published/s (median of runs) | Redis CPU per shard there, % | burst: published/s | burst: deliveries/s | burst: Redis µs/msg per shard (all) | burst: gateways µs/msg | burst lost/dup/ooo/closed |")
print("|---|" + "---:|" * len(steps) + "---:|---:|---:|---:|---:|---:|---|")
for c in order:
    cells, best, best_pct = [], [], []
    for s in steps:
        v = runs.get((c, f"r{s}"), [])
        cells.append(f"{med(v, 'p99', '{:.1f}')} ({sum(x.get('held', False) for x in v)}/{len(v)})")
    for rr in sorted({x["round"] for x in runs.get((c, "steady"), [])}):
        held = [x for m in ["steady"] + [f"r{s}" for s in steps] for x in runs.get((c, m), [])
                if x["round"] == rr and x.get("held")]
        best.append(max((x["pub"] for x in held), default=0))
        if held:
            best_pct.append(st.mean(max(held, key=lambda x: x["pub"])["r_pct"]))
    b = runs.get((c, "burst"), [])
    print(f"| {name(c)} | " + " | ".join(cells)
          + f" | {st.median(best) if best else 0:,.0f} | {st.median(best_pct) if best_pct else 0:.1f} "
          f"| {med(b, 'pub')} | {med(b, 'dps', spread=False)} | {shard_cols(b).split(' | ')[1]} "
          f"| {med(b, 'g_us', '{:.2f}')} | {loss(b)} |")

print("\nEvery rate (medians; Redis per shard: the mean over the shards of each run):\n")
print("| load | config | held | published/s | p50 ms | p99 ms | Redis % per shard | Redis µs/msg per shard "
      "(all) | gateways % | gateways µs/msg | bench % | whole machine % |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for m in ["steady"] + [f"r{s}" for s in steps] + ["burst"]:
    for c in order:
        v = runs.get((c, m), [])
        ok = [x for x in v if x.get("ok")]
        if not ok:
            if v:
                print(f"| {m} | {name(c)} | 0/{len(v)} | — | — | — | — | — | — | — | — | — |")
            continue
        md = lambda g: st.median(g(x) for x in ok)
        print(f"| {m} | {name(c)} | {sum(x.get('held', False) for x in v)}/{len(v)} "
              f"| {md(lambda x: x['pub']):,.0f} | {md(lambda x: x['p50']):.1f} | {md(lambda x: x['p99']):.1f} "
              f"| {md(lambda x: st.mean(x['r_pct'])):.1f} | {md(lambda x: st.mean(x['r_us'])):.1f} "
              f"({md(lambda x: sum(x['r_us'])):.1f}) | {md(lambda x: x['g_pct']):.0f} | {md(lambda x: x['g_us']):.0f} "
              f"| {md(lambda x: x['bench_pct']):.0f} "
              f"| {md(lambda x: sum(x['r_pct']) + x['g_pct'] + x['bench_pct']):.0f} |")

print("\nEvery run:", file=sys.stderr)
for (c, m), v in sorted(runs.items()):
    for i, x in enumerate(v):
        if not x.get("ok") and "pub" not in x:
            print(f"  {c:5} {m:6} run {i+1}: failed: {x['error']} (gateway warnings {x['warns']}, "
                  f"push-queue repairs {x['repairs']})", file=sys.stderr)
            continue
        print(f"  {c:5} {m:6} run {i+1}: pub/s {x['pub']:,.0f} p50 {x['p50']:.1f} p99 {x['p99']:.1f} "
              f"lag {x['lag']:.0f} ms held {x['held']} redis % {[round(p, 1) for p in x['r_pct']]} "
              f"µs/msg {[round(u, 2) for u in x['r_us']]} gw % {x['g_pct']:.0f} "
              f"bench % {x['bench_pct']:.0f} warnings {x['warns']} repairs {x['repairs']}" + (f" burst {x['burst_s']:.2f} s" if x["burst_s"] else ""),
              file=sys.stderr)
PY
    ;;
  *)
    sed -n 2,8p "$0"; exit 2 ;;
esac
