#!/usr/bin/env bash
# A wsgate cluster on this machine, without Docker: redis-server, N gateway nodes and
# nginx in front of them, all on 127.0.0.1.
#
#   deploy/cluster.sh up [N]      start Redis, N nodes (default 3) and nginx; wait until ready
#   deploy/cluster.sh status      each process, its port and readiness
#   deploy/cluster.sh scale N     add nodes, or drain the highest ones (SIGTERM: 1001 to
#                                 their clients, who come back through nginx); nginx is
#                                 reloaded without dropping connections to the others
#   deploy/cluster.sh reload      regenerate nginx's config from nginx/nginx.conf (after
#                                 editing it) and reload nginx: no connection is dropped
#   deploy/cluster.sh restart     rolling restart: each node in turn is drained (SIGTERM:
#                                 its sessions close one by one over --drain-spread-ms,
#                                 each told when to come back), started again under the
#                                 same id and port, and waited for /readyz before the next
#   deploy/cluster.sh down        drain every node, stop nginx and Redis
#
# Ports: nginx on CLUSTER_PORT (default 8080), Redis on CLUSTER_PORT+1, node i on
# CLUSTER_PORT+1+i. Pid files, logs and the generated nginx config live in CLUSTER_DIR
# (default target/cluster). WSGATE_BIN names the binary (default: a release build,
# made when missing); WSGATE_NODE_ARGS adds flags to every node (e.g. a heartbeat).
# Nodes admit at most WSGATE_ACCEPT_RATE new sessions a second (default 500 here).
# CLUSTER_UPSTREAM_SOURCES=K (default 1) makes nginx connect to the nodes from K loopback
# addresses (127.0.1.1..K, `proxy_bind`) instead of 127.0.0.1 alone: Linux's connect()
# slows down sharply past ~14,000 connections from one address to one node (half the
# ephemeral range, the half it searches first), so use 2 when a node will hold more
# (docs/operations.md, "Sizing nginx and the nodes").
# redis-server and nginx are installed with apt-get when missing.
#
# A reload of nginx (scale, reload) returns once every worker of the previous
# configuration has stopped taking new connections: from then on every new client is
# routed by the new node list. Those old workers keep the WebSockets they hold, on the
# nodes they are on, until the clients leave (`status` counts them as retiring).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
port=${CLUSTER_PORT:-8080}
run=${CLUSTER_DIR:-$root/target/cluster}
bin=${WSGATE_BIN:-$root/target/release/wsgate}
redis_port=$((port + 1))
# The flags `up` was given are kept for `scale` and `restart`, unless set again.
if [ -z "${WSGATE_NODE_ARGS+set}" ] && [ -f "$run/node_args" ]; then
    node_args=$(cat "$run/node_args")
else
    node_args=${WSGATE_NODE_ARGS:-}
fi
if [ -z "${CLUSTER_UPSTREAM_SOURCES+set}" ] && [ -f "$run/upstream_sources" ]; then
    upstream_sources=$(cat "$run/upstream_sources")
else
    upstream_sources=${CLUSTER_UPSTREAM_SOURCES:-1}
fi
wait_s=${CLUSTER_WAIT_S:-60}

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

node_port() { echo $((port + 1 + $1)); }

# The addresses nginx connects to the nodes from, one a line (the nodes trust them).
proxy_sources() {
    local i
    if [ "$upstream_sources" -le 1 ]; then echo 127.0.0.1; return; fi
    for i in $(seq 1 "$upstream_sources"); do echo "127.0.1.$i"; done
}
# A process that exited counts as gone even before its parent (init, for these
# daemons) reaps it: kill -0 still finds a zombie.
running() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$({ sed 's/.*) //' "/proc/$1/stat"; } 2>/dev/null) || return 0
    [ "${state%% *}" != Z ]
}
alive() { [ -f "$1" ] && running "$(cat "$1")"; }

