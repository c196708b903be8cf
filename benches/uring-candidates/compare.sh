#!/usr/bin/env bash
# monoio vs compio under the same hyper hello server, loaded by shoal-load in
# one run (keep-alive and connection-per-request). The numbers behind the
# io-uring reactor's choice of crate; see docs/reactors.md.
# usage: benches/uring-candidates/compare.sh [SECONDS] [CONNECTIONS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-5}
connections=${2:-64}
rounds=${3:-2}
root=$(cd ../.. && pwd)
export CARGO_TARGET_DIR="$root/target/uring-candidates"
cargo build --release >&2
(cd "$root" && cargo build --release --bin shoal-load >&2)
bin="$CARGO_TARGET_DIR/release/uring-candidates"
load="$root/target/release/shoal-load"
port=18090
for round in $(seq 1 "$rounds"); do
    for mode in keep-alive close; do
        for runtime in monoio compio; do
            "$bin" "$runtime" "127.0.0.1:$port" 2 2>/dev/null &
            pid=$!
            sleep 0.5
            "$load" -t "127.0.0.1:$port" -d "$seconds" -c "$connections" --mode "$mode" \
                --server-pid "$pid" --label "$runtime/round$round" --json
            kill "$pid"
            wait "$pid" 2>/dev/null || true
        done
    done
done
