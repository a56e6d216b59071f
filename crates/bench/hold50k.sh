#!/usr/bin/env bash
# The front door's hold (docs/benchmarks.md, "Round 2, issue 18: the front door"):
# 50,000 WebSocket clients through nginx to 3 nodes on one Redis, all on this machine,
# started by deploy/cluster.sh with the shipped nginx/nginx.conf; each client welcomed,
# joined to one of 2,500 rooms of 20, then idle (answering the nodes' heartbeat pings,
# every 25 s) for HOLD. Checks that every client connected and none was dropped, and
# records RSS and CPU of every component: each node, the nginx master and each worker,
# Redis, the bench.
#
#   crates/bench/hold50k.sh                      # 50,000 clients, held 3 minutes
#   CLIENTS=10000 HOLD=30s crates/bench/hold50k.sh
#
# Environment (defaults):
#   CLIENTS (50000)     clients to open
#   HOLD (3m)           how long to hold them once all are joined
#   SOURCES (90)        source addresses 127.0.0.1..127.0.0.K: nginx's `hash
#                       $binary_remote_addr` sees K client addresses; 90 is the smallest K
#                       above 3 whose addresses hash 30/30/30 over 3 nodes (printed first)
#   SOURCE_PORT_BASE (20000)
#                       client k binds port BASE + k / K (below the ephemeral range, the same
#                       ports on every source address): a bind() to port 0 would take ports
#                       nginx then misses for its own connections to the nodes
#   CLUSTER_PORT (18400) nginx; Redis and the nodes on the next 4 ports
#   CLUSTER_UPSTREAM_SOURCES (2)
#                       nginx connects to the nodes from 127.0.1.1..K (deploy/cluster.sh):
#                       ~8,300 connections per (source address, node) instead of 16,700 from
#                       127.0.0.1 alone, past the ~14,000 where Linux's connect() turns slow
#   OUT (target/bench-results/hold50k-DATE)  results: idle.json (the bench's report),
#                       timeline.tsv (every 5 s: clients per node, per nginx worker
#                       descriptors), machine.txt, summary.txt, the cluster's logs
#   WSGATE_BIN (target/release/wsgate), BENCH (target/release/wsgate-bench): built when
#                       missing (cargo build --release -p wsgate-gateway / -p wsgate-bench)
#
# The nodes run with --max-connections 19500 (one node's open-file limit is 20,000 here)
# and WSGATE_ACCEPT_RATE=0 (the shipped 500 a second per node would answer the connect
# phase's surplus with 503, which nginx passes on to another node, and the bench counts
# as a failure: this measures holding, not admission). The bench runs 4 worker processes
# of 12,500 clients each (each under its own 20,000 open-file limit).
#
# Exit status 0 when all CLIENTS connected, none failed and none was dropped during the
# hold (bench and nodes agree), and nginx logged no error.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin"

clients=${CLIENTS:-50000}
hold=${HOLD:-3m}
sources=${SOURCES:-90}
port_base=${SOURCE_PORT_BASE:-20000}
port=${CLUSTER_PORT:-18400}
out=${OUT:-target/bench-results/hold50k-$(date -u +%Y%m%dT%H%M%SZ)}
bin=${WSGATE_BIN:-$root/target/release/wsgate}
bench=${BENCH:-$root/target/release/wsgate-bench}
per_process=12500
rooms=$(( (clients + 19) / 20 ))

