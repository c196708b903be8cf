#!/usr/bin/env bash
# Side-by-side load comparison on loopback, all in one run:
#   hello (the hyper ceiling, per reactor), shoal (per reactor), opentracker,
#   each with keep-alive and with a new connection per request.
# Every server is started fresh for each run and measured by shoal-load as
# responses per server CPU-second (its own CPU time, from /proc), so the
# load generator's share of the 2 cores matters less.
#
# usage: benches/compare.sh [SECONDS] [CONNECTIONS] [REACTORS...]
#   e.g. benches/compare.sh 10 64 tokio per-core io-uring
# needs: opentracker (apt-get install opentracker); traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-64}
shift $(( $# > 2 ? 2 : $# ))
reactors=("${@:-tokio}")
[ ${#reactors[@]} -eq 0 ] && reactors=(tokio per-core io-uring)
workers=${WORKERS:-2}
torrents=${TORRENTS:-10000}

cargo build --release --bins --examples >&2
load=target/release/shoal-load
work=$(mktemp -d)
chmod 755 "$work"  # opentracker drops root privileges before reading its whitelist
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
results="$work/results.jsonl"

# opentracker from Debian is whitelist-only: allow the benchmark's hashes.
"$load" -t 127.0.0.1:1 --torrents "$torrents" --print-hashes > "$work/whitelist.txt"
printf 'listen.tcp 127.0.0.1:18080\naccess.whitelist %s\n' "$work/whitelist.txt" > "$work/ot.conf"

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# run LABEL PORT MODE COMMAND...: start the server, load it, stop it.
run() {
    local label=$1 port=$2 mode=$3
    shift 3
    "$@" >/dev/null 2>&1 &
    local pid=$!
    wait_port "$port"
    "$load" -t "127.0.0.1:$port" -d "$seconds" -c "$connections" --torrents "$torrents" \
        --mode "$mode" --server-pid "$pid" --label "$label" --json >> "$results"
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

for mode in keep-alive close; do
    for reactor in "${reactors[@]}"; do
        run "hello/$reactor" 18070 "$mode" target/release/examples/hello 127.0.0.1:18070 "$reactor" "$workers"
        run "shoal/$reactor" 18069 "$mode" target/release/shoal --listen 127.0.0.1:18069 \
            --reactor "$reactor" --workers "$workers" --log-level warn
    done
    if command -v opentracker >/dev/null; then
        run opentracker 18080 "$mode" opentracker -f "$work/ot.conf"
    fi
done

python3 - "$results" "$seconds" "$connections" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{sys.argv[3]} connections, {sys.argv[2]} s per run, 1 load thread; "
      "per CPU-s = responses per server CPU-second")
print()
print("| server | mode | responses/s | server CPU s | per CPU-s | vs opentracker | vs hello | p50 ms | p99 ms | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    ot = next((x for x in rows if x["label"] == "opentracker" and x["mode"] == r["mode"]), None)
    reactor = r["label"].split("/")[-1]
    hello = next((x for x in rows if x["label"] == f"hello/{reactor}" and x["mode"] == r["mode"]), None)
    ratio = lambda base: f"{r['per_cpu_s'] / base['per_cpu_s']:.2f}x" if base and base["per_cpu_s"] and r["per_cpu_s"] else "-"
    errors = r["failures"] + r["bad"] + r["io_errors"]
    print(f"| {r['label']} | {r['mode']} | {r['rps']:.0f} | {r['server_cpu_s']} | {r['per_cpu_s']} | "
          f"{ratio(ot)} | {ratio(hello) if not r['label'].startswith('hello') else '-'} | "
          f"{r['p50_ms']} | {r['p99_ms']} | {errors} |")
PY
