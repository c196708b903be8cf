#!/usr/bin/env bash
# Side-by-side load comparison on loopback, all in one run:
#   hello (the hyper ceiling, per reactor), shoal (per reactor), opentracker,
#   each with keep-alive and with a new connection per request; and over UDP
#   (BEP 15) shoal (per reactor), opentracker and aquatic_udp, with
#   CONNECTIONS client sockets keeping IN_FLIGHT requests in flight each.
# Every server is started fresh for each run and measured by shoal-load as
# responses per server CPU-second (its own CPU time, from /proc), so the
# load generator's share of the 2 cores matters less.
#
# usage: benches/compare.sh [SECONDS] [CONNECTIONS] [REACTORS...]
#   e.g. benches/compare.sh 10 64 tokio per-core io-uring
#        ROUNDS=3 benches/compare.sh 8 64 per-core   # medians of 3 rounds
#        MODES="udp" benches/compare.sh 10 64 tokio       # only the UDP rows
#        SCRAPE_SHARE=1 MODES=udp benches/compare.sh ...  # scrapes instead of announces
#        PEERS=100000 WARMUP=3 benches/compare.sh ...     # peers that re-announce (shoal-load
#                                                         # --peers) instead of a new peer each time
# needs: opentracker (apt-get install opentracker); aquatic_udp on PATH or in
# ~/.cargo/bin for its UDP row (cargo install aquatic_udp --locked
# --no-default-features --features mimalloc); traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-64}
shift $(( $# > 2 ? 2 : $# ))
reactors=("${@:-tokio}")
[ ${#reactors[@]} -eq 0 ] && reactors=(tokio per-core io-uring)
workers=${WORKERS:-2}
rounds=${ROUNDS:-1}
torrents=${TORRENTS:-10000}
in_flight=${IN_FLIGHT:-2}
# aquatic_udp runs one socket worker and opentracker one UDP thread: UDP rows
# give shoal as many workers unless told otherwise.
udp_workers=${UDP_WORKERS:-1}
read -r -a modes <<< "${MODES:-keep-alive close udp}"
aquatic=$(command -v aquatic_udp || echo "$HOME/.cargo/bin/aquatic_udp")

cargo build --release --bins --examples >&2
load=target/release/shoal-load
work=$(mktemp -d)
chmod 755 "$work"  # opentracker drops root privileges before reading its whitelist
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
results="$work/results"

# opentracker from Debian is whitelist-only: allow the benchmark's hashes.
"$load" -t 127.0.0.1:1 --torrents "$torrents" --print-hashes > "$work/whitelist.txt"
printf 'listen.tcp 127.0.0.1:18080\nlisten.udp 127.0.0.1:18081\naccess.whitelist %s\n' \
    "$work/whitelist.txt" > "$work/ot.conf"
# aquatic_udp with shoal's answer size (numwant 50) and no access list.
"$aquatic" -p 2>/dev/null | sed -e 's/^address = .*/address = "127.0.0.1:18082"/' \
    -e 's/^max_response_peers = .*/max_response_peers = 50/' > "$work/aquatic.toml" || true

wait_port() {
    if [ "$mode" = udp ]; then
        # shoal-load connects until answered; its warm-up second covers the start.
        sleep 0.3
        return 0
    fi
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
    # A leftover server would share the port through SO_REUSEPORT and
    # silently take part of the load.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
        || { [ "$mode" = udp ] && ss -Huln "sport = :$port" | grep -q .; }; then
        echo "port $port is already in use: stop whatever listens there first" >&2
        exit 1
    fi
    "$@" >/dev/null 2>&1 &
    local pid=$!
    wait_port "$port"
    # shellcheck disable=SC2086
    "$load" -t "127.0.0.1:$port" -d "$seconds" -c "$connections" --torrents "$torrents" \
        --mode "$mode" --in-flight "$in_flight" --scrape-share "${SCRAPE_SHARE:-0}" \
        --warmup "${WARMUP:-1}" ${PEERS:+--peers "$PEERS"} \
        --server-pid "$pid" --label "$label" --json \
        >> "$results.$round.jsonl"
    kill -INT "$pid" 2>/dev/null || true
    # aquatic_udp does not stop on SIGINT: give each server 3 s, then TERM.
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

for round in $(seq 1 "$rounds"); do
    for mode in "${modes[@]}"; do
        for reactor in "${reactors[@]}"; do
            if [ "$mode" != udp ]; then
                run "hello/$reactor" 18070 "$mode" target/release/examples/hello 127.0.0.1:18070 \
                    "$reactor" "$workers"
            fi
            w=$workers
            [ "$mode" = udp ] && w=$udp_workers
            run "shoal/$reactor" 18069 "$mode" target/release/shoal --listen 127.0.0.1:18069 \
                --reactor "$reactor" --workers "$w" --log-level warn
        done
        if command -v opentracker >/dev/null; then
            port=18080
            [ "$mode" = udp ] && port=18081
            run opentracker "$port" "$mode" opentracker -f "$work/ot.conf"
        fi
        if [ "$mode" = udp ] && [ -x "$aquatic" ]; then
            run aquatic_udp 18082 "$mode" "$aquatic" -c "$work/aquatic.toml"
        fi
    done
done

python3 - "$results" "$seconds" "$connections" "$rounds" <<'PY'
import glob, json, statistics, sys
base, seconds, connections, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
runs = [[json.loads(l) for l in open(f)] for f in sorted(glob.glob(base + ".*.jsonl"))]

def ratio(rows, r, label):
    b = next((x for x in rows if x["label"] == label and x["mode"] == r["mode"]), None)
    if b and b["per_cpu_s"] and r["per_cpu_s"]:
        return r["per_cpu_s"] / b["per_cpu_s"]
    return None

def fmt(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.2f}x"
    return f"{median:.2f}x ({min(values):.2f}-{max(values):.2f})"

print(f"\n{connections} connections, {seconds} s per run, {rounds} round(s), 1 load thread; "
      "per CPU-s = responses per server CPU-second; with several rounds, medians, "
      "ratios taken within each round (range in brackets)")
print()
print("| server | mode | responses/s | server CPU s | per CPU-s | vs opentracker | vs hello | vs aquatic_udp | p50 ms | p99 ms | errors | lost |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in runs[0]:
    same = [next(x for x in rows if x["label"] == r["label"] and x["mode"] == r["mode"]) for rows in runs]
    med = lambda key: statistics.median([x[key] for x in same if x[key] is not None] or [0])
    reactor = r["label"].split("/")[-1]
    vs_ot = fmt([ratio(rows, x, "opentracker") for rows, x in zip(runs, same)])
    vs_hello = fmt([ratio(rows, x, f"hello/{reactor}") for rows, x in zip(runs, same)])
    if r["label"] == "opentracker":
        vs_ot = "1.00x"
    if r["label"].startswith("hello/") or r["label"] == "opentracker":
        vs_hello = "-"
    vs_aq = fmt([ratio(rows, x, "aquatic_udp") for rows, x in zip(runs, same)])
    errors = sum(x["failures"] + x["bad"] + x["io_errors"] for x in same)
    lost = sum(x.get("lost", 0) for x in same)
    print(f"| {r['label']} | {r['mode']} | {med('rps'):.0f} | {med('server_cpu_s')} | {med('per_cpu_s'):.0f} | "
          f"{vs_ot} | {vs_hello} | {vs_aq} | {med('p50_ms')} | {med('p99_ms')} | {errors} | {lost} |")
PY