say() { printf 'hold50k: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -x "$bin" ] || cargo build --release -p wsgate-gateway --bin wsgate
[ -x "$bench" ] || cargo build --release -p wsgate-bench
read -r eph_low eph_high </proc/sys/net/ipv4/ip_local_port_range
top=$(( port_base + (clients + sources - 1) / sources ))
[ "$top" -lt "$eph_low" ] || die "SOURCE_PORT_BASE $port_base + $clients/$sources reaches the ephemeral range ($eph_low)"
if [ "$port" -le "$top" ] && [ $((port + 4)) -ge "$port_base" ]; then
    die "CLUSTER_PORT $port..$((port + 4)) overlaps the clients' ports $port_base..$top"
fi

# --- the machine -----------------------------------------------------------------------
{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo -) (working tree $(git status --porcelain 2>/dev/null | wc -l) paths changed)"
    echo "nproc: $(nproc)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
    echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "open files: soft $(ulimit -Sn), hard $(ulimit -Hn); fs.file-max $(cat /proc/sys/fs/file-max); fs.nr_open $(cat /proc/sys/fs/nr_open)"
    echo "ephemeral ports: $eph_low-$eph_high"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*version: //'); redis: $(redis-server --version | awk '{print $3}')"
    echo "wsgate: $bin ($(date -u -r "$bin" +%FT%TZ))"
    echo "nginx's upstream source addresses: ${CLUSTER_UPSTREAM_SOURCES:-2}"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine.txt"
cat "$out/machine.txt" >&2

# --- where nginx's hash sends the sources ------------------------------------------------
# ngx_http_upstream_get_hash_peer, first try: ((crc32(key) >> 16) & 0x7fff) % nodes.
read -r want1 want2 want3 < <(python3 - "$sources" "$clients" <<'EOF'
import sys, zlib
k, n = int(sys.argv[1]), int(sys.argv[2])
share = [0, 0, 0]
for c in range(n):
    share[((zlib.crc32(bytes([127, 0, 0, c % k + 1])) >> 16) & 0x7FFF) % 3] += 1
print(*share)
EOF
)
say "nginx's hash over $sources source addresses: gw-1 $want1, gw-2 $want2, gw-3 $want3 clients"

# --- the cluster -------------------------------------------------------------------------
export CLUSTER_PORT=$port CLUSTER_DIR=$out/cluster WSGATE_BIN=$bin WSGATE_ACCEPT_RATE=0
export CLUSTER_UPSTREAM_SOURCES=${CLUSTER_UPSTREAM_SOURCES:-2}
export WSGATE_NODE_ARGS="--max-connections 19500"
bench_pid=""
cleanup() {
    if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then kill "$bench_pid" 2>/dev/null || true; fi
    deploy/cluster.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
deploy/cluster.sh up 3 >&2
pid_of() { cat "$CLUSTER_DIR/$1.pid"; }
nginx_master=$(pid_of nginx)
mapfile -t workers < <(pgrep -P "$nginx_master" | sort -n)
gws=("$(pid_of gw-1)" "$(pid_of gw-2)" "$(pid_of gw-3)")
redis=$(pid_of redis)
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
base_fds=()
for w in "${workers[@]}"; do base_fds+=("$(fds "$w")"); done
pid_args=()
for p in "${gws[@]}" "$redis" "$nginx_master" "${workers[@]}"; do pid_args+=(--pid "$p"); done
say "nodes ${gws[*]}, redis $redis, nginx $nginx_master (workers ${workers[*]})"

# --- the hold ----------------------------------------------------------------------------
active() {
    curl -fsS --max-time 5 "http://127.0.0.1:$((port + 1 + $1))/api/stats" 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["active_connections"])' 2>/dev/null || echo -
}
cmd=("$bench" idle --json --url "ws://127.0.0.1:$port" --connections "$clients" --rooms "$rooms"
     --sources "$sources" --source-port-base "$port_base" --per-process "$per_process"
     --hold "$hold" --settle 5s "${pid_args[@]}")
echo "${cmd[*]}" >"$out/command.txt"
say "running: ${cmd[*]}"
t0=$SECONDS
"${cmd[@]}" >"$out/idle.json" 2>"$out/bench.stderr" &
bench_pid=$!
{
    printf 's\tgw-1\tgw-2\tgw-3\tload'
    for w in "${workers[@]}"; do printf '\tw%s' "$w"; done
    printf '\n'
} >"$out/timeline.tsv"
case $hold in
    *h) hold_s=$(( ${hold%h} * 3600 )) ;;
    *m) hold_s=$(( ${hold%m} * 60 )) ;;
    *s) hold_s=${hold%s} ;;
    *) hold_s=$hold ;;
