#!/usr/bin/env bash
# User-space instructions per response of a running server, counted by
# callgrind: a figure that does not move with the machine's noise, for
# comparing two builds of the hot path (the kernel's share is not in it).
# The server runs under valgrind with one per-core worker; shoal-load sends
# keep-alive (or close) announces on 8 connections for SECONDS.
# usage: benches/instructions.sh BINARY [MODE] [SECONDS]
#   e.g. benches/instructions.sh target/release/shoal keep-alive 10
#        HELLO=1 benches/instructions.sh target/release/examples/hello   # hyper alone
#        CONNECTIONS=1 benches/instructions.sh ...   # no batching of requests per read: steadier counts
#        REACTOR=io-uring benches/instructions.sh ...   # another reactor (default per-core)
#        SHOAL_ARGS="--store redis --redis-url redis://127.0.0.1:7000" benches/instructions.sh ...
#        KEEP=/tmp/cg.out benches/instructions.sh ...   # keep the profile for callgrind_annotate
#        WARMUP=3 benches/instructions.sh ...   # count only after 3 s of load (start-up and
#                                               # connecting left out: the steady state)
#        LOAD_ARGS="--distinct-ips" benches/instructions.sh ...   # more shoal-load arguments
#   The Redis store's node, as docs/benchmarks.md measures it (a cluster on 17200-17202):
#        WARMUP=3 LOAD_ARGS=--distinct-ips SHOAL_ARGS="--allow-ip-param --store redis \
#            --redis-url redis://127.0.0.1:17200" benches/instructions.sh BINARY keep-alive 8
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 mode=${2:-keep-alive} seconds=${3:-10}
port=18369
cargo build --release --bin shoal-load >&2
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
if [ -n "${HELLO:-}" ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "$bin" "127.0.0.1:$port" "${REACTOR:-per-core}" 1 \
        >/dev/null 2>"$out/valgrind.err" &
else
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "$bin" --listen "127.0.0.1:$port" \
        --udp-listen none --reactor "${REACTOR:-per-core}" --workers 1 --log-level warn ${SHOAL_ARGS:-} \
        >/dev/null 2>"$out/valgrind.err" &
fi
pid=$!
for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
sleep 1
profile=$out/cg.out
if [ "${WARMUP:-0}" != 0 ]; then
    # shellcheck disable=SC2086
    target/release/shoal-load -t "127.0.0.1:$port" -d "$WARMUP" -c "${CONNECTIONS:-8}" --warmup 0 --mode "$mode" \
        --seed 3 ${LOAD_ARGS:-} >/dev/null
    callgrind_control -z "$pid" >/dev/null
fi
# shellcheck disable=SC2086
target/release/shoal-load -t "127.0.0.1:$port" -d "$seconds" -c "${CONNECTIONS:-8}" --warmup 0 --mode "$mode" \
    --seed 7 ${LOAD_ARGS:-} >"$out/load.txt"
if [ "${WARMUP:-0}" != 0 ]; then
    # The counts since the zeroing, dumped now: the file of the last part.
    callgrind_control -d "$pid" >/dev/null
    profile=$(ls "$out"/cg.out.* | sort -V | tail -1)
fi
kill -INT "$pid"
wait "$pid" 2>/dev/null || true
responses=$(awk '/ok responses/ {print $3}' "$out/load.txt")
instructions=$(awk '/^(summary|totals):/ {print $2; exit}' "$profile")
echo "$bin $mode: $responses responses, $instructions instructions, $((instructions / responses)) per response"
if [ -n "${KEEP:-}" ]; then
    cp "$profile" "$KEEP"
fi
if [ -n "${TOP:-}" ]; then
    callgrind_annotate --inclusive=yes "$profile" | head -80
fi