need_tools() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v pgrep >/dev/null 2>&1 || missing+=(procps)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    export PATH="$PATH:/usr/sbin"
}

need_binary() {
    if [ ! -x "$bin" ]; then
        log "building wsgate (release)"
        (cd "$root" && cargo build --release -p wsgate-gateway --bin wsgate)
    fi
}

# Readiness of a node: /readyz answers 200.
ready() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/readyz" 2>/dev/null; }

# Waits until node i answers /readyz; fails at once if it exited.
wait_ready() {
    local i=$1 p deadline=$((SECONDS + wait_s))
    p=$(node_port "$i")
    until ready "$p"; do
        if ! alive "$run/gw-$i.pid"; then
            tail -n 5 "$run/gw-$i.log" >&2 || true
            die "gw-$i exited (log: $run/gw-$i.log)"
        fi
        [ $SECONDS -lt $deadline ] || die "gw-$i (port $p) not ready after ${wait_s}s (log: $run/gw-$i.log)"
        sleep 0.2
    done
}

# The node ids in service, one per line (the file nginx's upstream is made from).
nodes() { [ -f "$run/nodes" ] && cat "$run/nodes" || true; }

start_redis() {
    if alive "$run/redis.pid"; then return; fi
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --pidfile "$run/redis.pid" --logfile "$run/redis.log" --dir "$run" >/dev/null
    local deadline=$((SECONDS + wait_s))
    until [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ]; do
        [ $SECONDS -lt $deadline ] || die "redis-server did not start (see $run/redis.log)"
        sleep 0.1
    done
}

start_node() {
    local i=$1 p
    p=$(node_port "$i")
    if alive "$run/gw-$i.pid"; then return; fi
    # shellcheck disable=SC2086 # WSGATE_NODE_ARGS is a list of flags
    WSGATE_ACCEPT_RATE=${WSGATE_ACCEPT_RATE:-500} \
    setsid "$bin" --listen "127.0.0.1:$p" --node-id "gw-$i" \
        --redis-url "redis://127.0.0.1:$redis_port" --trusted-proxies "$(proxy_sources | paste -sd, -)" \
        --log-format json $node_args >>"$run/gw-$i.log" 2>&1 </dev/null &
    echo $! >"$run/gw-$i.pid"
}

# Drains nodes (SIGTERM: their sessions get 1001 after their queued frames), all at
# once, and waits for each to exit.
stop_node() {
    local i pid deadline
    for i in "$@"; do
        if alive "$run/gw-$i.pid"; then kill -TERM "$(cat "$run/gw-$i.pid")"; fi
    done
    deadline=$((SECONDS + 30))
    for i in "$@"; do
        if alive "$run/gw-$i.pid"; then
            pid=$(cat "$run/gw-$i.pid")
            while running "$pid"; do
                if [ $SECONDS -ge $deadline ]; then
                    log "gw-$i did not drain in 30 s; killing it"
                    kill -KILL "$pid" 2>/dev/null || true
                    break
                fi
                sleep 0.1
            done
        fi
        rm -f "$run/gw-$i.pid"
    done
}