esac
# The nodes' counts from the first sample with every client in to the last sample
# before the hold ends: the fewest is what the nodes held throughout.
full_at="" full_line="" last_line="" fewest=""
while kill -0 "$bench_pid" 2>/dev/null; do
    now=$((SECONDS - t0))
    a1=$(active 1) a2=$(active 2) a3=$(active 3)
    line="$now\t$a1\t$a2\t$a3\t$(cut -d' ' -f1 /proc/loadavg)"
    for w in "${workers[@]}"; do line+="\t$(fds "$w")"; done
    printf '%b\n' "$line" >>"$out/timeline.tsv"
    if [ -z "$full_at" ] && [[ $a1$a2$a3 =~ ^[0-9]+$ ]] && [ $((a1 + a2 + a3)) -eq "$clients" ]; then
        full_at=$now full_line=$line
        say "all $clients connected after ${full_at}s: gw-1 $a1, gw-2 $a2, gw-3 $a3"
    fi
    if [ -n "$full_at" ] && [ "$now" -lt $((full_at + hold_s)) ]; then
        last_line=$line
        total=$(( ${a1//-/0} + ${a2//-/0} + ${a3//-/0} ))
        if [ -z "$fewest" ] || [ "$total" -lt "$fewest" ]; then fewest=$total; fi
    fi
    sleep 5
done
wait "$bench_pid" && bench_rc=0 || bench_rc=$?
bench_pid=""
say "bench exited $bench_rc after $((SECONDS - t0))s"
errors=$(grep -cE '\[(error|crit|alert|emerg)\]' "$CLUSTER_DIR/nginx.error.log" || true)
not_enough=$(grep -c 'worker_connections are not enough' "$CLUSTER_DIR/nginx.error.log" || true)

# --- the summary -------------------------------------------------------------------------
python3 - "$out" "$clients" "$bench_rc" "$errors" "$not_enough" "${full_at:--}" \
    "$(printf '%b' "$full_line")" "$(printf '%b' "$last_line")" "${base_fds[*]}" \
    "$want1 $want2 $want3" "${#gws[@]}" "${fewest:--1}" <<'EOF' | tee "$out/summary.txt"
import json, sys
out, clients, rc, errors, not_enough, full_at, full_line, last_line, base_fds, want, n_gw, fewest = sys.argv[1:]
clients, n_gw = int(clients), int(n_gw)
try:
    r = json.load(open(f"{out}/idle.json"))
except ValueError:
    print(f"the bench wrote no report (exit {rc}); see {out}/bench.stderr")
    sys.exit(1)
res, par = r["results"], r["params"]
pids = par["pids"]
names = [f"gw-{i + 1}" for i in range(n_gw)] + ["redis", "nginx master"]
names += [f"nginx worker {i + 1}" for i in range(len(pids) - len(names))]
full = full_line.split("\t") if full_line else []
last = last_line.split("\t") if last_line else []
base = [int(x) for x in base_fds.split()]
print(f"clients {clients}: connected {res['connected']}, failed {res['failed']} {res['failures'] or ''}, "
      f"connect {res['connect_s']:.1f} s ({res['connects_per_s']:.0f}/s), "
      f"dropped during the {res['hold_s']:.0f} s hold {res['dropped_during_hold']} "
      f"(closed before the hold {res['closed_before_hold']}, close codes {res['close_codes'] or 'none'})")
print(f"per node when all were in after {full_at} s (nodes' /api/stats): {full[1:4] or '-'}, at the "
      f"last sample of the hold: {last[1:4] or '-'}, fewest in all during the hold: {fewest}; "
      f"nginx's hash predicted {want.split()}")
print(f"nginx error log: {errors} errors, {not_enough} 'worker_connections are not enough'")
hold = {g["pid"]: g for g in res["cpu_hold"]["gateways"]}
conn = {g["pid"]: g for g in res["cpu_connect"]["gateways"]}
rss = {g["pid"]: g for g in res["gateways"]}
print()
print("| component | pid | RSS before | RSS all joined | RSS after hold | CPU connect phase | CPU hold | descriptors (clients) |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
mib = lambda k: "-" if k is None else f"{k / 1024:.1f} MiB"
for i, (name, pid) in enumerate(zip(names, pids)):
    g, h, c = rss[pid], hold[pid], conn[pid]
    fd = "-"
    if name.startswith("nginx worker") and full:
        w = i - n_gw - 2
        n = int(full[5 + w])
        fd = f"{n} ({(n - base[w]) // 2})"
    print(f"| {name} | {pid} | {mib(g['rss_before_kib'])} | {mib(g['rss_joined_kib'])} | "
          f"{mib(g['rss_after_hold_kib'])} | {c['cpu_s']:.1f} s ({c['cpu_pct']:.0f} %) | "
          f"{h['cpu_s']:.1f} s ({h['cpu_pct']:.1f} %) | {fd} |")
w = res["cpu_hold"]["window_s"]
print(f"| bench ({res['workers']} workers + parent) | - | - | {mib(res['bench_workers_rss_kib'])} (workers) | - | "
      f"{res['bench_workers_cpu_s'] - res['bench_workers_cpu_hold_s']:.1f} s (workers) | "
      f"{res['bench_workers_cpu_hold_s']:.1f} s ({100 * res['bench_workers_cpu_hold_s'] / w:.1f} %, workers) | - |")
print()
print(f"hold window {w:.0f} s; kernel Slab {mib(res['slab_before_kib'])} → {mib(res['slab_joined_kib'])} "
      f"→ {mib(res['slab_after_hold_kib'])} ({res['slab_per_conn_kib']:.1f} KiB per client)")
ok = (rc == "0" and res["connected"] == clients and res["failed"] == 0
      and res["dropped_during_hold"] == 0 and res["closed_before_hold"] == 0
      and errors == "0" and int(fewest) == clients)
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
