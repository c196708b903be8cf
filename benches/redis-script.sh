#!/usr/bin/env bash
# The announce script alone, on one Redis server (no cluster, no tracker):
# redis-benchmark calls EVALSHA on one swarm of 200 IPv6 peers, first as a
# peer refreshing itself, then as a new peer each call (numwant 50: the
# script also returns the windows of records the peers are chosen from), and
# Redis's own commandstats say how many microseconds of Redis time a call
# took. Then the same refresh with numwant 0 and a plain GETRANGE of one
# window: what a node that plans the window reads itself sends.
# usage: benches/redis-script.sh [CALLS]   (SHOW=1: every command's stats too)
# needs: redis-server, redis-benchmark (apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-100000}
port=${PORT:-17300}
script=${SCRIPT:-src/store/redis/announce.lua}
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --loglevel warning >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
sha=$(redis-cli -p "$port" script load "$(cat "$script")")
now=$(date +%s)
keys=(6 m 4s 4l 6s 6l d)
for i in $(seq 1000 1199); do
    # ARGV: op, family, IP (16 bytes), port (2), peer id (20), seeder,
    # completed, numwant, TTL, most peers, now, random (window start).
    redis-cli -p "$port" evalsha "$sha" "${keys[@]}" a 6 "ipipipipipip$i" pp \
        "IIIIIIIIIIIIIIII$i" $((i % 4 == 0)) 0 50 2700 0 "$now" "$i" >/dev/null
done
run() {
    local label=$1 command=$2
    shift 2
    redis-cli -p "$port" config resetstat >/dev/null
    local rate
    rate=$(redis-benchmark -p "$port" -n "$calls" -c 16 -q "$@" 2>&1 | tr '\r' '\n' | tail -1 \
        | sed 's/.*: //')
    local usec
    [ -n "${SHOW:-}" ] && redis-cli -p "$port" info commandstats >&2
    usec=$(redis-cli -p "$port" info commandstats | sed -n "s/^cmdstat_$command:.*usec_per_call=\([0-9.]*\).*/\1/p")
    echo "| $label | $usec | $rate |"
}
echo "| call | Redis µs per call | calls/s (16 clients, one Redis) |"
echo "|---|---:|---|"
run "a peer refreshes itself" evalsha evalsha "$sha" "${keys[@]}" a 6 ipipipipipip1150 pp \
    IIIIIIIIIIIIIIII1150 0 0 50 2700 0 "$now" __rand_int__
run "a new peer (random IP)" evalsha -r 100000000 evalsha "$sha" "${keys[@]}" a 6 __rand_int__ipip pp \
    IIIIIIIIIIIIIIIIIIII 0 0 50 2700 0 "$now" 7
# What a node that knows the swarm's counts sends: the script with numwant 0,
# then plain GETRANGEs of the windows (53 records: 50 wanted and 3 spare).
run "a peer refreshes itself, numwant 0" evalsha evalsha "$sha" "${keys[@]}" a 6 \
    ipipipipipip1150 pp IIIIIIIIIIIIIIII1150 0 0 0 2700 0 "$now" __rand_int__
run "a window of 53 IPv6 records (GETRANGE)" getrange getrange 6l 430 2708