# nginx's config: the shipped nginx/nginx.conf with this cluster's upstream servers,
# listen address, pid and log files.
gen_nginx() {
    local servers="" i
    for i in $(nodes); do
        servers+="        server 127.0.0.1:$(node_port "$i") max_fails=0;\n"
    done
    [ -n "$servers" ] || servers="        server 127.0.0.1:1 down;\n"
    sed -e "s#^\( *\)server gateway:8080.*#${servers%\\n}#" \
        -e "s#^\( *\)listen 8080\([ ;]\)#\1listen 127.0.0.1:$port\2#" \
        -e "/^ *listen \[::\]:8080[ ;]/d" \
        -e "s#^pid .*#pid $run/nginx.pid;#" \
        -e "s#^error_log .*#error_log $run/nginx.error.log warn;#" \
        "$root/nginx/nginx.conf" |
        # With several upstream source addresses: each new connection to a node leaves
        # from one of them, picked by a hash of the client's address and port.
        awk -v k="$upstream_sources" '
            k > 1 && /^ *upstream wsgate \{/ {
                print "    split_clients \"$remote_addr:$remote_port\" $wsgate_upstream_source {"
                for (i = 1; i < k; i++) printf "        %.2f%% 127.0.1.%d;\n", int(10000 / k) / 100, i
                printf "        * 127.0.1.%d;\n    }\n\n", k
            }
            { print }
            k > 1 && /^ *proxy_http_version 1\.1;/ { print "        proxy_bind $wsgate_upstream_source;" }
        ' >"$run/nginx.conf.new"
    nginx -t -q -p "$run/" -c "$run/nginx.conf.new" || die "the generated nginx config is invalid"
    mv "$run/nginx.conf.new" "$run/nginx.conf"
}

# nginx's workers, one "PID serving|retiring" a line: a serving worker takes new
# connections; a retiring one (of a configuration before a reload) only serves the
# connections it holds, and exits when the last one closes.
nginx_workers() {
    local master c title
    alive "$run/nginx.pid" || return 0
    master=$(cat "$run/nginx.pid")
    for c in $(pgrep -P "$master" 2>/dev/null); do
        title=$({ tr '\0' ' ' <"/proc/$c/cmdline"; } 2>/dev/null) || continue
        case $title in
            *"worker process is shutting down"*) echo "$c retiring" ;;
            *"worker process"*) echo "$c serving" ;;
        esac
    done
}

start_or_reload_nginx() {
    local old pid serving stale deadline
    if alive "$run/nginx.pid"; then
        # Old workers keep serving their connections (WebSockets included) until those
        # close; new connections go by the new upstream list once the old workers have
        # stopped accepting, which is waited for here. With `reuseport` a connection
        # still in an old worker's accept queue is taken by its successor.
        old=$(nginx_workers | awk '$2 == "serving" { print $1 }')
        nginx -p "$run/" -c "$run/nginx.conf" -s reload
        deadline=$((SECONDS + wait_s))
        while :; do
            serving=$(nginx_workers | awk '$2 == "serving" { print $1 }')
            stale=0
            for pid in $old; do
                if grep -qx "$pid" <<<"$serving"; then stale=1; fi
            done
            [ "$stale" = 1 ] || [ -z "$serving" ] || break
            [ $SECONDS -lt $deadline ] || die "nginx did not take the new configuration in ${wait_s}s (see $run/nginx.error.log)"
            sleep 0.05
        done
    else
        nginx -p "$run/" -c "$run/nginx.conf"
        local deadline=$((SECONDS + wait_s))
        until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/healthz" 2>/dev/null; do
            [ $SECONDS -lt $deadline ] || die "nginx did not come up on port $port"
            sleep 0.1
        done
    fi
}

cmd_up() {
    local n=${1:-3} i
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "up: N must be a positive number"
    mkdir -p "$run"
    printf '%s' "$node_args" >"$run/node_args"
    [[ $upstream_sources =~ ^[1-9][0-9]?$ ]] && [ "$upstream_sources" -le 254 ] ||
        die "CLUSTER_UPSTREAM_SOURCES must be 1 to 254"
    echo "$upstream_sources" >"$run/upstream_sources"
    need_tools
    need_binary
    start_redis
    : >"$run/nodes"
    for i in $(seq 1 "$n"); do
        start_node "$i"
        echo "$i" >>"$run/nodes"
    done
    for i in $(seq 1 "$n"); do wait_ready "$i"; done
    gen_nginx
    start_or_reload_nginx
    log "up: nginx on 127.0.0.1:$port, $n nodes, redis on $redis_port (state in $run)"
    cmd_status
}

