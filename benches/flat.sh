#!/usr/bin/env bash
# Flat costs: does an announce, a scrape and a peer cost the same at 100k and
# at 10M peers? One tracker per size N (100 peers a torrent), all running at
# once on their own ports: each is filled with N peers from N addresses
# (shoal-load --fill), then ROUNDS rounds go through the sizes in turn, so
# that the machine's drift falls on every size alike, measuring
#   - announce CPU: re-announces of peers already held (the fill run again:
#     each announce finds its peer and refreshes it), PASS of them (passes
#     over the first min(N, PASS) peers), as server CPU-µs per announce;
#   - scrape CPU: SCRAPE_SECS s of one-hash scrapes over the torrents;
# and bytes per peer: RSS growth over the fill, divided by the peers held.
# Each row gives the median of the rounds and their range; the last line
# how far apart the sizes' medians are.
# Then the sweep: with a peer TTL of SWEEP_TTL s, fill SWEEP_PEERS peers and
# keep a paced load running (SWEEP_RATE/s, in 10-s windows) while sweeps
# expire them all: p99 of each window beside the peers held.
#
# usage: benches/flat.sh [SIZES...]   e.g. benches/flat.sh 100000 1000000 10000000
#        SWEEP_PEERS=0 ROUNDS=5 benches/flat.sh 100000 1000000   # no sweep phase
#        BIN=/tmp/old/shoal benches/flat.sh 1000000      # another shoal binary
# Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a sizes <<< "${*:-100000 1000000 10000000}"
rounds=${ROUNDS:-3}
pass=${PASS:-500000}
scrape_secs=${SCRAPE_SECS:-5}
sweep_peers=${SWEEP_PEERS:-10000000}
sweep_ttl=${SWEEP_TTL:-200}
sweep_rate=${SWEEP_RATE:-20000}
base_port=18196

cargo build --release --bins >&2
load=target/release/shoal-load
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

rss() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }
peers() {
    local reply
    reply=$(exec 3<>"/dev/tcp/127.0.0.1/$1"; printf 'GET /stats.json HTTP/1.0\r\n\r\n' >&3; cat <&3)
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["peers"]["total"])' "${reply#*$'\r\n\r\n'}"
}
# start PORT TTL: a tracker on PORT; its pid in $pid.
start() {
    "${BIN:-target/release/shoal}" --listen "127.0.0.1:$1" --udp-listen none --workers 2 \
        --log-level warn --allow-ip-param --peer-ttl "$2" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

pids=()
for i in "${!sizes[@]}"; do
    n=${sizes[$i]}
    port=$(( base_port + i ))
    torrents=$(( n / 100 ))
    start "$port" 86400
    pids+=("$pid")
    sleep 0.5
    # Warm-up (connections, buffers, thread heaps): its 1,000 peers are
    # announced again by the fill, not added.
    "$load" -t "127.0.0.1:$port" -c 16 --torrents "$torrents" --fill 1000 --json > /dev/null
    sleep 0.5
    before=$(rss "$pid")
    "$load" -t "127.0.0.1:$port" -c 16 --torrents "$torrents" --fill "$n" --json > /dev/null
    sleep 3
    echo "$n $torrents $(peers "$port") $before $(rss "$pid")" > "$work/fill.$i"
done

for round in $(seq 1 "$rounds"); do
    for i in "${!sizes[@]}"; do
        n=${sizes[$i]}
        port=$(( base_port + i ))
        torrents=$(( n / 100 ))
        chunk=$(( n < pass ? n : pass ))
        "$load" -t "127.0.0.1:$port" -c 16 --torrents "$torrents" --fill "$chunk" \
            --repeat $(( pass / chunk )) --server-pid "${pids[$i]}" --json > "$work/announce.$i.$round"
        "$load" -t "127.0.0.1:$port" -d "$scrape_secs" -c 16 --torrents "$torrents" --zipf 0 \
            --scrape-share 1 --server-pid "${pids[$i]}" --json > "$work/scrape.$i.$round"
    done
done
kill "${pids[@]}"
wait "${pids[@]}" 2>/dev/null || true

python3 - "$work" "${#sizes[@]}" "$rounds" <<'PY'
import json, statistics, sys
work, count, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(f"{rounds} rounds, sizes in turn; medians (range)")
print()
print("| peers | torrents | bytes per peer | announce CPU µs | scrape CPU µs | announce p99 ms |")
print("|---:|---:|---:|---:|---:|---:|")
medians = {"announce": [], "scrape": []}
for i in range(count):
    n, torrents, held, before, after = map(int, open(f"{work}/fill.{i}").read().split())
    ann = [json.load(open(f"{work}/announce.{i}.{r}")) for r in range(1, rounds + 1)]
    scr = [json.load(open(f"{work}/scrape.{i}.{r}")) for r in range(1, rounds + 1)]
    a = [x["server_cpu_s"] / x["announces"] * 1e6 for x in ann]
    s = [x["server_cpu_s"] / x["scrapes"] * 1e6 for x in scr]
    p99 = statistics.median(x["p99_ms"] for x in ann)
    medians["announce"].append(statistics.median(a))
    medians["scrape"].append(statistics.median(s))
    cell = lambda v: f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"
    print(f"| {n:,} | {torrents:,} | {(after - before) / (held - 1000):.1f} | {cell(a)} "
          f"| {cell(s)} | {p99:.2f} |")
print()
for kind, m in medians.items():
    print(f"{kind}: the dearest size's median is {max(m) / min(m):.3f}x the cheapest's")
PY

[ "$sweep_peers" -gt 0 ] || exit 0
port=$base_port
start "$port" "$sweep_ttl"
"$load" -t "127.0.0.1:$port" -c 16 --torrents $(( sweep_peers / 100 )) --fill "$sweep_peers" --json > /dev/null
echo
echo "sweep: $sweep_peers peers, TTL ${sweep_ttl} s, a paced load of ${sweep_rate}/s meanwhile (10-s windows)"
echo
echo "| window | peers held at end | responses/s | p50 ms | p99 ms | p99.9 ms |"
echo "|---:|---:|---:|---:|---:|---:|"
for w in $(seq 1 $(( (sweep_ttl + 90) / 10 ))); do
    "$load" -t "127.0.0.1:$port" -d 10 --warmup 0 -c 32 --rate "$sweep_rate" --torrents 10000 \
        --distinct-ips --json > "$work/w.json"
    python3 - "$w" "$(peers "$port")" "$work/w.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[3]))
print(f"| {sys.argv[1]} | {int(sys.argv[2]):,} | {r['rps']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} |")
PY
done
