#!/usr/bin/env bash
# Flat costs: does an announce, a scrape and a peer cost the same at 100k and
# at 10M peers? For each size N (100 peers a torrent): start the tracker,
# fill it with N peers from N addresses (shoal-load --fill), then measure
#   - announce CPU: re-announces of peers already held (the same --fill run
#     again: each announce finds its peer and refreshes it), 1M of them
#     (passes over the first min(N, 1M) peers), as server CPU-µs per announce;
#   - scrape CPU: 10 s of one-hash scrapes over the torrents;
#   - bytes per peer: RSS growth over the fill, divided by the peers held.
# Then the sweep: with a peer TTL of SWEEP_TTL s, fill SWEEP_PEERS peers and
# keep a paced load running (SWEEP_RATE/s, in 10-s windows) while sweeps
# expire them all: p99 of each window beside the peers held.
#
# usage: benches/flat.sh [SIZES...]   e.g. benches/flat.sh 100000 1000000 10000000
#        SWEEP_PEERS=0 benches/flat.sh 100000 1000000   # no sweep phase
#        BIN=/tmp/old/shoal benches/flat.sh 1000000      # another shoal binary
# Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a sizes <<< "${*:-100000 1000000 10000000}"
sweep_peers=${SWEEP_PEERS:-10000000}
sweep_ttl=${SWEEP_TTL:-200}
sweep_rate=${SWEEP_RATE:-20000}
port=18196

cargo build --release --bins >&2
load=target/release/shoal-load
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

rss() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }
peers() {
    local reply
    reply=$(exec 3<>"/dev/tcp/127.0.0.1/$port"; printf 'GET /stats.json HTTP/1.0\r\n\r\n' >&3; cat <&3)
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["peers"]["total"])' "${reply#*$'\r\n\r\n'}"
}
start() {
    "${BIN:-target/release/shoal}" --listen "127.0.0.1:$port" --udp-listen none --workers 2 \
        --log-level warn --allow-ip-param --peer-ttl "$1" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

echo "| peers | torrents | bytes per peer | announce CPU µs | scrape CPU µs | announce p99 ms |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in "${sizes[@]}"; do
    torrents=$(( n / 100 ))
    start 86400
    sleep 0.5
    # Warm-up (connections, buffers, thread heaps): its 1,000 peers are
    # announced again by the fill, not added.
    "$load" -t "127.0.0.1:$port" -c 16 --torrents "$torrents" --fill 1000 --json > /dev/null
    sleep 0.5
    before=$(rss "$pid")
    "$load" -t "127.0.0.1:$port" -c 16 --torrents "$torrents" --fill "$n" --json > /dev/null
    sleep 3
    after=$(rss "$pid")
    held=$(peers)
    chunk=$(( n < 1000000 ? n : 1000000 ))
    "$load" -t "127.0.0.1:$port" -c 16 --torrents "$torrents" --fill "$chunk" \
        --repeat $(( 1000000 / chunk )) --server-pid "$pid" --json > "$work/pass.json"
    cpu=$(field "$work/pass.json" server_cpu_s)
    count=$(field "$work/pass.json" announces)
    p99=$(field "$work/pass.json" p99_ms)
    "$load" -t "127.0.0.1:$port" -d 10 -c 16 --torrents "$torrents" --zipf 0 --scrape-share 1 \
        --server-pid "$pid" --json > "$work/scrape.json"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$n" "$torrents" "$held" "$before" "$after" "$cpu" "$count" "$p99" "$work/scrape.json" <<'PY'
import json, sys
n, torrents, held, before, after = map(int, sys.argv[1:6])
cpu, count, p99 = float(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
scrape = json.load(open(sys.argv[9]))
print(f"| {n:,} | {torrents:,} | {(after - before) / (held - 1000):.1f} | {cpu / count * 1e6:.2f} "
      f"| {scrape['server_cpu_s'] / scrape['scrapes'] * 1e6:.2f} | {p99:.2f} |")
PY
done

[ "$sweep_peers" -gt 0 ] || exit 0
start "$sweep_ttl"
"$load" -t "127.0.0.1:$port" -c 16 --torrents $(( sweep_peers / 100 )) --fill "$sweep_peers" --json > /dev/null
echo
echo "sweep: $sweep_peers peers, TTL ${sweep_ttl} s, a paced load of ${sweep_rate}/s meanwhile (10-s windows)"
echo
echo "| window | peers held at end | responses/s | p50 ms | p99 ms | p99.9 ms |"
echo "|---:|---:|---:|---:|---:|---:|"
for w in $(seq 1 $(( (sweep_ttl + 90) / 10 ))); do
    "$load" -t "127.0.0.1:$port" -d 10 --warmup 0 -c 32 --rate "$sweep_rate" --torrents 10000 \
        --distinct-ips --json > "$work/w.json"
    python3 - "$w" "$(peers)" "$work/w.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[3]))
print(f"| {sys.argv[1]} | {int(sys.argv[2]):,} | {r['rps']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} |")
PY
done
