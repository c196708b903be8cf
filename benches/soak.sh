#!/usr/bin/env bash
# Soak: MINUTES minutes of steady load at SHARE (0.7) of the rate that
# saturates the tracker on this machine once its store holds the soak's
# population, with churn: every announce comes
# from its own address (shoal-load --distinct-ips), so nearly every one is a
# new peer (each minute draws new addresses: --seed), and a short peer TTL
# (TTL s) expires them all the time; the swarm
# population settles at about rate x TTL peers. One row per minute: the
# rate served, latency percentiles, the tracker's resident memory and the
# peers it holds. At the end: whether RSS stayed within 5% after warm-up
# (WARMUP minutes) and how far p99 moved.
#
# usage: benches/soak.sh [MINUTES] [TTL]
#   e.g. benches/soak.sh 10 60
#        REACTOR=per-core SHARE=0.7 benches/soak.sh 10 60
#        RATE=30000 BIN=/tmp/old/shoal benches/soak.sh 6 60   # a fixed rate, another binary (A/B)
# Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
ttl=${2:-60}
share=${SHARE:-0.7}
warmup=${WARMUP:-2}
port=18195

cargo build --release --bins >&2
load=target/release/shoal-load
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

${BIN:-target/release/shoal} --listen "127.0.0.1:$port" --udp-listen none --workers 2 \
    --reactor "${REACTOR:-tokio}" --log-level warn --allow-ip-param --peer-ttl "$ttl" \
    >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done

peers() {
    local reply
    reply=$(exec 3<>"/dev/tcp/127.0.0.1/$port"; printf 'GET /stats.json HTTP/1.0\r\n\r\n' >&3; cat <&3)
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["peers"]["total"])' "${reply#*$'\r\n\r\n'}"
}

# The saturating rate, measured the way the soak sends (paced, with
# shoal-load's pacing thread on the same 2 cores): ask for far more than the
# tracker can serve for 5 s and take what it served. Measured into the
# empty store, then after TTL + 10 s at half that rate, once the store holds
# its steady population (an announce into millions of peers costs more than
# into an empty store, so the first figure overstates what the soak can
# sustain), three times; the soak runs at SHARE of the median of those
# three. RATE skips this and soaks at that rate (to compare
# two binaries at one load).
saturate() {
    "$load" -t "127.0.0.1:$port" -d 5 -c 64 --rate 200000 --distinct-ips --seed "$1" --json > "$work/max.json"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rps"])' "$work/max.json"
}
if [ -n "${RATE:-}" ]; then
    rate=$RATE
    echo "soaking at ${rate}/s (RATE) for $minutes min, peer TTL ${ttl} s" >&2
else
    empty=$(saturate 1000)
    "$load" -t "127.0.0.1:$port" -d "$((ttl + 10))" --warmup 0 -c 64 --rate "$((empty / 2))" \
        --distinct-ips --seed 1001 > /dev/null
    # Three bursts at steady state, 10 s of half-rate load between them: one
    # burst follows the machine's load of that moment (it moved by 1.7x
    # within one run), their median less so.
    bursts=()
    for seed in 1002 1003 1004; do
        bursts+=("$(saturate "$seed")")
        "$load" -t "127.0.0.1:$port" -d 10 --warmup 0 -c 64 --rate "$((empty / 2))" \
            --distinct-ips --seed "$((seed + 100))" > /dev/null
    done
    max=$(printf '%s\n' "${bursts[@]}" | sort -n | sed -n 2p)
    rate=$(python3 -c "print(round($max * $share))")
    [ "$rate" -gt 0 ] || { echo "the saturating run served nothing" >&2; exit 1; }
    echo "saturating rate ${empty}/s into the empty store, ${bursts[*]}/s at steady state (median ${max}/s); soaking at ${rate}/s (x$share) for $minutes min, peer TTL ${ttl} s" >&2
fi

for minute in $(seq 1 "$minutes"); do
    "$load" -t "127.0.0.1:$port" -d 60 --warmup 0 -c 64 --rate "$rate" --distinct-ips \
        --seed "$minute" --server-pid "$pid" --label "$minute" --json > "$work/minute.json"
    python3 - "$work/minute.json" "$(peers)" >> "$work/rows.jsonl" <<'PY'
import json, sys
row = json.load(open(sys.argv[1]))
row["peers"] = int(sys.argv[2])
print(json.dumps(row))
PY
done

python3 - "$work/rows.jsonl" "$warmup" "$rate" "$ttl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
warmup, rate, ttl = int(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f"\nsoak at {rate} announces/s, peer TTL {ttl} s, every announce from its own address\n")
print("| minute | responses/s | p50 ms | p99 ms | p99.9 ms | errors | RSS MiB | peers held |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    errors = r["failures"] + r["bad"] + r["io_errors"]
    print(f"| {r['label']} | {r['rps']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} "
          f"| {errors} | {r['server_rss_bytes'] / 2**20:.1f} | {r['peers']:,} |")
steady = rows[warmup:]
if steady:
    rss = [r["server_rss_bytes"] for r in steady]
    p99 = [r["p99_ms"] for r in steady]
    spread = max(rss) / min(rss) - 1
    print(f"\nafter {warmup} min of warm-up: RSS {min(rss) / 2**20:.1f}-{max(rss) / 2**20:.1f} MiB "
          f"({spread * 100:.1f}% spread: {'flat' if spread <= 0.05 else 'NOT flat'} within 5%), "
          f"p99 {min(p99):.2f}-{max(p99):.2f} ms")
PY
