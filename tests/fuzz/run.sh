#!/usr/bin/env bash
# Fuzzes wsgate with cargo fuzz (libFuzzer): every target of fuzz/ (its own Cargo
# workspace) for FUZZ_SECONDS each, and fails if any of them finds a crash, a timeout
# or a leak of memory past the RSS limit.
#
#   tests/fuzz/run.sh                         # the bounded run of the test command: 60 s a target
#   FUZZ_SECONDS=3600 tests/fuzz/run.sh       # a longer run: an hour a target
#   FUZZ_TARGETS=client_frame FUZZ_SECONDS=36000 FUZZ_JOBS=1 tests/fuzz/run.sh
#
# Targets (fuzz/fuzz_targets/): client_frame (client text frames → protocol parse),
# server_frame (the prefix readers the writer and fan-out apply to every outgoing frame,
# stored entries, MessageId), api_bodies (POST /api/publish and /api/notifications
# bodies), http_inputs (query, dev identity, JWT claims, Sec-WebSocket-Key, SSE cursor,
# trusted proxies).
#
# Only the stable toolchain is needed: cargo fuzz passes nightly-only flags to rustc
# (-Zsanitizer=address, sanitizer coverage), which stable accepts with RUSTC_BOOTSTRAP=1;
# stable ships the ASan runtime. FUZZ_SANITIZER=none builds without ASan (faster).
#
# Caches, all under target/: cargo-fuzz itself (target/tools, installed from crates.io
# once), the instrumented build (target/fuzz) and the working corpus
# (target/fuzz-corpus/<target>: the committed seeds of fuzz/corpus/<target> plus what
# earlier runs found, so a cached run goes on from there; the committed corpus is never
# written). A first run installs cargo-fuzz (~1 min) and builds everything (~8 min on 2
# cores with ASan, ~5 without); a cached one takes FUZZ_SECONDS x targets / FUZZ_JOBS
# plus the rebuild of what changed (about a minute after a change to the gateway).
#
# A crash leaves its input in target/fuzz-artifacts/<target>/; the script prints it in
# base64, the panic, and the command that reproduces it. Every crash becomes a test in
# crates/protocol/tests/fuzz_regressions.rs or crates/gateway/tests/fuzz_regressions.rs,
# and its input a seed, fuzz/corpus/<target>/regression-*, replayed first by every run.
# To fold a long run's findings into the committed seeds (keep them small):
#   target/fuzz/<triple>/release/<target> -merge=1 fuzz/corpus/<target> target/fuzz-corpus/<target>
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
rss_mb=${FUZZ_RSS_MB:-2048}
timeout_s=${FUZZ_TIMEOUT:-10}
sanitizer=${FUZZ_SANITIZER:-address}
read -r -a targets <<<"${FUZZ_TARGETS:-client_frame server_frame api_bodies http_inputs}"

tools="$root/target/tools"
build_dir="$root/target/fuzz"
corpus_dir="$root/target/fuzz-corpus"
artifacts_dir="$root/target/fuzz-artifacts"
logs_dir="$root/target/fuzz-logs"
export PATH="$tools/bin:$PATH"
export RUSTC_BOOTSTRAP=1

step() { printf '\n==> %s\n' "$*"; }
now() { date +%s; }
start=$(now)

step "cargo-fuzz (cached in target/tools)"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    cargo install cargo-fuzz --locked --root "$tools"
fi
cargo fuzz --version

triple=$(rustc -vV | sed -n 's/^host: //p')
step "build the targets (sanitizer: $sanitizer, $triple)"
build=(cargo fuzz build --fuzz-dir fuzz --target-dir "$build_dir" --target "$triple"
    --sanitizer "$sanitizer")
if [ -z "${FUZZ_TARGETS:-}" ]; then
    "${build[@]}" # all of them, in one cargo build
else
    for t in "${targets[@]}"; do "${build[@]}" "$t"; done
fi
bin_dir="$build_dir/$triple/release"
built=$(now)

dict_of() {
    case "$1" in
    client_frame | api_bodies) echo "$root/fuzz/dict/json.dict" ;;
    *) echo "$root/fuzz/dict/$1.dict" ;;
    esac
}

run_one() {
    local t=$1
    local corpus="$corpus_dir/$t" art="$artifacts_dir/$t/"
    mkdir -p "$corpus" "$art"
    cp -n "$root/fuzz/corpus/$t/"* "$corpus/" 2>/dev/null || true
    local args=(
        "-max_total_time=$seconds" "-rss_limit_mb=$rss_mb" "-timeout=$timeout_s"
        "-artifact_prefix=$art" "-print_final_stats=1"
    )
    local dict
    dict=$(dict_of "$t")
    [ -f "$dict" ] && args+=("-dict=$dict")
    set +e
    "$bin_dir/$t" "${args[@]}" "$corpus" >"$logs_dir/$t.log" 2>&1
    echo $? >"$logs_dir/$t.rc"
}

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

step "fuzz ${targets[*]}: ${seconds}s each, $jobs at a time"
rm -rf "$logs_dir"
mkdir -p "$logs_dir"
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_one "$t" &
    pids+=($!)
done
wait
pids=()

step "results"
failed=()
for t in "${targets[@]}"; do
    log="$logs_dir/$t.log"
    rc=$(cat "$logs_dir/$t.rc" 2>/dev/null || echo "?")
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    corpus_n=$(find "$corpus_dir/$t" -type f | wc -l)
    printf '%-13s rc=%s  runs=%s  exec/s=%s  corpus=%s files\n    %s\n' \
        "$t" "$rc" "${execs:-?}" "${rate:-?}" "$corpus_n" "${last:-(no status line)}"
    if [ "$rc" != 0 ]; then
        failed+=("$t")
    fi
done

for t in "${failed[@]}"; do
    log="$logs_dir/$t.log"
    printf '\n---- %s FAILED (log: %s)\n' "$t" "$log"
    grep -E -A 3 "panicked at" "$log" | head -n 12 || true
    grep -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer: (timeout|out-of-memory))|^SUMMARY" \
        "$log" | head -n 5 || true
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    if [ -n "$artifact" ] && [ -f "$artifact" ]; then
        echo "input: $artifact"
        echo "input (base64): $(base64 -w0 "$artifact")"
        echo "reproduce: $bin_dir/$t $artifact"
        echo "       or: RUSTC_BOOTSTRAP=1 $tools/bin/cargo-fuzz run --fuzz-dir fuzz --target-dir target/fuzz $t $artifact"
    fi
done

end=$(now)
printf '\nfuzzing: build %ss, total %ss\n' "$((built - start))" "$((end - start))"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]} (turn each input into a test in crates/*/tests/fuzz_regressions.rs)"
    exit 1
fi
echo "no crash in ${targets[*]}"
