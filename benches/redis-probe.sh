#!/usr/bin/env bash
# One load run against a single `--store redis` node on a Redis Cluster that
# is already running (e.g. the recipe in docs/scaling.md), and what it cost
# Redis: CPU µs per announce (all masters, from /proc) and how many
# announces each socket read carried (INFO stats total_reads_processed), to
# see what Redis's cost per announce depends on; the node's announces per
# shoal CPU-second, and how they went (shoal_store_routes_total); then each
# command's calls per announce and Redis µs per call (INFO commandstats).
# PORTS may name a single Redis (not a cluster) too.
#
# usage: PORTS="17200 17201 17202" benches/redis-probe.sh [shoal-load args...]
#   e.g. benches/redis-probe.sh --rate 11000
#        SHOAL_ARGS="--redis-connections 1" benches/redis-probe.sh
#        BIN=/tmp/old/shoal benches/redis-probe.sh          # another build
#        TORRENTS=100 benches/redis-probe.sh                # fewer, busier swarms (default 10000)
#        WARMUP=5 benches/redis-probe.sh --peers 100000     # re-announcing peers (shoal-load --peers),
#                                                           # Redis measured after the warm-up fills them
# The masters are flushed first. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ports=(${PORTS:-17200 17201 17202})
seconds=${SECONDS_RUN:-8}
for p in "${ports[@]}"; do
    redis-cli -p "$p" flushall >/dev/null
    redis-cli -p "$p" config resetstat >/dev/null
done
# shellcheck disable=SC2086
"${BIN:-target/release/shoal}" --listen 127.0.0.1:18190 --udp-listen none --workers "${WORKERS:-1}" --log-level warn \
    --allow-ip-param --store redis --redis-url "redis://127.0.0.1:${ports[0]}" ${SHOAL_ARGS:-} \
    >/dev/null 2>&1 &
node=$!
trap 'kill -INT $node 2>/dev/null; wait $node 2>/dev/null || true' EXIT
sleep 1
pids=$(for p in "${ports[@]}"; do pgrep -f "redis-server 127.0.0.1:$p"; done)
cpu() {
    local t=0 p
    for p in $pids; do t=$(awk -v t="$t" '{ print t + ($14 + $15) / 100 }' "/proc/$p/stat"); done
    echo "$t"
}
warmup=${WARMUP:-0}
out=$(mktemp)
target/release/shoal-load -t 127.0.0.1:18190 -d "$seconds" --warmup "$warmup" -c 64 --torrents "${TORRENTS:-10000}" \
    --distinct-ips --server-pid "$node" --json "$@" > "$out" &
load=$!
# Redis is measured over the timed part only (shoal-load's own clock starts
# at the end of its warm-up, within milliseconds of this one).
sleep "$warmup"
for p in "${ports[@]}"; do redis-cli -p "$p" config resetstat >/dev/null; done
before=$(cpu)
sleep "$seconds"
after=$(cpu)
wait "$load"
reads=0 commands=0 script_calls=0 script_usec=0
: > "$out.cmd"
for p in "${ports[@]}"; do
    redis-cli -p "$p" info commandstats | tr -d '\r' | grep '^cmdstat_' >> "$out.cmd" || true
    stats=$(redis-cli -p "$p" info stats | tr -d '\r')
    reads=$(( reads + $(sed -n 's/^total_reads_processed://p' <<<"$stats") ))
    commands=$(( commands + $(sed -n 's/^total_commands_processed://p' <<<"$stats") ))
    # The script's own time (its commands included), from Redis's commandstats.
    evalsha=$(redis-cli -p "$p" info commandstats | tr -d '\r' | grep '^cmdstat_evalsha:' || true)
    script_calls=$(( script_calls + $(sed -n 's/.*calls=\([0-9]*\),usec=.*/\1/p' <<<"${evalsha:-calls=0,usec=0}") ))
    script_usec=$(( script_usec + $(sed -n 's/.*,usec=\([0-9]*\),.*/\1/p' <<<"${evalsha:-calls=0,usec=0,}") ))
done
# How the node's announces went: straight to their master, or through the
# cluster client (shoal_store_routes_total).
metrics=$(exec 3<>/dev/tcp/127.0.0.1/18190; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3)
routes=$(sed -n 's/^shoal_store_routes_total{backend="redis",route="\([a-z]*\)"} \([0-9]*\).*/\1 \2/p' <<<"$metrics" \
    | tr -d '\r' | paste -sd, -)
python3 - "$out" "$before" "$after" "$reads" "$commands" "$script_calls" "$script_usec" "$routes" "$out.cmd" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
cpu = float(sys.argv[3]) - float(sys.argv[2])
reads, commands, n = int(sys.argv[4]), int(sys.argv[5]), r["ok"]
script_calls, script_usec = int(sys.argv[6]), int(sys.argv[7])
print(f"{r['rps']:.0f} announces/s, Redis {cpu:.2f} CPU s: {cpu * 1e6 / n:.1f} µs per announce "
      f"(the script {script_usec / max(script_calls, 1):.1f} µs per call), "
      f"{n / max(reads, 1):.2f} announces per read, {commands / n:.2f} commands per announce "
      f"(script calls included), p99 {r['p99_ms']} ms, "
      f"{n / r['server_cpu_s']:.0f} announces per shoal CPU-s; routes: {sys.argv[8] or '-'}")
# Each command: how many per announce, and Redis µs per call (commandstats;
# the script's own calls are counted in EVALSHA's time too).
calls, usec = {}, {}
for line in open(sys.argv[9]):
    m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
    if m and m.group(1) not in ("info", "config|resetstat"):
        calls[m.group(1)] = calls.get(m.group(1), 0) + int(m.group(2))
        usec[m.group(1)] = usec.get(m.group(1), 0) + int(m.group(3))
print("per announce: " + ", ".join(
    f"{name} {calls[name] / max(n, 1):.2f} x {usec[name] / calls[name]:.2f} µs"
    for name in sorted(calls, key=lambda k: -usec[k])))
PY
rm -f "$out" "$out.cmd"
