#!/usr/bin/env bash
# Latency at half of the saturating load, per reactor, in one run:
# saturate shoal with keep-alive announces, then load it at half that rate
# (a fixed schedule; latency from each request's due time, so stalls count
# for every request they delay) ROUNDS times, printing the percentiles.
#
# usage: benches/latency.sh [SECONDS] [CONNECTIONS] [ROUNDS] [REACTORS...]
#   e.g. benches/latency.sh 8 16 3 per-core tokio io-uring
#        MODE=close benches/latency.sh 8 16 3 per-core
# Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
connections=${2:-16}
rounds=${3:-3}
shift $(( $# > 3 ? 3 : $# ))
reactors=("${@:-per-core}")
workers=${WORKERS:-2}
mode=${MODE:-keep-alive}  # or close: a new connection per request

cargo build --release --bins >&2
load=target/release/shoal-load
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

echo "mode: $mode, $connections connections, $seconds s per run, $workers workers"
echo
echo "| reactor | saturating responses/s | rate (half) | p50 ms | p99 ms | p99.9 ms | max ms |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for reactor in "${reactors[@]}"; do
    target/release/shoal --listen 127.0.0.1:18069 --reactor "$reactor" --workers "$workers" \
        --log-level warn >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/18069) 2>/dev/null && break; sleep 0.05; done
    saturated=$("$load" -t 127.0.0.1:18069 -d "$seconds" -c "$connections" --mode "$mode" | awk '/throughput/ {print $2}')
    half=$((saturated / 2))
    for _ in $(seq 1 "$rounds"); do
        "$load" -t 127.0.0.1:18069 -d "$seconds" -c "$connections" --mode "$mode" --rate "$half" |
            awk -v r="$reactor" -v s="$saturated" -v h="$half" \
                '/latency ms/ {printf "| %s | %s | %s | %s | %s | %s | %s |\n", r, s, h, $4, $6, $8, $10}'
    done
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
done