cmd_status() {
    local i p state
    printf '%-8s %-8s %-6s %s\n' process pid port state
    if alive "$run/nginx.pid"; then
        state="running, $(nginx_workers | awk '$2 == "serving" { s++ } $2 == "retiring" { r++ }
            END { printf "%d workers serving, %d retiring", s, r }')"
    else state=stopped; fi
    printf '%-8s %-8s %-6s %s\n' nginx "$(cat "$run/nginx.pid" 2>/dev/null || echo -)" "$port" "$state"
    if alive "$run/redis.pid"; then state=running; else state=stopped; fi
    printf '%-8s %-8s %-6s %s\n' redis "$(cat "$run/redis.pid" 2>/dev/null || echo -)" "$redis_port" "$state"
    for i in $(nodes); do
        p=$(node_port "$i")
        if ! alive "$run/gw-$i.pid"; then state=dead
        elif ready "$p"; then state=ready
        else state=not-ready; fi
        printf '%-8s %-8s %-6s %s\n' "gw-$i" "$(cat "$run/gw-$i.pid" 2>/dev/null || echo -)" "$p" "$state"
    done
}

cmd_scale() {
    local n=${1:-} cur i
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "scale: N must be a positive number"
    [ -f "$run/nodes" ] || die "no cluster in $run: run 'up' first"
    cur=$(nodes | wc -l)
    if [ "$n" -gt "$cur" ]; then
        for i in $(seq $((cur + 1)) "$n"); do start_node "$i"; done
        for i in $(seq $((cur + 1)) "$n"); do wait_ready "$i"; done
        seq 1 "$n" >"$run/nodes"
        gen_nginx
        start_or_reload_nginx
    elif [ "$n" -lt "$cur" ]; then
        # First take the nodes out of nginx, so no new client is sent there, then
        # drain them: their clients get 1001 and reconnect through nginx.
        seq 1 "$n" >"$run/nodes"
        gen_nginx
        start_or_reload_nginx
        for i in $(seq $((n + 1)) "$cur"); do stop_node "$i"; done
    fi
    log "scale: $n nodes"
    cmd_status
}

# nginx/nginx.conf again (e.g. after an edit) for the nodes in service, and a reload.
cmd_reload() {
    [ -f "$run/nodes" ] || die "no cluster in $run: run 'up' first"
    alive "$run/nginx.pid" || die "nginx is not running in $run: run 'up' first"
    export PATH="$PATH:/usr/sbin"
    gen_nginx
    start_or_reload_nginx
    log "reload: nginx runs the new configuration"
    cmd_status
}

# One node at a time, so the others absorb its clients: drain it (nginx sends the 503s
# its draining listener answers to the next node), start it again under the same id
# (it clears what its previous run left in presence before it takes a join), wait for
# /readyz. Clients come back within the presence grace: nobody is seen leaving.
cmd_restart() {
    local i t0
    [ -s "$run/nodes" ] || die "no cluster in $run: run 'up' first"
    need_binary
    for i in $(nodes); do
        t0=$SECONDS
        log "restart: draining gw-$i"
        stop_node "$i"
        start_node "$i"
        wait_ready "$i"
        log "restart: gw-$i back in $((SECONDS - t0)) s"
    done
    log "restart: every node replaced"
    cmd_status
}

cmd_down() {
    local i deadline pid
    # shellcheck disable=SC2046 # one node id a word
    stop_node $(nodes)
    : >"$run/nodes"
    if alive "$run/nginx.pid"; then
        pid=$(cat "$run/nginx.pid")
        nginx -p "$run/" -c "$run/nginx.conf" -s quit || kill -TERM "$pid"
        deadline=$((SECONDS + 10))
        while running "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if alive "$run/redis.pid"; then
        pid=$(cat "$run/redis.pid")
        kill -TERM "$pid"
        deadline=$((SECONDS + 10))
        while running "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$run"/*.pid
    log "down"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    status) cmd_status ;;
    scale) shift; cmd_scale "$@" ;;
    reload) cmd_reload ;;
    restart) cmd_restart ;;
    down) cmd_down ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
