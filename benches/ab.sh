#!/usr/bin/env bash
# A/B of two shoal binaries on the same load, alternating within each round
# (so drift on this shared machine hits both alike): responses per server
# CPU-second of each, and their ratio per round.
# usage: benches/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]
#   e.g. git worktree add /tmp/old ec2a14e && (cd /tmp/old && cargo build --release)
#        benches/ab.sh /tmp/old/target/release/shoal target/release/shoal 3 6
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-3} seconds=${4:-6}
cargo build --release --bin shoal-load >&2
out=$(mktemp)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -f "$out"' EXIT
for round in $(seq 1 "$rounds"); do
    for mode in keep-alive close; do
        for side in old new; do
            bin=$old
            [ "$side" = new ] && bin=$new
            "$bin" --listen 127.0.0.1:18269 --udp-listen none --reactor "${REACTOR:-tokio}" \
                --workers 2 --log-level warn >/dev/null 2>&1 &
            pid=$!
            for _ in $(seq 1 100); do
                (exec 3<>/dev/tcp/127.0.0.1/18269) 2>/dev/null && break
                sleep 0.05
            done
            target/release/shoal-load -t 127.0.0.1:18269 -d "$seconds" -c 64 --mode "$mode" \
                --server-pid "$pid" --label "$side" --json >> "$out"
            kill -INT "$pid"
            wait "$pid" 2>/dev/null || true
        done
    done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for mode in sorted({r["mode"] for r in rows}):
    old = [r["per_cpu_s"] for r in rows if r["mode"] == mode and r["label"] == "old"]
    new = [r["per_cpu_s"] for r in rows if r["mode"] == mode and r["label"] == "new"]
    ratios = [n / o for n, o in zip(new, old)]
    print(f"{mode}: old {[round(x) for x in old]} new {[round(x) for x in new]} "
          f"new/old {[round(x, 2) for x in ratios]} median {statistics.median(ratios):.2f}x")
PY
